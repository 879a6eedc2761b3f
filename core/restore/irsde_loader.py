"""Load IR-SDE / Refusion / DA-CLIP checkpoints into an :class:`SDERestorer`.

Accepted files (the official ones, unchanged):

* IR-SDE task weights (``.pth``, a ``ConditionalUNet`` state dict, maybe ``module.``-prefixed);
* Refusion weights (``ConditionalNAFNet`` state dict);
* DA-CLIP universal restoration: ``universal-ir.pth`` (UNet with degradation prompt and
  cross-attention) plus ``daclip_ViT-B-32.pt`` (DA-CLIP; a pickle with numpy scalars, read
  with ``weights_only=True`` and the numpy allow-list); wild-IR: ``wild-ir.pth`` plus
  ``wild-daclip_ViT-L-14.pt``;
* any of these converted to ``.safetensors`` by :func:`convert_to_safetensors`.

The architecture (width, depth, channel multipliers, context size, attention levels, NAF
block counts, ViT size) is read from the tensor shapes, so any ``nf``/``depth`` trained with
the official code loads. The SDE settings (``max_sigma``, ``T``, ``eps``, schedule) are not
stored in the weights: they come from the task preset (:data:`TASK_PRESETS`, values of the
official test configs), chosen by the user or found from the manifest / the file name.

Key map: none for the networks (keys are used as they are). For DA-CLIP the official file
holds the image tower twice (``clip.visual.*`` and ``visual.*``, the same tensors); a
converted safetensors keeps only ``clip.visual.*`` and loading re-creates the alias.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, WeightsError
from ..weights import NUMPY_GLOBALS, key_mismatch, load_manifest, load_state_dict
from .nets.daclip import DaCLIP, TextConfig, VisionConfig
from .nets.irsde_unet import ConditionalUNet
from .nets.refusion_nafnet import ConditionalNAFNet
from .sde import IRSDE

#: Allow-list for DA-CLIP's pickle (numpy scalars, e.g. the epoch counter; ``_codecs.encode`` is torch's own).
DACLIP_ALLOWED = NUMPY_GLOBALS

_SDE = {"T": 100, "schedule": "cosine", "eps": 0.005}

#: Task presets: SDE settings and the expected network, from the official ``options/test/*.yml``.
TASK_PRESETS: dict[str, dict[str, Any]] = {
    "deraining (IR-SDE)": {"arch": "irsde-unet", "max_sigma": 10, **_SDE, "net": {"nf": 64, "depth": 4}},
    "deblurring (IR-SDE)": {"arch": "irsde-unet", "max_sigma": 10, **_SDE, "net": {"nf": 64, "depth": 4}},
    "deshadowing (IR-SDE)": {"arch": "irsde-unet", "max_sigma": 30, **_SDE, "net": {"nf": 32, "depth": 5}},
    "inpainting (IR-SDE)": {"arch": "irsde-unet", "max_sigma": 30, **_SDE, "net": {"nf": 64, "depth": 4}},
    "super-resolution (IR-SDE, input upscaled first)": {
        "arch": "irsde-unet", "max_sigma": 30, **_SDE, "net": {"nf": 64, "depth": 4},
    },
    "refusion (NAFNet)": {"arch": "refusion-nafnet", "max_sigma": 50, **_SDE, "net": {"width": 64}},
    "universal (DA-CLIP)": {"arch": "daclip-unet", "max_sigma": 50, **_SDE, "net": {"nf": 64, "context_dim": 512}},
    "wild-ir (DA-CLIP ViT-L/14)": {"arch": "daclip-unet", "max_sigma": 50, **_SDE, "net": {"nf": 64, "context_dim": 768}},
}
PRESET_NAMES = ("auto", *TASK_PRESETS)

_NAME_HINTS = (
    (r"wild", "wild-ir (DA-CLIP ViT-L/14)"),
    (r"universal|daclip|da-clip", "universal (DA-CLIP)"),
    (r"refusion|nafnet", "refusion (NAFNet)"),
    (r"rain|derain", "deraining (IR-SDE)"),
    (r"blur|gopro", "deblurring (IR-SDE)"),
    (r"shadow", "deshadowing (IR-SDE)"),
    (r"inpaint", "inpainting (IR-SDE)"),
    (r"sisr|(^|[^a-z])sr([^a-z]|$)|super", "super-resolution (IR-SDE, input upscaled first)"),
)


@dataclass
class SDERestorer:
    """What ``GenDegIRSDELoader`` outputs (``SDE_RESTORER``): a noise network, its SDE, and DA-CLIP if any.

    ``net`` maps ``(x_t, mu, t, text_context=, image_context=)`` to predicted noise (image scale 0..1).
    """

    net: torch.nn.Module
    arch: str  # irsde-unet | daclip-unet | refusion-nafnet
    sde: IRSDE
    preset: str
    daclip: DaCLIP | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pad_multiple(self) -> int:
        return int(getattr(self.net, "pad_multiple", 1))

    @property
    def max_sigma(self) -> float:
        return self.sde.lam * 255


# --- architecture detection --------------------------------------------------------------


def _indices(sd: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := rx.match(k))})


def _sample_keys(sd: Mapping[str, Any], n: int = 4) -> str:
    keys = list(sd)[:n]
    return ", ".join(keys) + (", ..." if len(sd) > n else "")


def detect_arch(sd: Mapping[str, torch.Tensor]) -> str:
    """``irsde-unet``, ``daclip-unet`` or ``refusion-nafnet``; :class:`WeightsError` for anything else."""
    if "init_conv.weight" in sd and "downs.0.0.block1.proj.weight" in sd and "time_mlp.1.weight" in sd:
        daclip_like = "prompt" in sd or any("transformer_blocks" in k for k in sd)
        return "daclip-unet" if daclip_like else "irsde-unet"
    if "intro.weight" in sd and "ending.weight" in sd:
        if "time_mlp.1.weight" in sd and "encoders.0.0.mlp.1.weight" in sd:
            return "refusion-nafnet"
        raise WeightsError(
            "this checkpoint is a feed-forward NAFNet (no time embedding), not an IR-SDE/Refusion noise "
            "network: load it with GenDegRestorerLoader (feed-forward restorers) instead"
        )
    if any(k.startswith(("visual_control.", "clip.visual.")) for k in sd):
        raise WeightsError(
            "this checkpoint is the DA-CLIP controller (daclip_*.pt), not a restoration network: give it as the "
            "'daclip' file and pick the universal-ir.pth (or wild-ir.pth) network as the checkpoint"
        )
    if any(k.startswith(("model.diffusion_model.", "down_blocks.", "conv_in.")) for k in sd):
        raise WeightsError(
            "this checkpoint is a Stable-Diffusion/GenDeg-style UNet, not an IR-SDE network: use the GenDeg "
            "loader for GenDeg weights, and an IR-SDE/Refusion/universal-ir checkpoint here"
        )
    raise WeightsError(
        "not an IR-SDE, Refusion or DA-CLIP universal-restoration checkpoint (expected keys such as "
        f"'init_conv.weight' or 'intro.weight'; found {_sample_keys(sd)})"
    )


def unet_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """ConditionalUNet arguments read from the tensor shapes."""
    nf, in2 = sd["init_conv.weight"].shape[:2]
    levels = _indices(sd, r"downs\.(\d+)\.0\.block1\.proj\.weight$")
    if not levels or levels != list(range(len(levels))):
        raise WeightsError("IR-SDE checkpoint: the 'downs.<i>' levels are missing or not numbered 0..n-1")
    ch_mult = []
    for i in levels:
        w = sd.get(f"downs.{i}.3.weight")
        if w is None:
            raise WeightsError(f"IR-SDE checkpoint: missing 'downs.{i}.3.weight' (the down-sampling conv of level {i})")
        ch_mult.append(int(w.shape[0]) // int(nf))
    cfg: dict[str, Any] = {"in_nc": int(in2) // 2, "out_nc": int(sd["final_conv.weight"].shape[0]), "nf": int(nf), "ch_mult": ch_mult}
    context_dim = None
    if "text_mlp.0.weight" in sd:
        context_dim = int(sd["text_mlp.0.weight"].shape[1])
    for k, v in sd.items():
        if k.endswith("attn2.to_k.weight"):
            context_dim = int(v.shape[1])
            break
    if context_dim:
        cfg.update(
            context_dim=context_dim,
            use_degra_context="prompt" in sd,
            use_image_context=any("transformer_blocks" in k for k in sd),
            cross_attn_levels=_indices(sd, r"downs\.(\d+)\.2\.fn\.fn\.transformer_blocks\.0\."),
            scale=0.5 if "downsample.weight" in sd else 1,
        )
    return cfg


def nafnet_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """ConditionalNAFNet arguments read from the keys and shapes."""
    enc = _indices(sd, r"encoders\.(\d+)\.")
    dec = _indices(sd, r"decoders\.(\d+)\.")
    return {
        "img_channel": int(sd["ending.weight"].shape[0]),
        "width": int(sd["intro.weight"].shape[0]),
        "enc_blk_nums": [len(_indices(sd, rf"encoders\.{i}\.(\d+)\.conv1\.weight$")) for i in enc],
        "middle_blk_num": len(_indices(sd, r"middle_blks\.(\d+)\.conv1\.weight$")),
        "dec_blk_nums": [len(_indices(sd, rf"decoders\.{i}\.(\d+)\.conv1\.weight$")) for i in dec],
    }


def _load_strict(module: torch.nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> None:
    try:
        result = module.load_state_dict(dict(sd), strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise WeightsError(f"{what}: the checkpoint does not fit the network ({str(exc).splitlines()[-1].strip()})") from exc
    if result.missing_keys or result.unexpected_keys:
        parts = key_mismatch(result.missing_keys, result.unexpected_keys)
        raise WeightsError(f"{what}: keys do not match the official layout: {'; '.join(parts)}. Is the file truncated or another model?")


def build_noise_net(sd: Mapping[str, torch.Tensor]) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """(network with the weights loaded, arch, config) from an official state dict."""
    arch = detect_arch(sd)
    if arch == "refusion-nafnet":
        cfg = nafnet_config(sd)
        net: torch.nn.Module = ConditionalNAFNet(**cfg)
    else:
        cfg = unet_config(sd)
        net = ConditionalUNet(**cfg)
    _load_strict(net, sd, f"{arch} network")
    return net.eval().requires_grad_(False), arch, cfg


# --- DA-CLIP ------------------------------------------------------------------------------

_TEXT_PREFIXES = ("clip.token_embedding.", "clip.positional_embedding", "clip.transformer.", "clip.ln_final.", "clip.text_projection")


def daclip_configs(sd: Mapping[str, torch.Tensor]) -> tuple[VisionConfig, TextConfig | None]:
    """ViT and text-tower sizes read from a DA-CLIP state dict."""
    if "visual_control.transformer.zero_modules.0.weight" not in sd or "clip.visual.conv1.weight" not in sd:
        if any(k.startswith("visual.conv1") or k.startswith("conv1.") for k in sd):
            raise WeightsError(
                "this is a plain CLIP image tower without the DA-CLIP controller ('visual_control.*' keys); "
                "use the official daclip_ViT-B-32.pt"
            )
        if "init_conv.weight" in sd or "intro.weight" in sd:
            raise WeightsError(
                "this is a restoration network, not the DA-CLIP controller: pick it as the checkpoint and "
                "give daclip_ViT-B-32.pt as the 'daclip' file"
            )
        raise WeightsError(f"not a DA-CLIP checkpoint (no 'visual_control.*' / 'clip.visual.*' keys; found {_sample_keys(sd)})")
    conv = sd["clip.visual.conv1.weight"]
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    grid = int(round((sd["clip.visual.positional_embedding"].shape[0] - 1) ** 0.5))
    vision = VisionConfig(
        image_size=grid * patch,
        patch_size=patch,
        width=width,
        layers=len(_indices(sd, r"clip\.visual\.transformer\.resblocks\.(\d+)\.")),
        heads=max(1, width // 64),  # OpenCLIP: head width 64 (ViT-B/32: 12 heads, ViT-L/14: 16)
        embed_dim=int(sd["clip.visual.proj"].shape[1]),
    )
    text = None
    if "clip.token_embedding.weight" in sd:
        tw = int(sd["clip.token_embedding.weight"].shape[1])
        text = TextConfig(
            context_length=int(sd["clip.positional_embedding"].shape[0]),
            vocab_size=int(sd["clip.token_embedding.weight"].shape[0]),
            width=tw,
            heads=max(1, tw // 64),
            layers=len(_indices(sd, r"clip\.transformer\.resblocks\.(\d+)\.")),
            embed_dim=int(sd["clip.text_projection"].shape[1]),
        )
    return vision, text


def build_daclip(sd: Mapping[str, torch.Tensor], with_text: bool = False) -> DaCLIP:
    """DA-CLIP from its official state dict; the text tower (1/3 of the weights) only if ``with_text``."""
    vision, text = daclip_configs(sd)
    sd = dict(sd)
    if not with_text or text is None:
        sd = {k: v for k, v in sd.items() if not k.startswith(_TEXT_PREFIXES)}
        text = None
    for k in [k for k in sd if k.startswith("clip.visual.")]:  # the official double registration
        sd.setdefault(k[len("clip.") :], sd[k])
    model = DaCLIP(vision, text)
    _load_strict(model, sd, "DA-CLIP")
    return model.eval().requires_grad_(False)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint (safetensors, or a pickle read safely with the numpy allow-list)."""
    return load_state_dict(path, DACLIP_ALLOWED)


# --- presets --------------------------------------------------------------------------------


def _manifest_config(name: str) -> dict[str, Any] | None:
    try:
        manifest = load_manifest()
    except Exception:  # noqa: BLE001 - a broken manifest must not block loading a local file
        return None
    base = Path(name).name
    exact = [e for e in manifest.values() for f in e.files if f.path == name]
    by_base = [e for e in manifest.values() for f in e.files if Path(f.path).name == base]
    hits = exact or (by_base if len(by_base) == 1 else [])
    for entry in hits:
        if entry.config.get("preset") in TASK_PRESETS:
            return entry.config
    return None


def resolve_preset(preset: str, arch: str, filename: str) -> str:
    """The preset to use: the user's, else the manifest's, else a file-name hint, else the only one for ``arch``."""
    if preset != "auto":
        if preset not in TASK_PRESETS:
            raise InputError(f"unknown task preset {preset!r}; choose one of: {', '.join(PRESET_NAMES)}")
        expected = TASK_PRESETS[preset]["arch"]
        if expected != arch:
            raise WeightsError(
                f"the preset {preset!r} is for a {expected} network but {Path(filename).name} holds a {arch}; "
                "pick a matching preset (or 'auto')"
            )
        return preset
    cfg = _manifest_config(filename)
    if cfg and TASK_PRESETS[cfg["preset"]]["arch"] == arch:
        return cfg["preset"]
    lower = Path(filename).name.lower()
    for pattern, name in _NAME_HINTS:
        if re.search(pattern, lower) and TASK_PRESETS[name]["arch"] == arch:
            return name
    candidates = [n for n, p in TASK_PRESETS.items() if p["arch"] == arch]
    if len(candidates) == 1:
        return candidates[0]
    if arch == "daclip-unet":
        return "universal (DA-CLIP)"
    raise InputError(
        f"cannot tell which task {Path(filename).name} was trained for (IR-SDE's max_sigma differs per task: "
        f"10 for deraining/deblurring, 30 for the others); choose the task preset instead of 'auto'"
    )


# --- public entry points ------------------------------------------------------------------

#: The preset name of a network trained with ``gendeg train irsde`` (its SDE comes from the file).
TRAINED_PRESET = "from the file (gendeg train irsde)"


def trained_sde_settings(path: str | Path) -> dict[str, Any] | None:
    """The SDE settings stored by ``gendeg train irsde`` in a safetensors header (None for other files)."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return None
    import json

    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            text = (fh.metadata() or {}).get("gendeg.irsde")
        data = json.loads(text) if text else None
    except Exception:  # noqa: BLE001 - unreadable here means "no settings"; reading the tensors reports the damage
        return None
    if not isinstance(data, dict) or not {"max_sigma", "T", "schedule", "eps"} <= set(data):
        return None
    return {k: data[k] for k in ("max_sigma", "T", "schedule", "eps")} | {"arch": data.get("arch")}


def load_sde_restorer(
    path: str | Path,
    preset: str = "auto",
    daclip_path: str | Path | None = None,
    *,
    daclip_with_text: bool = False,
    T: int | None = None,
) -> SDERestorer:
    """An :class:`SDERestorer` from a network checkpoint (and DA-CLIP for universal restoration).

    ``T`` overrides the preset's number of SDE steps (rarely needed: it must match training).
    """
    path = Path(path)
    net, arch, cfg = build_noise_net(read_checkpoint(path))
    trained = trained_sde_settings(path) if preset in ("auto", TRAINED_PRESET) else None
    if trained is not None:
        name, p = TRAINED_PRESET, trained
    elif preset == TRAINED_PRESET:
        raise InputError(f"{path.name} holds no SDE settings of gendeg train irsde; choose its task preset")
    else:
        name = resolve_preset(preset, arch, path.name)
        p = TASK_PRESETS[name]
    sde = IRSDE.create(p["max_sigma"], T or p["T"], p["schedule"], p["eps"])
    daclip = None
    if arch == "daclip-unet":
        if daclip_path is None:
            raise InputError(
                f"{path.name} is a DA-CLIP universal-restoration network: it needs the DA-CLIP controller "
                "(daclip_ViT-B-32.pt for universal-ir, wild-daclip_ViT-L-14.pt for wild-ir) as the 'daclip' file"
            )
        daclip = build_daclip(read_checkpoint(daclip_path), with_text=daclip_with_text)
        emb = daclip.clip.visual.cfg.embed_dim
        if cfg.get("context_dim") and cfg["context_dim"] != emb:
            raise WeightsError(
                f"{Path(daclip_path).name} gives {emb}-d embeddings but {path.name} expects {cfg['context_dim']}-d: "
                "use the DA-CLIP file that belongs to this network (ViT-B/32 -> 512, ViT-L/14 -> 768)"
            )
    elif daclip_path is not None:
        raise InputError(f"{path.name} is a {arch} network, which takes no DA-CLIP file; set 'daclip' to none")
    info = {"file": path.name, "arch": arch, "config": cfg, "preset": name, "max_sigma": p["max_sigma"], "T": sde.T}
    if daclip_path is not None:
        info["daclip_file"] = Path(daclip_path).name
        info["daclip_path"] = str(daclip_path)
    return SDERestorer(net, arch, sde, name, daclip, info)


def ensure_daclip_text(restorer: SDERestorer) -> DaCLIP:
    """The restorer's DA-CLIP with its text tower, re-reading the DA-CLIP file once if it was loaded without."""
    daclip = restorer.daclip
    if daclip is None:
        raise InputError("this restorer has no DA-CLIP: load a universal-ir/wild-ir network with its 'daclip' file")
    if not daclip.clip.has_text:
        path = restorer.info.get("daclip_path")
        if not path:
            raise InputError("DA-CLIP was loaded without its text tower and its file is unknown; reload it")
        full = build_daclip(read_checkpoint(path), with_text=True)
        if not full.clip.has_text:
            raise WeightsError(f"{Path(path).name} holds no text tower ('clip.token_embedding.*'); use the official DA-CLIP file")
        restorer.daclip = daclip = full
    return daclip


def convert_to_safetensors(src: str | Path, dst: str | Path | None = None) -> Path:
    """Write the tensors of an official checkpoint as ``.safetensors`` (beside it by default); returns the path.

    Only the weights are kept (an optimizer state in the pickle is dropped); DA-CLIP's duplicate
    ``visual.*`` alias of ``clip.visual.*`` is stored once. The write is atomic.
    """
    from safetensors.torch import save_file

    src = Path(src)
    dst = Path(dst) if dst is not None else src.with_suffix(".safetensors")
    sd = read_checkpoint(src)
    if any(k.startswith("clip.visual.") for k in sd):
        sd = {k: v for k, v in sd.items() if not (k.startswith("visual.") and f"clip.{k}" in sd)}
    sd = {k: v.detach().contiguous().clone() for k, v in sd.items()}
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    save_file(sd, str(tmp), metadata={"format": "pt", "source": src.name})
    tmp.replace(dst)
    return dst

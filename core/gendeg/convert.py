"""Read GenDeg checkpoints and convert the official layout into ours (once, cached).

Three sources are accepted:

1. The official PyTorch-Lightning ``.ckpt`` (LDM key layout, InstructPix2Pix on SD 1.5):
   ``model.diffusion_model.*`` (UNet, 8 input channels), ``model_ema.diffusion_model<no dots>``
   (its EMA copy), ``first_stage_model.*`` (VAE), ``cond_stage_model.transformer.*`` (CLIP
   ViT-L/14 text encoder), ``stats_proj.{weight,bias}`` (``Linear(129→77)``) and
   ``cc_projection.{weight,bias}`` (``Linear(770→768)``). The Stable Diffusion parts are
   converted with diffusers' own single-file utilities (``convert_ldm_unet_checkpoint``,
   ``convert_ldm_vae_checkpoint``, ``convert_ldm_clip_checkpoint``); only the EMA
   selection, the 8-channel check and the two projections are ours.
2. One ``.safetensors`` of our layout (what conversion writes): keys ``unet.*``, ``vae.*``,
   ``text_encoder.*`` (diffusers / transformers names), ``stats_proj.*``, ``cc_projection.*``,
   plus JSON configs in the file's metadata (``gendeg_format``, ``unet_config``,
   ``vae_config``, ``text_config``, ``ema``).
3. A diffusers folder (``model_index.json``; ``unet/``, ``vae/``, ``text_encoder/``,
   ``tokenizer/``) with ``gendeg_projections.safetensors`` holding the two projections.

The tokenizer (CLIP BPE ``vocab.json`` + ``merges.txt``) is never fetched: it comes from a
``tokenizer/`` folder next to the checkpoint or from ``models/gendeg/clip/<folder>``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import WeightsError
from ..io import atomic_path
from ..weights import LIGHTNING_GLOBALS, load_pickle, load_safetensors
from ..weights.safe_load import find_state_dict

log = logging.getLogger("gendeg")

FORMAT_VERSION = "1"
CONVERTED_SUFFIX = ".gendeg.safetensors"
PROJECTIONS_FILE = "gendeg_projections.safetensors"

LDM_UNET = "model.diffusion_model."
LDM_EMA = "model_ema."
LDM_VAE = "first_stage_model."
LDM_CLIP = "cond_stage_model.transformer."

#: The official GenDeg generator config (configs/generate.yaml): SD 1.5 UNet with 8 inputs.
OFFICIAL_UNET_PARAMS: dict[str, Any] = {
    "in_channels": 8,
    "out_channels": 4,
    "model_channels": 320,
    "attention_resolutions": [4, 2, 1],
    "num_res_blocks": 2,
    "channel_mult": [1, 2, 4, 4],
    "num_heads": 8,
    "use_spatial_transformer": True,
    "transformer_depth": 1,
    "context_dim": 768,
    "legacy": False,
}
OFFICIAL_VAE_DDCONFIG: dict[str, Any] = {
    "double_z": True,
    "z_channels": 4,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [],
    "dropout": 0.0,
}
SCALE_FACTOR = 0.18215


@dataclass
class GenDegWeights:
    """Everything needed to build a GenDeg model, in diffusers / transformers names."""

    unet: dict[str, torch.Tensor]
    vae: dict[str, torch.Tensor]
    text_encoder: dict[str, torch.Tensor]
    projections: dict[str, torch.Tensor]  # stats_proj.weight/bias, cc_projection.weight/bias
    unet_config: dict[str, Any]
    vae_config: dict[str, Any]
    text_config: dict[str, Any]
    ema: bool = True
    info: dict[str, Any] = field(default_factory=dict)


# --- checking the family -------------------------------------------------------------


def check_official_state_dict(sd: dict[str, torch.Tensor], name: str = "checkpoint") -> None:
    """Raise :class:`WeightsError` unless ``sd`` is a GenDeg generator in the LDM layout."""
    conv_in = sd.get(LDM_UNET + "input_blocks.0.0.weight")
    if conv_in is None:
        hint = ""
        if any(k.startswith(("unet.", "down_blocks.", "conv_in.")) for k in sd):
            hint = " (it looks like a diffusers UNet: give the diffusers folder or our .gendeg.safetensors instead)"
        elif any(k.startswith(("encoders.", "intro.")) for k in sd):
            hint = " (it looks like a NAFNet: load it with the GenDeg structure-correction node instead)"
        raise WeightsError(
            f"{name}: not a GenDeg / Stable Diffusion checkpoint: no '{LDM_UNET}input_blocks.0.0.weight'{hint}"
        )
    if conv_in.ndim != 4 or conv_in.shape[1] != 8:
        raise WeightsError(
            f"{name}: the UNet takes {conv_in.shape[1]} input channels; GenDeg's takes 8 (noisy latent + clean "
            "image latent). This is a plain Stable Diffusion checkpoint, not GenDeg."
        )
    missing = [k for k in ("stats_proj.weight", "stats_proj.bias", "cc_projection.weight", "cc_projection.bias") if k not in sd]
    if missing:
        raise WeightsError(
            f"{name}: missing {', '.join(missing)}. An 8-channel UNet without GenDeg's intensity projections is an "
            "InstructPix2Pix checkpoint, not GenDeg."
        )
    for prefix, what in ((LDM_VAE, "VAE"), (LDM_CLIP, "CLIP text encoder")):
        if not any(k.startswith(prefix) for k in sd):
            raise WeightsError(f"{name}: has no {what} weights ('{prefix}*'); the checkpoint is incomplete")
    check_projections(
        {k: sd[k] for k in ("stats_proj.weight", "stats_proj.bias", "cc_projection.weight", "cc_projection.bias")}, name
    )


def check_projections(proj: dict[str, torch.Tensor], name: str = "checkpoint") -> None:
    """Shapes: ``stats_proj`` Linear(129 → L), ``cc_projection`` Linear(D+2 → D)."""
    need = ("stats_proj.weight", "stats_proj.bias", "cc_projection.weight", "cc_projection.bias")
    missing = [k for k in need if k not in proj]
    if missing:
        raise WeightsError(f"{name}: missing GenDeg projection tensors {', '.join(missing)}")
    sw, cw = proj["stats_proj.weight"], proj["cc_projection.weight"]
    if sw.ndim != 2 or sw.shape[1] != 129:
        raise WeightsError(f"{name}: stats_proj.weight has shape {tuple(sw.shape)}; expected [77, 129]")
    if cw.ndim != 2 or cw.shape[1] != cw.shape[0] + 2:
        raise WeightsError(f"{name}: cc_projection.weight has shape {tuple(cw.shape)}; expected [768, 770]")


# --- config inference ---------------------------------------------------------------


def infer_ldm_config(sd: dict[str, torch.Tensor], num_heads: int = 8) -> dict[str, Any]:
    """An LDM ``original_config`` mapping for diffusers' converters, from tensor shapes.

    For the official checkpoint this reproduces ``configs/generate.yaml``; it also covers
    smaller models of the same family. ``num_heads`` cannot be seen in the weights (SD 1.x: 8).
    """
    conv_in = sd[LDM_UNET + "input_blocks.0.0.weight"]
    model_channels = int(conv_in.shape[0])
    # levels: input blocks holding a resnet ('in_layers') grouped by their output channels
    level_channels: list[int] = []
    blocks_with_res: dict[int, int] = {}
    downsample_ids: list[int] = []
    attn_ids: set[int] = set()
    for k, v in sd.items():
        if not k.startswith(LDM_UNET + "input_blocks."):
            continue
        parts = k[len(LDM_UNET) :].split(".")
        bid = int(parts[1])
        if parts[2:4] == ["0", "out_layers"] and parts[4] == "3" and parts[-1] == "weight":
            blocks_with_res[bid] = int(v.shape[0])
        if parts[2:4] == ["0", "op"]:
            downsample_ids.append(bid)
        if parts[2] == "1":
            attn_ids.add(bid)
    downsample_ids = sorted(set(downsample_ids))
    num_levels = len(downsample_ids) + 1
    first_level_blocks = [b for b in blocks_with_res if b < (downsample_ids[0] if downsample_ids else 10**9)]
    num_res_blocks = len(first_level_blocks)
    stride = num_res_blocks + 1
    for level in range(num_levels):
        bid = level * stride + 1
        if bid not in blocks_with_res:
            raise WeightsError(f"checkpoint: UNet input block {bid} is missing; the checkpoint is incomplete")
        level_channels.append(blocks_with_res[bid])
    channel_mult = [c // model_channels for c in level_channels]
    attention_resolutions = []
    for level in range(num_levels):
        if any((level * stride + 1 + j) in attn_ids for j in range(num_res_blocks)):
            attention_resolutions.append(2**level)
    ctx_key = next((k for k in sd if k.startswith(LDM_UNET) and k.endswith("attn2.to_k.weight")), None)
    context_dim = int(sd[ctx_key].shape[1]) if ctx_key else None
    depth_ids = {
        int(k.split("transformer_blocks.")[1].split(".")[0])
        for k in sd
        if k.startswith(LDM_UNET + "input_blocks.") and "transformer_blocks." in k
    }
    unet_params = {
        "in_channels": int(conv_in.shape[1]),
        "out_channels": int(sd[LDM_UNET + "out.2.weight"].shape[0]),
        "model_channels": model_channels,
        "attention_resolutions": attention_resolutions,
        "num_res_blocks": num_res_blocks,
        "channel_mult": channel_mult,
        "num_heads": num_heads,
        "use_spatial_transformer": True,
        "transformer_depth": (max(depth_ids) + 1) if depth_ids else 1,
        "context_dim": context_dim,
        "legacy": False,
    }
    # VAE
    enc_in = sd[LDM_VAE + "encoder.conv_in.weight"]
    ch = int(enc_in.shape[0])
    vae_levels = sorted({int(k.split(".")[3]) for k in sd if k.startswith(LDM_VAE + "encoder.down.")})
    vae_mult = [int(sd[f"{LDM_VAE}encoder.down.{i}.block.0.conv2.weight"].shape[0]) // ch for i in vae_levels]
    vae_blocks = len({k.split(".")[5] for k in sd if k.startswith(LDM_VAE + "encoder.down.0.block.")})
    ddconfig = {
        "double_z": True,
        "z_channels": int(sd[LDM_VAE + "post_quant_conv.weight"].shape[1]),
        "resolution": 256,
        "in_channels": int(enc_in.shape[1]),
        "out_ch": int(sd[LDM_VAE + "decoder.conv_out.weight"].shape[0]),
        "ch": ch,
        "ch_mult": vae_mult,
        "num_res_blocks": vae_blocks,
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    return {
        "model": {
            "params": {
                "scale_factor": SCALE_FACTOR,
                "unet_config": {"params": unet_params},
                "first_stage_config": {"params": {"embed_dim": ddconfig["z_channels"], "ddconfig": ddconfig}},
            }
        }
    }


def infer_clip_text_config(text_sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """CLIP text config (transformers ``CLIPTextConfig`` kwargs) from converted tensor shapes.

    OpenAI CLIP ViT-L/14 text tower: 12 layers, width 768, 12 heads (width / 64), quick-GELU.
    """
    tok = text_sd["text_model.embeddings.token_embedding.weight"]
    pos = text_sd["text_model.embeddings.position_embedding.weight"]
    hidden = int(tok.shape[1])
    layers = len({k.split(".")[3] for k in text_sd if k.startswith("text_model.encoder.layers.")})
    inter = int(text_sd["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0])
    return {
        "vocab_size": int(tok.shape[0]),
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, hidden // 64),
        "max_position_embeddings": int(pos.shape[0]),
        "hidden_act": "quick_gelu",
        "projection_dim": hidden,
        "bos_token_id": 49406 if tok.shape[0] == 49408 else 0,
        "eos_token_id": 49407 if tok.shape[0] == 49408 else 2,
        "pad_token_id": 1,
    }


# --- conversion ------------------------------------------------------------------------


def select_unet_weights(sd: dict[str, torch.Tensor], ema: bool = True) -> tuple[dict[str, torch.Tensor], bool]:
    """The UNet tensors under ``model.diffusion_model.*``, taken from the EMA copy when asked.

    The Lightning EMA stores each parameter as ``model_ema.`` + its name after ``model.``
    with the dots removed. Returns (tensors keyed ``model.diffusion_model.*``, EMA used).
    Buffers that are not parameters (none in SD's UNet) keep their raw value.
    """
    raw = {k: v for k, v in sd.items() if k.startswith(LDM_UNET)}
    if not ema:
        return raw, False
    out, found = {}, 0
    for k, v in raw.items():
        flat = LDM_EMA + "".join(k.split(".")[1:])
        if flat in sd:
            out[k] = sd[flat]
            found += 1
        else:
            out[k] = v
    if found == 0:
        log.warning("GenDeg: the checkpoint has no EMA weights ('model_ema.*'); using the raw UNet")
        return raw, False
    if found < len(raw):
        missing = [k for k in raw if LDM_EMA + "".join(k.split(".")[1:]) not in sd]
        raise WeightsError(
            f"checkpoint: the EMA copy lacks {len(missing)} of {len(raw)} UNet tensors (first: {missing[0]}); "
            "the file is incomplete. Choose the raw UNet (ema off) or re-download it."
        )
    return out, True


def convert_official(sd: dict[str, torch.Tensor], *, ema: bool = True, name: str = "checkpoint", num_heads: int = 8) -> GenDegWeights:
    """Official LDM-layout state dict -> :class:`GenDegWeights` (diffusers names)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401 - checks diffusers is usable
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )

    check_official_state_dict(sd, name)
    original_config = infer_ldm_config(sd, num_heads=num_heads)
    unet_part, ema_used = select_unet_weights(sd, ema)
    unet_config = create_unet_diffusers_config_from_ldm(original_config, unet_part)
    unet_config["sample_size"] = 32 if unet_config.get("sample_size", 64) < 8 else unet_config["sample_size"]
    unet_sd = convert_ldm_unet_checkpoint(unet_part, unet_config)
    vae_part = {k: v for k, v in sd.items() if k.startswith(LDM_VAE)}
    vae_config = create_vae_diffusers_config_from_ldm(original_config, vae_part)
    vae_sd = convert_ldm_vae_checkpoint(vae_part, vae_config)
    clip_part = {k: v for k, v in sd.items() if k.startswith(LDM_CLIP)}
    text_sd = convert_ldm_clip_checkpoint(clip_part)
    text_sd = {("text_model." + k if not k.startswith("text_model.") else k): v for k, v in text_sd.items()}
    text_sd.pop("text_model.embeddings.position_ids", None)
    projections = {k: sd[k] for k in ("stats_proj.weight", "stats_proj.bias", "cc_projection.weight", "cc_projection.bias")}
    return GenDegWeights(
        unet=unet_sd,
        vae=vae_sd,
        text_encoder=text_sd,
        projections=projections,
        unet_config=_jsonable(unet_config),
        vae_config=_jsonable(vae_config),
        text_config=infer_clip_text_config(text_sd),
        ema=ema_used,
        info={"source_format": "lightning-ckpt"},
    )


def _jsonable(cfg: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(cfg, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def save_converted(weights: GenDegWeights, path: str | Path, extra: dict[str, str] | None = None) -> Path:
    """Write our single-file layout (atomically); returns the path. ``extra``: more metadata (text values)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for prefix, part in (("unet.", weights.unet), ("vae.", weights.vae), ("text_encoder.", weights.text_encoder)):
        for k, v in part.items():
            tensors[prefix + k] = v.detach().contiguous()
    for k, v in weights.projections.items():
        tensors[k] = v.detach().contiguous()
    meta = {
        "gendeg_format": FORMAT_VERSION,
        "unet_config": json.dumps(weights.unet_config),
        "vae_config": json.dumps(weights.vae_config),
        "text_config": json.dumps(weights.text_config),
        "ema": "true" if weights.ema else "false",
    }
    meta = {**(extra or {}), **meta}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - any parse error is a bad file
        raise WeightsError(f"{Path(path).name}: not a readable safetensors file ({exc})") from exc


def load_converted(path: str | Path) -> GenDegWeights:
    """Read our single-file layout (see module doc)."""
    path = Path(path)
    meta = read_metadata(path)
    if meta.get("gendeg_lora"):
        raise WeightsError(f"{path.name} is a GenDeg LoRA, not a whole model: load its base GenDeg as the checkpoint "
                           "and choose this file as lora_name (GenDeg Model Loader)")
    if meta.get("gendeg_format") != FORMAT_VERSION:
        raise WeightsError(f"{path.name}: not a GenDeg file of our layout (no 'gendeg_format' metadata)")
    sd = load_safetensors(path)
    parts: dict[str, dict[str, torch.Tensor]] = {"unet.": {}, "vae.": {}, "text_encoder.": {}}
    proj: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        for prefix, part in parts.items():
            if k.startswith(prefix):
                part[k[len(prefix) :]] = v
                break
        else:
            proj[k] = v
    check_projections(proj, path.name)
    for prefix, part in parts.items():
        if not part:
            raise WeightsError(f"{path.name}: has no '{prefix}*' tensors; the file is incomplete, convert it again")
    return GenDegWeights(
        unet=parts["unet."],
        vae=parts["vae."],
        text_encoder=parts["text_encoder."],
        projections=proj,
        unet_config=json.loads(meta["unet_config"]),
        vae_config=json.loads(meta["vae_config"]),
        text_config=json.loads(meta["text_config"]),
        ema=meta.get("ema") == "true",
        info={"source_format": "gendeg-safetensors", **_phrases(meta)},
    )


def _phrases(meta: dict[str, str]) -> dict[str, Any]:
    """``{"phrases": {type: phrase}}`` of a fine-tuned model (``gendeg train gendeg``), else nothing."""
    try:
        phrases = json.loads(meta.get("phrases", "{}"))
    except ValueError:
        return {}
    return {"phrases": phrases} if isinstance(phrases, dict) and phrases else {}


def converted_path_for(checkpoint: str | Path, ema: bool) -> Path:
    """Where the converted file of ``checkpoint`` goes (next to it; ``.raw`` for the raw UNet)."""
    p = Path(checkpoint)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(stem + ("" if ema else ".raw") + CONVERTED_SUFFIX)


def read_checkpoint(path: str | Path, *, ema: bool = True, cache: bool = True) -> GenDegWeights:
    """Load GenDeg weights from a Lightning ``.ckpt``, our ``.safetensors`` or a diffusers folder.

    The official ``.ckpt`` is converted once: the result is written next to it as
    ``<name>.gendeg.safetensors`` (``<name>.raw.gendeg.safetensors`` for the raw UNet) and
    read from there next time (when the checkpoint is newer, it is converted again).
    """
    path = Path(path)
    if path.is_dir():
        return read_diffusers_folder(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".safetensors":
        meta = read_metadata(path)
        if meta.get("gendeg_lora"):
            return load_converted(path)  # says what the file is and how to use it
        if meta.get("gendeg_format"):
            if (meta.get("ema") == "true") != ema:
                have, want = ("EMA", "raw") if meta.get("ema") == "true" else ("raw", "EMA")
                raise WeightsError(
                    f"{path.name} holds the {have} UNet but the {want} one was asked for; choose unet_weights="
                    f"{'ema' if have == 'EMA' else 'raw'}, or load the original .ckpt (it has both)"
                )
            return load_converted(path)
        sd = load_safetensors(path)
    else:
        cached = converted_path_for(path, ema)
        if cache and cached.is_file() and cached.stat().st_mtime >= path.stat().st_mtime:
            return load_converted(cached)
        obj = load_pickle(path, LIGHTNING_GLOBALS)
        sd = find_state_dict(obj, keys=("state_dict",))
    weights = convert_official(sd, ema=ema, name=path.name)
    if cache and path.suffix.lower() != ".safetensors":
        target = converted_path_for(path, ema)
        try:
            save_converted(weights, target)
            log.info("GenDeg: converted %s -> %s", path.name, target.name)
        except OSError as exc:  # a read-only folder only costs converting again next time
            log.warning("GenDeg: could not write %s (%s); converting on every load", target, exc)
    return weights


def read_diffusers_folder(folder: str | Path) -> GenDegWeights:
    """A diffusers folder (``unet/``, ``vae/``, ``text_encoder/``) plus ``gendeg_projections.safetensors``."""
    folder = Path(folder)
    parts = {}
    configs = {}
    for sub in ("unet", "vae", "text_encoder"):
        d = folder / sub
        cfg = d / "config.json"
        if not cfg.is_file():
            raise WeightsError(f"{folder.name}: no {sub}/config.json; a GenDeg diffusers folder needs unet/, vae/, text_encoder/")
        configs[sub] = {k: v for k, v in json.loads(cfg.read_text()).items() if not k.startswith("_")}
        files = sorted(d.glob("*.safetensors"))
        if not files:
            raise WeightsError(f"{folder.name}/{sub}: no .safetensors weights (pickled .bin files are not read here)")
        sd: dict[str, torch.Tensor] = {}
        for f in files:
            sd.update(load_safetensors(f))
        parts[sub] = sd
    parts["text_encoder"] = {
        (k if k.startswith("text_model.") else "text_model." + k): v for k, v in parts["text_encoder"].items()
    }
    parts["text_encoder"].pop("text_model.embeddings.position_ids", None)
    proj_file = folder / PROJECTIONS_FILE
    if not proj_file.is_file():
        raise WeightsError(
            f"{folder.name}: no {PROJECTIONS_FILE} (GenDeg's stats_proj and cc_projection); without it this is an "
            "InstructPix2Pix folder, not GenDeg"
        )
    proj = load_safetensors(proj_file)
    check_projections(proj, proj_file.name)
    text_cfg = configs["text_encoder"]
    keep = set(infer_clip_text_config(parts["text_encoder"]).keys())
    text_cfg = {k: v for k, v in text_cfg.items() if k in keep}
    return GenDegWeights(
        unet=parts["unet"],
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        projections=proj,
        unet_config=configs["unet"],
        vae_config=configs["vae"],
        text_config=text_cfg,
        ema=True,
        info={"source_format": "diffusers-folder"},
    )

"""Load DriftRec score networks: the official Lightning checkpoints and the pack's safetensors.

Accepted files:

* the official PyTorch-Lightning ``.ckpt`` of ``ScoreModel`` (sp-uhh/driftrec): NCSN++ weights
  under ``state_dict`` with keys ``backbone.<name>``, the torch_ema state under ``ema``
  (``shadow_params``: one tensor per network parameter in registration order,
  ``output_layer`` first, including the frozen Fourier ``all_modules.0.W``) and the training
  arguments under ``hyper_parameters`` (``sde_name``, ``gamma``, ``sigma_min``, ``sigma_max``,
  ``t_eps``, ``nf``, ``ch_mult``, ``num_res_blocks``). Read with ``weights_only=True`` and the
  Lightning allow-list, then converted once to ``<name>.driftrec.safetensors`` (EMA) or
  ``<name>.raw.driftrec.safetensors`` (raw weights) next to it;
* the pack's own safetensors (that conversion, or ``gendeg train driftrec``'s export): NCSN++
  keys without prefix and JSON metadata ``gendeg.driftrec`` with the network and SDE settings;
* any other safetensors holding NCSN++ keys (with or without ``backbone.``): the network size
  is read from the tensor shapes and the SDE is the official default (OUVE, gamma 1,
  sigma 0.01..1) unless one is chosen.

EMA weights are the default (the official enhance script samples with the raw weights
unless given ``--ema``; the paper's results use the EMA).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, WeightsError
from ..io import atomic_path
from ..weights import LIGHTNING_GLOBALS, key_mismatch, load_pickle, load_safetensors
from .driftrec_sde import SDE_NAMES, DriftSDE, make_sde
from .nets.ncsnpp import DEFAULT_CONFIG, NCSNpp

log = logging.getLogger("gendeg")

ARCH = "driftrec-ncsnpp"
META_KEY = "gendeg.driftrec"
FORMAT_VERSION = "1"
CONVERTED_SUFFIX = ".driftrec.safetensors"
PREFIX = "backbone."
WEIGHTS = ("ema", "raw")
SDE_CHOICES = ("auto", *SDE_NAMES)

#: The official SDE of the D2KF2K JPEG model (README "Best D2KF2K run") and its training t_eps.
DEFAULT_SDE: dict[str, Any] = {"name": "ouve", "gamma": 1.0, "sigma_min": 0.01, "sigma_max": 1.0}
DEFAULT_T_EPS = 0.01


@dataclass
class DriftRecRestorer:
    """What ``GenDegDriftRecLoader`` outputs (``DRIFTREC_MODEL``): the score network and its SDE."""

    net: NCSNpp
    sde: DriftSDE
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.net.config)


# --- recognising files --------------------------------------------------------------------


def _sample_keys(sd: Mapping[str, Any], n: int = 4) -> str:
    keys = list(sd)[:n]
    return ", ".join(keys) + (", ..." if len(sd) > n else "")


def _family_hint(sd: Mapping[str, Any]) -> str:
    """Why a state dict is not DriftRec, as advice (empty when it is nothing we know)."""
    keys = set(sd)
    if "init_conv.weight" in keys or ("intro.weight" in keys and "time_mlp.1.weight" in keys):
        return "it is an IR-SDE / Refusion / DA-CLIP noise network: load it with GenDeg IR-SDE Loader"
    if any(k.startswith(("model.diffusion_model.", "model_ema.")) for k in keys):
        return "it is a GenDeg / Stable-Diffusion checkpoint: load it with GenDeg Model Loader"
    if any(k.startswith(("visual_control.", "clip.visual.")) for k in keys):
        return "it is the DA-CLIP controller: give it to GenDeg IR-SDE Loader as the 'daclip' file"
    if "intro.weight" in keys or any(k.startswith(("conv_first.", "layers.0.", "m_head.", "head.")) for k in keys):
        return "it looks like a feed-forward restorer: load it with GenDeg Restorer Loader"
    return ""


def _not_driftrec(name: str, sd: Mapping[str, Any]) -> WeightsError:
    hint = _family_hint(sd)
    if hint:
        return WeightsError(f"{name} is not a DriftRec score network: {hint}")
    return WeightsError(
        f"{name} is not a DriftRec checkpoint (expected NCSN++ keys 'output_layer.weight' and 'all_modules.0.W', "
        f"optionally prefixed 'backbone.'; found {_sample_keys(sd)})"
    )


def strip_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """NCSN++ keys without the Lightning ``backbone.`` prefix (other entries dropped when it is present)."""
    if any(k.startswith(PREFIX) for k in sd):
        return {k[len(PREFIX):]: v for k, v in sd.items() if k.startswith(PREFIX)}
    return dict(sd)


def is_ncsnpp(sd: Mapping[str, torch.Tensor]) -> bool:
    return "output_layer.weight" in sd and "all_modules.1.weight" in sd


# --- network size from the tensors --------------------------------------------------------


def _module_kind(sd: Mapping[str, torch.Tensor], i: int) -> str:
    pre = f"all_modules.{i}."
    if f"{pre}NIN_0.W" in sd:
        return "attn"
    if f"{pre}Conv_1.weight" in sd and f"{pre}GroupNorm_0.weight" in sd:
        return "res"
    if f"{pre}Conv_0.weight" in sd:
        return "combine"
    w = sd.get(f"{pre}weight")
    if w is not None:
        return "norm" if w.ndim == 1 else "conv"
    return "missing"


def infer_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """NCSN++ constructor arguments read from an (unprefixed) state dict's keys and shapes.

    Attention placement is expressed with the nominal ``image_size`` 256 (``attn_resolutions``
    lists ``256 / 2**level`` for every level that has attention).
    """
    if not is_ncsnpp(sd) or "all_modules.0.W" not in sd:
        raise WeightsError("not a noise-conditional NCSN++ state dict (needs output_layer.* and the Fourier all_modules.0.W)")
    out_ch, in_ch = (int(v) for v in sd["output_layer.weight"].shape[:2])
    nf = int(sd["all_modules.0.W"].shape[0])
    n = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"all_modules\.(\d+)\.", k)))
    kinds = [_module_kind(sd, i) for i in range(4, n)]
    # down path: per level [res (attn)] x nrb, then (res, combine) except on the last level
    levels: list[dict[str, Any]] = [{"res": [], "attn": False}]
    pos = 0
    while pos < len(kinds):
        if kinds[pos] == "combine":
            levels[-1]["res"].pop()  # the block before a combine is the down-sampling one
            levels.append({"res": [], "attn": False})
        elif kinds[pos] == "res":
            levels[-1]["res"].append(4 + pos)
        elif kinds[pos] == "attn":
            levels[-1]["attn"] = True
        elif kinds[pos] in ("norm", "conv"):
            break
        pos += 1
    # the last level's list also holds the middle (res, attn, res) and the first up blocks: cut by count
    nrb = len(levels[0]["res"])
    if nrb < 1 or any(len(lv["res"]) < nrb for lv in levels):
        raise WeightsError("NCSN++ state dict with an unexpected module layout (cannot tell the residual blocks per level)")
    ch_mult = [int(sd[f"all_modules.{lv['res'][0]}.Conv_0.weight"].shape[0]) // nf for lv in levels]
    # attention of the last level: look only inside its own res blocks
    last = levels[-1]
    first_last, end_last = last["res"][0], last["res"][nrb - 1]
    last["attn"] = any(_module_kind(sd, i) == "attn" for i in range(first_last, end_last + 2)) if nrb else False
    attn_levels = [i for i, lv in enumerate(levels) if lv["attn"]]
    return {**DEFAULT_CONFIG, "in_channels": in_ch, "out_channels": out_ch, "nf": nf, "ch_mult": ch_mult,
            "num_res_blocks": nrb, "image_size": 256, "attn_resolutions": [256 // 2**i for i in attn_levels]}


def build_net(sd: Mapping[str, torch.Tensor], config: Mapping[str, Any], name: str = "checkpoint") -> NCSNpp:
    """An NCSN++ with ``config`` and the weights ``sd`` (strict: every key, every shape)."""
    try:
        with torch.device("meta"):
            net = NCSNpp(**config)
    except TypeError as exc:
        raise WeightsError(f"{name}: unusable network settings {dict(config)} ({exc})") from exc
    _check_shapes(net, sd, name)
    result = net.load_state_dict(dict(sd), strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        parts = key_mismatch(result.missing_keys, result.unexpected_keys)
        raise WeightsError(f"{name}: keys do not match an NCSN++ with {_short(config)}: {'; '.join(parts)}. "
                           "Is the file truncated or another model?")
    net.all_modules[0].W.requires_grad_(False)
    return net.float().eval().requires_grad_(False)


def _check_shapes(net: torch.nn.Module, sd: Mapping[str, torch.Tensor], name: str) -> None:
    own = net.state_dict()
    for k, v in sd.items():
        if k in own and tuple(own[k].shape) != tuple(v.shape):
            raise WeightsError(f"{name}: {k} has shape {tuple(v.shape)} but the network expects {tuple(own[k].shape)}; "
                               "the file's network settings differ from the ones read from it (or it is damaged)")


def _short(cfg: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={cfg[k]}" for k in ("nf", "ch_mult", "num_res_blocks", "attn_resolutions") if k in cfg)


# --- the official Lightning checkpoint ----------------------------------------------------


def _hparams(obj: Mapping[str, Any]) -> dict[str, Any]:
    hp = obj.get("hyper_parameters") or {}
    if not isinstance(hp, Mapping):
        return {}
    inner = hp.get("__state__", hp)  # an inert AttributeDict keeps its state
    return dict(inner) if isinstance(inner, Mapping) else {}


def sde_from_hparams(hp: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The SDE settings of an official run (defaults where the file does not say)."""
    sde_name = str(hp.get("sde_name", hp.get("sde", DEFAULT_SDE["name"]))).lower()
    if sde_name not in SDE_NAMES:
        raise WeightsError(f"{name} was trained with the {sde_name!r} SDE; only {', '.join(SDE_NAMES)} are supported")
    if hp.get("linear_schedule"):
        raise WeightsError(f"{name} uses the OUVE SDE with a linear noise schedule, which is not supported (only the "
                           "exponential schedule of the paper)")
    return {"name": sde_name, "gamma": float(hp.get("gamma", DEFAULT_SDE["gamma"])),
            "sigma_min": float(hp.get("sigma_min", DEFAULT_SDE["sigma_min"])),
            "sigma_max": float(hp.get("sigma_max", DEFAULT_SDE["sigma_max"]))}


def _net_from_hparams(hp: Mapping[str, Any], sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    cfg = infer_config(sd)
    for key in ("nf", "num_res_blocks"):
        if key in hp:
            cfg[key] = int(hp[key])
    if "ch_mult" in hp:
        cfg["ch_mult"] = [int(m) for m in hp["ch_mult"]]
    return cfg


def ema_weights(ema: Any, raw: Mapping[str, torch.Tensor], config: Mapping[str, Any], name: str) -> dict[str, torch.Tensor]:
    """The torch_ema shadow list as a state dict, matched to the parameters in registration order."""
    shadow = ema.get("shadow_params") if isinstance(ema, Mapping) else None
    if not isinstance(shadow, (list, tuple)) or not all(isinstance(t, torch.Tensor) for t in shadow):
        raise WeightsError(f"{name} has no EMA weights (no 'ema.shadow_params' list); load it with weights=raw")
    with torch.device("meta"):
        net = NCSNpp(**config)
    params = list(net.named_parameters())
    if len(shadow) == len(params):
        names = [n for n, _ in params]
    else:
        trainable = [n for n, p in params if p.requires_grad]
        if len(shadow) != len(trainable):
            raise WeightsError(f"{name}: the EMA holds {len(shadow)} tensors but the network has {len(params)} parameters; "
                               "the checkpoint does not belong to this network layout (load it with weights=raw)")
        names = trainable  # an EMA over trainable parameters only: the frozen Fourier W comes from the raw weights
    out = dict(raw)
    for n, t in zip(names, shadow, strict=True):
        if n in raw and tuple(raw[n].shape) != tuple(t.shape):
            raise WeightsError(f"{name}: EMA tensor for {n} has shape {tuple(t.shape)}, expected {tuple(raw[n].shape)}")
        out[n] = t
    return out


def read_official(obj: Any, name: str, weights: str = "ema") -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(state dict, net config, sde config, info)`` from a loaded official checkpoint object."""
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{name} is not a checkpoint dictionary")
    sd_all = obj.get("state_dict")
    if not isinstance(sd_all, Mapping):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and is_ncsnpp(strip_prefix(tensors)):
            sd_all = tensors
        else:
            raise _not_driftrec(name, tensors or obj)
    hp = _hparams(obj)
    if hp.get("discriminative_mode") or (any(k.startswith(PREFIX) for k in sd_all) and
                                         f"{PREFIX}output_layer.weight" in sd_all and f"{PREFIX}all_modules.0.W" not in sd_all):
        raise WeightsError(f"{name} is DriftRec's regression baseline (DiscriminativeModel, no noise conditioning), not the "
                           "score model this sampler needs")
    sd = strip_prefix(sd_all)
    if not is_ncsnpp(sd):
        raise _not_driftrec(name, sd_all)
    config = _net_from_hparams(hp, sd)
    if weights == "ema":
        sd = ema_weights(obj.get("ema"), sd, config, name)
    sde = sde_from_hparams(hp, name)
    info = {"source_format": "lightning-ckpt", "t_eps": float(hp.get("t_eps", DEFAULT_T_EPS)),
            "sde_n": int(hp["sde_n"]) if "sde_n" in hp else None}
    return sd, config, sde, info


# --- the pack's safetensors ---------------------------------------------------------------


def save_driftrec(path: str | Path, sd: Mapping[str, torch.Tensor], config: Mapping[str, Any], sde: Mapping[str, Any],
                  weights: str = "ema", extra: Mapping[str, Any] | None = None) -> Path:
    """Write NCSN++ weights with their settings as the pack's DriftRec safetensors (atomic)."""
    from safetensors.torch import save_file

    meta = {"format": "pt", META_KEY: json.dumps({"format": FORMAT_VERSION, "arch": ARCH, "net": dict(config),
                                                   "sde": dict(sde), "weights": weights, **dict(extra or {})}, sort_keys=True)}
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_metadata(path: str | Path) -> dict[str, Any] | None:
    """The ``gendeg.driftrec`` metadata of a safetensors file (None when it has none)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{Path(path).name}: not a readable safetensors file ({exc}); re-download or re-convert it") from exc
    text = meta.get(META_KEY)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise WeightsError(f"{Path(path).name}: damaged DriftRec metadata ({exc})") from exc
    return data if isinstance(data, dict) else None


def converted_path_for(checkpoint: str | Path, weights: str) -> Path:
    """Where the safetensors twin of an official checkpoint goes (``.raw`` for the raw weights)."""
    p = Path(checkpoint)
    return p.with_name(p.stem + ("" if weights == "ema" else ".raw") + CONVERTED_SUFFIX)


def read_weights(path: str | Path, weights: str = "ema", *, cache: bool = True
                 ) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
    """``(state dict, net config, sde config or None, info)`` of any accepted file (see the module doc)."""
    if weights not in WEIGHTS:
        raise InputError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    if path.suffix.lower() == ".safetensors":
        meta = read_metadata(path)
        sd = load_safetensors(path)
        if meta is not None:
            have = meta.get("weights", "ema")
            if have != weights and meta.get("source_format") == "lightning-ckpt":
                raise WeightsError(f"{path.name} holds the {have.upper() if have == 'ema' else have} weights but {weights} "
                                   f"was asked for; choose weights={have}, or load the original .ckpt (it has both)")
            info = {k: v for k, v in meta.items() if k not in ("net", "sde")}
            return sd, dict(meta["net"]), dict(meta["sde"]), info
        sd = strip_prefix(sd)
        if not is_ncsnpp(sd):
            raise _not_driftrec(path.name, sd)
        return sd, infer_config(sd), None, {"source_format": "safetensors"}
    cached = converted_path_for(path, weights)
    if cache and cached.is_file() and cached.stat().st_mtime >= path.stat().st_mtime:
        return read_weights(cached, weights, cache=False)
    obj = load_pickle(path, LIGHTNING_GLOBALS)
    sd, config, sde, info = read_official(obj, path.name, weights)
    info["source"] = path.name
    if cache:
        try:
            save_driftrec(cached, sd, config, sde, weights, {**info, "source_format": "lightning-ckpt"})
            log.info("DriftRec: converted %s -> %s", path.name, cached.name)
        except OSError as exc:  # a read-only folder only costs converting again next time
            log.warning("DriftRec: could not write %s (%s); converting on every load", cached, exc)
    return sd, config, sde, info


def load_driftrec(path: str | Path, weights: str = "ema", sde: str = "auto", *, cache: bool = True) -> DriftRecRestorer:
    """A :class:`DriftRecRestorer` from any accepted file.

    ``sde``: ``auto`` (the file's settings, else OUVE with the official parameters) or
    ``ouve`` / ``cosve`` with the official parameters (gamma 1, sigma 0.01..1), overriding the file.
    """
    if sde not in SDE_CHOICES:
        raise InputError(f"sde must be one of {', '.join(SDE_CHOICES)}, got {sde!r}")
    path = Path(path)
    sd, config, sde_cfg, info = read_weights(path, weights, cache=cache)
    if sde != "auto" and (sde_cfg or {}).get("name") != sde:
        sde_cfg = {**DEFAULT_SDE, "name": sde}  # a different process than the file's: the official parameters
    sde_cfg = sde_cfg or dict(DEFAULT_SDE)
    net = build_net(sd, config, path.name)
    process = make_sde(sde_cfg["name"], sde_cfg.get("gamma", 1.0), sde_cfg.get("sigma_min", 0.01), sde_cfg.get("sigma_max", 1.0))
    info = {**info, "file": path.name, "arch": ARCH, "config": dict(config), "sde": process.config(), "weights": weights,
            "parameters": sum(p.numel() for p in net.parameters())}
    return DriftRecRestorer(net, process, info)

"""GenDeg LoRA files: adapters on the UNet's attention layers plus the two intensity projections.

A LoRA is what ``gendeg train gendeg`` writes in its default mode: a safetensors file with

* ``unet.<module>.lora_A.weight`` / ``unet.<module>.lora_B.weight``: peft LoRA adapters
  (diffusers' ``UNet2DConditionModel.add_adapter``) on the attention projections named in
  the metadata (``to_q``, ``to_k``, ``to_v``, ``to_out.0``); the update of a layer ``W`` is
  ``(alpha / rank) · B·A``;
* ``stats_proj.*`` and ``cc_projection.*``: the whole fine-tuned projections (they are
  always trained and small, 0.6 M values);
* metadata ``gendeg_lora`` (format version), ``lora`` (rank, alpha, targets as JSON),
  ``phrases`` (type -> phrase of the types it learnt) and ``presets`` (their light /
  medium / heavy (μ, σ) measured on the training pairs), plus the training record.

:func:`apply_lora` puts one on a loaded :class:`GenDegModel` (adapters unmerged, so outputs
equal the trained network's exactly); ``strength`` scales the adapters' update and moves
the projections from the base's towards the LoRA's linearly (1 = as trained).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, WeightsError
from ..io import atomic_path
from ..weights.safe_load import encode_metadata

FORMAT_VERSION = "1"
ADAPTER = "gendeg_lora"
PROJECTION_KEYS = ("stats_proj.weight", "stats_proj.bias", "cc_projection.weight", "cc_projection.bias")
_ADAPTER_NAME = re.compile(r"\.(lora_[AB])\.[^.]+\.")


def add_adapter(unet: torch.nn.Module, rank: int, alpha: float, targets: list[str], dropout: float = 0.0,
                name: str = ADAPTER, seed: int | None = None) -> None:
    """Add a LoRA adapter (peft, through diffusers) to ``unet``'s ``targets``; A gaussian, B zero (no change yet)."""
    try:
        from peft import LoraConfig
    except ImportError as exc:
        raise InputError("GenDeg LoRA needs peft: pip install 'comfyui-gendeg[train]' (or pip install peft)") from exc
    config = LoraConfig(r=int(rank), lora_alpha=float(alpha), lora_dropout=float(dropout), target_modules=list(targets),
                        init_lora_weights="gaussian")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            unet.add_adapter(config, adapter_name=name)
        except ValueError as exc:  # peft: no module matched
            raise InputError(f"LoRA targets {targets}: {exc}") from exc


def adapter_keys(state: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, str]:
    """``{file key: module key}`` of the LoRA tensors in ``state`` (a UNet's state dict with an adapter)."""
    out = {}
    for k in state:
        if ".lora_A." in k or ".lora_B." in k:
            out[prefix + _ADAPTER_NAME.sub(r".\1.", k)] = k
    return out


def save_lora(path: str | Path, tensors: Mapping[str, torch.Tensor], lora: Mapping[str, Any],
              metadata: Mapping[str, Any]) -> Path:
    """Write a GenDeg LoRA (``tensors`` in file keys, see the module doc) atomically."""
    from safetensors.torch import save_file

    missing = [k for k in PROJECTION_KEYS if k not in tensors]
    if missing or not any(k.startswith("unet.") for k in tensors):
        raise ValueError(f"a GenDeg LoRA needs UNet adapters and the projections (missing {missing})")
    meta = {"format": "pt", "gendeg_lora": FORMAT_VERSION, "lora": json.dumps(dict(lora), sort_keys=True)}
    meta.update(encode_metadata(metadata))
    out = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(Path(path)) as tmp:
        save_file(out, str(tmp), metadata=meta)
    return Path(path)


def read_lora_metadata(path: str | Path) -> dict[str, Any] | None:
    """The decoded metadata of a GenDeg LoRA, or None when ``path`` is not one (any other file)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception:  # noqa: BLE001 - not a safetensors file at all
        return None
    if "gendeg_lora" not in meta:
        return None
    from ..weights import decode_metadata

    out = decode_metadata(meta)
    out["gendeg_lora"] = str(meta["gendeg_lora"])
    return out


def is_lora(path: str | Path) -> bool:
    p = Path(path)
    return p.is_file() and p.suffix.lower() == ".safetensors" and read_lora_metadata(p) is not None


def read_lora(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a GenDeg LoRA file (:class:`WeightsError` for anything else)."""
    from ..weights import load_safetensors

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such LoRA file")
    meta = read_lora_metadata(path)
    if meta is None:
        raise WeightsError(f"{path.name}: not a GenDeg LoRA (no 'gendeg_lora' metadata); LoRAs come from gendeg train gendeg")
    if meta["gendeg_lora"] != FORMAT_VERSION:
        raise WeightsError(f"{path.name}: GenDeg LoRA format {meta['gendeg_lora']} is not known to this version "
                           f"(it reads {FORMAT_VERSION}); update the pack")
    lora = meta.get("lora")
    if not isinstance(lora, dict) or not {"rank", "alpha", "targets"} <= set(lora):
        raise WeightsError(f"{path.name}: LoRA metadata lacks rank/alpha/targets; the file is damaged")
    return load_safetensors(path), meta


@torch.no_grad()
def apply_lora(model: Any, path: str | Path, strength: float = 1.0) -> Any:
    """Put the LoRA at ``path`` on ``model`` (a :class:`GenDegModel`, changed in place and returned)."""
    path = Path(path)
    tensors, meta = read_lora(path)
    lora = meta["lora"]
    unet = model.unet
    if getattr(unet, "peft_config", None) and ADAPTER in unet.peft_config:
        raise InputError("this GenDeg model already carries a LoRA; load the base again to apply another")
    add_adapter(unet, int(lora["rank"]), float(lora["alpha"]), list(lora["targets"]))
    wanted = adapter_keys(unet.state_dict(), "unet.")
    have = {k for k in tensors if k.startswith("unet.")}
    if set(wanted) != have:
        extra, lack = sorted(have - set(wanted)), sorted(set(wanted) - have)
        unet.delete_adapters(ADAPTER)
        raise WeightsError(f"{path.name}: the LoRA does not fit this GenDeg UNet ({len(lack)} adapters missing, e.g. "
                           f"{lack[:1]}; {len(extra)} unknown, e.g. {extra[:1]}); it was trained on another base")
    params = dict(unet.named_parameters())
    for file_key, module_key in wanted.items():
        target = params[module_key]
        src = tensors[file_key]
        if src.shape != target.shape:
            unet.delete_adapters(ADAPTER)
            raise WeightsError(f"{path.name}: {file_key} has shape {tuple(src.shape)}, the UNet needs {tuple(target.shape)}")
        target.copy_(src.to(target.dtype))
    if strength != 1.0:
        unet.set_adapters([ADAPTER], weights=[float(strength)])
    for name in PROJECTION_KEYS:
        module, attr = name.split(".")
        base = getattr(getattr(model, module), attr)
        new = tensors[name].to(base.device, torch.float32)
        if new.shape != base.shape:
            raise WeightsError(f"{path.name}: {name} has shape {tuple(new.shape)}, the model needs {tuple(base.shape)}")
        base.copy_(base.float() + float(strength) * (new - base.float()))
    unet.requires_grad_(False)
    model.info.update({"lora": path.name, "lora_strength": float(strength), "phrases": meta.get("phrases", {})})
    return model

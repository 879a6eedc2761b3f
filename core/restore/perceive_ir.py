"""Perceive-IR restorer files: the official checkpoint, the pack's safetensors, the ``RESTORER``.

File layouts read:

* **Official** (``perceiveIR_3task.pth`` / ``perceiveIR_5task.pth``, a.k.a. ``AIO-3D.pth`` /
  ``AIO-5D.pth``; ``best_model.pth`` and full training checkpoints too): a pickle
  ``{"model": state_dict, "iteration": int, "config": {"model": {dim, blocks, heads,
  refinement_blocks}, ...}, ...}``, read with ``weights_only=True`` (optimizer and scheduler
  state are ignored). The state dict must fit the network exactly (strict: no missing, no
  unexpected key, every shape right). It is converted once to ``<name>.gendeg.safetensors``
  next to it and read from there afterwards (converted again when the ``.pth`` is newer).
* **Pack** (what that conversion and ``gendeg train restorer`` with ``arch: perceive_ir``
  write): a safetensors of the same state dict (the official parameter names) whose header
  holds ``gendeg.perceive_ir`` = the network config as JSON.

The DINOv2-base guidance network is not part of either file (the official checkpoint holds only
the restorer): it comes from a Hugging Face folder (``gendeg weights fetch dinov2-base``).

The result is a :class:`~.feedforward.Restorer` around a spandrel ``ImageModelDescriptor`` of
:class:`~.nets.perceive_ir.PerceiveIRRestorer`, so ``GenDegRestore`` runs it like any other
restorer (tiles on an 8-pixel grid). Each tile goes through the official test procedure
(replicate-pad to 8, DINOv2 of the padded tile, network, crop, clamp): with ``tile_size`` 0
or an image that fits in one tile this is exactly the official whole-image test
(``evaluate_stage2_adair``); larger images get DINOv2 guidance per tile, as the release's tiled
evaluator (``evaluate_stage2.restore_tiled``) does.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import WeightsError
from ..weights.safe_load import encode_metadata
from .nets.perceive_ir import (
    MULTIPLE,
    PerceiveIRConfig,
    PerceiveIRRestorer,
    build_perceive_ir,
    load_dino_guidance,
)

log = logging.getLogger("gendeg")

META_KEY = "gendeg.perceive_ir"
CONVERTED_SUFFIX = ".gendeg.safetensors"
ARCH_ID = "PerceiveIR"
#: Keys that only a Perceive-IR state dict has (used to recognise one).
SIGNATURE = ("cfe.projection.weight", "pgm.0.affine.0.weight", "embed.weight")


def looks_like_perceive_ir(sd: Mapping[str, Any]) -> bool:
    return all(k in sd for k in SIGNATURE)


def _count(sd: Mapping[str, Any], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def infer_config(sd: Mapping[str, torch.Tensor], name: str = "checkpoint") -> PerceiveIRConfig:
    """The network config of a Perceive-IR state dict, read from its tensor shapes."""
    if not looks_like_perceive_ir(sd):
        raise WeightsError(f"{name}: not a Perceive-IR state dict (it lacks {', '.join(k for k in SIGNATURE if k not in sd)})")
    dim = int(sd["embed.weight"].shape[0])
    blocks = [_count(sd, r"encoder1\.(\d+)\."), _count(sd, r"encoder2\.(\d+)\."), _count(sd, r"encoder3\.(\d+)\."),
              _count(sd, r"latent\.blocks\.(\d+)\.")]
    heads = []
    for key in ("encoder1.0.attention.temperature", "encoder2.0.attention.temperature", "encoder3.0.attention.temperature",
                "latent.blocks.0.attention.temperature"):
        if key not in sd:
            raise WeightsError(f"{name}: Perceive-IR state dict without {key}; the file is incomplete")
        heads.append(int(sd[key].shape[0]))
    semantic = int(sd["pgm.0.affine.0.weight"].shape[1]) - int(sd["cfe.projection.weight"].shape[0])
    return PerceiveIRConfig(dim, blocks, heads, _count(sd, r"refinement\.(\d+)\."), semantic)


def check_state_dict(sd: Mapping[str, torch.Tensor], config: PerceiveIRConfig, name: str = "checkpoint") -> None:
    """Strict fit: the keys and shapes of ``sd`` are exactly those of the network for ``config``."""
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in build_perceive_ir(config).state_dict().items()}
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    wrong = [f"{k} {tuple(sd[k].shape)} (expected {want[k]})" for k in want if k in sd and tuple(sd[k].shape) != want[k]]
    if missing or unexpected or wrong:
        from ..weights import key_mismatch

        parts = key_mismatch(missing, unexpected)
        if wrong:
            parts.append(f"{len(wrong)} of the wrong shape (e.g. {wrong[0]})")
        raise WeightsError(f"{name}: the weights do not fit PerceiveIR({_describe(config)}): {'; '.join(parts)}. "
                           "The file is incomplete or of another network; use the released perceiveIR_3task.pth / "
                           "perceiveIR_5task.pth or a file written by gendeg train restorer")


def _describe(c: PerceiveIRConfig) -> str:
    return (f"dim={c.dim}, blocks={c.blocks}, heads={c.heads}, refinement_blocks={c.refinement_blocks}, "
            f"semantic_dim={c.semantic_dim}")


def read_official(path: str | Path) -> tuple[dict[str, torch.Tensor], PerceiveIRConfig, dict[str, Any]]:
    """(state dict, config, info) of an official checkpoint ``{model, iteration, config}`` (safe load, strict)."""
    from ..weights import load_pickle

    path = Path(path)
    obj = load_pickle(path)
    if not isinstance(obj, Mapping) or not isinstance(obj.get("model"), Mapping):
        hint = ""
        if isinstance(obj, Mapping) and isinstance(obj.get("prompt_learner"), Mapping):
            hint = " It is Perceive-IR's stage-1 quality-prompts file: load it with GenDegIQALoader (kind perceiver)."
        elif isinstance(obj, Mapping) and ("params" in obj or "params_ema" in obj or "state_dict" in obj):
            hint = " It is a BasicSR/Lightning checkpoint of another network: try GenDegRestorerLoader."
        raise WeightsError(f"{path.name}: not a Perceive-IR restorer checkpoint (expected a dict with 'model', "
                           f"'iteration' and 'config').{hint}")
    sd = {k.removeprefix("module."): v for k, v in obj["model"].items()}
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{path.name}: 'model' holds entries that are not tensors ({bad[:3]})")
    config = infer_config(sd, path.name)
    declared = obj.get("config", {}).get("model") if isinstance(obj.get("config"), Mapping) else None
    if isinstance(declared, Mapping):
        stated = {k: declared.get(k) for k in ("dim", "blocks", "heads", "refinement_blocks")}
        have = {"dim": config.dim, "blocks": config.blocks, "heads": config.heads, "refinement_blocks": config.refinement_blocks}
        if any(stated[k] is not None and (list(stated[k]) if isinstance(stated[k], (list, tuple)) else stated[k]) != have[k]
               for k in stated):
            raise WeightsError(f"{path.name}: its config says {stated} but its tensors are of {have}; the file is inconsistent")
    check_state_dict(sd, config, path.name)
    iteration = obj.get("iteration")
    info = {"source_format": "perceive-ir-official", "iteration": int(iteration) if isinstance(iteration, int) else None}
    return sd, config, info


def save_pack(path: str | Path, sd: Mapping[str, torch.Tensor], config: PerceiveIRConfig,
              extra: Mapping[str, Any] | None = None) -> Path:
    """Write the pack's layout: ``sd`` as safetensors with ``gendeg.perceive_ir`` (and ``extra``) in the header."""
    from safetensors.torch import save_file

    from ..io import atomic_path
    from ..weights.convert import prepare_tensors

    meta = {"format": "pt", META_KEY: json.dumps(config.to_dict(), sort_keys=True)}
    meta.update(encode_metadata(extra or {}))
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(prepare_tensors(sd), str(tmp), metadata=meta)
    return path


def read_pack(path: str | Path) -> tuple[dict[str, torch.Tensor], PerceiveIRConfig, dict[str, Any]]:
    """(state dict, config, info) of a safetensors in the pack's layout (config from the header or the shapes)."""
    from safetensors import safe_open

    from ..weights import load_safetensors

    path = Path(path)
    sd = load_safetensors(path)
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if META_KEY in meta:
        try:
            config = PerceiveIRConfig.from_dict(json.loads(meta[META_KEY]))
        except (ValueError, KeyError, TypeError) as exc:
            raise WeightsError(f"{path.name}: unreadable {META_KEY} header ({exc}); convert the checkpoint again") from exc
    elif looks_like_perceive_ir(sd):
        config = infer_config(sd, path.name)
    else:
        raise WeightsError(f"{path.name}: not a Perceive-IR restorer (no {META_KEY} header and no Perceive-IR tensors); "
                           "feed-forward nets spandrel detects go to GenDegRestorerLoader")
    check_state_dict(sd, config, path.name)
    info: dict[str, Any] = {"source_format": "gendeg-safetensors"}
    if "converted_from" in meta:
        info["converted_from"] = meta["converted_from"]
    if str(meta.get("iteration", "")).isdigit():
        info["iteration"] = int(meta["iteration"])
    return sd, config, info


def converted_path_for(checkpoint: str | Path) -> Path:
    p = Path(checkpoint)
    return p.with_name(p.stem + CONVERTED_SUFFIX)


def read_weights(path: str | Path, *, cache: bool = True) -> tuple[dict[str, torch.Tensor], PerceiveIRConfig, dict[str, Any]]:
    """Perceive-IR weights from an official ``.pth`` (converted once, see module doc) or a pack ``.safetensors``."""
    from ..weights.safe_load import PICKLE_SUFFIXES

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return read_pack(path)
    if suffix not in PICKLE_SUFFIXES:
        raise WeightsError(f"{path.name}: unknown checkpoint format {path.suffix!r}; expected the official .pth or a .safetensors")
    cached = converted_path_for(path)
    if cache and cached.is_file() and cached.stat().st_mtime >= path.stat().st_mtime:
        return read_pack(cached)
    sd, config, info = read_official(path)
    if cache:
        from ..weights.store import sha256_file

        extra = {"converted_from": path.name, "converted_from_sha256": sha256_file(path)}
        if info.get("iteration") is not None:
            extra["iteration"] = str(info["iteration"])
        try:
            save_pack(cached, sd, config, extra)
            log.info("[GenDeg] Perceive-IR: converted %s -> %s", path.name, cached.name)
        except OSError as exc:  # a read-only folder only costs converting again next time
            log.warning("[GenDeg] Perceive-IR: could not write %s (%s); converting on every load", cached, exc)
    return sd, config, info


def find_dinov2(name: str, folders: list[Path]) -> Path:
    """A DINOv2 folder: an absolute path, ``<folder>/<name>`` holding config.json, or a manifest id
    (its folder; a missing one raises ``MissingWeightError`` naming the fetch command)."""
    from ..errors import InputError
    from ..weights import resolve, safe_join

    name = (name or "").strip()
    if not name:
        raise InputError("dinov2: give a DINOv2 folder name (under the restore models folder) or an absolute path")
    if Path(name).is_absolute():
        return Path(name)
    for d in folders:
        cand = safe_join(d, name)
        if (cand / "config.json").is_file():
            return cand
    return resolve(name, folders).parent


# --- the RESTORER ------------------------------------------------------------------------


def _architecture() -> Any:
    from spandrel import Architecture

    class _PerceiveIRArch(Architecture):
        """Marks the descriptor; never registered with spandrel (DINOv2 is needed to build it)."""

        def __init__(self) -> None:
            super().__init__(id=ARCH_ID, name="Perceive-IR", detect=looks_like_perceive_ir)

        def load(self, state_dict: Any) -> Any:  # pragma: no cover - not in any registry
            raise WeightsError("Perceive-IR needs its DINOv2 guidance: load it with GenDegPerceiveIRLoader")

    return _PerceiveIRArch()


def build_restorer(sd: Mapping[str, torch.Tensor], config: PerceiveIRConfig, dinov2: str | Path, name: str = "perceive_ir",
                   *, dtype: str = "auto", device: torch.device | str = "cpu", info: Mapping[str, Any] | None = None):
    """A ``Restorer`` (spandrel descriptor of :class:`PerceiveIRRestorer`) from weights and a DINOv2 folder."""
    from spandrel import ImageModelDescriptor, SizeRequirements

    from .feedforward import Restorer, resolve_dtype

    check_state_dict(sd, config, name)
    torch_dtype = resolve_dtype(dtype, device, supports_half=False, supports_bf16=True, arch="Perceive-IR")
    guidance = load_dino_guidance(dinov2)
    if guidance.hidden_size != config.semantic_dim:
        raise WeightsError(f"{Path(dinov2).name}: DINOv2 of hidden size {guidance.hidden_size}, but {name} was trained on "
                           f"{config.semantic_dim}-wide features; use DINOv2-base (`gendeg weights fetch dinov2-base`)")
    net = build_perceive_ir(config)
    net.load_state_dict(dict(sd), strict=True)
    model = PerceiveIRRestorer(net, guidance).eval()
    desc = ImageModelDescriptor(
        model, model.state_dict(), _architecture(), purpose="Restoration", tags=[f"{config.dim}dim"],
        supports_half=False, supports_bfloat16=True, scale=1, input_channels=3, output_channels=3,
        size_requirements=SizeRequirements(), call_fn=lambda m, x: m(x),
    )
    desc.eval()
    if torch_dtype != torch.float32:
        desc.to(torch_dtype)
    meta = {
        "architecture": ARCH_ID,
        "purpose": "Restoration",
        "tags": list(desc.tags),
        "in_channels": 3,
        "out_channels": 3,
        "parameters": sum(p.numel() for p in net.parameters()),
        "guidance_parameters": sum(p.numel() for p in guidance.parameters()),
        "dtype": str(torch_dtype).removeprefix("torch."),
        "supports_fp16": False,
        "supports_bf16": True,
        "multiple_of": 1,
        "minimum": 0,
        "square": False,
        "tiling": "supported",
        "tile_grid": MULTIPLE,
        "config": config.to_dict(),
        "dinov2": str(dinov2),
        **dict(info or {}),
    }
    return Restorer(desc, name, torch_dtype, meta)


def load_perceive_ir(path: str | Path, dinov2: str | Path, *, dtype: str = "auto", device: torch.device | str = "cpu",
                     cache: bool = True):
    """Load an official checkpoint or a pack safetensors with a DINOv2 folder as a ``Restorer``."""
    path = Path(path)
    sd, config, info = read_weights(path, cache=cache)
    return build_restorer(sd, config, dinov2, path.name, dtype=dtype, device=device, info=info)


__all__ = [
    "ARCH_ID",
    "META_KEY",
    "build_restorer",
    "check_state_dict",
    "converted_path_for",
    "find_dinov2",
    "infer_config",
    "load_perceive_ir",
    "looks_like_perceive_ir",
    "read_official",
    "read_pack",
    "read_weights",
    "save_pack",
]

"""Convert a checkpoint to ``.safetensors`` (once), so later loads never unpickle anything.

The source is read with the safe loader (:func:`~.safe_load.load_state_dict`: a pickle
with ``weights_only=True`` and the allow-lists given), its tensors are detached, made
contiguous and de-aliased (tensors sharing storage are cloned, as safetensors stores
each tensor's own bytes), and written beside the source through a temporary file and an
atomic rename. The source file is only read, never modified.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from ..errors import WeightsError
from ..io import atomic_path
from .safe_load import load_state_dict
from .store import sha256_file


def prepare_tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, detached, contiguous tensors with no two sharing storage (safetensors' requirements)."""
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            continue
        t = value.detach().to("cpu")
        if t.layout != torch.strided:
            t = t.to_dense()
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in seen:
            t = t.clone(memory_format=torch.contiguous_format)
        elif ptr is not None:
            seen.add(ptr)
        t = t.contiguous()
        if t.numel() and t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()  # a view into a larger buffer: store only its own bytes
        out[str(key)] = t
    return out


def convert_to_safetensors(
    path: str | Path,
    allowed: Iterable[str] = (),
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
) -> tuple[Path, str]:
    """Write the tensors of checkpoint ``path`` to ``out`` (default: same name, ``.safetensors``).

    ``allowed`` names the allow-lists the pickle needs (``"numpy"``, ``"lightning"``, or full
    global names). Returns ``(new path, its sha256)``. Refuses to replace an existing file
    unless ``overwrite``.
    """
    src = Path(path)
    if src.suffix.lower() == ".safetensors":
        raise WeightsError(f"{src.name} is already a safetensors file; nothing to convert")
    dst = Path(out) if out is not None else src.with_suffix(".safetensors")
    if dst.resolve() == src.resolve():
        raise WeightsError(f"{dst}: the output would replace the source; choose another name")
    if dst.exists() and not overwrite:
        raise WeightsError(f"{dst} already exists; delete it or pass --force to replace it")
    state_dict = load_state_dict(src, allowed)
    tensors = prepare_tensors(state_dict)
    if not tensors:
        raise WeightsError(f"{src.name}: no tensors to convert")
    from safetensors.torch import save_file

    metadata = {"format": "pt", "converted_from": src.name, "converted_from_sha256": sha256_file(src)}
    with atomic_path(dst) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return dst, sha256_file(dst)

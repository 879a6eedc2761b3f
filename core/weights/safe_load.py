"""Load checkpoints without running code: safetensors, or pickles with ``weights_only=True``.

A pickle may only reconstruct the types ``torch.load(weights_only=True)`` allows plus an
explicit allow-list. Some official checkpoints store harmless extras (numpy scalars in
DA-CLIP's ``.pt``, PyTorch-Lightning callback state in GenDeg's ``.ckpt``); the names a
loader passes in ``inert`` are mapped to an inert placeholder class that only keeps its
state as a dict, so nothing of theirs is ever imported or executed. Anything else is
refused with :class:`UnsafeCheckpointError` naming the offending global.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import UnsafeCheckpointError, WeightsError

PICKLE_SUFFIXES = {".pth", ".pt", ".ckpt", ".bin", ".pkl"}

#: numpy globals that old checkpoints pickle for scalars and small arrays (data, not code).
NUMPY_GLOBALS = (
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.ndarray",
    "numpy.dtype",
)

#: PyTorch-Lightning / omegaconf objects found beside ``state_dict`` in Lightning ``.ckpt`` files.
LIGHTNING_GLOBALS = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
    "lightning_fabric.utilities.data.AttributeDict",
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata",
    "omegaconf.nodes.AnyNode",
    "typing.Any",
    "builtins.dict",
    "builtins.list",
    "builtins.int",
    "builtins.float",
    "builtins.str",
    "builtins.set",
    "collections.defaultdict",
)


class InertObject(dict):
    """Placeholder for an allow-listed foreign class: keeps pickled state as plain data, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # called by REDUCE / NEWOBJ with any args
        super().__init__()
        if args:
            self["__args__"] = args
        if kwargs:
            self["__kwargs__"] = kwargs

    def __setstate__(self, state: Any) -> None:
        self["__state__"] = state


def _numpy_global(name: str) -> Any | None:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return None
    module, _, attr = name.rpartition(".")
    try:
        import importlib

        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}.get(name)


def _safe_globals(allowed: Iterable[str]) -> list[Any]:
    out: list[Any] = []
    for name in allowed:
        if name.startswith("numpy."):
            obj = _numpy_global(name)
            if obj is not None:
                out.append((obj, name))
                continue
        out.append((InertObject, name))
    return out


def _numpy_dtype_classes() -> list[Any]:
    """numpy >= 1.25 pickles dtypes by their class (``numpy.dtypes.Float64DType``)."""
    try:
        import numpy.dtypes as nd
    except ImportError:  # pragma: no cover
        return []
    return [getattr(nd, n) for n in dir(nd) if n.endswith("DType")]


def load_pickle(path: str | Path, allowed: Iterable[str] = ()) -> Any:
    """``torch.load(path, weights_only=True)`` with ``allowed`` globals (see module doc).

    Raises :class:`UnsafeCheckpointError` when the pickle needs anything else.
    """
    path = Path(path)
    allowed = tuple(allowed)
    globs = _safe_globals(allowed)
    if any(a.startswith("numpy.") for a in allowed):
        globs += _numpy_dtype_classes()
    try:
        with torch.serialization.safe_globals(globs):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        m = re.search(r"GLOBAL ([\w.]+)", msg) or re.search(r"Unsupported global: ([\w.]+)", msg)
        culprit = m.group(1) if m else "an unknown global"
        raise UnsafeCheckpointError(
            f"{path.name}: refused to load: the pickle needs {culprit}, which is not on the allow-list. "
            "Pickles can run arbitrary code, so only plain tensors and known-harmless types are accepted. "
            "If you trust this file, convert it to safetensors in an environment you trust "
            "(or use the official checkpoint this pack expects)."
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise WeightsError(f"{path.name}: not a readable PyTorch checkpoint ({exc}); the file may be truncated or corrupt") from exc


def load_safetensors(path: str | Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Every tensor of a ``.safetensors`` file; a corrupt file gives a :class:`WeightsError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{Path(path).name}: not a readable safetensors file ({exc}); re-download or re-convert it") from exc


def find_state_dict(obj: Any, keys: Iterable[str] = ("state_dict", "params_ema", "params", "model", "module")) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a loaded checkpoint (common wrapper keys unwrapped once)."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in keys:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner:
                return find_state_dict(inner, keys)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise WeightsError("the checkpoint holds no tensors under any of the usual keys (state_dict, params_ema, params, model)")


def load_state_dict(path: str | Path, allowed: Iterable[str] = (), *, unwrap: bool = True) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint: safetensors directly; pickles safely (see :func:`load_pickle`).

    ``unwrap`` finds the tensor mapping inside wrapper dicts and strips a ``module.`` prefix
    left by DataParallel.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    if path.suffix.lower() == ".safetensors":
        sd = load_safetensors(path)
    elif path.suffix.lower() in PICKLE_SUFFIXES:
        obj = load_pickle(path, allowed)
        sd = find_state_dict(obj) if unwrap else obj
    else:
        raise WeightsError(f"{path.name}: unknown checkpoint format {path.suffix!r}; expected .safetensors, .pth, .pt, .ckpt or .bin")
    if unwrap and sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd

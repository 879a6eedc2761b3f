"""Load checkpoints without running code: safetensors, or pickles with ``weights_only=True``.

A pickle may only reconstruct the types ``torch.load(weights_only=True)`` allows plus an
explicit allow-list. Some official checkpoints store harmless extras (numpy scalars in
DA-CLIP's ``.pt``, PyTorch-Lightning callback state in GenDeg's ``.ckpt``). A loader names
the allow-lists it needs (:data:`ALLOW_LISTS`: ``"numpy"``, ``"lightning"``): numpy's
array/scalar reconstructors and plain builtins are the real (data-only) functions; every
other allowed foreign class is mapped to an inert placeholder (:class:`InertObject`) that
only keeps its pickled state as a dict, so nothing of theirs is ever imported or executed.
Anything else is refused with :class:`UnsafeCheckpointError` naming the offending global.
"""

from __future__ import annotations

import collections
import importlib
import json
import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
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

#: PyTorch-Lightning / omegaconf objects found beside ``state_dict`` in Lightning ``.ckpt`` files
#: (callback classes used as dict keys, hyper-parameter containers). They become inert
#: placeholders; the plain builtins / collections types are the real (harmless) ones.
LIGHTNING_GLOBALS = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "pytorch_lightning.callbacks.lr_monitor.LearningRateMonitor",
    "pytorch_lightning.callbacks.early_stopping.EarlyStopping",
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
    "lightning.pytorch.callbacks.lr_monitor.LearningRateMonitor",
    "lightning.pytorch.callbacks.early_stopping.EarlyStopping",
    "lightning_fabric.utilities.data.AttributeDict",
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata",
    "omegaconf.nodes.AnyNode",
    "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode",
    "omegaconf.nodes.BooleanNode",
    "omegaconf.nodes.EnumNode",
    "argparse.Namespace",
    "pathlib.PosixPath",
    "pathlib.WindowsPath",
    "pathlib._local.PosixPath",
    "pathlib._local.WindowsPath",
    "typing.Any",
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.int",
    "builtins.float",
    "builtins.str",
    "builtins.bool",
    "builtins.set",
    "builtins.frozenset",
    "collections.defaultdict",
)

#: Named allow-lists, as the command line's ``--allow`` and the manifest's ``allow`` name them.
ALLOW_LISTS: dict[str, tuple[str, ...]] = {"numpy": NUMPY_GLOBALS, "lightning": LIGHTNING_GLOBALS}

#: Harmless constructors that are mapped to themselves rather than to an inert placeholder.
_REAL_GLOBALS: dict[str, Any] = {
    "builtins.dict": dict,
    "builtins.list": list,
    "builtins.tuple": tuple,
    "builtins.int": int,
    "builtins.float": float,
    "builtins.str": str,
    "builtins.bool": bool,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "collections.defaultdict": collections.defaultdict,
    "collections.OrderedDict": collections.OrderedDict,
}


def allow_list(names: Iterable[str]) -> tuple[str, ...]:
    """Globals of the named allow-lists (``"numpy"``, ``"lightning"``); unknown names are an error."""
    out: list[str] = []
    for name in names:
        if name not in ALLOW_LISTS:
            raise WeightsError(f"unknown allow-list {name!r}; choose from {', '.join(sorted(ALLOW_LISTS))}")
        out.extend(ALLOW_LISTS[name])
    return tuple(dict.fromkeys(out))


class InertObject(dict):
    """Placeholder for an allow-listed foreign class: keeps pickled state as plain data, runs nothing.

    Each foreign global gets its own subclass (see :func:`inert_class`) so that two
    different foreign classes used as dict keys stay distinct; ``__gendeg_global__``
    names the class it stands for.
    """

    __gendeg_global__ = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # called by REDUCE / NEWOBJ with any args
        super().__init__()
        if args:
            self["__args__"] = args
        if kwargs:
            self["__kwargs__"] = kwargs

    def __setstate__(self, state: Any) -> None:
        self["__state__"] = state

    def __repr__(self) -> str:
        return f"<inert {self.__gendeg_global__} {dict.__repr__(self)}>"


_INERT_CLASSES: dict[str, type] = {}


def inert_class(name: str) -> type:
    """The inert placeholder class standing for the global ``name`` (one per name, cached)."""
    cls = _INERT_CLASSES.get(name)
    if cls is None:
        cls = type(f"Inert_{name.rpartition('.')[2]}", (InertObject,), {"__gendeg_global__": name})
        _INERT_CLASSES[name] = cls
    return cls


def _numpy_global(name: str) -> Any | None:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return None
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}.get(name)


def _safe_globals(allowed: Iterable[str]) -> list[Any]:
    out: list[Any] = []
    for name in allowed:
        if name in _REAL_GLOBALS:
            out.append((_REAL_GLOBALS[name], name))
            continue
        if name.startswith("numpy."):
            obj = _numpy_global(name)
            if obj is not None:
                out.append((obj, name))
                continue
        out.append((inert_class(name), name))
    return out


def _numpy_dtype_classes() -> list[Any]:
    """numpy >= 1.25 pickles dtypes by their class (``numpy.dtypes.Float64DType``)."""
    try:
        import numpy.dtypes as nd
    except ImportError:  # pragma: no cover
        return []
    return [getattr(nd, n) for n in dir(nd) if n.endswith("DType")]


#: Phrases of torch's weights-only unpickler that mean "this pickle wants something not allowed".
_UNSAFE_MARKERS = ("GLOBAL", "global", "allowlist", "unrecognized function", "Can only create new object", "Can only build")


_ALLOW_LIST_MODULES = {
    "numpy": "numpy",
    "pytorch_lightning": "lightning",
    "lightning": "lightning",
    "lightning_fabric": "lightning",
    "omegaconf": "lightning",
}


def _suggest_allow(culprit: str) -> str:
    list_name = next((name for name, names in ALLOW_LISTS.items() if culprit in names), None)
    list_name = list_name or _ALLOW_LIST_MODULES.get(culprit.split(".")[0])
    if list_name is None:
        return ""
    return (
        f" Such objects are expected in some official checkpoints: if this is the file you meant, "
        f"load it with the {list_name!r} allow-list (`gendeg weights convert FILE --allow {list_name}`)."
    )


def _check_header(path: Path) -> None:
    """A PyTorch checkpoint is a zip archive or a pickle (protocol 2-5); anything else is corrupt."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read ({exc})") from exc
    if head.startswith(b"PK") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        return
    what = "empty" if not head else f"starts with {head!r}"
    raise WeightsError(f"{path.name}: not a PyTorch checkpoint (the file is {what}); it may be truncated or corrupt, re-download it")


def load_pickle(path: str | Path, allowed: Iterable[str] = ()) -> Any:
    """``torch.load(path, weights_only=True)`` with ``allowed`` globals (see module doc).

    ``allowed`` holds full global names (``"numpy.dtype"``) or allow-list names
    (``"numpy"``, ``"lightning"``). Raises :class:`UnsafeCheckpointError` when the pickle
    needs anything else, :class:`WeightsError` when the file is truncated or corrupt.
    """
    path = Path(path)
    names: list[str] = []
    for a in allowed:
        names.extend(ALLOW_LISTS.get(a, (a,)))
    allowed = tuple(dict.fromkeys(names))
    globs = _safe_globals(allowed)
    if any(a.startswith("numpy.") for a in allowed):
        globs += _numpy_dtype_classes()
    _check_header(path)
    try:
        with torch.serialization.safe_globals(globs):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "Weights only load failed" not in msg and not any(marker in msg for marker in _UNSAFE_MARKERS):
            raise WeightsError(f"{path.name}: not a readable PyTorch checkpoint ({exc}); the file may be truncated or corrupt") from exc
        m = re.search(r"GLOBAL ([\w.]+)", msg) or re.search(r"Unsupported global: ([\w.]+)", msg)
        if m:
            need = f"the pickle needs {m.group(1)}, which is not on the allow-list"
            hint = _suggest_allow(m.group(1))
        else:
            reason = msg.split("WeightsUnpickler error:", 1)[-1].strip().split("\n\n")[0].strip() or "an unsupported construct"
            need = f"the pickle uses something the weights-only loader does not accept ({reason})"
            hint = ""
        raise UnsafeCheckpointError(
            f"{path.name}: refused to load: {need}. "
            "Pickles can run arbitrary code, so only plain tensors and known-harmless types are accepted."
            + hint
            + " If you trust this file, convert it to safetensors in an environment you trust "
            "(or use the official checkpoint this pack expects)."
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{path.name}: not a readable PyTorch checkpoint ({exc!r}); the file may be truncated or corrupt") from exc


def load_safetensors(path: str | Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Every tensor of a ``.safetensors`` file, each in memory of its own; a corrupt file gives a
    :class:`WeightsError`.

    safetensors' CPU tensors are views of the file mapped into memory, at unaligned addresses:
    a model built on them with ``load_state_dict(assign=True)`` would change if the file were
    rewritten (and crash if it were truncated) while the model is in use, and CPU kernels take
    other paths on unaligned weights (results differ in the last bits from the same weights
    loaded any other way). Each tensor is therefore copied once into memory torch allocates.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        mapped = load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{Path(path).name}: not a readable safetensors file ({exc}); re-download or re-convert it") from exc
    if torch.device(device).type != "cpu":
        return mapped
    try:
        return {k: mapped.pop(k).clone() for k in list(mapped)}  # each view released once copied
    except (OSError, RuntimeError) as exc:  # a read error of the mapped file surfaces here
        raise WeightsError(f"{Path(path).name}: could not read its tensors ({exc}); re-download or re-convert it") from exc


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


def key_mismatch(missing: Sequence[str], unexpected: Sequence[str]) -> list[str]:
    """Parts of a "keys do not match" message: how many keys are missing / unexpected, with examples."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    return parts


def encode_metadata(values: Mapping[str, Any]) -> dict[str, str]:
    """Values for a safetensors header (text only): strings as they are, everything else as JSON
    (keys sorted, so equal values give equal headers); :func:`decode_metadata` reads them back."""
    return {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in values.items()}


def decode_metadata(meta: Mapping[str, str]) -> dict[str, Any]:
    """A safetensors header's metadata with the values that are JSON decoded (the others kept as text)."""
    out: dict[str, Any] = {}
    for k, v in meta.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out

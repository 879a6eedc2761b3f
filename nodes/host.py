"""Host services: the few things that differ inside and outside ComfyUI.

Inside ComfyUI: ``comfy.utils.ProgressBar``, ``comfy.model_management`` (device, offload
device, interruption, freeing memory) and ``folder_paths`` (model, input, output and temp
folders). Outside it (``gendeg run``, ``gendeg studio``, tests): tqdm, a flag the runner
sets, a device chosen by ``--device`` (else CUDA, MPS, CPU), and folders from the
command line or environment (``GENDEG_MODELS_DIR``). ComfyUI is probed once, at import.

``core`` never calls this module; nodes read these services and pass plain values on.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.errors import Interrupted

log = logging.getLogger("gendeg")

try:  # ComfyUI puts its root on sys.path; these imports only succeed inside it.
    import comfy.model_management as _mm  # type: ignore[import-not-found]
    import comfy.utils as _comfy_utils  # type: ignore[import-not-found]
    import folder_paths as _folder_paths  # type: ignore[import-not-found]

    IN_COMFYUI = True
except ImportError:  # pragma: no cover - depends on the host
    _mm = _comfy_utils = _folder_paths = None
    IN_COMFYUI = False

#: Sub-folders of ``models/gendeg`` (inside ComfyUI) or of the models directory (outside).
MODEL_KINDS = ("gendeg", "restore", "quality", "sd", "clip")


@dataclass
class Settings:
    """What the headless runner decides; ignored inside ComfyUI where ComfyUI decides."""

    device: str | None = None
    models_dir: Path | None = None
    input_dir: Path = field(default_factory=lambda: Path("input"))
    output_dir: Path = field(default_factory=lambda: Path("output"))
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "comfyui-gendeg")
    """Previews only; outside the working folder so headless runs leave no litter."""
    shard: tuple[int, int] = (0, 1)
    """(index, count), 0-based index: folder-loading nodes keep every count-th item."""
    interrupt: threading.Event = field(default_factory=threading.Event)


SETTINGS = Settings()


# --- progress and interruption -------------------------------------------------------


def check_interrupted() -> None:
    """Raise :class:`Interrupted` if the user asked to stop."""
    if IN_COMFYUI:
        try:
            _mm.throw_exception_if_processing_interrupted()
        except Exception as exc:  # ComfyUI's InterruptProcessingException
            raise Interrupted("interrupted by the user") from exc
    elif SETTINGS.interrupt.is_set():
        raise Interrupted("interrupted by the user")


#: Listeners the headless runner / studio add to hear progress: ``fn(value, total)``.
PROGRESS_LISTENERS: list[Callable[[int, int], None]] = []


def progress(total: int, desc: str = "GenDeg") -> Callable[[int, int], None]:
    """A ``progress(i, n)`` callable for ``core``: updates the host's bar, checks interruption.

    ``i`` is the number of finished steps (0..n).
    """
    if IN_COMFYUI:
        bar = _comfy_utils.ProgressBar(total)

        def update(i: int, n: int) -> None:
            check_interrupted()
            bar.update_absolute(i, n)

        return update

    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, leave=False, disable=os.environ.get("GENDEG_NO_PROGRESS") == "1")

    def update(i: int, n: int) -> None:
        check_interrupted()
        if bar.total != n:
            bar.total = n
        bar.n = i
        bar.refresh()
        for listener in PROGRESS_LISTENERS:
            listener(i, n)
        if i >= n:
            bar.close()

    return update


# --- devices -------------------------------------------------------------------------


def torch_device() -> torch.device:
    """The device models compute on."""
    if IN_COMFYUI:
        return _mm.get_torch_device()
    if SETTINGS.device:
        return torch.device(SETTINGS.device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def offload_device() -> torch.device:
    """Where idle models wait (CPU unless ComfyUI says otherwise)."""
    if IN_COMFYUI:
        return _mm.unet_offload_device()
    return torch.device("cpu")


def free_memory() -> None:
    """Release cached accelerator memory (after an out-of-memory, or a big model moves off)."""
    if IN_COMFYUI:
        _mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def is_oom(exc: BaseException) -> bool:
    """True for an accelerator out-of-memory error (CUDA, MPS, ComfyUI's own)."""
    if IN_COMFYUI and hasattr(_mm, "OOM_EXCEPTION") and isinstance(exc, _mm.OOM_EXCEPTION):
        return True
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


# --- folders -------------------------------------------------------------------------


def models_dir() -> Path:
    """Root of this pack's model folders (``models/gendeg`` inside ComfyUI)."""
    if IN_COMFYUI:
        return Path(_folder_paths.models_dir) / "gendeg"
    if SETTINGS.models_dir is not None:
        return Path(SETTINGS.models_dir)
    env = os.environ.get("GENDEG_MODELS_DIR")
    return Path(env) if env else Path("models")


def model_search_dirs(kind: str) -> list[Path]:
    """Every folder a checkpoint of ``kind`` (one of :data:`MODEL_KINDS`) may be in."""
    if IN_COMFYUI:
        try:
            return [Path(p) for p in _folder_paths.get_folder_paths(f"gendeg_{kind}")]
        except Exception:  # noqa: BLE001 - not registered (older ComfyUI): fall through
            pass
    return [models_dir() / kind]


def list_models(kind: str, extensions: tuple[str, ...] = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")) -> list[str]:
    """File names (relative to their folder) of the checkpoints of ``kind``, for combo inputs."""
    names: set[str] = set()
    for folder in model_search_dirs(kind):
        if folder.is_dir():
            for path in folder.rglob("*"):
                if path.is_file() and path.suffix.lower() in extensions:
                    names.add(path.relative_to(folder).as_posix())
                elif path.is_dir() and (path / "model_index.json").is_file():
                    names.add(path.relative_to(folder).as_posix())  # a diffusers folder
    return sorted(names)


def input_dir() -> Path:
    return Path(_folder_paths.get_input_directory()) if IN_COMFYUI else Path(SETTINGS.input_dir)


def output_dir() -> Path:
    return Path(_folder_paths.get_output_directory()) if IN_COMFYUI else Path(SETTINGS.output_dir)


def temp_dir() -> Path:
    return Path(_folder_paths.get_temp_directory()) if IN_COMFYUI else Path(SETTINGS.temp_dir)


def shard() -> tuple[int, int]:
    """(index, count) of the slice of every folder this run processes; (0, 1) is everything."""
    return (0, 1) if IN_COMFYUI else SETTINGS.shard


def _register_comfy_model_folders() -> None:
    """Make ``models/gendeg/<kind>`` known to ComfyUI's ``folder_paths`` (and extra_model_paths)."""
    if not IN_COMFYUI:
        return
    exts = {".safetensors", ".pth", ".pt", ".ckpt", ".bin"}
    for kind in MODEL_KINDS:
        key = f"gendeg_{kind}"
        path = os.path.join(_folder_paths.models_dir, "gendeg", kind)
        if key in _folder_paths.folder_names_and_paths:
            paths, old_exts = _folder_paths.folder_names_and_paths[key]
            if path not in paths:
                paths.append(path)
            _folder_paths.folder_names_and_paths[key] = (paths, set(old_exts) | exts)
        else:
            _folder_paths.folder_names_and_paths[key] = ([path], exts)


_register_comfy_model_folders()

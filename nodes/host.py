"""Host services: the few things that differ inside and outside ComfyUI.

Inside ComfyUI: ``comfy.utils.ProgressBar``, ``comfy.model_management`` (device, offload
device, interruption, freeing memory, loading models through its memory manager with
``comfy.model_patcher.ModelPatcher``) and ``folder_paths`` (model, input, output and temp
folders). Outside it (``gendeg run``, ``gendeg studio``, tests): tqdm, a flag the runner
sets, a device chosen by ``--device`` (else CUDA, MPS, CPU), models moved to the device
for a run and back to the CPU after it (unless ``Settings.keep_models_loaded``), and
folders from the command line or environment (``GENDEG_MODELS_DIR``). ComfyUI is probed
once, at import.

``core`` never calls this module; nodes read these services and pass plain values on.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.errors import GenDegError, Interrupted, UnsafePathError
from ..core.weights.catalog import folder_key, known_files
from ..core.weights.manifest import WeightEntry

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


def _private_temp_dir() -> Path:
    """``<system temp>/comfyui-gendeg-<uid>``: per user, so nobody else can read or plant previews."""
    uid = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"comfyui-gendeg-{uid}"


def ensure_private_dir(path: Path) -> Path:
    """Make ``path`` (a folder only this user may use) or check an existing one; returns it.

    Created with mode 0700. An existing folder must be a real folder (not a link) owned by
    this user; group/other permission bits on it are removed (logged). Anything else raises
    :class:`UnsafePathError` saying what to do. Where there are no uids (Windows) the folder
    is only created.
    """
    path = Path(path)
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    if not hasattr(os, "getuid"):  # pragma: no cover - Windows: per-user temp folders already
        return path
    st = os.lstat(path)
    hint = "delete it, or pass --temp-dir with a folder of your own"
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(f"{path} is not a plain folder (a link or a file) and may not be ours; {hint}")
    if st.st_uid != os.getuid():
        raise UnsafePathError(f"{path} belongs to another user (uid {st.st_uid}); {hint}")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
        log.warning("GenDeg: %s was readable by others (mode %03o); made it private (700)", path, st.st_mode & 0o777)
    return path


@dataclass
class Settings:
    """What the headless runner decides; ignored inside ComfyUI where ComfyUI decides."""

    device: str | None = None
    models_dir: Path | None = None
    input_dir: Path = field(default_factory=lambda: Path("input"))
    output_dir: Path = field(default_factory=lambda: Path("output"))
    temp_dir: Path = field(default_factory=lambda: _private_temp_dir())
    """Previews only; outside the working folder so headless runs leave no litter."""
    shard: tuple[int, int] = (0, 1)
    """(index, count), 0-based index: folder-loading nodes keep every count-th item."""
    interrupt: threading.Event = field(default_factory=threading.Event)
    check_models_when_run: bool = False
    """Check that a loader's checkpoint exists when the loader runs, not when the prompt is
    validated (:func:`validate_model`). ``gendeg studio`` sets it: the editor shows a run-time
    error's message in full, but a validation error only as "rejected the value"."""
    compare_previews: bool = True
    """Save the before/after preview PNGs of the editor's comparison slider (``ui.compare_ui``).
    ``gendeg run`` and Ray workers turn it off: no editor shows them, and at dataset scale
    they cost 13 % of a synth-dataset pair's CPU time."""
    keep_models_loaded: bool = field(default_factory=lambda: os.environ.get("GENDEG_KEEP_MODELS_LOADED") == "1")
    """Leave models on the compute device between runs (repeated runs in one process: the
    studio, a long ``gendeg run``) instead of moving them back to the CPU after each use.
    Default: ``GENDEG_KEEP_MODELS_LOADED=1`` in the environment, else off."""


SETTINGS = Settings()


# --- progress and interruption -------------------------------------------------------


def check_interrupted() -> None:
    """Stop here if the user asked to stop.

    Inside ComfyUI this is ``comfy.model_management.throw_exception_if_processing_interrupted``
    itself: its ``InterruptProcessingException`` must reach ComfyUI's executor unchanged (that
    is how ComfyUI records a cancel as ``execution_interrupted`` instead of an error), so it is
    neither caught nor wrapped here. Outside ComfyUI: :class:`Interrupted` when the runner's
    flag is set.
    """
    if IN_COMFYUI:
        _mm.throw_exception_if_processing_interrupted()
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


# --- model placement (ComfyUI's memory manager inside ComfyUI) ---------------------------


class HostedModules(torch.nn.Module):
    """The torch modules of one loaded model, gathered under one ``nn.Module``.

    ComfyUI's ``ModelPatcher`` wants one module it can size, move and unload; the parts of
    our models (a diffusers UNet, a transformers encoder, a spandrel net, plain Linear
    layers) are registered here as children, so their parameters are shared, not copied.
    """

    def __init__(self, label: str, modules: Mapping[str, torch.nn.Module]) -> None:
        super().__init__()
        self.label = label
        self.parts = torch.nn.ModuleDict({k.replace(".", "_"): m for k, m in modules.items()})
        self.device: torch.device | None = None  # ModelPatcher keeps where it put the modules here

    def __repr__(self) -> str:
        return f"HostedModules({self.label!r}, {', '.join(self.parts)})"


_HOSTED_CLASSES: dict[str, type[HostedModules]] = {}


def _hosted_class(label: str) -> type[HostedModules]:
    """A subclass named after ``label`` (ComfyUI logs "Requested to load <class name>")."""
    words = "".join(ch if ch.isalnum() else " " for ch in label).split()
    name = "".join(w[:1].upper() + w[1:] for w in words) or "HostedModules"
    name = name if name[0].isalpha() else "Model" + name
    if name not in _HOSTED_CLASSES:
        _HOSTED_CLASSES[name] = type(name, (HostedModules,), {"__module__": __name__})
    return _HOSTED_CLASSES[name]


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module itself behind a ``torch.compile`` wrapper (same parameters)."""
    return getattr(module, "_orig_mod", module)


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers (what moving it to a device costs)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


class ModelHandle:
    """One model this pack loaded (its torch modules), placed on the compute device while in use.

    Inside ComfyUI the modules are wrapped once in a ``comfy.model_patcher.ModelPatcher``
    (kept here), so ComfyUI's memory manager loads them with ``load_models_gpu`` and unloads
    them when its own models (or ours) need the room, as for its own checkpoints. Outside
    ComfyUI :func:`use_on_device` moves them to :func:`torch_device` for a run and back to
    :func:`offload_device` after it. Get one with :func:`model_handle`.
    """

    def __init__(self, label: str, modules: Mapping[str, torch.nn.Module]) -> None:
        self.label = label
        self.modules = _hosted_class(label)(label, {k: _unwrap(m) for k, m in modules.items()})
        self.key = tuple((k, id(_unwrap(m))) for k, m in modules.items())
        self.patcher = None

    @property
    def size_bytes(self) -> int:
        """Parameters and buffers, in bytes, at their current dtype."""
        return module_bytes(self.modules)

    def comfy_patcher(self):  # noqa: ANN201 - comfy.model_patcher.ModelPatcher
        """The ``ModelPatcher`` ComfyUI manages this model through (made on first use)."""
        if self.patcher is None:
            import comfy.model_patcher  # type: ignore[import-not-found]

            self.patcher = comfy.model_patcher.ModelPatcher(
                self.modules, load_device=torch_device(), offload_device=offload_device(), size=self.size_bytes
            )
        return self.patcher

    def __repr__(self) -> str:
        return f"ModelHandle({self.label!r}, {self.size_bytes / 2**20:.1f} MiB)"


_HANDLES_ATTR = "_gendeg_model_handles"


def model_handle(owner: object, modules: Mapping[str, torch.nn.Module], label: str, key: str = "model") -> ModelHandle:
    """The :class:`ModelHandle` of ``modules`` (the torch parts of ``owner``), made once and kept on ``owner``.

    ``owner`` is the object a loader node returned (GENDEG_MODEL, RESTORER, ...); the handle
    lives as long as it does, so ComfyUI keeps managing the same ``ModelPatcher`` across runs.
    ``key`` names the handle when one owner has several independently loaded parts. A new
    handle is made when the modules are no longer the same objects.
    """
    handles = getattr(owner, _HANDLES_ATTR, None)
    if handles is None:
        handles = {}
        setattr(owner, _HANDLES_ATTR, handles)
    ident = tuple((k, id(_unwrap(m))) for k, m in modules.items())
    handle = handles.get(key)
    if handle is None or handle.key != ident:
        handle = handles[key] = ModelHandle(label, modules)
    return handle


def activation_bytes(pixels: int, bytes_per_pixel: float) -> int:
    """A caller's estimate of the working memory of one forward pass: pixels x bytes per pixel."""
    return int(max(0, pixels) * max(0.0, bytes_per_pixel))


@contextmanager
def use_on_device(*handles: ModelHandle, pixels: int = 0, bytes_per_pixel: float = 0.0) -> Iterator[torch.device]:
    """Place the models of ``handles`` on the compute device for the ``with`` block; yields that device.

    Memory estimate: the models' own size (parameters + buffers) plus ``pixels`` x
    ``bytes_per_pixel`` of activations (the caller knows its network: e.g. tile area x
    tile batch, and bytes per pixel of its widest layers).

    Inside ComfyUI: ``comfy.model_management.load_models_gpu`` with the activation part as
    ``memory_required`` (ComfyUI adds the weights from each ``ModelPatcher``'s size and frees
    room by unloading other models first); the models are loaded whole (plain torch modules
    cannot run partly offloaded) and stay loaded after the block until ComfyUI needs the
    memory. Outside ComfyUI: ``.to(torch_device())`` for the block and ``.to(offload_device())``
    after it, also on errors, unless ``SETTINGS.keep_models_loaded``.
    """
    memory = activation_bytes(pixels, bytes_per_pixel)
    if IN_COMFYUI:
        patchers = [h.comfy_patcher() for h in handles]
        if patchers:
            _mm.load_models_gpu(patchers, memory_required=memory, force_full_load=True)
        yield patchers[0].load_device if patchers else torch_device()
        return
    device = torch_device()
    log.debug("GenDeg: %s on %s (%.1f MiB weights + %.1f MiB activations)", ", ".join(h.label for h in handles), device,
              sum(h.size_bytes for h in handles) / 2**20, memory / 2**20)
    for h in handles:
        h.modules.to(device)
    try:
        yield device
    finally:
        if not SETTINGS.keep_models_loaded:
            off = offload_device()
            for h in handles:
                h.modules.to(off)
            if device.type != off.type:
                free_memory()


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
            return [Path(p) for p in _folder_paths.get_folder_paths(folder_key(kind))]
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


def model_choices(kind: str, accept: Callable[[WeightEntry], bool] | None = None) -> list[str]:
    """A loader's combo list: the files on disk plus the manifest's files for ``kind`` (even absent).

    Listing the known names keeps a workflow that names one valid in the editor and in
    ComfyUI's validation; running the loader then says where the file goes and how to get it
    (:func:`validate_model`). ``accept(entry)`` narrows the manifest entries.
    """
    return sorted(set(list_models(kind)) | set(known_files(kind, accept)))


def validate_model(kind: str, *names: str | None) -> bool | str:
    """``VALIDATE_INPUTS`` of a loader: True, or the missing-weight messages of the missing names.

    Inside ComfyUI always True: a validation error there makes ComfyUI drop that branch and run
    the rest ("Output will be ignored"), and the editor shows only that the value was rejected,
    so the check is left to the loader, whose error (file, folder, fetch command) stops the run
    and is shown in full. The same in ``gendeg studio`` (``SETTINGS.check_models_when_run``).
    ``gendeg run`` checks the files now, before anything runs. ``None`` and ``"none"`` names
    are skipped.
    """
    if IN_COMFYUI or SETTINGS.check_models_when_run:
        return True
    from ..core.weights.store import resolve

    problems = []
    for name in names:
        if name is None or str(name).strip() in ("", "none"):
            continue
        try:
            resolve(str(name), model_search_dirs(kind))
        except GenDegError as exc:
            problems.append(str(exc))
    return " Also: ".join(problems) if problems else True


def input_dir() -> Path:
    return Path(_folder_paths.get_input_directory()) if IN_COMFYUI else Path(SETTINGS.input_dir)


def output_dir() -> Path:
    return Path(_folder_paths.get_output_directory()) if IN_COMFYUI else Path(SETTINGS.output_dir)


def temp_dir() -> Path:
    """Where previews go: ComfyUI's temp folder, ``--temp-dir``, or the private default.

    The default (``<system temp>/comfyui-gendeg-<uid>``) goes through :func:`ensure_private_dir`
    on every call, so ``gendeg run``, ``gendeg studio`` and the nodes share one code path for it.
    """
    if IN_COMFYUI:
        return Path(_folder_paths.get_temp_directory())
    path = Path(SETTINGS.temp_dir)
    if path == _private_temp_dir():
        return ensure_private_dir(path)
    return path


def shard() -> tuple[int, int]:
    """(index, count) of the slice of every folder this run processes; (0, 1) is everything."""
    return (0, 1) if IN_COMFYUI else SETTINGS.shard


def _register_comfy_model_folders() -> None:
    """Make ``models/gendeg/<kind>`` known to ComfyUI's ``folder_paths`` (and extra_model_paths),
    and create those folders, so users see where each kind of checkpoint goes."""
    if not IN_COMFYUI:
        return
    exts = {".safetensors", ".pth", ".pt", ".ckpt", ".bin"}
    for kind in MODEL_KINDS:
        key = folder_key(kind)
        path = os.path.join(_folder_paths.models_dir, "gendeg", kind)
        if key in _folder_paths.folder_names_and_paths:
            paths, old_exts = _folder_paths.folder_names_and_paths[key]
            if path not in paths:
                paths.append(path)
            _folder_paths.folder_names_and_paths[key] = (paths, set(old_exts) | exts)
        else:
            _folder_paths.folder_names_and_paths[key] = ([path], exts)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:  # a read-only install: the loaders' messages still name the folder
            log.warning("GenDeg: could not create the model folder %s (%s)", path, exc)


_register_comfy_model_folders()

"""Image files: read to ``[1,C,H,W]`` in 0..1, write PNG/JPEG/WebP atomically.

One place for image I/O: the command line, the runner's LoadImage/SaveImage stand-ins,
dataset nodes and previews all call these.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin

from .errors import InputError, WriteError, image_memory_error

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

# Refuse decompression bombs with a clear error rather than PIL's warning.
Image.MAX_IMAGE_PIXELS = 16384 * 16384


def pil_to_tensor(img: Image.Image, keep_alpha: bool = True) -> torch.Tensor:
    """PIL image -> ``[1,C,H,W]`` float32 in 0..1 (C = 1, 3 or 4; EXIF orientation applied)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I"):
        arr = np.asarray(img, dtype=np.float32) / (65535.0 if img.mode.startswith("I;16") else max(float(np.asarray(img).max()), 1.0))
        return torch.from_numpy(arr)[None, None].clamp(0, 1)
    if img.mode == "L":
        pass
    elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA") if keep_alpha else img.convert("RGB")
    else:
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[..., None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None]


def load_image(path: str | Path, keep_alpha: bool = True) -> torch.Tensor:
    """Read an image file -> ``[1,C,H,W]`` float32 in 0..1. Unreadable files raise :class:`InputError`."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image file")
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > Image.MAX_IMAGE_PIXELS:  # PIL itself only warns below twice this limit
                raise InputError(
                    f"{path}: {w}x{h} pixels is more than the {Image.MAX_IMAGE_PIXELS} pixel limit "
                    "(a decompression bomb, or an image to downscale before loading)"
                )
            bands = len(img.getbands())
            try:
                img.load()
                return pil_to_tensor(img, keep_alpha=keep_alpha)
            except MemoryError:
                pass  # raised below, once the partial buffers are released
        raise image_memory_error("load", w, h, bands)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such image file") from exc
    except (OSError, Image.DecompressionBombError, ValueError) as exc:
        raise InputError(f"{path}: cannot read this image ({exc})") from exc


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """``[C,H,W]`` or ``[1,C,H,W]`` in 0..1 -> 8-bit PIL image (L, LA, RGB or RGBA)."""
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise InputError(f"expected one image, got a batch of {x.shape[0]}")
        x = x[0]
    arr = (x.detach().float().clamp(0, 1).cpu().permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    c = arr.shape[2]
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[c]
    return Image.fromarray(arr[..., 0] if c == 1 else arr, mode=mode)


_HOST = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in socket.gethostname())[:64] or "host"


def part_path(path: str | Path) -> Path:
    """The temporary name a file is written under before it is renamed into place.

    ``.<name>~<host>~<pid>.part`` in the same folder: unique per process, hidden, and
    telling which process left it behind (see ``core.dataset.sweep_stale_parts``).
    """
    path = Path(path)
    return path.with_name(f".{path.name}~{_HOST}~{os.getpid()}.part")


#: errno values that mean "this place cannot take the file" (not a bug): reported in one line.
_WRITE_REASONS = {
    errno.ENOSPC: ("the disk is full", "free some space or write to another disk"),
    errno.EFBIG: ("the file is too large for this file system", "write to another disk"),
    errno.EACCES: ("permission denied", "choose a folder you can write to, or change its permissions"),
    errno.EPERM: ("permission denied", "choose a folder you can write to, or change its permissions"),
    errno.EROFS: ("the file system is read-only", "choose a folder on a writable disk"),
    errno.EISDIR: ("a folder of that name is in the way", "give a file name, not a folder"),
    errno.ENOTDIR: ("a part of the folder path is a file", "choose another folder"),
    errno.EEXIST: ("a part of the folder path is a file", "choose another folder"),
    errno.ENAMETOOLONG: ("the name is too long", "choose a shorter name"),
}
if hasattr(errno, "EDQUOT"):  # not on every platform
    _WRITE_REASONS[errno.EDQUOT] = ("the disk quota is exceeded", "free some space or write to another disk")


def write_error(path: str | Path, exc: OSError, existed: bool | None = None) -> WriteError | None:
    """The one-line :class:`WriteError` for an ``OSError`` that stopped writing ``path``; ``None``
    when the error is not about the place written to (then it should propagate unchanged)."""
    reason = _WRITE_REASONS.get(exc.errno) if exc.errno is not None else None
    if reason is None:
        return None
    what, todo = reason
    kept = "; the existing file is unchanged" if existed else ""
    err = WriteError(f"cannot write {path}: {what}; {todo} (nothing was written{kept})")
    err.errno = exc.errno
    return err


def check_output_file(path: str | Path, suffixes: tuple[str, ...] | None = None) -> Path:
    """Refuse, before any work is done, an output path that is a folder or has a suffix not in ``suffixes``."""
    path = Path(path)
    if path.is_dir():
        example = path / ("name" + (suffixes[0] if suffixes else ""))
        raise InputError(f"{path} is a folder; give a file name inside it, e.g. {example}")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise InputError(f"{path}: unknown file type {path.suffix or '(no suffix)'!r}; use one of {', '.join(suffixes)}")
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; on success it is fsynced and
    renamed into place, on any error it is removed. Readers never see a partial file, and an
    existing file of that name is only replaced by a complete new one.

    A folder named ``path`` raises :class:`InputError` before anything is written; a full
    disk or a read-only or forbidden folder raise :class:`WriteError` (one line, after the
    clean-up, which never hides the first error by failing itself).
    """
    path = Path(path)
    check_output_file(path)
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        err = write_error(path, exc, existed)
        if err is None:
            raise
        raise err from exc
    tmp = part_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):  # the first error is the one to report
            tmp.unlink(missing_ok=True)
        err = write_error(path, exc, existed) if isinstance(exc, OSError) else None
        if err is None:
            raise
        raise err from exc


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder + rename (never a partial file)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def encode_image(x: torch.Tensor, fmt: str = "png", text: Mapping[str, str] | None = None, quality: int = 95, compress_level: int = 4) -> bytes:
    """Encode ``[C,H,W]``/``[1,C,H,W]`` to bytes. PNG gets ``text`` as tEXt chunks (like ComfyUI's prompt/workflow)."""
    import io

    img = tensor_to_pil(x)
    buf = io.BytesIO()
    fmt = fmt.lower()
    if fmt == "png":
        info = PngImagePlugin.PngInfo()
        for k, v in (text or {}).items():
            info.add_text(k, v)
        img.save(buf, format="PNG", pnginfo=info, compress_level=compress_level)
    elif fmt in ("jpg", "jpeg"):
        img.convert("RGB").save(buf, format="JPEG", quality=quality)
    elif fmt == "webp":
        img.save(buf, format="WEBP", quality=quality)
    else:
        raise InputError(f"unknown image format {fmt!r}; use png, jpg or webp")
    return buf.getvalue()


def save_image(path: str | Path, x: torch.Tensor, text: Mapping[str, str] | None = None, quality: int = 95) -> Path:
    """Atomically write one image; the format follows the suffix. Returns the path."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    atomic_write_bytes(path, encode_image(x, fmt, text=text, quality=quality))
    return path


def list_images(folder: str | Path, pattern: str = "*", recursive: bool = False) -> list[Path]:
    """Image files under ``folder`` matching ``pattern`` (glob), sorted by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    it = folder.rglob(pattern) if recursive else folder.glob(pattern)
    files = [p for p in it if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())

"""Feed-forward restorers (NAFNet, SCUNet, SwinIR, Uformer, KBNet, DRUNet, FBCNN, ...) through spandrel.

Any checkpoint whose architecture `spandrel <https://github.com/chaiNNer-org/spandrel>`_
(the loader ComfyUI itself uses) detects can be loaded, provided it is an image-to-image
model of scale 1: this is a restorer, not an upscaler. Restormer and a few others live in the
optional ``spandrel_extra_arches`` package; when it is installed its architectures are
registered too.

Networks trained with the DiffLoss constraint (the restoration loss plus a frozen diffusion
model's noise-prediction and middle-feature terms) are plain NAFNet / Restormer / ...
checkpoints at inference: nothing special is needed, load them like any other.

Safety: the state dict is read by :func:`core.weights.load_state_dict` (safetensors, or a
pickle with ``weights_only=True`` and an allow-list); spandrel's own file loading is never
used. Images are ``[B,C,H,W]`` float in 0..1 in and out; large images run tiled (see
:mod:`core.tiling`) with the tile halved on out-of-memory.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, WeightsError
from ..image import check_image, restore_channels, to_rgb
from ..tiling import tiled_apply, tiled_apply_oom_safe

log = logging.getLogger("gendeg")

__all__ = ["DTYPES", "Restorer", "load_restorer", "resolve_dtype", "restore", "restorer_from_state_dict", "tile_grid"]

#: Names accepted for ``dtype``.
DTYPES = ("auto", "fp32", "fp16", "bf16")
_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# Key prefixes of checkpoints that belong to another loader of this pack (better error message).
_OTHER_FAMILIES = (
    (("model.diffusion_model.", "first_stage_model."), "a Stable Diffusion / GenDeg checkpoint: use GenDegModelLoader"),
    (("init_conv.", "time_mlp."), "an IR-SDE network: use GenDegIRSDELoader"),
    (("visual.", "transformer.resblocks.", "clip.", "logit_scale"), "a CLIP model: use the DA-CLIP or quality loaders"),
    (("cfe.projection.", "pgm.0.affine."), "a Perceive-IR restorer (it needs DINOv2 guidance): use GenDegPerceiveIRLoader"),
)


def _spandrel():  # heavy optional import, kept out of module import time
    import spandrel

    try:  # Restormer, MPRNet, ... (optional, non-commercial licences for some)
        from spandrel_extra_arches import EXTRA_REGISTRY  # type: ignore[import-not-found]

        spandrel.MAIN_REGISTRY.add(*EXTRA_REGISTRY, ignore_duplicates=True)
    except ImportError:
        pass
    except Exception as exc:  # noqa: BLE001 - an incompatible extra package must not break loading
        log.warning("[GenDeg] spandrel_extra_arches could not be installed: %s", exc)
    return spandrel


@dataclass
class Restorer:
    """A loaded feed-forward restorer (the ``RESTORER`` type of the nodes).

    ``descriptor`` is spandrel's ``ImageModelDescriptor`` (the model in ``dtype``, kept on the
    offload device between runs). ``name`` is the file name it came from.
    """

    descriptor: Any
    name: str
    dtype: torch.dtype
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return str(self.descriptor.architecture.id)

    @property
    def in_channels(self) -> int:
        return int(self.descriptor.input_channels)

    @property
    def out_channels(self) -> int:
        return int(self.descriptor.output_channels)

    def __repr__(self) -> str:
        return f"Restorer({self.name!r}, {self.architecture}, {self.in_channels}ch, {str(self.dtype).removeprefix('torch.')})"


def resolve_dtype(name: str, device: torch.device | str, supports_half: bool, supports_bf16: bool, arch: str = "model") -> torch.dtype:
    """The compute dtype for ``name`` in :data:`DTYPES` on ``device``.

    ``auto``: fp32 on the CPU; on an accelerator bf16 where the model supports it (and the
    device does), else fp16 where supported, else fp32. An explicit fp16/bf16 the model does
    not support (spandrel's ``supports_half`` / ``supports_bfloat16``) is refused.
    """
    if name not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    device = torch.device(device)
    if name == "fp32":
        return torch.float32
    if name == "fp16":
        if not supports_half:
            raise InputError(f"{arch} does not support fp16 (spandrel marks it unsafe: wrong or NaN outputs); use bf16, fp32 or auto")
        return torch.float16
    if name == "bf16":
        if not supports_bf16:
            raise InputError(f"{arch} does not support bf16; use fp16, fp32 or auto")
        return torch.bfloat16
    if device.type == "cpu":
        return torch.float32
    bf16_ok = device.type != "cuda" or torch.cuda.is_bf16_supported()
    if supports_bf16 and bf16_ok and device.type != "mps":
        return torch.bfloat16
    if supports_half:
        return torch.float16
    return torch.float32


#: Pixel grid of architectures whose stride is not visible as a model attribute.
_KNOWN_GRID = {"SCUNet": 64, "DRUNet": 8, "FBCNN": 8, "DnCNN": 1, "Compact": 1}
_GRID_ATTRS = ("padder_size", "pad_size", "window_size", "patch_size")
DEFAULT_GRID = 16


def tile_grid(desc: Any) -> int:
    """Pixel grid tiles are aligned to: the network's internal padding multiple / window size.

    Found from the architecture (``padder_size`` of NAFNet/KBNet, ``window_size`` of SwinIR, ...,
    64 for SCUNet, 8 for DRUNet/FBCNN, 1 for plain conv nets such as DnCNN); 16 (a 4-level UNet)
    when nothing says otherwise; always a multiple of the model's ``size_requirements.multiple_of``.
    Tiles of a split axis start on this grid; the image is reflect-padded at the bottom/right
    to a multiple of it, so pixels within the receptive field of that border may differ
    slightly from whole-image inference (which pads in its own way).
    """
    arch = str(desc.architecture.id)
    multiple = max(1, int(desc.size_requirements.multiple_of))
    if arch in _KNOWN_GRID:
        return math.lcm(_KNOWN_GRID[arch], multiple)
    found = [0]
    for name in _GRID_ATTRS:
        v = getattr(desc.model, name, None)
        if isinstance(v, int) and 1 < v <= 64:
            found.append(v)
    grid = max(found) if max(found) > 1 else DEFAULT_GRID
    return math.lcm(grid, multiple)


def _family_hint(sd: Mapping[str, Any]) -> str:
    for prefixes, hint in _OTHER_FAMILIES:
        if any(k.startswith(prefixes) for k in sd):
            return f" It looks like {hint}."
    return ""


def restorer_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], name: str = "model", *, dtype: str = "auto", device: torch.device | str = "cpu"
) -> Restorer:
    """Detect the architecture of ``state_dict`` with spandrel and build a scale-1 restorer.

    ``dtype`` in :data:`DTYPES` (resolved for ``device``, see :func:`resolve_dtype`); the model
    stays on the CPU until :func:`restore` moves it. Raises :class:`WeightsError` for a state
    dict spandrel does not recognise, a broken one, an upscaler or a non-image model.
    """
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise WeightsError(f"{name}: the checkpoint holds no tensors")
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{name}: entries that are not tensors ({bad[:3]}); not a model state dict")
    spandrel = _spandrel()
    try:
        desc = spandrel.ModelLoader(device="cpu").load_from_state_dict(dict(state_dict))
    except spandrel.UnsupportedModelError as exc:
        keys = ", ".join(list(state_dict)[:4])
        raise WeightsError(
            f"{name}: not a model architecture spandrel recognises (first keys: {keys}).{_family_hint(state_dict)} "
            "GenDegRestorerLoader takes scale-1 image restoration networks such as NAFNet, SCUNet, SwinIR, "
            "Uformer, KBNet, DRUNet, FBCNN (Restormer needs the optional spandrel_extra_arches package)."
        ) from exc
    except Exception as exc:  # noqa: BLE001 - detected but inconsistent: missing/odd-shaped keys
        raise WeightsError(
            f"{name}: the checkpoint looks like a known architecture but could not be built from it "
            f"({type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}); "
            "the file may be incomplete, converted with wrong keys, or a training checkpoint of another layout"
        ) from exc
    arch = str(desc.architecture.id)
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise WeightsError(f"{name}: {arch} is a {desc.purpose} model (it needs a mask), not an image restorer")
    if desc.scale != 1:
        raise WeightsError(
            f"{name}: {arch} is a {desc.scale}x upscaler; GenDegRestore keeps the image size. "
            "Use ComfyUI's 'Load Upscale Model' / 'Upscale Image (using Model)' nodes for upscalers."
        )
    if (desc.input_channels, desc.output_channels) not in ((1, 1), (3, 3), (4, 4), (4, 3)):
        raise WeightsError(
            f"{name}: {arch} maps {desc.input_channels} channels to {desc.output_channels}; "
            "only grey (1->1), RGB (3->3) and RGBA (4->4 or 4->3) restorers are supported"
        )
    torch_dtype = resolve_dtype(dtype, device, desc.supports_half, desc.supports_bfloat16, arch)
    desc.eval()
    if torch_dtype != torch.float32:
        desc.to(torch_dtype)
    req = desc.size_requirements
    info = {
        "architecture": arch,
        "purpose": desc.purpose,
        "tags": list(desc.tags),
        "in_channels": desc.input_channels,
        "out_channels": desc.output_channels,
        "parameters": sum(p.numel() for p in desc.model.parameters()),
        "dtype": str(torch_dtype).removeprefix("torch."),
        "supports_fp16": bool(desc.supports_half),
        "supports_bf16": bool(desc.supports_bfloat16),
        "multiple_of": req.multiple_of,
        "minimum": req.minimum,
        "square": req.square,
        "tiling": desc.tiling.name.lower(),
        "tile_grid": tile_grid(desc),
    }
    return Restorer(desc, name, torch_dtype, info)


def load_restorer(path: str | Path, *, dtype: str = "auto", device: torch.device | str = "cpu") -> Restorer:
    """Load a checkpoint file (``.safetensors``, or ``.pth``/``.pt``/``.ckpt`` read safely) as a restorer.

    Wrapper keys (``params_ema``, ``params``, ``state_dict``, ...) and ``module.``/``netG.``
    prefixes are unwrapped. See :func:`restorer_from_state_dict` for ``dtype`` and errors.
    """
    from ..weights import load_state_dict

    path = Path(path)
    sd = load_state_dict(path)
    return restorer_from_state_dict(sd, path.name, dtype=dtype, device=device)


def _model_fn(restorer: Restorer, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """Tile function: float32 0..1 tiles on ``device`` -> float32 0..1 restored tiles."""
    desc = restorer.descriptor

    def fn(tiles: torch.Tensor) -> torch.Tensor:
        out = desc(tiles.to(device=device, dtype=restorer.dtype).contiguous())
        return out.float()

    return fn


def restore(
    restorer: Restorer,
    x: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    tile: int = 512,
    overlap: int = 32,
    tile_batch: int = 1,
    progress: Callable[[int, int], None] | None = None,
    is_oom: Callable[[BaseException], bool] | None = None,
    on_oom: Callable[[], None] | None = None,
    offload_device: torch.device | str | None = "cpu",
    min_tile: int = 64,
) -> torch.Tensor:
    """Restore ``x`` ``[B,C,H,W]`` (1-4 channels, 0..1, any size) -> same shape, 0..1, float32 on ``x.device``.

    Channels: an RGB model gets RGB (grey expanded, alpha carried around it and put back);
    a grey model restores each colour channel on its own; an RGBA model gets the alpha
    channel too (opaque alpha added to RGB input). ``tile`` <= 0 runs whole images;
    otherwise tiles of at most ``tile`` px overlapping by ``overlap`` px, ``tile_batch`` at a
    time, blended with raised-cosine weights, on the network's pixel grid (:func:`tile_grid`,
    so a tile sees the same downsampling phase as the whole image); the model's size
    requirements (multiple of, minimum, square) are met by reflect padding. With ``is_oom`` given, an
    out-of-memory error halves the tile batch, then the tile side, down to ``min_tile``.
    The model is moved to ``device`` for the run and back to ``offload_device`` afterwards
    (``None`` leaves it on ``device``).
    """
    check_image(x, "image")
    device = torch.device(device)
    desc = restorer.descriptor
    in_ch, out_ch = restorer.in_channels, restorer.out_channels
    c = x.shape[1]

    # channel layout the model sees -> (model input [N,in_ch,H,W], how to undo it)
    rgb, layout = to_rgb(x)
    if in_ch == 3:
        net_in = rgb
    elif in_ch == 1:  # grey model: each colour channel is an image of its own
        src = x[:, :1] if c in (1, 2) else rgb
        net_in = src.reshape(-1, 1, *x.shape[-2:])
    else:  # RGBA model
        alpha = x[:, c - 1 : c] if c in (2, 4) else torch.ones_like(x[:, :1])
        net_in = torch.cat([rgb, alpha], dim=1)
    req = desc.size_requirements
    desc.to(device)
    try:
        kwargs = dict(
            pad_multiple=req.multiple_of,
            min_size=req.minimum,
            square=req.square,
            align=restorer.info.get("tile_grid", DEFAULT_GRID),
            progress=progress,
            device=device,
            output_device=x.device,
        )
        fn = _model_fn(restorer, device)
        if is_oom is not None:
            out = tiled_apply_oom_safe(
                fn, net_in, tile, overlap, is_oom=is_oom, on_oom=on_oom, min_tile=min_tile, tile_batch=tile_batch, **kwargs
            )
        else:
            out = tiled_apply(fn, net_in, tile, overlap, tile_batch=tile_batch, **kwargs)
    finally:
        if offload_device is not None:
            desc.to(torch.device(offload_device))
    out = out.clamp(0, 1)
    if in_ch == 1:
        out = out.reshape(x.shape[0], -1, *x.shape[-2:])
        if c in (1, 2):
            return out if c == 1 else torch.cat([out, x[:, 1:2]], dim=1)
        return restore_channels(out, layout)
    if in_ch == 4 and out_ch == 4:
        if c == 4:
            return out
        if c == 2:  # grey + alpha
            return torch.cat([out[:, :3].mean(dim=1, keepdim=True), out[:, 3:4]], dim=1)
        out = out[:, :3]
    return restore_channels(out[:, :3], layout)

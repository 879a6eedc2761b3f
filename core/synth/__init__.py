"""Procedural degradations (the embedded default that needs no weights), and their calibration.

One module per degradation; each exposes ``DEGRADATION`` (a :class:`~.base.Degradation`).
:data:`REGISTRY` maps the type names ``haze, rain, snow, motion_blur, low_light, raindrop,
jpeg, noise`` and the mixed ``rain+haze, snow+haze`` (:mod:`.mixed`) to them;
:func:`synthesize` applies one at given strengths, and :mod:`.calibrate` finds the strength that lands on a requested GenDeg intensity μ.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ..errors import InputError
from ..image import flat_in_memory_order
from . import haze, jpeg, low_light, mixed, motion_blur, noise, rain, raindrop, snow, strips
from .base import Degradation, Param, as_strength, round_8bit_into

REGISTRY: dict[str, Degradation] = {
    m.DEGRADATION.name: m.DEGRADATION for m in (haze, rain, snow, motion_blur, low_light, raindrop, jpeg, noise)
}
REGISTRY.update({d.name: d for d in mixed.DEGRADATIONS})  # rain+haze, snow+haze (GenDeg's mixed types)
TYPES: tuple[str, ...] = tuple(REGISTRY)
ALIASES = {"lowlight": "low_light", "rain_haze": "rain+haze", "rain_and_haze": "rain+haze", "haze+rain": "rain+haze",
           "snow_haze": "snow+haze", "snow_and_haze": "snow+haze", "haze+snow": "snow+haze"}


def get(name: str) -> Degradation:
    """The degradation called ``name``; unknown names raise :class:`InputError` listing the valid ones."""
    key = str(name).strip().lower().replace(" ", "_").replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in REGISTRY:
        raise InputError(f"unknown degradation type {name!r}; choose one of {', '.join(TYPES)}")
    return REGISTRY[key]


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (any integer; reduced mod 2⁶⁴)."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(int(seed) % (1 << 64))
    return g


def _check_rgb(x: torch.Tensor) -> None:
    """Shape, dtype, NaN and range checks in one pass over the data (``aminmax`` propagates NaN)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[0] == 0 or 0 in x.shape[-2:]:
        raise InputError(f"image: expected a non-empty [B,3,H,W] tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if x.shape[1] != 3:
        raise InputError(f"synthesize expects RGB [B,3,H,W]; got {x.shape[1]} channels (use core.image.to_rgb)")
    if x.dtype == torch.uint8:  # 8-bit images: every value is valid
        return
    if not x.is_floating_point():
        raise InputError(f"image: expected a float tensor with values in 0..1 (or uint8 0..255), got dtype {x.dtype}")
    flat = flat_in_memory_order(x)  # read sequentially, e.g. a channels-last ComfyUI image
    lo, hi = (float(v) for v in torch.aminmax(x if flat is None else flat))
    if math.isnan(lo) or math.isnan(hi) or math.isinf(lo) or math.isinf(hi):
        raise InputError("image: contains NaN or infinite values; check the node that produced it")
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise InputError(f"image: values must be in 0..1, got {lo:.4g}..{hi:.4g}")


def synthesize(
    x: torch.Tensor,
    kind: str,
    strength: float | torch.Tensor,
    seed: int = 0,
    *,
    depth: torch.Tensor | None = None,
    params: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Degrade ``[B,3,H,W]`` images in 0..1 (any device) with ``kind`` at ``strength`` (float or ``[B]``, 0..1;
    up to :meth:`Degradation.strength_limit` where the model extends past its defaults, see :mod:`.base`).

    8-bit images (``uint8`` 0..255, e.g. decoded files) give 8-bit results in the same memory
    layout: ``floor(255·y + 0.5)`` of the result ``y`` of ``x / 255`` (the rounding of
    :func:`~..io.tensor_to_pil`, so the files written are the same); JPEG codes them directly,
    without float conversions (what the codec costs), the other types compute in float32.

    ``depth`` (haze, rain+haze, snow+haze): ``[B|1,1,H,W]`` 0..1 depth map (see :mod:`.haze` for the convention).
    ``params``: expert parameters of that degradation (defaults in its module; its
    :attr:`~.base.Degradation.sigma_param` may be one value per image). Returns
    ``[B,3,H,W]`` 0..1 on the same device; the same inputs and seed give the same output.
    Images above :data:`.strips.STRIP_PIXELS` pixels are processed in strips (bounded memory,
    same result); ``progress(i, n)`` hears about each finished strip.
    """
    deg = get(kind)
    _check_rgb(x)
    p = deg.resolve_params(params, x.shape[0])
    s = as_strength(strength, x.shape[0], x.device, deg.strength_limit(p))
    g = make_generator(seed, x.device)
    kwargs = dict(p)
    if deg.uses_depth:
        kwargs["depth"] = depth
    elif depth is not None:
        raise InputError(f"a depth map only applies to haze, rain+haze and snow+haze, not to {deg.name}; disconnect it")
    if x.dtype == torch.uint8:
        return _synthesize_8bit(deg, x, s, g, kwargs, progress)
    return _synthesize_float(deg, x.float(), s, g, kwargs, progress)


def _synthesize_float(deg: Degradation, x: torch.Tensor, s: torch.Tensor, g: torch.Generator, kwargs: dict[str, Any],
                      progress: Callable[[int, int], None] | None) -> torch.Tensor:
    """:func:`synthesize` of float32 images in 0..1 (checked), strengths and parameters resolved."""
    step = chunk_size(x)
    chunks = 1 if (deg.per_image or step >= x.shape[0]) else math.ceil(x.shape[0] / step)
    with torch.no_grad(), strips.reporting(progress, deg.passes * chunks):  # strip loops of every chunk, in order
        if deg.per_image:
            return deg.fn(x, s, g, **kwargs)
        if step >= x.shape[0]:
            if deg.writes_out:  # reads x in any layout (ComfyUI's channels-last in place), result in x's
                return deg.fn(x, s, g, out=torch.empty(x.shape, dtype=x.dtype, device=x.device,
                                                       memory_format=_out_layout(deg, x)), **kwargs)
            return deg.fn(x.contiguous(), s, g, **kwargs)  # the standard layout for the degradation code
        return _chunked(deg, x, s, g, step, kwargs)


def _synthesize_8bit(deg: Degradation, x: torch.Tensor, s: torch.Tensor, g: torch.Generator, kwargs: dict[str, Any],
                     progress: Callable[[int, int], None] | None) -> torch.Tensor:
    """:func:`synthesize` of 8-bit images: JPEG natively, the others on ``x / 255`` in float32 and
    rounded back (``floor(255·y + 0.5)``, multiply then add in float32), in ``x``'s memory layout."""
    if deg.accepts_uint8:
        with torch.no_grad(), strips.reporting(progress, deg.passes):
            return deg.fn(x, s, g, **kwargs).contiguous(memory_format=_layout(x))
    out = torch.empty(x.shape, dtype=torch.uint8, device=x.device, memory_format=_layout(x))
    # chunk by chunk, converted in cache (one chunk on accelerators and for per-image coders, as the float path)
    step = x.shape[0] if deg.per_image else chunk_size(x)
    with torch.no_grad(), strips.reporting(progress, deg.passes * math.ceil(x.shape[0] / step)):
        return _chunked(deg, x, s, g, step, kwargs, out8=out)


def _out_layout(deg: Degradation, x: torch.Tensor) -> torch.memory_format:
    """Memory layout of float results: ``x``'s for degradations that write ``out=`` in any layout, else standard."""
    return _layout(x) if deg.writes_out else torch.contiguous_format


def _layout(x: torch.Tensor) -> torch.memory_format:
    """``channels_last`` when ``x`` is stored so (ComfyUI's and the codecs' order), else contiguous."""
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() \
        else torch.contiguous_format


#: CPU chunks hold at most this many pixels (one 512×512 image; more images when smaller)
CPU_CHUNK_PIXELS = 512 * 512


def chunk_size(x: torch.Tensor) -> int:
    """Images per call of a degradation: the whole batch on accelerators, cache-sized chunks on the CPU."""
    if x.device.type != "cpu":
        return x.shape[0]
    return max(1, CPU_CHUNK_PIXELS // (x.shape[-2] * x.shape[-1]))


def _chunked(deg: Degradation, x: torch.Tensor, s: torch.Tensor, g: torch.Generator, step: int,
             kwargs: dict[str, Any], out8: torch.Tensor | None = None) -> torch.Tensor:
    """CPU path: the batch in cache-sized chunks, each with its own generator seeded from ``g``.

    A chunk's working set (random fields, FFT buffers) stays in the core's cache, which is
    1.3–1.5× faster than one pass over the whole batch; the chunk seeds are drawn first, so
    the result depends only on the batch and the seed. Chunks run one after the other, each
    operation on ``torch.get_num_threads()`` threads (measured faster than running chunks in
    parallel Python threads, which contend for the GIL between the many short operations).

    8-bit images (``x`` uint8, results into ``out8``): each chunk is converted to ``x / 255`` just
    before use and its float result rounded into ``out8`` (:func:`round_8bit_into`) in reused
    buffers, so no float copy of the batch exists and no float result is written to fresh memory.
    """
    starts = list(range(0, x.shape[0], step))
    eight = out8 is not None
    # one chunk (8-bit only; the float path calls ``deg.fn`` itself then): ``g`` itself, as that call
    gens = [g] if eight and len(starts) == 1 else \
        [make_generator(seed, x.device) for seed in torch.randint(0, 2**62, (len(starts),), generator=g).tolist()]
    b = x.shape[0]
    per_image = [k for k, v in kwargs.items() if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == b]
    # a degradation with an ``out`` parameter (rain, snow) writes its result there and reads ``x``
    # in any memory layout: no copy of the chunk in, none of its result out; with ``writes_8bit``
    # it also takes 8-bit chunks and writes 8-bit results itself
    writes_out = deg.writes_out
    direct8 = eight and deg.writes_8bit
    # the float result in the layout of the one-call path; 8-bit: one chunk's, reused (none when written directly)
    out = torch.empty((0 if direct8 else min(step, b), *x.shape[1:]) if eight else x.shape, dtype=torch.float32,
                      device=x.device, memory_format=torch.contiguous_format if eight else _out_layout(deg, x))
    scratch: torch.Tensor | None = None  # 8-bit: the chunk in float
    for i, gen in zip(starts, gens, strict=True):
        kw = dict(kwargs)
        for k in per_image:  # depth maps and per-image parameters follow their images
            kw[k] = kwargs[k][i : i + step]
        xi = x[i : i + step]
        n = xi.shape[0]
        if direct8:
            deg.fn(xi, s[i : i + step], gen, out=out8[i : i + step], **kw)
            continue
        if eight:  # k/255 in float32, in the chunk's own layout (read in place) or the standard one
            if scratch is None:
                fmt = _layout(xi) if writes_out else torch.contiguous_format
                scratch = torch.empty((min(step, b), *x.shape[1:]), device=x.device, memory_format=fmt)
            xi = torch.div(xi, 255.0, out=scratch[:n])
        elif not writes_out:
            xi = xi.contiguous()  # standard layout, copied just before use (in cache)
        dst = out[:n] if eight else out[i : i + step]
        if writes_out:
            deg.fn(xi, s[i : i + step], gen, out=dst, **kw)
        else:
            dst[...] = deg.fn(xi, s[i : i + step], gen, **kw)
        if eight:
            round_8bit_into(dst, out8[i : i + step])
    return out8 if eight else out


__all__ = ["REGISTRY", "TYPES", "Degradation", "Param", "get", "make_generator", "synthesize"]

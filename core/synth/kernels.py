"""Sparse particle rendering for rain and snow: Bernoulli seed sites and kernel stamping.

Rain streaks and snow flakes are sparse: a few hundred to a few thousand seeds on a 512² frame.
Drawing one uniform number per pixel to find them, and an FFT convolution to render them, costs
far more than the seeds themselves; here both scale with the number of seeds instead.

* :func:`bernoulli_sites`: the cells of a Bernoulli(p) process (each cell independently with
  probability p) drawn by geometric gaps between successive sites, ``O(n·p)`` random numbers.
* :func:`truncate`: kernels without their negligible tails (below ``TAIL`` × the peak), so
  that stamping touches only the taps that matter, and the FFT path (dense seeds, strips of
  large images) renders the very same kernels.
* :func:`stamp_circular`: the circular convolution of sparse seeds with one kernel per image
  (what :func:`~.base.stationary_conv` computes at fast FFT sizes), by adding every non-zero
  kernel tap at each seed; ``None`` past a work budget (dense seeds), where the caller falls
  back to the FFT.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from . import fused
from .base import param_values, round_8bit_into, segment_kernels, stationary_conv, stationary_rows
from .strips import fast_len, is_split, strips

#: kernel taps below this fraction of the kernel's peak are set to 0 (a Gaussian cross-section
#: cut at 3.7 std; a seed's dropped tails change a pixel by less than 1e-3 × its peak, a quarter
#: of an 8-bit step, and its total by 2e-4 of it)
TAIL = 1e-3
#: stamping stops paying off past this many seed × tap additions per image (the FFT's cost)
STAMP_BUDGET = 1_500_000
#: seed × tap additions per block (indices and contributions of a block stay in the core's cache)
STAMP_BLOCK = 1 << 16


def bernoulli_sites(n: int, p: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Sorted indices in ``0..n−1`` of the cells of a Bernoulli(``p``) process (``p`` clamped to 0..1).

    The gap from one site to the next is geometric, ``⌊ln V / ln(1 − p)⌋ + 1`` with V uniform in
    (0, 1], so the sites have exactly the distribution of ``rand(n) < p``. Draws in blocks of
    about ``n·p + 6·√(n·p)`` gaps (usually one block); the number of values drawn depends only on
    ``n``, ``p`` and the generator's stream.
    """
    p = min(max(float(p), 0.0), 1.0)
    if p <= 0.0 or n <= 0:
        return torch.empty(0, dtype=torch.long, device=device)
    if p >= 1.0:
        return torch.arange(n, device=device)
    mean = n * p
    block = int(mean + 6.0 * math.sqrt(mean) + 16)
    inv_log_q = 1.0 / math.log1p(-p)
    parts, last = [], -1
    compiled = fused.used_on(device)
    while True:
        v = torch.rand((block,), generator=generator, device=device, dtype=torch.float64)
        if compiled:  # the same arithmetic in one compiled loop
            s_np, done = fused.gap_sites(v.numpy(), inv_log_q, last, n)
            parts.append(torch.from_numpy(s_np))
            if done:
                break
            last = int(s_np[-1])
            continue
        gaps = torch.log1p(-v).mul_(inv_log_q).floor_().add_(1).long()  # 1 − v in (0, 1]
        sites = gaps.cumsum_(0).add_(last)
        if int(sites[-1]) >= n:
            parts.append(sites[sites < n])
            break
        parts.append(sites)
        last = int(sites[-1])
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def truncate(kernels: torch.Tensor, tail: float = TAIL) -> torch.Tensor:
    """``kernels`` ``[B,...,K,K]`` with the taps below ``tail`` × each kernel's peak set to 0 (in place)."""
    flat = kernels.flatten(-2)
    return kernels.masked_fill_((flat < tail * flat.amax(dim=-1, keepdim=True)).view_as(kernels), 0.0)


def stamp_work(sites: torch.Tensor, taps: int, b: int, hw: int) -> int:
    """Seed × tap additions of the busiest of ``b`` images of ``hw`` pixels (``sites`` flat, ``taps`` per seed)."""
    if b == 1:
        return sites.numel() * taps
    return int(torch.bincount(torch.div(sites, hw, rounding_mode="floor"), minlength=b).max()) * taps


def stamp_circular(sites: torch.Tensor, values: torch.Tensor, kernels: torch.Tensor, h: int, w: int,
                   budget: int = STAMP_BUDGET) -> torch.Tensor | None:
    """``[B,h,w]``: seeds of ``values`` at flat ``sites`` (sorted, in ``0..B·h·w−1``) convolved with
    ``kernels`` ``[B,K,K]`` (K odd, ``K ≤ min(h, w)``), circularly, the kernel's centre on the seed.

    Equal to :func:`~.base.stationary_conv` of the dense seed map up to rounding (zero taps are
    skipped: see :func:`truncate`). ``None`` when some image
    needs more than ``budget`` additions (dense seeds: the FFT is cheaper).
    """
    b, k = kernels.shape[0], kernels.shape[-1]
    p = k // 2
    hp, wp = h + 2 * p, w + 2 * p
    dev = sites.device
    flat = kernels.reshape(b, -1)
    sel = (flat != 0).any(dim=0).nonzero().squeeze(1)  # taps of any image's kernel (all images in one pass)
    t = sel.numel()
    if stamp_work(sites, t, b, h * w) > budget:
        return None
    canvas = torch.zeros(b * hp * wp, device=kernels.device, dtype=kernels.dtype)  # frames + p on every side
    n = sites.numel() if t else 0
    if n:
        index_dtype = torch.int32 if b * hp * wp < 2**31 else torch.long
        ky, kx = torch.div(sel, k, rounding_mode="floor"), sel % k
        off = (ky * wp + kx).to(index_dtype)  # tap (ty, tx) of a seed at (y, x) lands on canvas (y + ty, x + tx)
        img, pos = torch.div(sites, h * w, rounding_mode="floor"), sites % (h * w)
        base = (img * (hp * wp) + torch.div(pos, w, rounding_mode="floor") * wp + pos % w).to(index_dtype)
        wt = flat[:, sel]  # [B,T]
        # blocks of seeds whose indices and contributions stay in cache (reused buffers)
        step = max(1, STAMP_BLOCK // t)
        idx = torch.empty((min(step, n), t), dtype=index_dtype, device=dev)
        contrib = torch.empty((min(step, n), t), dtype=kernels.dtype, device=dev)
        for s in range(0, n, step):
            e = min(n, s + step)
            torch.add(base[s:e, None], off[None, :], out=idx[: e - s])
            w_rows = wt[:1] if b == 1 else wt.index_select(0, img[s:e])  # each seed's own kernel
            torch.mul(values[s:e, None], w_rows, out=contrib[: e - s])
            canvas.index_add_(0, idx[: e - s].view(-1), contrib[: e - s].view(-1))
    c = canvas.view(b, hp, wp)
    # wrap the margins around (circular): canvas row r is frame row r − p
    c[:, h : h + p] += c[:, :p]
    c[:, p : 2 * p] += c[:, h + p :]
    c[..., w : w + p] += c[..., :p]
    c[..., p : 2 * p] += c[..., w + p :]
    return c[:, p : p + h, p : p + w]


#: :func:`nested_sites` draws the candidates' thresholds in layers ``[2^−(j+1), 2^−j)·top·p``,
#: ``j < LADDER``, and ``[0, 2^−LADDER)·top·p`` (the bottom one; measured fastest for rain and snow)
LADDER = 2


def nested_sites(b: int, hw: int, strength: torch.Tensor, p: float, generator: torch.Generator,
                 device: torch.device, top: float,
                 values: Callable[[int, torch.Generator], torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Seeds of probability ``strength·p`` per cell of ``B`` images of ``hw`` cells, nested in the strength.

    Candidates are the cells of a Bernoulli(``top·p``) process (the seeds at the largest strength
    ``top``); each gets a uniform ``u`` below ``top·p`` (the conditional law of a per-cell uniform
    there) and is kept where ``u < strength·p``, so more strength only adds seeds: the same
    distribution as thresholding one uniform per cell (``top`` is raised to the largest strength
    when that is above it). Returns the seeds (sorted flat indices into ``[B, hw]``) and, with
    ``values`` (``(n, generator) -> [n]``), their values, drawn for every candidate before the
    selection (brightness), so that they do not depend on the strength; else ``None``.

    Only the layers of candidates that some strength can keep are drawn: ``u``'s range is cut
    into :data:`LADDER` + 1 layers (``[0, ¼)``, ``[¼, ½)``, ``[½, 1)`` of ``top·p``), each drawn
    from its own generator seeded from ``generator`` (all seeds drawn every time, so
    ``generator``'s stream, and every later random field, never depends on the strength), from
    the bottom up while a layer's lower end is below the largest ``strength·p``: the cells of a
    Bernoulli(``(hi − lo)/(1 − lo)``) process not already in a lower layer, ``u`` uniform in
    ``[lo, hi)``. A cell is then a candidate with probability ``top·p`` and its ``u`` is uniform
    below that (the law of the one-layer draw), at a quarter of its cost for the usual strengths;
    the layers depend only on ``top·p``, so a strength ``s`` with parameter ``p`` and strength 1
    with ``s·p`` select the very same seeds.
    """
    if strength.numel():
        top = max(top, float(strength.max()))
    p_top = min(top * p, 1.0)
    seeds = torch.randint(0, 2**62, (LADDER + 1,), generator=generator).tolist()
    need = float((strength * p).max()) if strength.numel() else 0.0
    cells: list[torch.Tensor] = []
    us: list[torch.Tensor] = []
    vals: list[torch.Tensor] = []
    compiled = fused.used_on(device)
    none = np.empty(0, dtype=np.float32)
    # compiled: the layers so far, merged in order (sorted cells, their u and values)
    merged = (np.empty(0, dtype=np.int64), none, none) if compiled else None
    for j in range(LADDER, -1, -1):  # the bottom layer first
        lo, hi = (0.0 if j == LADDER else p_top * 2.0 ** -(j + 1)), p_top * 2.0**-j
        if lo >= need or hi <= lo:
            break
        g = torch.Generator(device=device).manual_seed(seeds[j])
        c = bernoulli_sites(b * hw, (hi - lo) / (1.0 - lo), g, device)
        u = torch.rand((c.numel(),), generator=g, device=device)
        v = values(c.numel(), g) if values is not None else None
        if merged is not None:  # one sorted merge per layer instead of isin, cat and sort (u scaled there)
            merged = fused.merge_new(*merged, c.numpy(), u.numpy(), none if v is None else v.numpy(), lo, hi - lo,
                                     v is not None)
            continue
        u.mul_(hi - lo).add_(lo)
        if cells:  # cells of a lower layer stay there
            new = ~torch.isin(c, torch.cat(cells))
            c, u, v = c[new], u[new], (v[new] if v is not None else None)
        cells.append(c)
        us.append(u)
        if v is not None:
            vals.append(v)
    if merged is not None and merged[0].size:
        thresholds = (strength * p).float().contiguous().numpy()
        kept, kept_vals = fused.select_below(*merged, thresholds, hw, values is not None)
        return torch.from_numpy(kept), (torch.from_numpy(kept_vals) if values is not None else None)
    if not cells:
        return torch.empty(0, dtype=torch.long, device=device), (torch.empty(0, device=device) if values is not None else None)
    cand, order = torch.cat(cells).sort()
    keep = torch.cat(us)[order] < (strength * p)[torch.div(cand, hw, rounding_mode="floor")]
    return cand[keep], (torch.cat(vals)[order][keep] if values is not None else None)


def stamp_reflect(sites: list[torch.Tensor], kernels: torch.Tensor, b: int, h: int, w: int, y0: int, y1: int,
                  rel_threshold: float = 1e-4) -> torch.Tensor:
    """Rows ``y0..y1−1`` ``[B,C,y1−y0,w]`` of seed maps of 1s convolved with symmetric kernels, borders reflected.

    ``sites[c]``: flat indices into ``[B,h,w]`` of the seeds of channel ``c``; ``kernels``
    ``[C,K,K]`` (K odd, ``K//2 < min(h, w)``), point-symmetric. The same result as padding the
    seed maps by reflection (``F.pad(..., mode="reflect")``: a seed at row y also stands at −y
    and 2(h−1)−y) and convolving (:func:`~.base.render_sparse`, taps above ``rel_threshold`` ×
    the peak): every seed and each of its mirror images within ``K//2`` of the frame stamps its
    kernel, clipped to the rows asked for.
    """
    c_n, k = kernels.shape[0], kernels.shape[-1]
    p = k // 2
    rows = y1 - y0
    dev = kernels.device
    m = 2 * p  # canvas margin: every stamp that touches the rows lies inside, no clipping per tap
    crow, cw = rows + 2 * m, w + 2 * m
    canvas = torch.zeros(b * c_n * crow * cw, device=dev, dtype=kernels.dtype)
    counts = [int(s.numel()) for s in sites]
    if sum(counts):
        s = torch.cat(list(sites))
        cls = torch.repeat_interleave(torch.arange(c_n, device=dev), torch.tensor(counts, device=dev))
        img, r = torch.div(s, h * w, rounding_mode="floor"), s % (h * w)
        y, x = torch.div(r, w, rounding_mode="floor"), r % w
        ys = torch.stack([y, -y, 2 * (h - 1) - y])  # the seed and its mirror images, per axis
        vy = torch.stack([y >= 0, (y >= 1) & (y <= p), (y >= h - 1 - p) & (y <= h - 2)])
        xs = torch.stack([x, -x, 2 * (w - 1) - x])
        vx = torch.stack([x >= 0, (x >= 1) & (x <= p), (x >= w - 1 - p) & (x <= w - 2)])
        cy, cx = ys[:, None].expand(3, 3, -1), xs[None, :].expand(3, 3, -1)
        valid = (vy[:, None] & vx[None, :]) & (cy + p >= y0) & (cy - p < y1)
        cy, cx, im, cls = cy[valid], cx[valid], img.expand(3, 3, -1)[valid], cls.expand(3, 3, -1)[valid]
        base = ((im * c_n + cls) * crow + (cy - y0 + m)) * cw + (cx + m)
        idx, wts = [], []
        for c in range(c_n):
            kc = kernels[c]
            tap = (kc > rel_threshold * kc.amax()).nonzero()  # [T,2]
            bc = base[cls == c]
            idx.append((bc[:, None] + ((tap[:, 0] - p) * cw + (tap[:, 1] - p))[None, :]).view(-1))
            wts.append(kc[tap[:, 0], tap[:, 1]].expand(bc.numel(), -1).reshape(-1))
        canvas.index_add_(0, torch.cat(idx), torch.cat(wts))
    return canvas.view(b, c_n, crow, cw)[..., m : m + rows, m : m + w]


def streak_kernels(b: int, length_px: float, width_px: float, angle: torch.Tensor, opacity: float | torch.Tensor,
                   size: int) -> torch.Tensor:
    """Segment kernels ``[B,size,size]`` (rain streaks, snow flakes) scaled so an isolated seed of
    value 1 peaks at ``opacity`` (one value, or ``[B]``: one per image), without their negligible
    tails (:func:`truncate`)."""
    dev = angle.device
    if fused.used_on(dev):  # the same kernels in one compiled loop
        return torch.from_numpy(fused.streak_kernels(float(length_px), float(width_px), angle.float().contiguous().numpy(),
                                                     param_values(opacity, b, dev).contiguous().numpy(), size, TAIL))
    k = segment_kernels(torch.full((b,), length_px, device=dev), angle, torch.full((b,), width_px, device=dev), size)
    return truncate(k * (param_values(opacity, b, dev) / k.flatten(1).amax(dim=1)).view(-1, 1, 1))


def dense_seeds(sites: torch.Tensor, values: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
    """Seed map ``[B,1,H,W]``: ``values`` at the flat ``sites``, 0 elsewhere."""
    seeds = torch.zeros(b * h * w, device=values.device)
    seeds[sites] = values
    return seeds.view(b, 1, h, w)


def circular_at(h: int, w: int, k: int) -> bool:
    """Whether :func:`~.base.stationary_conv` renders a ``k``-tap kernel circularly on ``h × w``."""
    return k <= min(h, w) and fast_len(h) == h and fast_len(w) == w


def render_layers(
    x: torch.Tensor,
    layers: Sequence[tuple[torch.Tensor, torch.Tensor | None]],
    kernels: Sequence[torch.Tensor],
    out: torch.Tensor | None,
    composite: Callable[[torch.Tensor, list[torch.Tensor], torch.Tensor], torch.Tensor],
    compiled: Callable[[torch.Tensor, list[tuple], torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``composite(xr, masks, dst)`` of ``x`` ``[B,3,H,W]`` with particle layers (rain streaks,
    snow flakes): layer ``j``'s seeds (flat ``sites`` into ``[B,H,W]``, ``values``, 1 where ``None``)
    convolved circularly with ``kernels[j]`` ``[B,K,K]`` into an unclamped mask ``[B,1,rows,W]``.

    CPU, sparse seeds: stamped — with the compiled loops (:mod:`.fused`) ``compiled(x, layers, out)``
    renders the layers of :func:`.fused.prepare` and composites them band by band, else
    :func:`stamp_circular` and ``composite``; otherwise one batched FFT pass over all layers
    (kernels centred in the largest size), and for large images the same field strip by strip.
    ``out``: where the result goes (a new tensor in ``x``'s memory layout when ``None``; may be
    ``x``). 8-bit ``x`` (0..255) gives 8-bit results, ``⌊255·I + 0.5⌋`` of the result on ``x / 255``.
    """
    b, _, h, w = x.shape
    dev = x.device
    size = max(k.shape[-1] for k in kernels)
    split = is_split(h, w)
    out = torch.empty_like(x) if out is None else out
    stamping = not split and dev.type == "cpu" and circular_at(h, w, size)
    if stamping and compiled is not None and fused.used_on(dev) and all(
            stamp_work(sites, int((k != 0).any(dim=0).sum()), b, h * w) <= STAMP_BUDGET
            for (sites, _), k in zip(layers, kernels, strict=True)):
        return compiled(x, [fused.prepare(sites, vals, k, h, w) for (sites, vals), k in zip(layers, kernels, strict=True)],
                        out)
    if x.dtype == torch.uint8:  # the float path on x / 255, rounded
        y = render_layers(torch.div(x, 255.0), layers, kernels, None, composite)
        return round_8bit_into(y, out)
    layers = [(sites, torch.ones(sites.shape, device=dev) if vals is None else vals) for sites, vals in layers]
    if stamping:
        stamped = [stamp_circular(sites, vals, k, h, w) for (sites, vals), k in zip(layers, kernels, strict=True)]
        if all(m is not None for m in stamped):
            return composite(x, [m.unsqueeze(1) for m in stamped], out)
    kk = torch.zeros(b, len(kernels), size, size, device=dev)
    for j, k in enumerate(kernels):
        o = (size - k.shape[-1]) // 2
        kk[:, j, o : o + k.shape[-1], o : o + k.shape[-1]] = k
    seeds = [dense_seeds(sites, vals, b, h, w) for sites, vals in layers]
    if not split:
        masks = stationary_conv(torch.cat(seeds, dim=1), kk)  # [B,layers,H,W]
        return composite(x, [masks[:, j : j + 1] for j in range(len(seeds))], out)
    for y0, y1 in strips(h, w, halo=size // 2):  # large images: the same field and compositing, strip by strip
        composite(x[..., y0:y1, :], [stationary_rows(sd, kk[:, j : j + 1], y0, y1) for j, sd in enumerate(seeds)],
                  out[..., y0:y1, :])
    return out

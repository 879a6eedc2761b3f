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

import torch

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
    while True:
        v = torch.rand((block,), generator=generator, device=device, dtype=torch.float64)
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
    flat = kernels.reshape(b, -1)
    taps = flat != 0
    ntaps = taps.sum(dim=1).tolist()
    bounds = torch.searchsorted(sites, torch.arange(b + 1, device=sites.device) * (h * w)).tolist()
    if any((bounds[i + 1] - bounds[i]) * ntaps[i] > budget for i in range(b)):
        return None
    out = torch.empty((b, h, w), device=kernels.device, dtype=kernels.dtype)
    dev = sites.device
    index_dtype = torch.int32 if hp * wp < 2**31 else torch.long
    ky, kx = torch.arange(k, device=dev).repeat_interleave(k), torch.arange(k, device=dev).repeat(k)
    for i in range(b):
        canvas = torch.zeros(hp * wp, device=kernels.device, dtype=kernels.dtype)  # frame + p on every side
        pos = sites[bounds[i] : bounds[i + 1]] - i * h * w
        sel = taps[i].nonzero().squeeze(1)
        n = pos.numel() if sel.numel() else 0
        if n:
            off = (ky[sel] * wp + kx[sel]).to(index_dtype)  # tap (ty, tx) of a seed at (y, x) lands on canvas (y + ty, x + tx)
            wt = flat[i, sel]
            base = ((pos // w) * wp + pos % w).to(index_dtype)
            val = values[bounds[i] : bounds[i + 1]]
            # blocks of seeds whose indices and contributions stay in cache (reused buffers)
            step = max(1, STAMP_BLOCK // off.numel())
            idx = torch.empty((min(step, n), off.numel()), dtype=index_dtype, device=dev)
            contrib = torch.empty((min(step, n), off.numel()), dtype=kernels.dtype, device=dev)
            for s in range(0, n, step):
                e = min(n, s + step)
                torch.add(base[s:e, None], off[None, :], out=idx[: e - s])
                torch.mul(val[s:e, None], wt[None, :], out=contrib[: e - s])
                canvas.index_add_(0, idx[: e - s].view(-1), contrib[: e - s].view(-1))
        c = canvas.view(hp, wp)
        # wrap the margins around (circular): canvas row r is frame row r − p
        c[h : h + p] += c[:p]
        c[p : 2 * p] += c[h + p :]
        c[:, w : w + p] += c[:, :p]
        c[:, p : 2 * p] += c[:, w + p :]
        out[i] = c[p : p + h, p : p + w]
    return out

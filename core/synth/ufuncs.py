"""In-place ``exp``, ``log`` and ``sqrt`` of float32 CPU tensors through NumPy's SIMD ufuncs.

Per value at one thread (2-core AMD EPYC with AVX-512, torch 2.14, NumPy 2.4): NumPy's float32
``log`` is ~3× torch's, ``exp`` ~2×, ``sqrt`` ~1.3× (``bench/synth.py --ufuncs`` measures it on the
machine at hand). Torch's run on several threads, NumPy's ufuncs on one: large tensors are
cut into parts on whole 64-value boundaries and run in a small thread pool when torch may use
several threads (NumPy releases the GIL). Each value is computed by the same vector code
wherever it lies, so results do not depend on the thread count. Other devices and dtypes,
tensors that need gradients, and tensors NumPy cannot view use torch's own in-place ops.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..image import flat_in_memory_order

#: values below which a tensor is not split over threads
SPLIT_MIN = 1 << 17
#: at most this many parts (and pool threads)
MAX_PARTS = 4
_POOL: ThreadPoolExecutor | None = None


def pool() -> ThreadPoolExecutor:
    """The pack's small pool for CPU work that releases the GIL (NumPy ufuncs, torch's random kernels)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=MAX_PARTS, thread_name_prefix="gendeg-cpu")
    return _POOL


def _numpy_can_take(t: torch.Tensor) -> bool:
    """Whether NumPy may work on ``t``'s memory in place (else torch's own op runs)."""
    return (t.device.type == "cpu" and t.dtype == torch.float32 and not t.requires_grad and not t.is_conj()
            and not t.is_neg() and t.layout == torch.strided and all(s >= 0 for s in t.stride()) and t.numel() > 0)


def _run(ufunc: np.ufunc, a: np.ndarray) -> None:
    with np.errstate(all="ignore"):  # as torch: log(0) = -inf, log(-1) = nan, no warnings
        ufunc(a, out=a)


def _apply(t: torch.Tensor, ufunc: np.ufunc, torch_op: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    if not _numpy_can_take(t):
        return torch_op(t)
    flat_t = flat_in_memory_order(t)
    if flat_t is None:  # e.g. rows of a larger image: down to blocks without gaps
        if t.dim() > 1:
            for sub in t:
                _apply(sub, ufunc, torch_op)
        else:
            _run(ufunc, t.detach().numpy())
        return t
    flat = flat_t.detach().numpy()
    n = flat.size
    parts = min(MAX_PARTS, torch.get_num_threads(), n // SPLIT_MIN)
    if parts <= 1:
        _run(ufunc, flat)
        return t
    bounds = [(n * j // parts) // 64 * 64 for j in range(parts)] + [n]
    list(pool().map(lambda j: _run(ufunc, flat[bounds[j] : bounds[j + 1]]), range(parts)))
    return t


def exp_(t: torch.Tensor) -> torch.Tensor:
    """``t ← exp(t)`` in place; returns ``t``."""
    return _apply(t, np.exp, torch.Tensor.exp_)


def log_(t: torch.Tensor) -> torch.Tensor:
    """``t ← ln(t)`` in place (``t`` ≥ 0: 0 gives −inf); returns ``t``."""
    return _apply(t, np.log, torch.Tensor.log_)


def sqrt_(t: torch.Tensor) -> torch.Tensor:
    """``t ← √t`` in place (``t`` ≥ 0); returns ``t``."""
    return _apply(t, np.sqrt, torch.Tensor.sqrt_)

"""NumPy's SIMD exp/log/sqrt on CPU tensors (core.synth.ufuncs): the values of float64 math in
every memory layout the synthesizer hands them, in place, the same on 1 or 2 threads, and
torch's own ops wherever NumPy cannot take the tensor."""

from __future__ import annotations

import warnings

import pytest
import torch
from comfyui_gendeg.core.synth import ufuncs

OPS = {"exp_": torch.exp, "log_": torch.log, "sqrt_": torch.sqrt}


def _values(name: str, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    u = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 0.98 + 0.01
    return u.log().mul_(4.0) if name == "exp_" else u  # exp: arguments in about -18..0


def _layouts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Views of copies of ``x [B,C,H,W]`` as the synthesizer passes them (each owns its memory)."""
    b, c, h, w = x.shape
    larger = torch.full((b, c, h + 6, w), 0.5)
    larger[:, :, 3 : 3 + h] = x
    return {
        "contiguous": x.clone(),
        "channels_last": x.clone(memory_format=torch.channels_last),
        "rows_of_a_larger_image": larger[:, :, 3 : 3 + h],  # not dense
        "every_third_value": x.reshape(-1).repeat_interleave(3)[::3],  # 1-D, strided
    }


@pytest.mark.parametrize("name", sorted(OPS))
def test_in_place_and_equal_to_float64_math_in_every_layout(name):
    x = _values(name, (2, 3, 20, 28))
    for layout, y in _layouts(x).items():
        base = y._base if y._base is not None else y
        before = base.clone()
        out = getattr(ufuncs, name)(y)
        assert out is y, layout
        want = OPS[name](x.double()).reshape(y.shape) if layout != "every_third_value" else OPS[name](x.double().reshape(-1))
        rel = ((y.double() - want).abs() / want.abs()).max()
        assert float(rel) < 1e-6, (layout, float(rel))  # float32 rounding (a few units in the last place)
        if y._base is not None:  # nothing outside the view was touched
            changed = (base != before)
            mask = torch.zeros_like(changed)
            mask.view(-1)[torch.as_strided(torch.arange(base.numel()), y.shape, y.stride(), y.storage_offset()).reshape(-1)] = True
            assert not (changed & ~mask).any(), layout


def test_edge_values_as_torch_without_warnings():
    cases = {
        "log_": ([0.0, -1.0, 1e-40, 1.0, float("inf")], torch.log),
        "exp_": ([-200.0, 100.0, 0.0, float("-inf"), float("nan")], torch.exp),
        "sqrt_": ([0.0, -1.0, 1e-40, 4.0, float("inf")], torch.sqrt),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NumPy's "invalid value"/"divide by zero" warnings are silenced
        for name, (vals, op) in cases.items():
            t = torch.tensor(vals, dtype=torch.float32)
            got = getattr(ufuncs, name)(t.clone())
            want = op(t)
            assert torch.equal(got.isnan(), want.isnan()), name
            ok = ~want.isnan()
            assert torch.allclose(got[ok], want[ok], rtol=1e-6, atol=0), (name, got, want)


@pytest.mark.parametrize("name", sorted(OPS))
def test_large_tensors_give_the_same_values_on_one_or_two_threads_and_at_any_offset(name):
    x = _values(name, (3 * 512 * 512 + 37,), seed=1)  # above the split size, not a multiple of the vector width
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = getattr(ufuncs, name)(x.clone())
        torch.set_num_threads(2)
        two = getattr(ufuncs, name)(x.clone())
    finally:
        torch.set_num_threads(saved)
    assert torch.equal(one, two)
    shifted = getattr(ufuncs, name)(x[5:].clone())  # other alignments and block boundaries
    assert torch.equal(shifted, one[5:])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_other_dtypes_and_tensors_that_need_gradients_use_torch(dtype):
    x = _values("log_", (4, 6)).to(dtype)
    assert torch.equal(ufuncs.log_(x.clone()), torch.log(x))
    w = (torch.rand(5) + 0.5).requires_grad_()
    y = w * 1.0  # a non-leaf that needs gradients: torch's op keeps the graph
    ufuncs.exp_(y).sum().backward()
    assert torch.allclose(w.grad, torch.exp(w.detach() * 1.0))

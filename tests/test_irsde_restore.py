"""IR-SDE restoration: nodes end to end, tiling vs untiled, out-of-memory halving, grey/RGBA/batches."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from comfyui_gendeg.core.errors import InputError
from comfyui_gendeg.core.restore.irsde import restore_sde
from comfyui_gendeg.core.restore.irsde_loader import SDERestorer
from comfyui_gendeg.core.restore.nets.irsde_unet import ConditionalUNet, irsde_ch_mult
from comfyui_gendeg.core.restore.sde import IRSDE
from comfyui_gendeg.nodes import NODE_CLASS_MAPPINGS, host
from comfyui_gendeg.nodes.restore_sde import GenDegIRSDELoader, GenDegIRSDERestore


class LocalNoiseNet(nn.Module):
    """A small-receptive-field noise net (two 3x3 convs) that also reads DA-CLIP's degradation embedding."""

    pad_multiple = 1

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(6, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 3, 3, padding=1)
        self.calls: list[tuple[int, int]] = []

    def forward(self, xt, cond, t, text_context=None, image_context=None):
        self.calls.append(tuple(xt.shape[-2:]))
        y = self.b(torch.tanh(self.a(torch.cat([xt - cond, cond], 1)))) * 0.1
        if text_context is not None:
            y = y + text_context.mean(-1)[:, None, None, None]
        return y


class FakeDaCLIP(nn.Module):
    """Stands in for DA-CLIP: embeddings that differ per image (mean colour), so per-image tiling is checked."""

    image_size = 16

    def encode_image(self, img):
        e = img.mean(dim=(2, 3)).repeat(1, 2)
        return e, e * 0.1


def _restorer(net, daclip=None, T=10):
    return SDERestorer(net, "test", IRSDE.create(30, T), "test", daclip)


def test_tiled_equals_untiled_for_a_local_network():
    img = torch.rand(2, 3, 40, 52, generator=torch.Generator().manual_seed(0))
    for daclip in (None, FakeDaCLIP()):
        r = _restorer(LocalNoiseNet(), daclip)
        full = restore_sde(r, img, generator=torch.Generator().manual_seed(1))
        tiled = restore_sde(r, img, generator=torch.Generator().manual_seed(1), tile=24, overlap=16, tile_batch=3)
        assert max(r.net.calls[-6:]) <= (24, 24)  # really tiled
        torch.testing.assert_close(tiled, full, rtol=0, atol=1e-5)
        assert float((full - img).abs().mean()) > 1e-3  # the restorer did something


def test_tiled_unet_stays_close_to_untiled_and_a_covering_tile_is_exact():
    torch.manual_seed(0)
    r = _restorer(ConditionalUNet(3, 3, 8, irsde_ch_mult(2)).eval(), T=6)
    img = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    full = restore_sde(r, img, generator=torch.Generator().manual_seed(3))
    same = restore_sde(r, img, generator=torch.Generator().manual_seed(3), tile=48, overlap=16)
    torch.testing.assert_close(same, full, rtol=0, atol=0)
    tiled = restore_sde(r, img, generator=torch.Generator().manual_seed(3), tile=32, overlap=16)
    # the UNet's linear attention is global, so tiles differ a little; blending keeps it small and seamless
    assert float((tiled - full).abs().mean()) < 0.02


def test_out_of_memory_halves_the_tile_and_keeps_it():
    class OOMNet(LocalNoiseNet):
        def forward(self, xt, cond, t, **kw):
            if max(xt.shape[-2:]) > 20:
                self.calls.append((-1, -1))
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().forward(xt, cond, t, **kw)

    net = OOMNet()
    img = torch.rand(1, 3, 40, 40)
    seen_oom = []
    out = restore_sde(
        _restorer(net, T=4), img, generator=torch.Generator().manual_seed(0), overlap=8,
        is_oom=host.is_oom, on_oom=lambda: seen_oom.append(1), min_tile=8,
    )
    assert out.shape == img.shape
    assert len(seen_oom) == 1  # 40 -> 20 once, in the first step only: later steps keep the small tile
    assert (-1, -1) not in net.calls[2:]
    with pytest.raises(Exception, match="smallest allowed"):
        restore_sde(_restorer(OOMNet(), T=2), img, overlap=4, is_oom=host.is_oom, min_tile=32)
    with pytest.raises(RuntimeError, match="CUDA out of memory"):  # without the predicate nothing is retried
        restore_sde(_restorer(OOMNet(), T=2), img)


def test_restore_validates_its_inputs():
    r = _restorer(LocalNoiseNet())
    with pytest.raises(InputError, match="steps"):
        restore_sde(r, torch.rand(1, 3, 8, 8), steps=11)
    with pytest.raises(InputError, match="RGB"):
        restore_sde(r, torch.rand(1, 4, 8, 8))
    with pytest.raises(InputError, match="precision"):
        restore_sde(r, torch.rand(1, 3, 8, 8), precision="int8")


@pytest.fixture
def tiny_checkpoint():
    folder = host.model_search_dirs("restore")[0]
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save({f"module.{k}": v for k, v in ConditionalUNet(3, 3, 8, irsde_ch_mult(2)).state_dict().items()},
               folder / "tiny_derain_irsde.pth")
    return "tiny_derain_irsde.pth"


def test_nodes_end_to_end_rgba_grey_batches_and_seed(tiny_checkpoint):
    assert {"GenDegIRSDELoader", "GenDegIRSDERestore"} <= set(NODE_CLASS_MAPPINGS)
    spec = GenDegIRSDELoader.INPUT_TYPES()["required"]
    assert tiny_checkpoint in spec["checkpoint"][0] and all("tooltip" in v[1] for v in spec.values())
    (restorer,) = GenDegIRSDELoader().load(tiny_checkpoint, "auto", "none", convert_to_safetensors=True)
    assert restorer.preset == "deraining (IR-SDE)"
    assert (host.model_search_dirs("restore")[0] / "tiny_derain_irsde.safetensors").is_file()
    node = GenDegIRSDERestore()
    rgba = torch.rand(2, 19, 23, 4, generator=torch.Generator().manual_seed(0))
    res = node.restore(rgba, restorer, "posterior", steps=3, seed=7, batch_size=1)
    out = res["result"][0]
    assert out.shape == rgba.shape and out.dtype == torch.float32 and 0 <= float(out.min()) <= float(out.max()) <= 1
    torch.testing.assert_close(out[..., 3], rgba[..., 3])  # alpha carried around the model
    assert res["ui"]["gendeg_compare"] and res["ui"]["gendeg_stats"][0]["steps"] == 3
    again = node.restore(rgba, restorer, "posterior", steps=3, seed=7, batch_size=1)["result"][0]
    torch.testing.assert_close(again, out, rtol=0, atol=0)
    other = node.restore(rgba, restorer, "posterior", steps=3, seed=8, batch_size=1)["result"][0]
    assert not torch.equal(other, out)
    grey = torch.rand(3, 17, 16, 1)
    for sampler in ("reverse_sde", "reverse_ode"):
        g = node.restore(grey, restorer, sampler, steps=2, seed=0, batch_size=2, tile_size=16, tile_overlap=8)["result"][0]
        assert g.shape == grey.shape and torch.isfinite(g).all()

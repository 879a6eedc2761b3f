"""Cancel inside ComfyUI: ComfyUI's own interrupt exception reaches ComfyUI unchanged.

ComfyUI records a cancel as ``execution_interrupted`` only when the exception a node raises
*is* ``comfy.model_management.InterruptProcessingException``; anything else (our
``Interrupted``, a wrapper, a chained copy) becomes ``execution_error`` with a traceback and
an error dialog. These tests put stub ``comfy``/``folder_paths`` modules in ``sys.modules``
(as ComfyUI provides them) whose ``throw_exception_if_processing_interrupted`` behaves like
ComfyUI's (raises once, then clears the flag), press "Cancel" part-way through a node's
progress, and check that the very exception object ComfyUI raised comes out of the node:
through the progress callback, the tiling out-of-memory fallback, the IR-SDE sampler, the
calibration loop of the synthesizer and the dataset writer (which must still leave no
partial files).
"""

from __future__ import annotations

import pytest
import torch
from comfy_stub import ComfyStub, InterruptProcessingException, install_comfy_stub
from comfyui_gendeg.core.errors import Interrupted
from comfyui_gendeg.core.restore.irsde_loader import SDERestorer
from comfyui_gendeg.core.restore.nets.irsde_unet import ConditionalUNet, irsde_ch_mult
from comfyui_gendeg.core.restore.sde import IRSDE
from comfyui_gendeg.nodes import dataset, host, restore, restore_sde, synth
from safetensors.torch import save_file
from spandrel.architectures.NAFNet import NAFNet


@pytest.fixture
def comfy(monkeypatch, tmp_path) -> ComfyStub:
    return install_comfy_stub(monkeypatch, tmp_path)


def _assert_comfy_interrupt(stub: ComfyStub, info: pytest.ExceptionInfo) -> None:
    """The exception that left the node is the one ComfyUI raised: same type, same object, not chained."""
    assert type(info.value) is InterruptProcessingException, f"got {type(info.value).__name__}: {info.value}"
    assert stub.raised and info.value is stub.raised[-1]
    assert not isinstance(info.value, Interrupted)


def _img(b=1, h=24, w=32, seed=0) -> torch.Tensor:
    return torch.rand(b, h, w, 3, generator=torch.Generator().manual_seed(seed))


def test_check_interrupted_lets_comfyuis_exception_through(comfy):
    host.check_interrupted()  # nothing pressed: nothing raised
    comfy.flag = True
    with pytest.raises(InterruptProcessingException) as info:
        host.check_interrupted()
    _assert_comfy_interrupt(comfy, info)
    bar = host.progress(3)
    comfy.flag = True
    with pytest.raises(InterruptProcessingException) as info:
        bar(1, 3)
    _assert_comfy_interrupt(comfy, info)


def test_outside_comfyui_the_runner_flag_raises_interrupted(monkeypatch):
    monkeypatch.setattr(host, "IN_COMFYUI", False)
    host.SETTINGS.interrupt.set()
    try:
        with pytest.raises(Interrupted):
            host.check_interrupted()
    finally:
        host.SETTINGS.interrupt.clear()


def test_cancel_during_synthesis_calibration(comfy):
    comfy.cancel_after(2)
    with pytest.raises(InterruptProcessingException) as info:
        synth.GenDegSynthesize().synthesize(_img(h=48, w=48), "haze", "mu", mu=0.1, strength=0.5, seed=1)
    _assert_comfy_interrupt(comfy, info)


def test_cancel_during_tiled_feedforward_restore(comfy):
    folder = host.model_search_dirs("restore")[0]
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = NAFNet(img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1])
    save_file(net.state_dict(), str(folder / "tiny_nafnet.safetensors"))
    restorer = restore.GenDegRestorerLoader().load("tiny_nafnet.safetensors")[0]
    comfy.cancel_after(2)  # after the second of six tiles: inside the out-of-memory fallback's try
    with pytest.raises(InterruptProcessingException) as info:
        restore.GenDegRestore().restore(_img(h=32, w=48), restorer, tile_size=16, overlap=4, tile_batch=1)
    _assert_comfy_interrupt(comfy, info)


@pytest.mark.parametrize("tile_size", [0, 16])
def test_cancel_during_irsde_sampling(comfy, tile_size):
    torch.manual_seed(1)
    sde = SDERestorer(ConditionalUNet(3, 3, 8, irsde_ch_mult(2)).eval(), "irsde-unet", IRSDE.create(10, 8), "test")
    comfy.cancel_after(3)
    with pytest.raises(InterruptProcessingException) as info:
        restore_sde.GenDegIRSDERestore().restore(_img(h=24, w=32), sde, steps=6, seed=0, tile_size=tile_size,
                                                 tile_overlap=4)
    _assert_comfy_interrupt(comfy, info)


def test_cancel_while_saving_a_dataset_leaves_no_partial_files(comfy, tmp_path):
    clean = [_img(b=3, h=16, w=16, seed=2)]
    degraded = [_img(b=3, h=16, w=16, seed=3)]
    comfy.cancel_after(2)
    with pytest.raises(InterruptProcessingException) as info:
        dataset.GenDegSaveDatasetPairs().save(clean, degraded, ["ds"], ["png"], [0], ["a\nb\nc"])
    _assert_comfy_interrupt(comfy, info)
    out = tmp_path / "output"
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]


def test_cancel_during_gendeg_sampling(comfy, tmp_path):
    from comfyui_gendeg.core.gendeg.conditioning import make_condition
    from comfyui_gendeg.core.gendeg.model import GenDegModel, load_tokenizer
    from comfyui_gendeg.nodes import gendeg
    from test_gendeg_fixtures import tiny_diffusers_parts, tiny_tokenizer_files

    unet, vae, text, stats_proj, cc = tiny_diffusers_parts(3)
    model = GenDegModel(unet=unet.eval(), vae=vae.eval(), text_encoder=text.eval(),
                        tokenizer=load_tokenizer(tiny_tokenizer_files(tmp_path / "tok")),
                        stats_proj=stats_proj, cc_projection=cc)
    cond = [make_condition("haze", "a road", mu=0.1, sigma=0.05)]
    comfy.cancel_after(1)
    with pytest.raises(InterruptProcessingException) as info:
        gendeg.GenDegSample().sample(_img(), model, cond, seed=1, steps=3, scheduler="ddim", text_guidance=7.5,
                                     image_guidance=1.5, resolution=32, batch_size=1)
    _assert_comfy_interrupt(comfy, info)

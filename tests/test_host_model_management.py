"""Every model the pack loads goes through the host's model management.

Inside ComfyUI (stub ``comfy.model_management`` / ``comfy.model_patcher`` modules in
``sys.modules``, as ComfyUI provides them): each model is wrapped once in a ModelPatcher that
holds all of its parameters and is loaded with ``load_models_gpu`` and the activation estimate
the node documents. Outside ComfyUI: the modules are on the compute device during the run
and end on the offload device after it (a "meta" offload device makes that observable on a
CPU-only machine), or stay loaded when ``keep_models_loaded`` is set.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
from comfyui_gendeg.core.gendeg.conditioning import make_condition
from comfyui_gendeg.core.gendeg.model import GenDegModel, load_tokenizer
from comfyui_gendeg.core.gendeg.structure import StructureNAFNet
from comfyui_gendeg.core.quality import api
from comfyui_gendeg.core.quality.backbones import alexnet_features
from comfyui_gendeg.core.restore.irsde_loader import SDERestorer
from comfyui_gendeg.core.restore.nets.irsde_unet import ConditionalUNet, irsde_ch_mult
from comfyui_gendeg.core.restore.sde import IRSDE
from comfyui_gendeg.nodes import gendeg, host, quality, restore, restore_sde
from safetensors.torch import save_file
from spandrel.architectures.NAFNet import NAFNet
from test_gendeg_fixtures import tiny_diffusers_parts, tiny_tokenizer_files

TINY_ALEX = (4, 6, 8, 8, 8)
CPU = torch.device("cpu")


# --- tiny models of every type ---------------------------------------------------------------


def _gendeg_model(tmp_path) -> GenDegModel:
    unet, vae, text, stats_proj, cc = tiny_diffusers_parts(3)
    tok = load_tokenizer(tiny_tokenizer_files(tmp_path / "tok"))
    return GenDegModel(unet=unet.eval(), vae=vae.eval(), text_encoder=text.eval(), tokenizer=tok,
                       stats_proj=stats_proj, cc_projection=cc)


def _restorer():
    folder = host.model_search_dirs("restore")[0]
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = NAFNet(img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1])
    save_file(net.state_dict(), str(folder / "tiny_nafnet.safetensors"))
    return restore.GenDegRestorerLoader().load("tiny_nafnet.safetensors")[0]


def _sde_restorer() -> SDERestorer:
    torch.manual_seed(1)
    return SDERestorer(ConditionalUNet(3, 3, 8, irsde_ch_mult(2)).eval(), "irsde-unet", IRSDE.create(10, 4), "test")


def _lpips(tmp_path) -> api.IQAModel:
    g = torch.Generator().manual_seed(0)
    bb = {f"features.{k}": torch.randn(v.shape, generator=g) * 0.3 for k, v in alexnet_features(TINY_ALEX).state_dict().items()}
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(TINY_ALEX)}
    torch.save(bb, tmp_path / "alex.pth")
    torch.save(heads, tmp_path / "heads.pth")
    return api.load_lpips("alex", tmp_path / "alex.pth", tmp_path / "heads.pth", widths=TINY_ALEX)


def _structure_checkpoint() -> str:
    folder = host.model_search_dirs("gendeg")[0]
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(2)
    net = StructureNAFNet(width=8, enc_blk_nums=[1], middle_blk_num=1, dec_blk_nums=[1])
    torch.save({"state_dict": net.state_dict()}, folder / "nafnet_sd.ckpt")
    return "nafnet_sd.ckpt"


def _params(*modules: torch.nn.Module) -> set[int]:
    return {id(p) for m in modules for p in m.parameters()}


def _img(b=1, h=24, w=32, c=3, seed=0) -> torch.Tensor:
    return torch.rand(b, h, w, c, generator=torch.Generator().manual_seed(seed))


# Each case: (build model, modules that must be managed, run the node that uses it, expected activation bytes).
def _cases(tmp_path):
    model = _gendeg_model(tmp_path)
    cond = [make_condition("haze", "a road", mu=0.1, sigma=0.05)]
    restorer = _restorer()
    sde = _sde_restorer()
    lp = _lpips(tmp_path)
    image = _img()
    return {
        "gendeg": (
            model, (model.unet, model.vae, model.text_encoder, model.stats_proj, model.cc_projection),
            lambda: gendeg.GenDegSample().sample(image, model, cond, seed=1, steps=1, scheduler="ddim", text_guidance=7.5,
                                                 image_guidance=1.5, resolution=32, batch_size=2),
            # one image x one condition at 32x32 working size: UNet x3 branches (164/px) + VAE decode (2178/px), fp32
            32 * 32 * (3 * 164 + 2178) * 4,
        ),
        "restorer": (
            restorer, (restorer.descriptor.model,),
            lambda: restore.GenDegRestore().restore(image, restorer, tile_size=16, overlap=4, tile_batch=2),
            16 * 16 * 2 * 384 * 3 * 4,  # two 16-px tiles at once, fp32
        ),
        "sde_restorer": (
            sde, (sde.net,),
            lambda: restore_sde.GenDegIRSDERestore().restore(image, sde, steps=2, seed=0, batch_size=1),
            24 * 32 * 384 * 3 * 4,  # the whole 24x32 image, fp32
        ),
        "iqa": (
            lp, (lp.net,),
            lambda: quality.GenDegScoreReference().score(_img(h=64, w=64), _img(h=64, w=64, seed=1), "psnr,lpips",
                                                         iqa_model=lp),
            2 * 64 * 64 * 2048 * 4,  # image and reference
        ),
    }


# --- ComfyUI stubs -------------------------------------------------------------------------


class _Patcher:
    """Records what comfy.model_patcher.ModelPatcher is given."""

    made: list[_Patcher] = []

    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):  # noqa: ANN001
        self.model, self.load_device, self.offload_device, self.size = model, load_device, offload_device, size
        _Patcher.made.append(self)


@pytest.fixture
def in_comfyui(monkeypatch, tmp_path):
    """The host as inside ComfyUI, with stub comfy modules (CPU as the GPU)."""
    calls: list[dict] = []
    mm = types.ModuleType("comfy.model_management")

    def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        calls.append({"models": list(models), "memory_required": memory_required, "force_full_load": force_full_load})
        for m in models:  # ComfyUI loads a model onto its load device
            m.model.to(m.load_device)

    mm.load_models_gpu = load_models_gpu
    mm.get_torch_device = lambda: CPU
    mm.unet_offload_device = lambda: CPU
    mm.soft_empty_cache = lambda force=False: None
    mm.throw_exception_if_processing_interrupted = lambda: None
    mp = types.ModuleType("comfy.model_patcher")
    mp.ModelPatcher = _Patcher
    utils = types.ModuleType("comfy.utils")

    class ProgressBar:
        def __init__(self, total):  # noqa: ANN001
            self.total = total

        def update_absolute(self, value, total=None):  # noqa: ANN001
            pass

    utils.ProgressBar = ProgressBar
    comfy = types.ModuleType("comfy")
    comfy.model_management, comfy.model_patcher, comfy.utils = mm, mp, utils
    folders = types.ModuleType("folder_paths")
    folders.models_dir = str(tmp_path / "models")
    folders.get_folder_paths = lambda name: [str(tmp_path / "models" / name.removeprefix("gendeg_"))]
    folders.get_temp_directory = lambda: str(tmp_path / "temp")
    folders.get_output_directory = lambda: str(tmp_path / "output")
    folders.get_input_directory = lambda: str(tmp_path / "input")
    for name, mod in (("comfy", comfy), ("comfy.model_management", mm), ("comfy.model_patcher", mp),
                      ("comfy.utils", utils), ("folder_paths", folders)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(host, "IN_COMFYUI", True)
    monkeypatch.setattr(host, "_mm", mm)
    monkeypatch.setattr(host, "_comfy_utils", utils)
    monkeypatch.setattr(host, "_folder_paths", folders)
    _Patcher.made.clear()
    return calls


def test_inside_comfyui_every_model_is_loaded_through_its_memory_manager(tmp_path, in_comfyui, monkeypatch):
    cases = _cases(tmp_path)
    for name, (owner, modules, run, activations) in cases.items():
        in_comfyui.clear()
        made = len(_Patcher.made)
        run()
        run()  # a second run reuses the same registration
        assert len(_Patcher.made) == made + 1, f"{name}: one ModelPatcher per model, made once"
        patcher = _Patcher.made[-1]
        assert len(in_comfyui) == 2 and all(c["models"] == [patcher] for c in in_comfyui), name
        assert all(c["force_full_load"] for c in in_comfyui), f"{name}: plain torch modules load whole"
        assert _params(patcher.model) == _params(*modules), f"{name}: the patcher must hold every part of the model"
        weights = sum(t.numel() * t.element_size() for m in modules for t in m.state_dict().values())
        assert patcher.size == weights > 0, name
        assert in_comfyui[0]["memory_required"] == activations, name
        assert (patcher.load_device, patcher.offload_device) == (CPU, CPU)
        assert any(h.patcher is patcher for h in owner._gendeg_model_handles.values()), f"{name}: kept on the model"
    # ComfyUI logs "Requested to load <class name>": the wrapper says which model it is
    assert type(_Patcher.made[0].model).__name__ == "GenDegGenerator"


def test_inside_comfyui_structure_net_and_daclip_are_managed_too(tmp_path, in_comfyui):
    name = _structure_checkpoint()
    clean, degraded = _img(seed=3), _img(seed=4)
    out = gendeg.GenDegStructureCorrect().correct(clean, degraded, name)["result"][0]
    assert out.shape == degraded.shape
    (call,) = in_comfyui
    (patcher,) = call["models"]
    assert type(patcher.model).__name__ == "GenDegStructureNAFNet" and patcher.size > 0
    assert call["memory_required"] == 24 * 32 * 384 * 3 * 4
    # a DA-CLIP restorer registers its network and DA-CLIP separately (the type detector loads only DA-CLIP)
    sde = _sde_restorer()
    sde.daclip = torch.nn.Linear(4, 4)
    nh, (dh,) = restore_sde._net_handle(sde), restore_sde._daclip_handles(sde)
    assert nh is not dh and _params(dh.modules) == _params(sde.daclip) and _params(nh.modules) == _params(sde.net)
    assert restore_sde._net_handle(sde) is nh  # kept on the restorer
    # CLIP-based quality models: the CLIP inside is managed (NIQE has no network)
    clip = types.SimpleNamespace(model=torch.nn.Linear(3, 3))
    assert _params(quality._handle(api.IQAModel("clip-iqa", clip)).modules) == _params(clip.model)
    assert quality._handle(api.IQAModel("niqe", (None, None, 96))) is None


def test_outside_comfyui_models_end_on_the_offload_device(tmp_path, monkeypatch):
    assert not host.IN_COMFYUI
    cases = _cases(tmp_path)
    seen: dict[str, set[str]] = {}
    # "meta" as the offload device: a model that is not moved back would stay on the CPU
    monkeypatch.setattr(host, "offload_device", lambda: torch.device("meta"))
    real_to = host.HostedModules.to
    for name, (_owner, modules, run, _) in cases.items():

        def spy(self, *args, _name=name, **kwargs):  # noqa: ANN001, ANN202
            seen.setdefault(_name, set()).add(str(args[0] if args else kwargs.get("device")))
            return real_to(self, *args, **kwargs)

        monkeypatch.setattr(host.HostedModules, "to", spy)
        run()
        devices = {p.device.type for m in modules for p in m.parameters()}
        assert devices == {"meta"}, f"{name}: parameters left on {devices} after the run"
        assert seen[name] == {"cpu", "meta"}, name


def test_outside_comfyui_keep_models_loaded_leaves_them_on_the_device(tmp_path, monkeypatch):
    monkeypatch.setattr(host, "offload_device", lambda: torch.device("meta"))
    monkeypatch.setattr(host.SETTINGS, "keep_models_loaded", True)
    restorer = _restorer()
    first = restore.GenDegRestore().restore(_img(), restorer, tile_size=0)["result"][0]
    again = restore.GenDegRestore().restore(_img(), restorer, tile_size=0)["result"][0]
    assert {p.device.type for p in restorer.descriptor.model.parameters()} == {"cpu"}
    torch.testing.assert_close(first, again, rtol=0, atol=0)


def test_outside_comfyui_an_error_still_moves_the_model_back(monkeypatch):
    monkeypatch.setattr(host, "offload_device", lambda: torch.device("meta"))
    net = torch.nn.Linear(2, 2)
    handle = host.model_handle(net, {"net": net}, "test net")
    assert host.model_handle(net, {"net": net}, "test net") is handle
    with pytest.raises(RuntimeError, match="boom"), host.use_on_device(handle, pixels=10, bytes_per_pixel=4) as dev:
        assert dev == CPU and net.weight.device == CPU
        raise RuntimeError("boom")
    assert net.weight.device.type == "meta"
    assert host.activation_bytes(10, 4) == 40 and handle.size_bytes == (4 + 2) * 4

"""Stub ``comfy`` and ``folder_paths`` modules, as ComfyUI provides them to custom nodes.

:func:`install_comfy_stub` puts them in ``sys.modules`` and switches ``nodes.host`` to its
inside-ComfyUI branch for one test (monkeypatch undoes both). The interrupt behaves like
ComfyUI's ``comfy.model_management``: ``throw_exception_if_processing_interrupted`` raises
``InterruptProcessingException`` once and clears the flag; ``ComfyStub.cancel_after(k)``
presses Cancel after the k-th progress-bar update. Model folders are ``<tmp>/models/gendeg/<kind>``.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
from comfyui_gendeg.nodes import host

CPU = torch.device("cpu")


class InterruptProcessingException(Exception):  # noqa: N818 - ComfyUI's name
    """Stands in for comfy.model_management.InterruptProcessingException."""


class ComfyStub:
    """What the stub modules record; ``flag`` is ComfyUI's ``interrupt_processing``."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self.flag = False
        self.raised: list[InterruptProcessingException] = []
        self.updates = 0
        self.cancel_at: int | None = None

    def throw_exception_if_processing_interrupted(self) -> None:  # as ComfyUI: raise once, clear the flag
        if self.flag:
            self.flag = False
            exc = InterruptProcessingException()
            self.raised.append(exc)
            raise exc

    def cancel_after(self, k: int) -> None:
        self.cancel_at, self.updates = k, 0

    def on_update(self) -> None:
        self.updates += 1
        if self.cancel_at is not None and self.updates >= self.cancel_at:
            self.flag = True


def install_comfy_stub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ComfyStub:
    """Stub ComfyUI modules for one test; returns the :class:`ComfyStub` that drives them."""
    stub = ComfyStub(tmp_path / "models")
    mm = types.ModuleType("comfy.model_management")
    mm.InterruptProcessingException = InterruptProcessingException
    mm.throw_exception_if_processing_interrupted = stub.throw_exception_if_processing_interrupted
    mm.get_torch_device = lambda: CPU
    mm.unet_offload_device = lambda: CPU
    mm.soft_empty_cache = lambda force=False: None
    mm.OOM_EXCEPTION = torch.cuda.OutOfMemoryError

    def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        for m in models:
            m.model.to(m.load_device)

    mm.load_models_gpu = load_models_gpu
    mp = types.ModuleType("comfy.model_patcher")

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):  # noqa: ANN001
            self.model, self.load_device, self.offload_device, self.size = model, load_device, offload_device, size

    mp.ModelPatcher = ModelPatcher
    utils = types.ModuleType("comfy.utils")

    class ProgressBar:
        def __init__(self, total):  # noqa: ANN001
            self.total = total

        def update_absolute(self, value, total=None, preview=None):  # noqa: ANN001
            stub.on_update()

    utils.ProgressBar = ProgressBar
    pkg = types.ModuleType("comfy")
    pkg.model_management, pkg.model_patcher, pkg.utils = mm, mp, utils
    folders = types.ModuleType("folder_paths")
    folders.models_dir = str(stub.models_dir)
    folders.folder_names_and_paths = {}

    def get_folder_paths(name: str) -> list[str]:
        return list(folders.folder_names_and_paths[name][0])

    folders.get_folder_paths = get_folder_paths
    folders.get_temp_directory = lambda: str(tmp_path / "temp")
    folders.get_output_directory = lambda: str(tmp_path / "output")
    folders.get_input_directory = lambda: str(tmp_path / "input")
    for name, mod in (("comfy", pkg), ("comfy.model_management", mm), ("comfy.model_patcher", mp),
                      ("comfy.utils", utils), ("folder_paths", folders)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(host, "IN_COMFYUI", True)
    monkeypatch.setattr(host, "_mm", mm)
    monkeypatch.setattr(host, "_comfy_utils", utils)
    monkeypatch.setattr(host, "_folder_paths", folders)
    host._register_comfy_model_folders()  # what importing the pack does inside ComfyUI
    return stub

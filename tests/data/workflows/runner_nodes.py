"""Small test-only V1 node classes for the runner tests (never part of the pack)."""

from __future__ import annotations

import torch
from comfyui_gendeg.nodes import host

CALLS: list[tuple[str, object]] = []


class TestNoise:
    """Adds seeded Gaussian noise: deterministic for a seed."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "image"}),
                "amount": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "std"}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**32 - 1, "tooltip": "seed"}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "run"
    CATEGORY = "GenDeg/Test"
    DESCRIPTION = "test"

    def run(self, image, amount, seed):
        CALLS.append(("TestNoise", (amount, seed)))
        g = torch.Generator().manual_seed(seed)
        return ((image + amount * torch.randn(image.shape, generator=g)).clamp(0, 1),)


class TestInvert:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE", {"tooltip": "image"})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "GenDeg/Test"
    DESCRIPTION = "test"

    def run(self, image):
        CALLS.append(("TestInvert", None))
        return (1.0 - image,)


class TestSplit:
    """A batch → a list of single images (OUTPUT_IS_LIST)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE", {"tooltip": "image"})}}

    RETURN_TYPES = ("IMAGE", "INT")
    RETURN_NAMES = ("images", "index")
    OUTPUT_IS_LIST = (True, True)
    FUNCTION = "run"
    CATEGORY = "GenDeg/Test"
    DESCRIPTION = "test"

    def run(self, image):
        return ([image[i : i + 1] for i in range(image.shape[0])], list(range(image.shape[0])))


class TestScale:
    """Multiplies by a factor; runs once per list item."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "image"}),
                "factor": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "tooltip": "factor"}),
                "mode": (["mul", "add"], {"tooltip": "mode"}),
            },
            "optional": {
                "index": ("INT", {"forceInput": True, "tooltip": "index"}),
                "bias": ("FLOAT", {"default": 0.25, "min": -1.0, "max": 1.0, "tooltip": "bias"}),
                "flag": ("BOOLEAN", {"default": False, "tooltip": "flag"}),
                "note": ("STRING", {"default": "", "multiline": True, "tooltip": "note"}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "GenDeg/Test"
    DESCRIPTION = "test"

    def run(self, image, factor, mode, bias, index=None, flag=False, note=""):  # bias: no Python default
        CALLS.append(("TestScale", (factor, mode, bias, index, flag, note)))
        return (image * factor if mode == "mul" else image + factor,)


class TestCollect:
    """INPUT_IS_LIST output node: shows how many items and their indices it got."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"images": ("IMAGE", {"tooltip": "images"})},
            "optional": {"index": ("INT", {"forceInput": True, "tooltip": "index"})},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"},
        }

    INPUT_IS_LIST = True
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "run"
    CATEGORY = "GenDeg/Test"
    DESCRIPTION = "test"

    def run(self, images, index=None, prompt=None, extra_pnginfo=None, unique_id=None):
        CALLS.append(("TestCollect", (len(images), index, unique_id[0], sorted(prompt[0]), extra_pnginfo[0])))
        means = [round(float(x.mean()), 6) for x in images]
        return {"ui": {"count": [len(images)], "means": means, "shard": [list(host.shard())]}}


class TestBatch:
    """A batch of n constant images, image i filled with i/n."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"n": ("INT", {"default": 3, "min": 1, "max": 16, "tooltip": "n"})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "GenDeg/Test"
    DESCRIPTION = "test"

    def run(self, n):
        return (torch.arange(n, dtype=torch.float32).div(n).view(n, 1, 1, 1).expand(n, 4, 4, 3).clone(),)


class TestModelLoader:
    """A combo of model files on disk, like the pack's loaders."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"checkpoint": (host.list_models("restore"), {"tooltip": "file"})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    CATEGORY = "GenDeg/Test"
    DESCRIPTION = "test"

    def run(self, checkpoint):
        return (checkpoint,)


class TestProgress:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 3, "min": 1, "max": 100, "tooltip": "steps"})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "GenDeg/Test"
    DESCRIPTION = "test"

    def run(self, steps):
        update = host.progress(steps, "test")
        for i in range(steps):
            update(i + 1, steps)
        return (steps,)


class TestShow:
    """Output node for any value."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*", {"tooltip": "value"})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "run"
    CATEGORY = "GenDeg/Test"
    DESCRIPTION = "test"

    def run(self, value):
        return {"ui": {"value": [str(value)]}}


class TestFail:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE,MASK", {"tooltip": "image"})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "GenDeg/Test"
    DESCRIPTION = "test"

    def run(self, image):
        raise RuntimeError("boom")


TEST_NODES = {
    c.__name__: c for c in (TestBatch, TestModelLoader, TestNoise, TestInvert, TestSplit, TestScale, TestCollect, TestProgress, TestShow, TestFail)
}

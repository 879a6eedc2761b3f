"""DriftRec nodes: load a DriftRec score network, restore JPEG-compressed images."""

from __future__ import annotations

import time

import torch

from ..core.image import from_comfy, restore_channels, to_comfy, to_rgb
from ..core.restore.driftrec import CORRECTORS, SAMPLERS, restore_driftrec
from ..core.restore.driftrec_loader import SDE_CHOICES, WEIGHTS, DriftRecRestorer, load_driftrec
from ..core.weights import resolve
from . import host, ui

CATEGORY = "GenDeg/Restore"
#: Working memory per pixel of NCSN++ (nf 128, 6 input channels), in units of its element size.
PER_PIXEL = 384 * 6


def _handle(model: DriftRecRestorer) -> host.ModelHandle:
    return host.model_handle(model, {"net": model.net}, "GenDeg DriftRec NCSN++", key="net")


class GenDegDriftRecLoader:
    DESCRIPTION = (
        "Load a DriftRec score network (blind JPEG restoration with the drifting OUVE/CosVE SDE) from "
        "models/gendeg/restore: the official PyTorch-Lightning .ckpt of sp-uhh/driftrec (read safely and converted "
        "once to <name>.driftrec.safetensors next to it), that converted file, or a model trained with "
        "`gendeg train driftrec`. The network size and the SDE are read from the file. DriftRec publishes no "
        "weights: train your own or use the authors' checkpoint if you have one."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("DRIFTREC_MODEL",)
    RETURN_NAMES = ("driftrec",)
    OUTPUT_TOOLTIPS = ("The NCSN++ score network and its SDE.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        files = [n for n in host.model_choices("restore", lambda e: e.family == "driftrec")
                 if not n.endswith(".raw.driftrec.safetensors")]
        return {
            "required": {
                "checkpoint": (files, {"tooltip": "DriftRec checkpoint in models/gendeg/restore: the official .ckpt, its "
                                       "converted .driftrec.safetensors, or a .safetensors from gendeg train driftrec."}),
                "weights": (list(WEIGHTS), {"default": "ema", "tooltip": "ema: the exponential moving average of the "
                            "weights (what the paper reports); raw: the last training weights (the official enhance "
                            "script's default without --ema)."}),
                "sde": (list(SDE_CHOICES), {"default": "auto", "tooltip": "auto: the SDE the model was trained with (from "
                        "the file; OUVE gamma 1, sigma 0.01..1 when the file does not say). ouve / cosve: force one "
                        "(the official D2KF2K model uses OUVE, the CelebA-HQ one CosVE)."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint: str | None = None):
        return host.validate_model("restore", checkpoint)

    def load(self, checkpoint: str, weights: str = "ema", sde: str = "auto"):
        path = resolve(checkpoint, host.model_search_dirs("restore"))
        model = load_driftrec(path, weights, sde)
        model.net.to(host.offload_device())
        return (model,)


class GenDegDriftRecRestore:
    DESCRIPTION = (
        "Remove JPEG artefacts with DriftRec (from GenDeg DriftRec Loader): start from the JPEG plus noise and run "
        "the reverse drifting SDE, 100 Euler-Maruyama steps from t=1 to t=0.03 returning the last mean (the "
        "official defaults). Options: a Langevin corrector, the deterministic probability-flow ODE, fewer steps, "
        "the average of several samples (smoother, higher PSNR), and the official per-channel colour correction. "
        "Large images run the network in overlapping tiles blended smoothly. Grey and RGBA images are handled."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("restored",)
    FUNCTION = "restore"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "JPEG-compressed images (any size, 1-4 channels, a batch is fine)."}),
                "driftrec": ("DRIFTREC_MODEL", {"tooltip": "The model from GenDeg DriftRec Loader."}),
                "steps": ("INT", {"default": 100, "min": 1, "max": 1000, "tooltip": "Reverse steps N (official: 100); "
                          "each step moves 1/N in process time. Fewer is faster and usually blurrier."}),
                "sampler": (list(SAMPLERS), {"default": "euler_maruyama", "tooltip": "euler_maruyama: the official "
                            "stochastic sampler. probability_flow: the deterministic ODE with the same score (no noise "
                            "after the start)."}),
                "corrector": (list(CORRECTORS), {"default": "none", "tooltip": "langevin: one annealed Langevin step "
                              "before every predictor step (twice the network evaluations); none: official default."}),
                "samples": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Average this many independent samples "
                            "(K times the work): higher PSNR/SSIM, less hallucinated detail."}),
                "colour_correction": ("BOOLEAN", {"default": False, "tooltip": "Shift each colour channel so its mean "
                                      "matches the input's (the paper's fix for occasional colour drift)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "Seed of all the sampler's noise; same inputs and seed give the same result."}),
                "tile_size": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 64, "tooltip": "Largest tile side "
                              "for the network in pixels (0 = whole image). Use 512-1024 for large images; halved "
                              "automatically on out-of-memory."}),
                "tile_overlap": ("INT", {"default": 64, "min": 0, "max": 1024, "step": 8, "tooltip": "Overlap between "
                                 "neighbouring tiles in pixels; larger hides seams better."}),
                "precision": (["auto", "fp32", "bf16", "fp16"], {"default": "auto", "tooltip": "Network precision "
                              "(autocast). auto: bf16 on CUDA GPUs that support it (else fp16), fp32 elsewhere. The SDE "
                              "arithmetic stays fp32."}),
            },
            "optional": {
                "t_end": ("FLOAT", {"default": 0.03, "min": 0.001, "max": 0.5, "step": 0.001, "tooltip": "Process time "
                          "of the last step (official 0.03); the result is that step's mean."}),
                "snr": ("FLOAT", {"default": 0.15, "min": 0.001, "max": 1.0, "step": 0.005, "tooltip": "Signal-to-noise "
                        "ratio of the Langevin corrector's step size (official 0.15)."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Images sampled together (faster "
                               "on a GPU, more memory). Part of the seed: change it and the noise changes."}),
            },
        }

    def restore(self, image: torch.Tensor, driftrec: DriftRecRestorer, steps: int = 100, sampler: str = "euler_maruyama",
                corrector: str = "none", samples: int = 1, colour_correction: bool = False, seed: int = 0,
                tile_size: int = 0, tile_overlap: int = 64, precision: str = "auto", t_end: float = 0.03,
                snr: float = 0.15, batch_size: int = 1):
        device = host.torch_device()
        if precision == "auto":
            precision = "fp32" if device.type != "cuda" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
        x, layout = to_rgb(from_comfy(image))
        chunks = [(i, min(i + batch_size, x.shape[0])) for i in range(0, x.shape[0], batch_size)]
        per_chunk = samples * steps
        bar = host.progress(per_chunk * len(chunks), "DriftRec")
        generator = torch.Generator().manual_seed(int(seed))
        h, w = x.shape[-2:]
        pixels = (min(tile_size, h) * min(tile_size, w) if tile_size > 0 else h * w) * min(batch_size, x.shape[0])
        per_pixel = PER_PIXEL * (4 if precision == "fp32" else 2)
        outs = []
        start = time.perf_counter()
        with host.use_on_device(_handle(driftrec), pixels=pixels, bytes_per_pixel=per_pixel) as device:
            for k, (a, b) in enumerate(chunks):
                outs.append(restore_driftrec(
                    driftrec, x[a:b].contiguous(), steps=steps, t_end=t_end, sampler=sampler, corrector=corrector,
                    snr=snr, samples=samples, colour_correction=colour_correction, generator=generator, device=device,
                    precision=precision, tile=tile_size, overlap=tile_overlap, is_oom=host.is_oom,
                    on_oom=host.free_memory, progress=lambda i, n, k=k: bar(k * per_chunk + i, per_chunk * len(chunks)),
                ))
        seconds = time.perf_counter() - start
        restored = to_comfy(restore_channels(torch.cat(outs), layout))
        stats = ui.stats_ui([{"steps": steps, "samples": samples, "seconds_per_image": seconds / x.shape[0]}])
        return {"ui": ui.merge_ui(stats, ui.compare_ui(image, restored)), "result": (restored,)}


NODE_CLASS_MAPPINGS = {
    "GenDegDriftRecLoader": GenDegDriftRecLoader,
    "GenDegDriftRecRestore": GenDegDriftRecRestore,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "GenDegDriftRecLoader": "GenDeg DriftRec Loader (JPEG)",
    "GenDegDriftRecRestore": "GenDeg DriftRec Restore (JPEG)",
}

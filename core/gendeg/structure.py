"""GenDeg's optional structure correction: a NAFNet on (clean ‖ generated) that fixes geometry.

Facts of the official code (``run_single.py``, ``NAFNet_arch.py``): a NAFNet with 6 input
channels (the clean image and the generated degraded image, both in [-1, 1]), width 64,
encoder blocks [2, 2, 4, 8], 12 middle blocks, decoder blocks [2, 2, 2, 2], a 3-channel
ending convolution, whose output is ADDED to the generated image (channels 3..5 of the
input); the input is zero-padded to a multiple of 16 and the result cropped back, then
clamped to [-1, 1]. The official sampler applies it automatically for haze, motion blur
and raindrops (``--auto_s``). The checkpoint (``nafnet_sd.ckpt``) holds ``state_dict`` with
the plain NAFNet key names (``intro``, ``encoders.i.j.*``, ``downs``, ``middle_blks``,
``ups``, ``decoders``, ``ending``).

The network is written here from that description (LayerNorm over channels with eps 1e-6,
SimpleGate, simplified channel attention, learnable β/γ residual scales).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, WeightsError
from ..image import check_image
from ..weights import load_state_dict

#: Types the official ``--auto_s`` corrects.
AUTO_TYPES = ("haze", "motion_blur", "raindrop")
OFFICIAL_CONFIG = {"img_channel": 6, "width": 64, "enc_blk_nums": [2, 2, 4, 8], "middle_blk_num": 12,
                   "dec_blk_nums": [2, 2, 2, 2]}


class LayerNorm2d(nn.Module):
    """Layer norm over the channel axis of ``[B,C,H,W]`` (biased variance, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) * torch.rsqrt(var + self.eps)
        return self.weight[None, :, None, None] * y + self.bias[None, :, None, None]


class NAFBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        dw = c * 2
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.conv4 = nn.Conv2d(c, c * 2, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    @staticmethod
    def _gate(x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self._gate(self.conv2(self.conv1(self.norm1(inp))))
        x = self.conv3(x * self.sca(x))
        y = inp + x * self.beta
        x = self.conv5(self._gate(self.conv4(self.norm2(y))))
        return y + x * self.gamma


class StructureNAFNet(nn.Module):
    """NAFNet(6 → 3) whose output is added to the generated image (input channels 3..5)."""

    def __init__(self, img_channel: int = 6, width: int = 64, enc_blk_nums: Sequence[int] = (2, 2, 4, 8),
                 middle_blk_num: int = 12, dec_blk_nums: Sequence[int] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.intro = nn.Conv2d(img_channel, width, 3, padding=1)
        self.ending = nn.Conv2d(width, 3, 3, padding=1)
        self.encoders, self.decoders, self.ups, self.downs = nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        chan = width
        for n in enc_blk_nums:
            self.encoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(n)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan *= 2
        self.middle_blks = nn.Sequential(*[NAFBlock(chan) for _ in range(middle_blk_num)])
        for n in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(n)]))
        self.padder_size = 2 ** len(self.encoders)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        """``inp`` ``[B,6,H,W]`` = (clean, generated) in [-1, 1] -> corrected ``[B,3,H,W]`` (not clamped)."""
        h, w = inp.shape[-2:]
        p = self.padder_size
        inp = F.pad(inp, (0, (-w) % p, 0, (-h) % p))
        x = self.intro(inp)
        skips = []
        for enc, down in zip(self.encoders, self.downs, strict=True):
            x = enc(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for dec, up, skip in zip(self.decoders, self.ups, skips[::-1], strict=True):
            x = dec(up(x) + skip)
        x = self.ending(x) + inp[:, 3:6]
        return x[:, :, :h, :w]


def config_from_state_dict(sd: dict[str, torch.Tensor]) -> dict:
    """NAFNet sizes from tensor shapes (the official checkpoint gives the OFFICIAL_CONFIG)."""
    if "intro.weight" not in sd or "ending.weight" not in sd:
        hint = " (a GenDeg generator? load it with the GenDeg model loader)" if any(
            k.startswith("model.diffusion_model.") for k in sd) else ""
        raise WeightsError(f"not a NAFNet structure-correction checkpoint: no intro/ending convolutions{hint}")
    intro = sd["intro.weight"]
    if intro.shape[1] != 6 or sd["ending.weight"].shape[0] != 3:
        raise WeightsError(
            f"this NAFNet maps {intro.shape[1]} -> {sd['ending.weight'].shape[0]} channels; GenDeg's structure "
            "correction maps 6 (clean + generated) -> 3. It is an ordinary NAFNet restorer: use GenDeg Restore."
        )

    def count(prefix: str, idx: int) -> int:
        return len({k.split(".")[2] for k in sd if k.startswith(f"{prefix}.{idx}.")})

    n_enc = len({k.split(".")[1] for k in sd if k.startswith("encoders.")})
    n_dec = len({k.split(".")[1] for k in sd if k.startswith("decoders.")})
    return {
        "img_channel": 6,
        "width": int(intro.shape[0]),
        "enc_blk_nums": [count("encoders", i) for i in range(n_enc)],
        "middle_blk_num": len({k.split(".")[1] for k in sd if k.startswith("middle_blks.")}),
        "dec_blk_nums": [count("decoders", i) for i in range(n_dec)],
    }


def load_structure_model(path: str | Path) -> StructureNAFNet:
    """The official ``nafnet_sd.ckpt`` (``state_dict``, or ``params``), or a safetensors of the same keys."""
    from ..weights.safe_load import find_state_dict, load_pickle

    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        sd = load_state_dict(path)
    else:
        sd = find_state_dict(load_pickle(path, ()), keys=("state_dict", "params_ema", "params"))
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    net = StructureNAFNet(**config_from_state_dict(sd))
    result = net.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        bad = (result.missing_keys or result.unexpected_keys)[0]
        raise WeightsError(
            f"{path.name}: NAFNet weights do not match ({len(result.missing_keys)} missing, "
            f"{len(result.unexpected_keys)} unexpected; first: {bad})"
        )
    return net.eval().requires_grad_(False)


@torch.no_grad()
def correct_structure(
    net: StructureNAFNet,
    clean: torch.Tensor,
    generated: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    tile: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Structure-corrected degraded images ``[B,3,H,W]`` in 0..1 from ``clean`` and ``generated`` (same shape, 0..1).

    ``tile > 0`` runs in overlapping tiles of that side (for large images).
    """
    check_image(clean, "clean image")
    check_image(generated, "generated image")
    if clean.shape != generated.shape or clean.shape[1] != 3:
        raise InputError(
            f"clean {tuple(clean.shape)} and generated {tuple(generated.shape)} must both be [B,3,H,W] of the same "
            "size; resize the clean image to the generated one first"
        )
    dev = torch.device(device)
    net.to(dev)
    x = torch.cat([clean, generated], dim=1).float() * 2 - 1

    def fn(t: torch.Tensor) -> torch.Tensor:
        return net(t.to(dev))

    if 0 < tile < 64:
        raise InputError(f"tile size {tile} is too small for the structure NAFNet: use 0 (whole image) or at least 64")
    if tile > 0:
        from ..tiling import tiled_apply

        overlap = min(max(32, tile // 8), tile // 2)
        y = tiled_apply(fn, x, tile, overlap, device=dev, output_device=torch.device("cpu"), progress=progress,
                        pad_multiple=net.padder_size, align=net.padder_size)
    else:
        y = torch.cat([fn(x[i : i + 1]).cpu() for i in range(x.shape[0])])
        if progress is not None:
            progress(1, 1)
    return ((y.clamp(-1, 1) + 1) / 2).float().cpu()

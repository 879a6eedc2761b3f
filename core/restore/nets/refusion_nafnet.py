"""Refusion's ConditionalNAFNet: a NAFNet whose blocks are modulated by the step embedding.

Input ``cat(x_t - mu, mu)``, output the predicted noise; official parameter names. Any H, W:
zero-padded to a multiple of ``2**len(enc_blk_nums)`` and cropped back (as officially).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import ChannelLayerNorm, SinusoidalPosEmb, time_tensor


class SimpleGate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """NAFNet block with time modulation (shift/scale before the attention and the FFN halves)."""

    def __init__(self, c: int, time_emb_dim: int, dw_expand: int = 2, ffn_expand: int = 2) -> None:
        super().__init__()
        self.mlp = nn.Sequential(SimpleGate(), nn.Linear(time_emb_dim // 2, c * 4))
        dw = c * dw_expand
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.sg = SimpleGate()
        ffn = ffn_expand * c
        self.conv4 = nn.Conv2d(c, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, c, 1)
        self.norm1 = ChannelLayerNorm(c)
        self.norm2 = ChannelLayerNorm(c)
        self.beta = nn.Parameter(torch.zeros((1, c, 1, 1)))
        self.gamma = nn.Parameter(torch.zeros((1, c, 1, 1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        shift_att, scale_att, shift_ffn, scale_ffn = self.mlp(t)[:, :, None, None].chunk(4, dim=1)
        y = self.norm1(x) * (scale_att + 1) + shift_att
        y = self.sg(self.conv2(self.conv1(y)))
        y = self.conv3(y * self.sca(y))
        x = x + y * self.beta
        y = self.norm2(x) * (scale_ffn + 1) + shift_ffn
        y = self.conv5(self.sg(self.conv4(y)))
        return x + y * self.gamma


class _Stage(nn.Sequential):
    """A run of NAF blocks sharing the time embedding (keys ``<stage>.<i>.*`` as officially)."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for block in self:
            x = block(x, t)
        return x


class ConditionalNAFNet(nn.Module):
    """Refusion's noise network (official config: width 64, enc [1,1,1,28], middle 1, dec [1,1,1,1])."""

    def __init__(
        self,
        img_channel: int = 3,
        width: int = 64,
        middle_blk_num: int = 1,
        enc_blk_nums: Sequence[int] = (1, 1, 1, 28),
        dec_blk_nums: Sequence[int] = (1, 1, 1, 1),
    ) -> None:
        super().__init__()
        time_dim = width * 4
        self.time_mlp = nn.Sequential(
            SinusoidalPosEmb(width), nn.Linear(width, time_dim * 2), SimpleGate(), nn.Linear(time_dim, time_dim)
        )
        self.intro = nn.Conv2d(img_channel * 2, width, 3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1)
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.downs = nn.ModuleList()
        chan = width
        for num in enc_blk_nums:
            self.encoders.append(_Stage(*[NAFBlock(chan, time_dim) for _ in range(num)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan *= 2
        self.middle_blks = _Stage(*[NAFBlock(chan, time_dim) for _ in range(middle_blk_num)])
        for num in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(_Stage(*[NAFBlock(chan, time_dim) for _ in range(num)]))
        self.pad_multiple = 2 ** len(self.encoders)

    def forward(self, xt: torch.Tensor, cond: torch.Tensor, time: torch.Tensor | int | float, **_: object) -> torch.Tensor:
        """Predicted noise ``[B,C,H,W]`` (extra keyword arguments such as DA-CLIP contexts are ignored)."""
        H, W = xt.shape[-2:]
        x = torch.cat([xt - cond, cond], dim=1)
        t = self.time_mlp(time_tensor(time, x.shape[0], x.device)).to(x.dtype)
        ph, pw = (-H) % self.pad_multiple, (-W) % self.pad_multiple
        x = F.pad(x, (0, pw, 0, ph))
        x = self.intro(x)
        skips = []
        for enc, down in zip(self.encoders, self.downs, strict=True):
            x = enc(x, t)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x, t)
        for dec, up, skip in zip(self.decoders, self.ups, skips[::-1], strict=False):
            x = dec(up(x) + skip, t)
        return self.ending(x)[..., :H, :W]

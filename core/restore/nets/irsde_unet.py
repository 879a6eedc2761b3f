"""The ConditionalUNet of IR-SDE and of DA-CLIP's universal image restoration.

Inputs: ``x_t`` and the degraded image ``mu`` (``[B,3,H,W]``, 0..1 image scale), a step
index ``t`` (1..T) and, for DA-CLIP, its two 512-d embeddings. The network sees
``cat(x_t - mu, mu)`` and predicts the noise of ``x_t`` (same shape as ``x_t``). Any H, W:
the input is reflect-padded to a multiple of ``2**depth`` and the output cropped back.

One class covers the official variants (parameter names are the official ones):

* IR-SDE ``ConditionalUNet(in_nc, out_nc, nf, depth)``: ``ch_mult = (2, 4, ..., 2**depth)``,
  see :func:`irsde_ch_mult`; linear attention everywhere.
* DA-CLIP ``ConditionalUNet(..., ch_mult, context_dim, use_degra_context, use_image_context)``:
  the degradation embedding becomes a learned prompt added to the time embedding
  (``softmax(text_mlp(e_deg)) * prompt`` -> ``prompt_mlp``), the content embedding is a
  one-token context for cross-attention transformers at the deepest levels (``level >= 3``)
  and in the middle.
* wild-IR: the same with the transformer at the last level only and an extra /2 stage
  (``scale=0.5``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from .blocks import (
    LinearAttention,
    PreNorm,
    ResBlock,
    Residual,
    SinusoidalPosEmb,
    SpatialTransformer,
    conv,
    downsample,
    pad_to,
    time_tensor,
    upsample,
)


def irsde_ch_mult(depth: int) -> tuple[int, ...]:
    """Channel multipliers of IR-SDE's ``depth``-level UNet (level i: ``nf*2**i -> nf*2**(i+1)``)."""
    return tuple(2 ** (i + 1) for i in range(depth))


class ConditionalUNet(nn.Module):
    """Noise-predicting UNet; see the module docstring.

    Args:
        in_nc, out_nc: image channels (3).
        nf: base width.
        ch_mult: width multipliers per level (after an implicit leading 1).
        context_dim: DA-CLIP embedding size (512 for ViT-B/32); ``None`` for plain IR-SDE.
        use_degra_context: add the degradation prompt to the time embedding.
        use_image_context: cross-attend to the content embedding.
        cross_attn_levels: levels with a cross-attention transformer (default: ``level >= 3``,
            the official DA-CLIP rule; wild-IR uses the last level only).
        scale: 1, or 0.5 for wild-IR's extra down/up stage.
    """

    def __init__(
        self,
        in_nc: int = 3,
        out_nc: int = 3,
        nf: int = 64,
        ch_mult: Sequence[int] = (2, 4, 8, 16),
        context_dim: int | None = None,
        use_degra_context: bool = False,
        use_image_context: bool = False,
        cross_attn_levels: Sequence[int] | None = None,
        scale: float = 1,
    ) -> None:
        super().__init__()
        ch_mult = [1, *ch_mult]
        self.depth = depth = len(ch_mult) - 1
        self.context_dim = context_dim if context_dim else -1
        self.use_degra_context = bool(use_degra_context and self.context_dim > 0)
        self.use_image_context = bool(use_image_context and self.context_dim > 0)
        self.scale = scale
        time_dim = nf * 4
        if cross_attn_levels is None:
            cross_attn_levels = [i for i in range(depth) if i >= 3]
        self.cross_attn_levels = tuple(cross_attn_levels) if self.use_image_context else ()
        head_ch = 32

        self.init_conv = conv(in_nc * 2, nf, 7)
        if scale == 0.5:
            self.downsample = downsample(nf, nf)
            self.upsample = upsample(nf, nf)
        self.time_mlp = nn.Sequential(
            SinusoidalPosEmb(nf), nn.Linear(nf, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim)
        )
        if self.use_degra_context:
            self.prompt = nn.Parameter(torch.rand(1, time_dim))
            self.text_mlp = nn.Sequential(nn.Linear(context_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
            self.prompt_mlp = nn.Linear(time_dim, time_dim)

        def attention(dim: int, level: int) -> nn.Module:
            if level in self.cross_attn_levels:
                return SpatialTransformer(dim, dim // head_ch, head_ch, depth=1, context_dim=context_dim)
            return LinearAttention(dim)

        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i in range(depth):
            d_in, d_out = nf * ch_mult[i], nf * ch_mult[i + 1]
            self.downs.append(
                nn.ModuleList(
                    [
                        ResBlock(d_in, d_in, time_dim),
                        ResBlock(d_in, d_in, time_dim),
                        Residual(PreNorm(d_in, attention(d_in, i))),
                        downsample(d_in, d_out) if i != depth - 1 else conv(d_in, d_out),
                    ]
                )
            )
            self.ups.insert(
                0,
                nn.ModuleList(
                    [
                        ResBlock(d_out + d_in, d_out, time_dim),
                        ResBlock(d_out + d_in, d_out, time_dim),
                        Residual(PreNorm(d_out, attention(d_out, i))),
                        upsample(d_out, d_in) if i != 0 else conv(d_out, d_in),
                    ]
                ),
            )
        mid = nf * ch_mult[-1]
        self.mid_block1 = ResBlock(mid, mid, time_dim)
        if self.use_image_context:
            self.mid_attn = Residual(PreNorm(mid, SpatialTransformer(mid, mid // head_ch, head_ch, 1, context_dim)))
        else:
            self.mid_attn = Residual(PreNorm(mid, LinearAttention(mid)))
        self.mid_block2 = ResBlock(mid, mid, time_dim)
        self.final_res_block = ResBlock(nf * 2, nf, time_dim)
        self.final_conv = nn.Conv2d(nf, out_nc, 3, 1, 1)

    @property
    def pad_multiple(self) -> int:
        """Input sides are reflect-padded to a multiple of this (``2**depth``, as officially)."""
        return 2**self.depth

    def forward(
        self,
        xt: torch.Tensor,
        cond: torch.Tensor,
        time: torch.Tensor | int | float,
        text_context: torch.Tensor | None = None,
        image_context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predicted noise ``[B,out_nc,H,W]``.

        ``text_context`` / ``image_context``: DA-CLIP degradation / content embeddings ``[B, context_dim]``
        (unnormalised, as the official code feeds them); ignored by a plain IR-SDE net.
        """
        H, W = xt.shape[-2:]
        x = torch.cat([xt - cond, cond], dim=1)
        x = pad_to(x, self.pad_multiple)
        x = self.init_conv(x)
        x_skip = x
        if self.scale == 0.5:
            x = self.downsample(x)
        t = self.time_mlp(time_tensor(time, x.shape[0], x.device)).to(x.dtype)
        ctx = None
        if self.use_degra_context and text_context is not None:
            prompt = torch.softmax(self.text_mlp(text_context.to(t.dtype)), dim=1) * self.prompt
            t = t + self.prompt_mlp(prompt)
        if self.use_image_context and image_context is not None:
            ctx = image_context[:, None, :]

        hs = []
        for b1, b2, attn, down in self.downs:
            x = b1(x, t)
            hs.append(x)
            x = attn(b2(x, t), context=ctx)
            hs.append(x)
            x = down(x)
        x = self.mid_block2(self.mid_attn(self.mid_block1(x, t), context=ctx), t)
        for b1, b2, attn, up in self.ups:
            x = b1(torch.cat([x, hs.pop()], dim=1), t)
            x = b2(torch.cat([x, hs.pop()], dim=1), t)
            x = up(attn(x, context=ctx))
        if self.scale == 0.5:
            x = self.upsample(x)
        x = self.final_res_block(torch.cat([x, x_skip], dim=1), t)
        return self.final_conv(x)[..., :H, :W]

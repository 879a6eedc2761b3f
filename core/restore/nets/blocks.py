"""Building blocks shared by the IR-SDE networks (official parameter names kept).

All modules take ``[B,C,H,W]`` feature maps; none hard-codes a device or a dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class SinusoidalPosEmb(nn.Module):
    """Transformer sinusoidal embedding of a step index: ``[N] -> [N, dim]`` (sin half, then cos half)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freq = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
        arg = t.to(torch.float32)[:, None] * freq[None, :]
        return torch.cat((arg.sin(), arg.cos()), dim=-1)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of ``[B,C,H,W]`` with a gain ``g`` only (no bias), eps 1e-5.

    Always computed in float32 (result cast back to the input dtype). The official code
    switches eps to 1e-3 when run in half precision; the released models were trained and
    evaluated in float32, and that switch alone moves a network's noise prediction by ~10 %
    under fp16/bf16 autocast (bench/restore_sde.py), so the float32 numerics are kept.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        var, mean = torch.var_mean(xf, dim=1, unbiased=False, keepdim=True)
        return ((xf - mean) * (var + 1e-5).rsqrt() * self.g.float()).to(x.dtype)


class Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.fn(x, *args, **kwargs) + x


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.norm = ChannelLayerNorm(dim)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.fn(self.norm(x), *args, **kwargs)


def conv(dim_in: int, dim_out: int, kernel_size: int = 3, bias: bool = False) -> nn.Conv2d:
    """'Same' convolution without bias (the official ``default_conv``)."""
    return nn.Conv2d(dim_in, dim_out, kernel_size, padding=kernel_size // 2, bias=bias)


def upsample(dim: int, dim_out: int) -> nn.Sequential:
    """Nearest x2 then a 3x3 convolution."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(dim, dim_out, 3, 1, 1))


def downsample(dim: int, dim_out: int) -> nn.Conv2d:
    """Strided 4x4 convolution (/2)."""
    return nn.Conv2d(dim, dim_out, 4, 2, 1)


class Block(nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = conv(dim_in, dim_out)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.proj(x)
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return self.act(x)


class ResBlock(nn.Module):
    """Two 3x3 conv blocks, the first modulated (scale, shift) by the time embedding."""

    def __init__(self, dim_in: int, dim_out: int, time_emb_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_emb_dim, dim_out * 2))
        self.block1 = Block(dim_in, dim_out)
        self.block2 = Block(dim_out, dim_out)
        self.res_conv = conv(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        ss = self.mlp(t_emb)[:, :, None, None].chunk(2, dim=1)
        h = self.block2(self.block1(x, scale_shift=ss))
        return h + self.res_conv(x)


class LinearAttention(nn.Module):
    """Linear ("efficient") attention over positions: a ``d x d`` context per head, never ``N x N``.

    ``q`` is softmaxed over the head channels, ``k`` over positions; values are divided by the
    number of positions (official numerics).
    """

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32) -> None:
        super().__init__()
        self.scale = dim_head**-0.5
        self.heads = heads
        hidden = dim_head * heads
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(hidden, dim, 1), ChannelLayerNorm(dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:  # noqa: ARG002
        b, _, h, w = x.shape
        q, k, v = (t.reshape(b, self.heads, -1, h * w) for t in self.to_qkv(x).chunk(3, dim=1))
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        v = v / (h * w)
        ctx = torch.matmul(k, v.transpose(-1, -2))  # [b, heads, d, e]
        out = torch.matmul(ctx.transpose(-1, -2), q)  # [b, heads, e, n]
        return self.to_out(out.reshape(b, -1, h, w))


# --- cross-attention transformer (DA-CLIP's universal UNet) -------------------------------


class CrossAttention(nn.Module):
    """Multi-head (cross-)attention through ``scaled_dot_product_attention``."""

    def __init__(self, query_dim: int, context_dim: int | None = None, heads: int = 8, dim_head: int = 64) -> None:
        super().__init__()
        inner = dim_head * heads
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, _ = x.shape
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        q, k, v = (t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, d_head: int, context_dim: int | None) -> None:
        super().__init__()
        self.attn1 = CrossAttention(dim, heads=n_heads, dim_head=d_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim=context_dim, heads=n_heads, dim_head=d_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context=context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """GroupNorm(32) -> 1x1 -> self-attention, cross-attention on ``context`` [B,L,ctx], GEGLU -> 1x1, residual."""

    def __init__(self, in_channels: int, n_heads: int, d_head: int, depth: int = 1, context_dim: int | None = None) -> None:
        super().__init__()
        inner = n_heads * d_head
        self.norm = nn.GroupNorm(32, in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(in_channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, n_heads, d_head, context_dim) for _ in range(depth)]
        )
        self.proj_out = nn.Conv2d(inner, in_channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.proj_in(self.norm(x))
        y = y.flatten(2).transpose(1, 2)
        if context is not None:
            context = context.to(y.dtype)
        for block in self.transformer_blocks:
            y = block(y, context=context)
        y = y.transpose(1, 2).reshape(b, -1, h, w)
        return self.proj_out(y) + x


def pad_to(x: torch.Tensor, multiple: int, mode: str = "reflect") -> torch.Tensor:
    """Pad bottom/right to a multiple (reflect like the official nets; replicate where reflect cannot)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def time_tensor(t: torch.Tensor | int | float, batch: int, device: torch.device) -> torch.Tensor:
    """A step index as a float tensor of shape ``[batch]``."""
    if not isinstance(t, torch.Tensor):
        t = torch.tensor([float(t)], device=device)
    t = t.reshape(-1).to(device=device, dtype=torch.float32)
    return t.expand(batch) if t.numel() == 1 else t

"""NCSN++ (Song et al., 2021) as configured by DriftRec, in plain PyTorch.

The score network of DriftRec: input ``cat(x_t, y)`` (6 channels, images in 0..1), output
the score of ``x_t`` (3 channels) divided by ``sigma``. Official defaults: ``nf`` 128,
``ch_mult`` (1,1,2,2,2,2,2), 2 residual blocks per level, self-attention at the level whose
*nominal* resolution (``image_size`` 256 halved per level) is 16, BigGAN residual blocks
with FIR [1,3,3,1] resampling, output-skip / input-skip progressive paths combined by sum,
skip rescaling by 1/sqrt(2), a Gaussian Fourier embedding (scale 16) of ``log sigma``
followed by two dense layers; the network sees only ``sigma``, not ``t``.

Parameter names and order are the official ones (``output_layer`` registered first, then
``all_modules.0..76`` for the default config, 65.6 M parameters including the frozen Fourier
weights ``all_modules.0.W``), so official state dicts and torch_ema shadow lists load as they
are. Differences from the official code, none of which changes a result:

* FIR up/down-sampling are a depthwise transposed convolution / strided convolution with
  the normalised [1,3,3,1] outer-product kernel (the official code calls a custom CUDA
  ``upfirdn2d`` op, or its native PyTorch fallback on CPUs);
* self-attention goes through ``scaled_dot_product_attention`` (one head of width C, scale
  C^-1/2, as the official einsum/softmax);
* any H x W: odd sizes are handled as officially (a down-sampling floors the size; after
  up-sampling the result is replicate-padded at the bottom/right to the skip's size); inputs
  smaller than ``2**(levels-1)`` pixels are first replicate-padded to that size (the official
  network cannot run them) and the output cropped back.

Initialisation follows the official code (DDPM ``variance_scaling(fan_avg, uniform)``,
near-zero last convolutions), so training from scratch starts where the authors' did.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

#: The official defaults of DriftRec's NCSN++ (``driftrec/backbones/ncsnpp.py``).
DEFAULT_CONFIG: dict = {
    "in_channels": 6,
    "out_channels": 3,
    "image_size": 256,
    "nf": 128,
    "ch_mult": [1, 1, 2, 2, 2, 2, 2],
    "num_res_blocks": 2,
    "attn_resolutions": [16],
    "fourier_scale": 16.0,
    "dropout": 0.0,
    "scale_by_sigma": True,
}

_FIR = (1.0, 3.0, 3.0, 1.0)
_SQRT2 = math.sqrt(2.0)


# --- initialisation (official DDPM style) ---------------------------------------------------


def variance_scaling_(w: torch.Tensor, scale: float = 1.0, in_axis: int = 1, out_axis: int = 0) -> torch.Tensor:
    """In-place ``variance_scaling(scale, 'fan_avg', 'uniform')``; scale 0 means 1e-10, as officially."""
    scale = 1e-10 if scale == 0 else scale
    shape = w.shape
    receptive = math.prod(shape) / shape[in_axis] / shape[out_axis]
    fan_avg = (shape[in_axis] + shape[out_axis]) * receptive / 2
    bound = math.sqrt(3 * scale / fan_avg)
    with torch.no_grad():
        return w.uniform_(-bound, bound)


def conv3x3(cin: int, cout: int, init_scale: float = 1.0) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding=1)
    variance_scaling_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def conv1x1(cin: int, cout: int, init_scale: float = 1.0) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 1)
    variance_scaling_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def dense(cin: int, cout: int) -> nn.Linear:
    lin = nn.Linear(cin, cout)
    variance_scaling_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


def group_norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(ch // 4, 32), num_channels=ch, eps=1e-6)


# --- FIR resampling ----------------------------------------------------------------------------


def fir_kernel(dtype: torch.dtype, device: torch.device, gain: float = 1.0) -> torch.Tensor:
    """The separable [1,3,3,1] kernel as a normalised 4x4 outer product (sum = ``gain``)."""
    k = torch.tensor(_FIR, dtype=torch.float64)
    k2 = torch.outer(k, k)
    return (k2 / k2.sum() * gain).to(device=device, dtype=dtype)


def fir_downsample(x: torch.Tensor) -> torch.Tensor:
    """``[B,C,H,W] -> [B,C,H//2,W//2]``: blur with the FIR kernel (zero padding 1) and keep every 2nd pixel."""
    c = x.shape[1]
    k = fir_kernel(x.dtype, x.device).expand(c, 1, 4, 4)
    return F.conv2d(x, k, stride=2, padding=1, groups=c)


def fir_upsample(x: torch.Tensor) -> torch.Tensor:
    """``[B,C,H,W] -> [B,C,2H,2W]``: zero-insertion up-sampling filtered by the FIR kernel (gain 4)."""
    c = x.shape[1]
    k = fir_kernel(x.dtype, x.device, gain=4.0).expand(c, 1, 4, 4)
    return F.conv_transpose2d(x, k, stride=2, padding=1, groups=c)


def pad_to_fit(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Replicate-pad ``x`` to ``target``'s H and W as officially (``(d//2, d//2 + target % 2)`` per axis)."""
    for dim in (-2, -1):
        d = target.shape[dim] - x.shape[dim]
        if d:
            before, after = d // 2, d // 2 + target.shape[dim] % 2
            pad = (before, after, 0, 0) if dim == -1 else (0, 0, before, after)
            x = F.pad(x, pad, mode="replicate")
    return x


# --- blocks -----------------------------------------------------------------------------------


class GaussianFourierProjection(nn.Module):
    """``[B] -> [B, 2n]``: ``sin, cos`` of ``2 pi x W`` with fixed random ``W ~ N(0, scale^2)``."""

    def __init__(self, embedding_size: int, scale: float) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = x[:, None].float() * self.W[None, :].float() * (2 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class NIN(nn.Module):
    """A 1x1 projection over channels with the official parameter names (``W`` [in, out], ``b``)."""

    def __init__(self, in_dim: int, num_units: int, init_scale: float = 0.1) -> None:
        super().__init__()
        self.W = nn.Parameter(variance_scaling_(torch.empty(in_dim, num_units), init_scale))
        self.b = nn.Parameter(torch.zeros(num_units))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Applied to tokens ``[..., in] -> [..., out]``."""
        return x @ self.W.to(x.dtype) + self.b.to(x.dtype)


class AttnBlock(nn.Module):
    """Self-attention over all positions (one head of width C), residual, rescaled by 1/sqrt(2)."""

    def __init__(self, channels: int, skip_rescale: bool = True, init_scale: float = 0.0) -> None:
        super().__init__()
        self.GroupNorm_0 = group_norm(channels)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tok = self.GroupNorm_0(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        q, k, v = (m.tokens(tok)[:, None] for m in (self.NIN_0, self.NIN_1, self.NIN_2))
        out = F.scaled_dot_product_attention(q, k, v)[:, 0]  # softmax(q k^T / sqrt(C)) v
        out = self.NIN_3.tokens(out).transpose(1, 2).reshape(b, c, h, w)
        return (x + out) / _SQRT2 if self.skip_rescale else x + out


class ResnetBlockBigGAN(nn.Module):
    """BigGAN-style residual block with optional FIR up/down-sampling and a time-embedding bias."""

    def __init__(self, in_ch: int, out_ch: int | None = None, temb_dim: int | None = None, up: bool = False,
                 down: bool = False, dropout: float = 0.0, skip_rescale: bool = True, init_scale: float = 0.0) -> None:
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.up, self.down = up, down
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        self.has_shortcut = in_ch != out_ch or up or down
        if self.has_shortcut:
            self.Conv_2 = conv1x1(in_ch, out_ch)
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = F.silu(self.GroupNorm_0(x))
        if self.up:
            h, x = fir_upsample(h), fir_upsample(x)
        elif self.down:
            h, x = fir_downsample(h), fir_downsample(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(F.silu(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(F.silu(self.GroupNorm_1(h))))
        if self.has_shortcut:
            x = self.Conv_2(x)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h


class Combine(nn.Module):
    """Input-skip combiner: a 1x1 projection of the down-sampled input added to the features."""

    def __init__(self, dim1: int, dim2: int) -> None:
        super().__init__()
        self.Conv_0 = conv1x1(dim1, dim2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.Conv_0(x) + y


# --- the network -----------------------------------------------------------------------------


class NCSNpp(nn.Module):
    """DriftRec's score network; ``forward(x, sigma) -> score`` with ``x = cat(x_t, y)`` ``[B,6,H,W]``.

    Args mirror the official constructor (``image_size`` only decides at which levels the
    attention blocks sit: level ``i`` has nominal resolution ``image_size // 2**i``).
    """

    def __init__(
        self,
        in_channels: int = 6,
        out_channels: int = 3,
        image_size: int = 256,
        nf: int = 128,
        ch_mult: Sequence[int] = (1, 1, 2, 2, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        fourier_scale: float = 16.0,
        dropout: float = 0.0,
        scale_by_sigma: bool = True,
        skip_rescale: bool = True,
        init_scale: float = 0.0,
    ) -> None:
        super().__init__()
        self.config = {
            "in_channels": int(in_channels), "out_channels": int(out_channels), "image_size": int(image_size), "nf": int(nf),
            "ch_mult": [int(m) for m in ch_mult], "num_res_blocks": int(num_res_blocks),
            "attn_resolutions": [int(r) for r in attn_resolutions], "fourier_scale": float(fourier_scale),
            "dropout": float(dropout), "scale_by_sigma": bool(scale_by_sigma),
        }
        self.nf, self.num_res_blocks, self.scale_by_sigma = nf, num_res_blocks, scale_by_sigma
        self.num_resolutions = levels = len(ch_mult)
        resolutions = [image_size // (2**i) for i in range(levels)]
        self.attn_levels = {i for i in range(levels) if resolutions[i] in set(attn_resolutions)}
        self.in_channels, self.out_channels = in_channels, out_channels
        self.output_layer = nn.Conv2d(in_channels, out_channels, 1)  # registered first, as officially

        temb_dim = nf * 4
        block = lambda cin, cout=None, **kw: ResnetBlockBigGAN(  # noqa: E731
            cin, cout, temb_dim, dropout=dropout, skip_rescale=skip_rescale, init_scale=init_scale, **kw)
        attn = lambda ch: AttnBlock(ch, skip_rescale=skip_rescale, init_scale=init_scale)  # noqa: E731

        modules: list[nn.Module] = [GaussianFourierProjection(nf, fourier_scale), dense(2 * nf, temb_dim),
                                    dense(temb_dim, temb_dim), conv3x3(in_channels, nf)]
        hs_c = [nf]
        in_ch = nf
        for level in range(levels):
            for _ in range(num_res_blocks):
                out_ch = nf * ch_mult[level]
                modules.append(block(in_ch, out_ch))
                in_ch = out_ch
                if level in self.attn_levels:
                    modules.append(attn(in_ch))
                hs_c.append(in_ch)
            if level != levels - 1:
                modules.append(block(in_ch, down=True))
                modules.append(Combine(in_channels, in_ch))
                hs_c.append(in_ch)
        in_ch = hs_c[-1]
        modules += [block(in_ch), attn(in_ch), block(in_ch)]
        for level in reversed(range(levels)):
            for _ in range(num_res_blocks + 1):
                out_ch = nf * ch_mult[level]
                modules.append(block(in_ch + hs_c.pop(), out_ch))
                in_ch = out_ch
            if level in self.attn_levels:
                modules.append(attn(in_ch))
            modules += [group_norm(in_ch), conv3x3(in_ch, in_channels, init_scale=init_scale)]  # output-skip path
            if level != 0:
                modules.append(block(in_ch, up=True))
        assert not hs_c
        self.all_modules = nn.ModuleList(modules)

    @property
    def min_size(self) -> int:
        """Smallest side the network runs at without padding (``2**(levels-1)``)."""
        return 2 ** (self.num_resolutions - 1)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """Score ``[B,out,H,W]`` of ``x_t`` given ``x = cat(x_t, y)`` and the marginal std ``sigma`` (``[B]`` or a number)."""
        b, _, H, W = x.shape
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(b)
        m = self.min_size
        if H < m or W < m:
            x = F.pad(x, (0, max(0, m - W), 0, max(0, m - H)), mode="replicate")
        mods = iter(self.all_modules)
        temb = next(mods)(torch.log(sigma))
        temb = next(mods)(temb.to(x.dtype))
        temb = next(mods)(F.silu(temb))

        pyramid_in = x
        hs = [next(mods)(x)]
        for level in range(self.num_resolutions):
            for _ in range(self.num_res_blocks):
                h = next(mods)(hs[-1], temb)
                if level in self.attn_levels:
                    h = next(mods)(h)
                hs.append(h)
            if level != self.num_resolutions - 1:
                h = next(mods)(hs[-1], temb)
                pyramid_in = fir_downsample(pyramid_in)
                h = next(mods)(pyramid_in, h)
                hs.append(h)

        h = hs[-1]
        h = next(mods)(h, temb)
        h = next(mods)(h)
        h = next(mods)(h, temb)

        pyramid = None
        for level in reversed(range(self.num_resolutions)):
            for _ in range(self.num_res_blocks + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
            if level in self.attn_levels:
                h = next(mods)(h)
            norm, conv = next(mods), next(mods)
            if pyramid is None:
                pyramid = conv(F.silu(norm(h)))
            else:
                pyramid_h = F.silu(norm(h))
                pyramid = pad_to_fit(fir_upsample(pyramid), pyramid_h) + conv(pyramid_h)
            if level != 0:
                h = next(mods)(h, temb)
                h = pad_to_fit(h, hs[-1])
        assert not hs and next(mods, None) is None

        out = self.output_layer(pyramid)
        if self.scale_by_sigma:
            out = out / sigma.to(out.dtype).reshape(b, 1, 1, 1)
        return out[..., :H, :W]

"""OpenAI guided-diffusion's UNet (``unet.py`` ``UNetModel``), in plain PyTorch, for DiffLoss.

Same module tree and parameter names as the official checkpoints (``time_embed.*``,
``input_blocks.*``, ``middle_block.*``, ``output_blocks.*``, ``out.*``), so
``256x256_diffusion_uncond.pt`` loads strictly. Differences from the official code, none of
which changes the function computed:

* attention runs through ``scaled_dot_product_attention`` (the official "legacy" head
  order: the qkv channels are split into heads first, then into q, k, v);
* no custom checkpoint function: the official one replays the block under ``no_grad`` and
  asks autograd for the gradients of *every* parameter, which fails once the parameters are
  frozen. Here a frozen network passes gradients to its input like any module, and
  ``checkpointing=True`` wraps each block in ``torch.utils.checkpoint(use_reentrant=False)``;
* GroupNorm always computes in float32 (as the official ``GroupNorm32``) whatever dtype the
  network is cast to; the whole network may be cast to bf16/fp16 (the official ``use_fp16``
  casts only the convolutions of the torso);
* no label embedding (only the unconditional model is needed) and no dropout (the prior is
  frozen and run in eval mode).

:meth:`GuidedDiffusionUNet.forward` returns ``(output, h)``: the output has
``out_channels`` channels (6 for ``learn_sigma``: ε̂ in the first 3, the variance
interpolation in the last 3) and ``h`` is the middle block's output ("h-space",
``[B, 1024, 8, 8]`` for a 256×256 input to the 256 model). Inputs are images in [-1, 1]
whose sides are multiples of ``2**(len(channel_mult) - 1)`` (32 for the 256 model); the
network is convolutional, so other sizes work and give h-space of ``H/32 × W/32``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a guided-diffusion UNet (the official ``create_model`` arguments).

    ``attention_ds`` lists the downsampling factors with attention (the official flag
    ``attention_resolutions 32,16,8`` at ``image_size`` 256 means ds 8, 16, 32).
    """

    image_size: int = 256
    in_channels: int = 3
    model_channels: int = 256
    out_channels: int = 6
    num_res_blocks: int = 2
    attention_ds: tuple[int, ...] = (8, 16, 32)
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_head_channels: int = 64
    num_heads: int = 4
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    conv_resample: bool = True

    @property
    def downsample_factor(self) -> int:
        """Input sides must be multiples of this (2 ** number of downsamplings)."""
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def h_channels(self) -> int:
        """Channels of the middle block's output (h-space)."""
        return self.model_channels * self.channel_mult[-1]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown guided-diffusion config keys {unknown}; known: {sorted(known)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)


#: ``256x256_diffusion_uncond.pt``: the README's flags (attention_resolutions 32,16,8,
#: num_channels 256, num_head_channels 64, num_res_blocks 2, resblock_updown, learn_sigma,
#: use_scale_shift_norm) with ``create_model``'s channel_mult for image_size 256. 552.8 M parameters.
GUIDED_DIFFUSION_256_UNCOND = UNetConfig()

#: Same layout, tiny: for tests and the CPU smoke benchmark.
TINY = UNetConfig(image_size=32, model_channels=32, num_res_blocks=1, attention_ds=(2, 4), channel_mult=(1, 1, 2),
                  num_head_channels=16)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[N, dim]`` of timesteps ``t`` ``[N]``: ``[cos(t·f_i), sin(t·f_i)]``,
    ``f_i = max_period^(−i/half)`` for i < half = dim // 2 (a zero column is appended for odd dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups computed in float32, result cast back to the input's dtype."""

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


class Upsample(nn.Module):
    """Nearest ×2, then an optional 3×3 convolution (key ``conv``)."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.use_conv = use_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """Stride-2 3×3 convolution, or 2×2 average pooling (key ``op``)."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """Residual block conditioned on the timestep embedding (optionally up/downsampling)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None, *,
                 use_scale_shift_norm: bool = True, up: bool = False, down: bool = False) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        # index 2 is the (parameter-free) dropout of the official block; kept for the key layout
        self.out_layers = nn.Sequential(GroupNorm32(out_channels), nn.SiLU(), nn.Identity(),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over all positions (1×1 qkv/proj convolutions, legacy head order), SDPA."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1) -> None:
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"attention channels {channels} not divisible by head channels {num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))  # [B, 3C, T]; legacy order: heads first, then (q, k, v) per head
        n = self.num_heads
        ch = c // n
        # [B, n, T, 3ch], contiguous so that q, k, v have unit stride in the last dim (fused SDPA kernels)
        q, k, v = qkv.reshape(b, n, 3 * ch, -1).transpose(-1, -2).contiguous().split(ch, dim=-1)
        a = F.scaled_dot_product_attention(q, k, v)  # softmax(q·kᵀ/√ch)·v
        h = self.proj_out(a.transpose(-1, -2).reshape(b, c, -1))
        return (x + h).reshape(b, c, *spatial)


class TimestepEmbedSequential(nn.Sequential):
    """A sequence of layers; residual and attention blocks also receive the embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, (ResBlock, AttentionBlock)) else layer(x)
        return x


class GuidedDiffusionUNet(nn.Module):
    """The official ``UNetModel`` (unconditional), returning ``(output, middle-block output)``.

    ``checkpointing`` recomputes each block's activations during backward (saves memory
    when gradients flow through the network to its input).
    """

    def __init__(self, config: UNetConfig = GUIDED_DIFFUSION_256_UNCOND, checkpointing: bool = False) -> None:
        super().__init__()
        self.config = cfg = config
        self.checkpointing = checkpointing
        mc = cfg.model_channels
        emb_ch = mc * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        res = dict(use_scale_shift_norm=cfg.use_scale_shift_norm)
        attn = dict(num_heads=cfg.num_heads, num_head_channels=cfg.num_head_channels)
        ch = input_ch = int(cfg.channel_mult[0] * mc)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
        chans = [ch]
        ds = 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_ch, int(mult * mc), **res)]
                ch = int(mult * mc)
                if ds in cfg.attention_ds:
                    layers.append(AttentionBlock(ch, **attn))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                down = ResBlock(ch, emb_ch, ch, down=True, **res) if cfg.resblock_updown else Downsample(ch, cfg.conv_resample)
                self.input_blocks.append(TimestepEmbedSequential(down))
                chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(ResBlock(ch, emb_ch, **res), AttentionBlock(ch, **attn), ResBlock(ch, emb_ch, **res))
        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), emb_ch, int(mc * mult), **res)]
                ch = int(mc * mult)
                if ds in cfg.attention_ds:
                    layers.append(AttentionBlock(ch, **attn))
                if level and i == cfg.num_res_blocks:
                    layers.append(ResBlock(ch, emb_ch, ch, up=True, **res) if cfg.resblock_updown else Upsample(ch, cfg.conv_resample))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(input_ch, cfg.out_channels, 3, padding=1))

    @property
    def dtype(self) -> torch.dtype:
        return self.out[2].weight.dtype

    def _run(self, block: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and torch.is_grad_enabled() and (h.requires_grad or emb.requires_grad):
            return checkpoint(block, h, emb, use_reentrant=False)
        return block(h, emb)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``[B, C, H, W]`` in [-1, 1], ``timesteps`` ``[B]`` integers (0..999, not rescaled)
        -> (output ``[B, out_channels, H, W]``, h ``[B, h_channels, H/ds, W/ds]``), in the network's dtype."""
        f = self.config.downsample_factor
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"guided-diffusion UNet input sides must be multiples of {f}, got {tuple(x.shape[-2:])}")
        dtype = self.dtype
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(dtype))
        h = x.to(dtype)
        skips = []
        for block in self.input_blocks:
            h = self._run(block, h, emb)
            skips.append(h)
        h = mid = self._run(self.middle_block, h, emb)
        for block in self.output_blocks:
            h = self._run(block, torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h), mid


def parameter_count(config: UNetConfig) -> int:
    """Number of parameters of a UNet of ``config`` (built on the meta device: nothing allocated)."""
    with torch.device("meta"):
        net = GuidedDiffusionUNet(config)
    return sum(p.numel() for p in net.parameters())


def expected_shapes(config: UNetConfig) -> dict[str, tuple[int, ...]]:
    """The state-dict keys and shapes of a UNet of ``config`` (meta device)."""
    with torch.device("meta"):
        net = GuidedDiffusionUNet(config)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def check_sides(shape: Sequence[int], config: UNetConfig) -> bool:
    """Whether an image of ``shape`` (…, H, W) fits the network without padding."""
    f = config.downsample_factor
    return shape[-1] % f == 0 and shape[-2] % f == 0

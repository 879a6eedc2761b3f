"""Perceive-IR's all-in-one restorer (official release, Apache-2.0), with its parameter names.

A Restormer-style U-Net (channels ``dim``·(1, 2, 4, 8), levels of ``blocks`` transformer
blocks with ``heads`` attention heads) whose lowest level and decoder are guided by two
image descriptors:

* **CFE** (compact feature extractor, ``cfe``): four stride-2 3×3 convolutions (3→32→64→96→128,
  GELU), global average pooling, a linear layer to 128, L2-normalised: the degradation
  feature ``[B, 128]`` that the InfoNCE term of training pulls together for crops of one
  degraded image and apart across degradation types.
* **PGM** (prompt guidance, ``pgm.0..3``): per level, FiLM from [DINOv2 CLS token ‖ CFE
  feature] through Linear(768+128 → 2C), GELU, Linear(2C → 2C): guidance = x·(1+γ) + β.
  Level 4 (latent) uses hidden state 12 of DINOv2-base, decoder levels 3, 2, 1 use hidden
  states 8, 4, 1 (:class:`DinoGuidance`).
* **PGCA** decoder blocks (``EnhancedTransformerBlock``): transposed (channel) cross-attention
  with the query from the guidance and keys/values from the features, then channel
  self-attention (MDTA) on the result with the guidance as residual, then the gated-dconv FFN.

Output = network(x) + x (a residual on the input image). Sides must be multiples of 8 (three
2× downsamplings): :class:`PerceiveIRRestorer` replicate-pads at the bottom/right, as the
official test script does, and crops back.

Attention (MDTA and PGCA, softmax over channels of L2-normalised queries/keys times a learned
per-head temperature) runs through ``scaled_dot_product_attention`` with the temperature
folded into the query. Everything is plain PyTorch; images are ``[B,3,H,W]`` in 0..1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: DINOv2 hidden states whose CLS tokens guide PGM levels 1, 2, 3, 4 (decoder1 … latent).
DINO_LAYERS = (1, 4, 8, 12)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINO_SIZE = 224
CFE_DIM = 128
FFN_EXPANSION = 2.66
#: Input sides must be multiples of this (three 2× downsamplings).
MULTIPLE = 8


@dataclass
class PerceiveIRConfig:
    """Hyper-parameters of :class:`PerceiveIR` (the official release's defaults)."""

    dim: int = 48
    blocks: list[int] = field(default_factory=lambda: [4, 6, 6, 8])
    heads: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    refinement_blocks: int = 4
    #: Width of the semantic (DINOv2) features: 768 for DINOv2-base.
    semantic_dim: int = 768

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PerceiveIRConfig:
        return cls(dim=int(d["dim"]), blocks=[int(b) for b in d["blocks"]], heads=[int(h) for h in d["heads"]],
                   refinement_blocks=int(d["refinement_blocks"]), semantic_dim=int(d.get("semantic_dim", 768)))


# --- layers --------------------------------------------------------------------------------


class LayerNorm2d(nn.Module):
    """LayerNorm over channels of ``[B,C,H,W]`` (eps 1e-5, biased variance, weight and bias in ``body``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.LayerNorm(channels, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class FeedForward(nn.Module):
    """Gated-dconv FFN: 1×1 to 2h, depthwise 3×3, GELU(a)·b, 1×1 back (h = int(2.66·C))."""

    def __init__(self, channels: int, expansion: float = FFN_EXPANSION) -> None:
        super().__init__()
        hidden = int(channels * expansion)
        self.project_in = nn.Conv2d(channels, hidden * 2, 1)
        self.depthwise = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2)
        self.project_out = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.depthwise(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * b)


def channel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, temperature: torch.Tensor) -> torch.Tensor:
    """Transposed attention of ``[B,C,H,W]`` maps: per head, softmax(q̂·k̂ᵀ·t)·v over channels.

    q̂, k̂ are L2-normalised over pixels; ``temperature`` ``[heads,1,1]``. Returns ``[B,C,H,W]``.
    """
    b, c, h, w = q.shape
    q, k, v = (t.reshape(b, heads, c // heads, h * w) for t in (q, k, v))
    q = F.normalize(q, dim=-1) * temperature.to(q.dtype)
    k = F.normalize(k, dim=-1)
    return F.scaled_dot_product_attention(q, k, v, scale=1.0).reshape(b, c, h, w)


class MDTA(nn.Module):
    """Multi-Dconv-head transposed self-attention (Restormer)."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} are not divisible by {heads} heads")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(channels, channels * 3, 1)
        self.qkv_dw = nn.Conv2d(channels * 3, channels * 3, 3, padding=1, groups=channels * 3)
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        return self.project(channel_attention(q, k, v, self.heads, self.temperature))


class PGCA(nn.Module):
    """Prompt-guided cross-attention: query from the guidance, keys and values from the features."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} are not divisible by {heads} heads")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.q = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.Conv2d(channels, channels, 3, padding=1, groups=channels))
        self.kv = nn.Sequential(nn.Conv2d(channels, channels * 2, 1),
                                nn.Conv2d(channels * 2, channels * 2, 3, padding=1, groups=channels * 2))
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        k, v = self.kv(x).chunk(2, dim=1)
        return self.project(channel_attention(self.q(guidance), k, v, self.heads, self.temperature))


class TransformerBlock(nn.Module):
    """x + MDTA(LN(x)), then + FFN(LN(·))."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(channels)
        self.attention = MDTA(channels, heads)
        self.norm2 = LayerNorm2d(channels)
        self.ffn = FeedForward(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class EnhancedTransformerBlock(nn.Module):
    """PGCA block: c = PGCA(LN(x), LN(g)); y = g + MDTA(LN(c)); y + FFN(LN(y))."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(channels)
        self.guidance_norm = LayerNorm2d(channels)
        self.attention = PGCA(channels, heads)
        self.mdta_norm = LayerNorm2d(channels)
        self.mdta = MDTA(channels, heads)
        self.norm2 = LayerNorm2d(channels)
        self.ffn = FeedForward(channels)

    def forward(self, x: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        cross = self.attention(self.norm1(x), self.guidance_norm(guidance))
        y = guidance + self.mdta(self.mdta_norm(cross))
        return y + self.ffn(self.norm2(y))


class EnhancedStage(nn.Module):
    """``depth`` PGCA blocks sharing one guidance map."""

    def __init__(self, channels: int, heads: int, depth: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(EnhancedTransformerBlock(channels, heads) for _ in range(depth))

    def forward(self, x: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, guidance)
        return x


class Downsample(nn.Module):
    """3×3 conv to C/2, pixel-unshuffle 2: ``[B,C,H,W] -> [B,2C,H/2,W/2]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1), nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """3×3 conv to 2C, pixel-shuffle 2: ``[B,C,H,W] -> [B,C/2,2H,2W]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels * 2, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class CompactFeatureExtractor(nn.Module):
    """CFE: ``[B,3,H,W] -> [B,128]`` unit degradation features (see the module doc)."""

    def __init__(self, out_dim: int = CFE_DIM) -> None:
        super().__init__()
        widths = (3, 32, 64, 96, 128)
        layers: list[nn.Module] = []
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GELU()]
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
        self.projection = nn.Linear(widths[-1], out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(self.body(x).flatten(1)), dim=-1)


class PromptGuidance(nn.Module):
    """PGM: FiLM of ``[B,C,H,W]`` by [semantic ‖ degradation] features: x·(1+γ) + β."""

    def __init__(self, channels: int, semantic_dim: int, degradation_dim: int = CFE_DIM) -> None:
        super().__init__()
        self.affine = nn.Sequential(nn.Linear(semantic_dim + degradation_dim, channels * 2), nn.GELU(),
                                    nn.Linear(channels * 2, channels * 2))

    def forward(self, x: torch.Tensor, semantic: torch.Tensor, degradation: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(torch.cat((semantic, degradation), dim=-1).to(x.dtype)).chunk(2, dim=-1)
        return x * (1.0 + gamma[:, :, None, None]) + beta[:, :, None, None]


# --- the network ---------------------------------------------------------------------------


class PerceiveIR(nn.Module):
    """The restorer: ``forward(image, semantics, positive_image=None) -> (restored, cfe, cfe_positive)``."""

    def __init__(self, dim: int = 48, blocks: Sequence[int] = (4, 6, 6, 8), heads: Sequence[int] = (1, 2, 4, 8),
                 refinement_blocks: int = 4, semantic_dim: int = 768) -> None:
        super().__init__()
        if len(blocks) != 4 or len(heads) != 4:
            raise ValueError("blocks and heads must each hold four values (levels 1..4)")
        self.config = PerceiveIRConfig(dim, list(blocks), list(heads), refinement_blocks, semantic_dim)
        c = (dim, dim * 2, dim * 4, dim * 8)

        def stage(level: int, depth: int) -> nn.Sequential:
            return nn.Sequential(*(TransformerBlock(c[level], heads[level]) for _ in range(depth)))

        self.embed = nn.Conv2d(3, c[0], 3, padding=1)
        self.encoder1 = stage(0, blocks[0])
        self.down1 = Downsample(c[0])
        self.encoder2 = stage(1, blocks[1])
        self.down2 = Downsample(c[1])
        self.encoder3 = stage(2, blocks[2])
        self.down3 = Downsample(c[2])
        self.cfe = CompactFeatureExtractor(CFE_DIM)
        self.pgm = nn.ModuleList(PromptGuidance(ch, semantic_dim, CFE_DIM) for ch in c)
        self.latent = EnhancedStage(c[3], heads[3], blocks[3])
        self.up3 = Upsample(c[3])
        self.reduce3 = nn.Conv2d(c[2] * 2, c[2], 1)
        self.decoder3 = EnhancedStage(c[2], heads[2], blocks[2])
        self.up2 = Upsample(c[2])
        self.reduce2 = nn.Conv2d(c[1] * 2, c[1], 1)
        self.decoder2 = EnhancedStage(c[1], heads[1], blocks[1])
        self.up1 = Upsample(c[1])
        self.reduce1 = nn.Conv2d(c[0] * 2, c[0], 1)
        self.decoder1 = EnhancedStage(c[0], heads[0], blocks[0])
        self.refinement = stage(0, refinement_blocks)
        self.output = nn.Conv2d(c[0], 3, 3, padding=1)

    def forward(self, image: torch.Tensor, semantics: Sequence[torch.Tensor], positive_image: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``image`` ``[B,3,H,W]`` (H, W multiples of 8), ``semantics`` four ``[B, semantic_dim]`` CLS
        features (DINOv2 hidden states 1, 4, 8, 12). Returns the restored image (not clamped),
        the CFE feature ``[B,128]`` and, with ``positive_image``, the CFE feature of that."""
        if len(semantics) != 4:
            raise ValueError(f"PerceiveIR needs four semantic feature levels, got {len(semantics)}")
        deg = self.cfe(image)
        pos = self.cfe(positive_image) if positive_image is not None else None
        enc1 = self.encoder1(self.embed(image))
        enc2 = self.encoder2(self.down1(enc1))
        enc3 = self.encoder3(self.down2(enc2))
        x = self.down3(enc3)
        x = self.latent(x, self.pgm[3](x, semantics[3], deg))
        x = self.reduce3(torch.cat((self.up3(x), enc3), dim=1))
        x = self.decoder3(x, self.pgm[2](x, semantics[2], deg))
        x = self.reduce2(torch.cat((self.up2(x), enc2), dim=1))
        x = self.decoder2(x, self.pgm[1](x, semantics[1], deg))
        x = self.reduce1(torch.cat((self.up1(x), enc1), dim=1))
        x = self.decoder1(x, self.pgm[0](x, semantics[0], deg))
        return self.output(self.refinement(x)) + image, deg, pos


def build_perceive_ir(config: PerceiveIRConfig) -> PerceiveIR:
    return PerceiveIR(config.dim, config.blocks, config.heads, config.refinement_blocks, config.semantic_dim)


# --- DINOv2 guidance -----------------------------------------------------------------------


class DinoGuidance(nn.Module):
    """Frozen DINOv2 (transformers ``Dinov2Model``): CLS tokens of hidden states 1, 4, 8, 12.

    Input ``[B,3,H,W]`` in 0..1: bicubic resize to 224×224 (not antialiased), ImageNet
    mean/std, then the encoder; returns four ``[B, hidden]`` tensors (hidden 768 for -base).
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        layers = int(encoder.config.num_hidden_layers)
        if layers < max(DINO_LAYERS):
            raise ValueError(f"DINOv2 has {layers} layers; Perceive-IR reads hidden states {DINO_LAYERS} (needs 12)")
        self.encoder = encoder.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    def train(self, mode: bool = True) -> DinoGuidance:  # always frozen, always eval
        return super().train(False)

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = F.interpolate(image, size=(DINO_SIZE, DINO_SIZE), mode="bicubic", align_corners=False)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out = self.encoder(pixel_values=x, output_hidden_states=True)
        return tuple(out.hidden_states[i][:, 0] for i in DINO_LAYERS)


def load_dino_guidance(folder: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> DinoGuidance:
    """DINOv2 from a local Hugging Face folder (``config.json`` + ``model.safetensors``), frozen."""
    from ...errors import WeightsError

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise WeightsError(f"{folder}: not a DINOv2 folder (no config.json); put facebook/dinov2-base there "
                           "(`gendeg weights fetch dinov2-base`) or name another folder")
    from transformers import Dinov2Config, Dinov2Model

    try:
        cfg = Dinov2Config.from_pretrained(str(folder), local_files_only=True)
        model = Dinov2Model.from_pretrained(str(folder), local_files_only=True, config=cfg, use_safetensors=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{folder}: cannot load a Dinov2Model from it ({str(exc).splitlines()[0][:300]}); it needs "
                           "config.json and model.safetensors of facebook/dinov2-base") from exc
    try:
        guidance = DinoGuidance(model)
    except ValueError as exc:
        raise WeightsError(f"{folder}: {exc}") from exc
    return guidance.to(device=device, dtype=dtype)


# --- inference wrapper ---------------------------------------------------------------------


class PerceiveIRRestorer(nn.Module):
    """``[N,3,H,W]`` 0..1 -> restored ``[N,3,H,W]`` (not clamped): the official test procedure.

    Replicate-pad bottom/right to a multiple of 8, DINOv2 features of the padded image, the
    network, crop back. (The caller clamps to 0..1.)
    """

    def __init__(self, net: PerceiveIR, guidance: DinoGuidance) -> None:
        super().__init__()
        if guidance.hidden_size != net.config.semantic_dim:
            raise ValueError(f"the DINOv2 model has hidden size {guidance.hidden_size}, the restorer expects "
                             f"{net.config.semantic_dim}")
        self.net = net
        self.guidance = guidance

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % MULTIPLE, (-w) % MULTIPLE
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        out, _, _ = self.net(x, self.guidance(x))
        return out[..., :h, :w]


def parameter_count(config: PerceiveIRConfig) -> int:
    """Parameters of the network for ``config`` (built on the meta device: no memory)."""
    with torch.device("meta"):
        net = build_perceive_ir(config)
    return sum(math.prod(p.shape) for p in net.parameters())


__all__ = [
    "DINO_LAYERS",
    "MULTIPLE",
    "DinoGuidance",
    "PerceiveIR",
    "PerceiveIRConfig",
    "PerceiveIRRestorer",
    "build_perceive_ir",
    "load_dino_guidance",
    "parameter_count",
]

"""DA-CLIP: a degradation-aware controller on an OpenCLIP ViT (pure PyTorch, OpenCLIP key names).

The official model (``daclip_ViT-B-32``) is a CLIP (ViT-B/32 image tower, 12-layer text
tower, 512-d embeddings) plus ``visual_control``, a copy of the image tower whose
transformer wraps the copied blocks with one zero-initialised ``Linear(width, width)`` per
block (``visual_control.transformer.zero_modules.<i>``). For an image:

1. the control tower runs and records ``z_i(h_i)`` after every block ``i``; its pooled,
   projected output is the **degradation embedding**;
2. the frozen CLIP tower runs and, after its block ``j``, adds the recorded hidden
   ``hiddens[L-1-j]`` (the list is consumed from its end, i.e. in **reverse order**); its
   pooled output is the **content embedding**.

Both 512-d embeddings (unnormalised) condition the universal-restoration UNet. The image is
prepared as OpenCLIP does: bicubic resize of the short side to 224, centre crop, CLIP
mean/std normalisation (:func:`clip_preprocess`).

State-dict layout (what ``daclip_ViT-B-32.pt`` holds, after unwrapping ``state_dict``):
``clip.visual.*``, ``clip.{token_embedding,positional_embedding,transformer,ln_final,text_projection,logit_scale}``,
``visual.*`` (the same tensors as ``clip.visual.*``: the official module registers the tower
twice), ``visual_control.*`` and ``logit_scale``. Attention uses
``scaled_dot_product_attention`` on OpenCLIP's packed ``in_proj_weight``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: The degradation names DA-CLIP was trained on (order of the official test config).
DEGRADATIONS = (
    "motion-blurry", "hazy", "jpeg-compressed", "low-light", "noisy",
    "raindrop", "rainy", "shadowed", "snowy", "uncompleted",
)


class MultiheadSelfAttention(nn.Module):
    """``nn.MultiheadAttention``'s parameters (``in_proj_weight``/``in_proj_bias``/``out_proj``) run through SDPA.

    Inputs are batch-first ``[N, L, D]``; ``attn_mask`` is an additive ``[L, L]`` mask.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        n, length, d = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(n, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        mask = attn_mask.to(q.dtype) if attn_mask is not None else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(n, length, d))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = MultiheadSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(
            OrderedDict([("c_fc", nn.Linear(width, hidden)), ("gelu", nn.GELU()), ("c_proj", nn.Linear(hidden, width))])
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask=attn_mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """Stack of blocks; can add a list of control hiddens (consumed from the end, one per block)."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, control: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        control = list(control) if control is not None else None
        for block in self.resblocks:
            x = block(x, attn_mask=attn_mask)
            if control is not None:
                x = x + control.pop()
        return x


class ControlTransformer(nn.Module):
    """The control copy: the copied blocks (``transformer.resblocks``) and one zero-init Linear per block."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.transformer = Transformer(width, layers, heads)
        self.zero_modules = nn.ModuleList([nn.Linear(width, width) for _ in range(layers)])
        for z in self.zero_modules:
            nn.init.zeros_(z.weight)
            nn.init.zeros_(z.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Returns ``(x, hiddens)`` with ``hiddens[i] = zero_modules[i](output of block i)``."""
        hiddens = []
        for z, block in zip(self.zero_modules, self.transformer.resblocks, strict=True):
            x = block(x)
            hiddens.append(z(x))
        return x, hiddens


@dataclass(frozen=True)
class VisionConfig:
    image_size: int = 224
    patch_size: int = 32
    width: int = 768
    layers: int = 12
    heads: int = 12
    embed_dim: int = 512


@dataclass(frozen=True)
class TextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    embed_dim: int = 512


class VisionTransformer(nn.Module):
    """OpenCLIP's ViT image tower (class token pooling, ``ln_post``, ``proj``)."""

    def __init__(self, cfg: VisionConfig, control: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        grid = cfg.image_size // cfg.patch_size
        scale = w**-0.5
        self.conv1 = nn.Conv2d(3, w, cfg.patch_size, cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(w))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, w))
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = (ControlTransformer if control else Transformer)(w, cfg.layers, cfg.heads)
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Parameter(scale * torch.randn(w, cfg.embed_dim))

    def _embed(self, image: torch.Tensor) -> torch.Tensor:
        x = self.conv1(image).flatten(2).transpose(1, 2)  # [N, grid*grid, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.ln_pre(x)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_post(x[:, 0]) @ self.proj

    def forward(self, image: torch.Tensor, control: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Pooled embedding ``[N, embed_dim]`` of CLIP-normalised ``[N,3,S,S]`` images."""
        return self._pool(self.transformer(self._embed(image), control=control))

    def forward_control(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(Control towers only) ``(degradation embedding, per-block hiddens)``."""
        x, hiddens = self.transformer(self._embed(image))
        return self._pool(x), hiddens


class TextTransformer(nn.Module):
    """OpenCLIP's (non-custom) text tower, keys at the CLIP top level as in ``CLIP``."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width).normal_(std=0.01))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, cfg.embed_dim).normal_(std=cfg.width**-0.5))
        mask = torch.full((cfg.context_length, cfg.context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embedding ``[N, embed_dim]`` of token ids ``[N, L]`` (pooled at the end-of-text = largest id)."""
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)] @ self.text_projection


class CLIP(nn.Module):
    """The frozen CLIP of DA-CLIP: ``visual`` plus (optionally) the text tower's parameters at top level."""

    def __init__(self, vision: VisionConfig, text: TextConfig | None) -> None:
        super().__init__()
        self.visual = VisionTransformer(vision)
        self.has_text = text is not None
        if text is not None:
            tt = TextTransformer(text)
            # OpenCLIP's CLIP keeps the text tower's parts at its top level
            self.token_embedding = tt.token_embedding
            self.positional_embedding = tt.positional_embedding
            self.transformer = tt.transformer
            self.ln_final = tt.ln_final
            self.text_projection = tt.text_projection
            self.register_buffer("attn_mask", tt.attn_mask, persistent=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        if not self.has_text:
            raise RuntimeError("this DA-CLIP was loaded without its text tower")
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)] @ self.text_projection


class DaCLIP(nn.Module):
    """DA-CLIP (see the module docstring). ``visual`` is the same module as ``clip.visual``."""

    def __init__(self, vision: VisionConfig = VisionConfig(), text: TextConfig | None = TextConfig()) -> None:
        super().__init__()
        self.clip = CLIP(vision, text)
        self.visual = self.clip.visual
        self.visual_control = VisionTransformer(vision, control=True)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @property
    def image_size(self) -> int:
        return self.clip.visual.cfg.image_size

    def encode_image(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(content embedding, degradation embedding)``, each ``[N, embed_dim]``, unnormalised.

        ``image``: CLIP-normalised ``[N,3,S,S]`` (see :func:`clip_preprocess`).
        """
        degra, hiddens = self.visual_control.forward_control(image)
        content = self.clip.visual(image, control=hiddens)
        return content, degra

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text embedding ``[N, embed_dim]`` of OpenCLIP token ids ``[N, L]`` (needs the text tower)."""
        return self.clip.encode_text(tokens)

    @staticmethod
    def degradation_logits(degra: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """``100 * cos(degradation embedding, text embedding)``: ``[N, n_texts]`` (the official readout's fixed scale)."""
        a = F.normalize(degra.float(), dim=-1)
        b = F.normalize(text_features.float(), dim=-1)
        return 100.0 * a @ b.t()


def clip_preprocess(image: torch.Tensor, size: int = 224) -> torch.Tensor:
    """OpenCLIP's eval transform on ``[B,3,H,W]`` 0..1 images: bicubic resize of the short side to
    ``size`` (antialiased), centre crop ``size x size``, CLIP mean/std normalisation.

    (The official code goes through 8-bit PIL images; this works on the float tensor directly.)
    """
    h, w = image.shape[-2:]
    # torchvision's Resize(int): the short side becomes ``size``, the long one int(size * long / short)
    nh, nw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    x = F.interpolate(image.float(), size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    x = x[..., top : top + size, left : left + size]
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype)[:, None, None]
    std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype)[:, None, None]
    return (x - mean) / std

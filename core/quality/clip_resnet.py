"""OpenAI's ResNet CLIP (RN50 and friends) in plain PyTorch, for CLIP-IQA's published configuration.

Architecture (Radford et al. 2021, OpenAI ``clip/model.py``; the same in open_clip):

* image tower ``visual.*``: a "ModifiedResNet" — three 3×3 stem convolutions (the first with
  stride 2) and a 2×2 average pool; bottleneck stages ``layer1..4`` (3, 4, 6, 3 blocks for RN50)
  whose strided blocks average-pool before the last 1×1 convolution and on the shortcut
  (``downsample.-1`` pool, ``.0`` conv, ``.1`` BatchNorm); then attention pooling: the mean
  token is prepended to the H/32·W/32 feature tokens and a multi-head attention (heads =
  width·32/64) with the mean token as query gives the embedding (``attnpool.q/k/v/c_proj``).
  ``attnpool.positional_embedding`` [(S/32)²+1, C] is added only when asked: CLIP-IQA
  (Wang, Chan, Loy, AAAI 2023, ``CLIPIQAFixed``) runs the image at its full resolution and
  leaves the positional embedding out (``pos_embedding=False``, its default), so any size
  ≥ 32 px works. With the option on and another size, the official code resizes the whole
  [(S/32)²+1, C] table bicubically along the token axis only (a 1×1×L×C "image" to L' rows,
  mean-token row included), which is what ``positional_embedding=True`` does here too.
* text tower: ``token_embedding``, ``positional_embedding`` [context, width], pre-norm
  transformer blocks ``transformer.resblocks.N`` (causal self-attention ``attn.in_proj_*``,
  ``attn.out_proj``; MLP ``mlp.c_fc`` → QuickGELU x·σ(1.702x) → ``mlp.c_proj``; heads =
  width/64), ``ln_final``; the embedding is the end-of-text token's state times
  ``text_projection`` [width, D]. ``logit_scale`` = log 100.

Weights: a ``.safetensors`` in this key layout — open_clip's conversion of OpenAI's RN50 on the
Hugging Face Hub (``timm/resnet50_clip.openai``, ``open_clip_model.safetensors``), with the
tokenizer files (``vocab.json``, ``merges.txt``, …) of the same repository next to it. OpenAI's
own ``RN50.pt`` is a TorchScript archive (a pickle with code): it is refused, never loaded.
Precision: OpenAI's loader converts the weights to fp16 (the official CLIP-IQA runs that way on
a GPU); this module computes in fp32 unless asked otherwise.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, WeightsError
from ..image import check_image
from .clip import OPENAI_MEAN, OPENAI_STD
from .common import as_rgb3

#: What a user gets when they point at OpenAI's TorchScript file (or another pickle).
PICKLE_HINT = (
    "is a pickled/TorchScript checkpoint, which this pack never loads (it can run code). Use the safetensors "
    "conversion instead: `gendeg weights fetch clip-rn50-openai` (open_clip_model.safetensors from "
    "timm/resnet50_clip.openai and its tokenizer files)"
)


class Bottleneck(nn.Module):
    """ResNet bottleneck whose stride is an average pool (anti-aliased), as in CLIP."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride > 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * 4, 1, bias=False)),
                ("1", nn.BatchNorm2d(planes * 4)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class AttentionPool2d(nn.Module):
    """Multi-head attention pooling with the mean token as the query."""

    def __init__(self, spatial: int, embed_dim: int, heads: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.zeros(spatial * spatial + 1, embed_dim))
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.heads = heads

    def forward(self, x: torch.Tensor, positional_embedding: bool = False) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # [B, HW+1, C]
        if positional_embedding:
            pe = self.positional_embedding
            if pe.shape[0] != tokens.shape[1]:  # CLIP-IQA's pos_embedding=True: the [L, C] table resized as a 1x1 image
                pe = F.interpolate(pe[None, None], size=(tokens.shape[1], c), mode="bicubic", align_corners=False)[0, 0]
            tokens = tokens + pe.to(tokens.dtype)
        d = c // self.heads
        q = self.q_proj(tokens[:, :1]).view(b, 1, self.heads, d).transpose(1, 2)
        k = self.k_proj(tokens).view(b, -1, self.heads, d).transpose(1, 2)
        v = self.v_proj(tokens).view(b, -1, self.heads, d).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, c)
        return self.c_proj(out)


class ModifiedResNet(nn.Module):
    """CLIP's image tower: 3-convolution stem, 4 bottleneck stages, attention pooling."""

    def __init__(self, layers: tuple[int, int, int, int], output_dim: int, heads: int, image_size: int, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        inplanes = width
        stages = []
        for i, n in enumerate(layers):
            planes = width * 2**i
            blocks = [Bottleneck(inplanes, planes, 1 if i == 0 else 2)]
            inplanes = planes * 4
            blocks += [Bottleneck(inplanes, planes) for _ in range(1, n)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.attnpool = AttentionPool2d(image_size // 32, width * 32, heads, output_dim)

    def forward(self, x: torch.Tensor, positional_embedding: bool = False) -> torch.Tensor:
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = F.relu(bn(conv(x)))
        x = self.avgpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x, positional_embedding)


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block with OpenAI's parameter names (``attn`` is nn.MultiheadAttention's layout)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, width * 4)), ("gelu", _QuickGELU()),
                                              ("c_proj", nn.Linear(width * 4, width))]))
        self.ln_2 = nn.LayerNorm(width)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = F.linear(self.ln_1(x), self.attn.in_proj_weight, self.attn.in_proj_bias)
        q, k, v = (t.view(b, n, self.heads, c // self.heads).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, n, c)
        x = x + self.attn.out_proj(a)
        return x + self.mlp(self.ln_2(x))


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])


@dataclass(frozen=True)
class ResNetCLIPConfig:
    """Sizes of a ResNet CLIP (RN50: layers (3,4,6,3), width 64, embed 1024, image 224, text 512×12, 77 tokens)."""

    layers: tuple[int, int, int, int]
    width: int
    embed_dim: int
    image_size: int
    text_width: int
    text_layers: int
    context_length: int
    vocab_size: int
    vision_heads: int
    text_heads: int


class ResNetCLIP(nn.Module):
    """Image and text towers of a ResNet CLIP with OpenAI's / open_clip's state-dict keys."""

    def __init__(self, cfg: ResNetCLIPConfig):
        super().__init__()
        self.config = cfg
        self.visual = ModifiedResNet(cfg.layers, cfg.embed_dim, cfg.vision_heads, cfg.image_size, cfg.width)
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.text_width)
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.context_length, cfg.text_width))
        self.transformer = _Transformer(cfg.text_width, cfg.text_layers, cfg.text_heads)
        self.ln_final = nn.LayerNorm(cfg.text_width)
        self.text_projection = nn.Parameter(torch.zeros(cfg.text_width, cfg.embed_dim))
        self.logit_scale = nn.Parameter(torch.zeros([]))

    def encode_image(self, pixels: torch.Tensor, positional_embedding: bool = False) -> torch.Tensor:
        """``[B,3,H,W]`` normalised pixels -> ``[B, embed_dim]`` (not normalised)."""
        return self.visual(pixels.to(self.visual.conv1.weight.dtype), positional_embedding)

    def encode_tokens(self, ids: list[list[int]]) -> torch.Tensor:
        """Token sequences (start … end token, unpadded) -> ``[N, embed_dim]``, read at each end token."""
        ctx = self.positional_embedding.shape[0]
        if max(len(s) for s in ids) > ctx:
            raise InputError(f"prompt too long: {max(len(s) for s in ids)} tokens, this CLIP reads {ctx}")
        dev = self.token_embedding.weight.device
        out = []
        for seq in ids:  # one at a time: no padding, the causal mask does the rest
            t = torch.tensor([seq], device=dev)
            x = self.token_embedding(t) + self.positional_embedding[: len(seq)]
            for block in self.transformer.resblocks:
                x = block(x)
            out.append(self.ln_final(x)[:, -1] @ self.text_projection)
        return torch.cat(out)


_LAYER = re.compile(r"^visual\.layer(\d)\.(\d+)\.")
_BLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.")


def config_from_state_dict(sd: dict[str, torch.Tensor]) -> ResNetCLIPConfig:
    """Read the sizes from the tensors (as OpenAI's ``build_model`` does): heads = width·32/64 and text width/64."""
    need = ("visual.conv3.weight", "visual.attnpool.c_proj.weight", "visual.attnpool.positional_embedding",
            "token_embedding.weight", "positional_embedding", "ln_final.weight", "text_projection")
    missing = [k for k in need if k not in sd]
    if missing:
        vit = " (this looks like a ViT CLIP: CLIP-IQA's published configuration is the ResNet-50)" if "visual.proj" in sd else ""
        raise WeightsError(f"not a ResNet CLIP in OpenAI/open_clip layout: missing {', '.join(missing[:3])}{vit}")
    counts = [0, 0, 0, 0]
    for key in sd:
        m = _LAYER.match(key)
        if m:
            counts[int(m.group(1)) - 1] = max(counts[int(m.group(1)) - 1], int(m.group(2)) + 1)
    text_layers = 1 + max((int(m.group(1)) for m in map(_BLOCK.match, sd) if m), default=-1)
    width = sd["visual.conv3.weight"].shape[0]
    text_width = sd["ln_final.weight"].shape[0]
    spatial = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
    if min(counts) == 0 or text_layers == 0:
        raise WeightsError(f"ResNet CLIP checkpoint without all four stages or text blocks (stages {counts}, text blocks {text_layers})")
    return ResNetCLIPConfig(
        layers=tuple(counts), width=width, embed_dim=sd["visual.attnpool.c_proj.weight"].shape[0],
        image_size=spatial * 32, text_width=text_width, text_layers=text_layers,
        context_length=sd["positional_embedding"].shape[0], vocab_size=sd["token_embedding.weight"].shape[0],
        vision_heads=max(1, width * 32 // 64), text_heads=max(1, text_width // 64),
    )


def build_resnet_clip(sd: dict[str, torch.Tensor], what: str = "checkpoint") -> ResNetCLIP:
    """A frozen :class:`ResNetCLIP` (eval mode) holding ``sd``; wrong or missing keys are a :class:`WeightsError`."""
    model = ResNetCLIP(config_from_state_dict(sd))
    own = model.state_dict()
    ignorable = ("num_batches_tracked", "attn_mask")
    sd = {k: v for k, v in sd.items() if not k.endswith(ignorable) and k not in ("input_resolution", "context_length", "vocab_size")}
    missing = sorted(k for k in own if k not in sd and not k.endswith(ignorable))
    extra = sorted(k for k in sd if k not in own)
    if missing or extra:
        raise WeightsError(f"{what}: not the ResNet CLIP layout: missing {missing[:3]}, unexpected {extra[:3]}")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise WeightsError(f"{what}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    model.load_state_dict(sd, strict=False)
    return model.float().requires_grad_(False).eval()


@dataclass
class ResNetCLIPIQA:
    """A ResNet CLIP prepared as CLIP-IQA's official configuration: full-resolution images,
    OpenAI normalisation, attention pooling without the positional embedding."""

    model: ResNetCLIP
    tokenizer: Any
    name: str
    positional_embedding: bool = False
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD

    comparable = True
    label = "CLIP-IQA (ResNet-50 CLIP, no positional embedding, full resolution: the published configuration)"

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    @property
    def logit_scale(self) -> torch.Tensor:
        """exp(learned log scale): 100 for OpenAI's CLIPs."""
        return self.model.logit_scale.detach().float().exp()

    def to(self, device: torch.device | str) -> ResNetCLIPIQA:
        self.model.to(device)
        return self

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """``[B,C,H,W]`` 0..1 -> normalised RGB at full resolution on the model's device."""
        check_image(image, "image")
        h, w = image.shape[-2:]
        if min(h, w) < 32:
            raise InputError(f"CLIP-IQA needs images of at least 32x32 pixels (the ResNet reduces by 32), got {w}x{h}")
        x = as_rgb3(image).float().to(self.device)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings ``[B, D]`` (float32), one full-resolution image at a time."""
        out = [self.model.encode_image(self.preprocess(image[i : i + 1]), self.positional_embedding) for i in range(image.shape[0])]
        return F.normalize(torch.cat(out).float(), dim=-1)

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]]

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm text embeddings ``[N, D]`` (float32) of plain prompts."""
        return F.normalize(self.model.encode_tokens(self.tokenize(texts)).float(), dim=-1)


_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".jit", ".pkl", ".tar")


def _weights_file(path: Path) -> Path:
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if not files:
            pickles = [p.name for p in path.iterdir() if p.suffix.lower() in _PICKLE_SUFFIXES]
            if pickles:
                raise WeightsError(f"{path / pickles[0]} {PICKLE_HINT}")
            raise WeightsError(f"{path}: no .safetensors ResNet CLIP in this folder; `gendeg weights fetch clip-rn50-openai`")
        return files[0]
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise WeightsError(f"{path.name} {PICKLE_HINT}")
    if path.suffix.lower() != ".safetensors":
        raise WeightsError(f"{path.name}: expected a .safetensors ResNet CLIP (open_clip_model.safetensors)")
    return path


def load_tokenizer(folder: Path) -> Any:
    """CLIP's BPE tokenizer from ``vocab.json`` + ``merges.txt`` (or ``tokenizer.json``) in ``folder``."""
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    try:
        if (folder / "tokenizer.json").is_file():
            return CLIPTokenizerFast.from_pretrained(str(folder), local_files_only=True)
        return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise WeightsError(
            f"{folder}: no usable CLIP tokenizer files (vocab.json and merges.txt, or tokenizer.json) next to the "
            f"weights ({exc}); `gendeg weights fetch clip-rn50-openai` brings them"
        ) from exc


def load_resnet_clip_iqa(path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> ResNetCLIPIQA:
    """CLIP-IQA's ResNet CLIP from a ``.safetensors`` (or the folder holding it and the tokenizer files)."""
    from ..weights import load_safetensors

    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: no such file; `gendeg weights fetch clip-rn50-openai` downloads the ResNet-50 CLIP")
    weights = _weights_file(path)
    model = build_resnet_clip(load_safetensors(weights), weights.name).to(device=device, dtype=dtype)
    return ResNetCLIPIQA(model=model, tokenizer=load_tokenizer(weights.parent), name=weights.parent.name)

"""A frozen CLIP (transformers ``CLIPModel``) loaded from a local folder, for the quality
perceiver and CLIP-IQA's ViT variant (not comparable with published CLIP-IQA numbers; the
published configuration is the ResNet-50 of :mod:`.clip_resnet`). Nothing is fetched: the folder must hold ``config.json``, the
weights (``model.safetensors``) and the tokenizer files, as ``save_pretrained`` writes them
(e.g. a snapshot of ``openai/clip-vit-base-patch32``, see the manifest).

Images are prepared as CLIP expects: colour (grey expanded, alpha dropped), the short side
resized to the model's ``image_size`` (bicubic, antialiased), centre-cropped square, then
normalised with the folder's ``preprocessor_config.json`` mean/std (OpenAI's by default).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import WeightsError
from ..image import check_image
from .common import as_rgb3

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

#: Architecture fields that decide whether learned prompts fit a CLIP.
_HASH_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "max_position_embeddings", "vocab_size", "image_size", "patch_size", "hidden_act")


def config_hash(model: Any) -> str:
    """Short sha256 of a CLIP's architecture (text and vision towers, projection size)."""
    cfg = model.config
    d: dict[str, Any] = {"projection_dim": getattr(cfg, "projection_dim", None)}
    for tower in ("text_config", "vision_config"):
        sub = getattr(cfg, tower)
        d[tower] = {k: getattr(sub, k, None) for k in _HASH_FIELDS}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class FrozenCLIP:
    """A CLIP model in eval mode with its tokenizer and image normalisation."""

    model: Any
    tokenizer: Any
    name: str
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.text_projection.weight.dtype

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    @property
    def logit_scale(self) -> torch.Tensor:
        """exp(learned log scale), 100 for OpenAI's CLIPs."""
        return self.model.logit_scale.detach().float().exp()

    def config_hash(self) -> str:
        return config_hash(self.model)

    def to(self, device: torch.device | str) -> FrozenCLIP:
        self.model.to(device)
        return self

    # --- images ------------------------------------------------------------------------

    def preprocess(self, image: torch.Tensor, mode: str = "crop") -> torch.Tensor:
        """``[B,C,H,W]`` 0..1 -> normalised ``[B,3,S,S]`` pixel values on the model's device/dtype.

        ``mode`` ``"crop"``: short side to S (bicubic, antialiased, clamped), centre crop (CLIP's
        own preprocessing); ``"resize"``: a plain bicubic resize of the whole image to S×S, not
        antialiased, not clamped (Perceive-IR's official image encoder).
        """
        check_image(image, "image")
        x = as_rgb3(image).float().to(self.device)
        s = self.image_size
        if mode == "resize":
            x = F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False)
        elif mode == "crop":
            h, w = x.shape[-2:]
            scale = s / min(h, w)
            nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
            top, left = (nh - s) // 2, (nw - s) // 2
            x = x[..., top : top + s, left : left + s]
        else:
            raise ValueError(f"unknown CLIP preprocessing mode {mode!r}")
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(self.dtype)

    @torch.no_grad()
    def image_features(self, image: torch.Tensor, batch_size: int = 32, mode: str = "crop") -> torch.Tensor:
        """Unit-norm image embeddings ``[B,D]`` (float32) of ``[B,C,H,W]`` images in 0..1 (``mode``: see :meth:`preprocess`)."""
        out = []
        for i in range(0, image.shape[0], batch_size):
            px = self.preprocess(image[i : i + batch_size], mode)
            vis = self.model.vision_model(pixel_values=px)
            pooled = vis.pooler_output if hasattr(vis, "pooler_output") else vis[1]
            out.append(F.normalize(self.model.visual_projection(pooled).float(), dim=-1))
        return torch.cat(out)

    # --- text --------------------------------------------------------------------------

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, with start and end tokens, unpadded."""
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]]

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm text embeddings ``[N,D]`` (float32) of plain prompts."""
        ids = self.tokenize(texts)
        return self.encode_tokens(ids)

    def encode_tokens(self, ids: list[list[int]], context: torch.Tensor | None = None, context_at: int = 1) -> torch.Tensor:
        """Unit-norm text embeddings ``[N,D]`` of token sequences.

        With ``context`` ``[N,n_ctx,W]`` (learnable, gradients flow), the token embeddings at
        positions ``context_at .. context_at+n_ctx-1`` are replaced by it (CoOp prompts).
        The embedding is the final hidden state at each sequence's end token (its last token).
        """
        tm = self.model.text_model
        length = max(len(s) for s in ids)
        self.check_prompt_length(length)
        pad_id = ids[0][-1]
        tokens = torch.tensor([s + [pad_id] * (length - len(s)) for s in ids], device=self.device)
        eos_pos = torch.tensor([len(s) - 1 for s in ids], device=self.device)
        emb = tm.embeddings.token_embedding(tokens)
        if context is not None:
            k = context.shape[1]
            emb = torch.cat([emb[:, :context_at], context.to(emb.dtype), emb[:, context_at + k :]], dim=1)
        return self.encode_embeddings(emb, eos_pos)

    def check_prompt_length(self, length: int) -> None:
        """Refuse prompts longer than the text tower's positional embedding."""
        max_pos = self.model.text_model.embeddings.position_embedding.weight.shape[0]
        if length > max_pos:
            raise WeightsError(f"prompt of {length} tokens is longer than this CLIP's {max_pos}; use fewer context tokens")

    def encode_embeddings(self, emb: torch.Tensor, eos_pos: torch.Tensor) -> torch.Tensor:
        """Unit-norm text embeddings ``[N,D]`` of token embeddings ``emb`` ``[N,L,W]`` (before positions).

        Positional embeddings are added, the causal text transformer and its final layer norm
        run, and the hidden state at ``eos_pos`` ``[N]`` is projected (differentiable in ``emb``).
        """
        tm = self.model.text_model
        n, length = emb.shape[0], emb.shape[1]
        self.check_prompt_length(length)
        h = tm.embeddings(inputs_embeds=emb.to(self.dtype))
        mask = torch.full((length, length), float("-inf"), device=h.device, dtype=h.dtype).triu(1)
        mask = mask.view(1, 1, length, length).expand(n, 1, length, length)
        for layer in tm.encoder.layers:
            h = _run_layer(layer, h, mask)
        h = tm.final_layer_norm(h)
        pooled = h[torch.arange(n, device=h.device), eos_pos.to(h.device)]
        return F.normalize(self.model.text_projection(pooled).float(), dim=-1)


def _run_layer(layer: Any, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One CLIP encoder layer across transformers versions (4.x takes a separate causal mask)."""
    params = inspect.signature(layer.forward).parameters
    out = layer(h, mask, None) if "causal_attention_mask" in params else layer(h, mask)
    return out[0] if isinstance(out, tuple) else out


def load_clip(folder: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> FrozenCLIP:
    """Load a CLIP saved with ``save_pretrained`` from ``folder`` (local files only), frozen, eval."""
    folder = Path(folder)
    if folder.is_file() and folder.suffix.lower() in (".pt", ".pth", ".bin", ".ckpt"):
        raise WeightsError(
            f"{folder.name} is a pickled/TorchScript CLIP (OpenAI's ViT-B-32.pt is one), which this pack never loads "
            "(it can run code). Use the Hugging Face folder of the same model: `gendeg weights fetch "
            "clip-vit-base-patch32` (openai/clip-vit-base-patch32: config.json, model.safetensors, tokenizer files)."
        )
    if not (folder / "config.json").is_file():
        raise WeightsError(
            f"{folder}: not a CLIP folder (no config.json). Put a transformers CLIP there "
            "(e.g. `gendeg weights fetch clip-vit-base-patch32`) or pick another folder."
        )
    from transformers import AutoTokenizer, CLIPModel

    try:
        model = CLIPModel.from_pretrained(str(folder), local_files_only=True, dtype=dtype)
    except TypeError:  # transformers 4.x names it torch_dtype
        model = CLIPModel.from_pretrained(str(folder), local_files_only=True, torch_dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise WeightsError(f"{folder}: cannot load a CLIPModel from it ({exc})") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{folder}: no usable CLIP tokenizer files (vocab/merges or tokenizer.json): {exc}") from exc
    mean, std = OPENAI_MEAN, OPENAI_STD
    pp = folder / "preprocessor_config.json"
    if pp.is_file():
        cfg = json.loads(pp.read_text())
        mean = tuple(cfg.get("image_mean", mean))
        std = tuple(cfg.get("image_std", std))
    model.requires_grad_(False).eval().to(device)
    return FrozenCLIP(model=model, tokenizer=tokenizer, name=folder.name, mean=mean, std=std)

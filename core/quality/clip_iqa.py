"""CLIP-IQA (Wang, Chan, Loy, AAAI 2023): quality as CLIP's preference between antonym prompts.

score = softmax(s·[cos(img, "Good photo."), cos(img, "Bad photo.")])[0], with s CLIP's own
logit scale (100 for OpenAI's models). In 0..1, higher is better. Other antonym pairs
(e.g. "Sharp photo." / "Blurry photo.") measure other attributes.

Two configurations:

* **official** (:mod:`.clip_resnet`): OpenAI's ResNet-50 CLIP, the image at full resolution,
  attention pooling without the positional embedding — what the paper's numbers use
  (``CLIPIQAFixed``, ``backbone_name='RN50'``, ``pos_embedding=False``).
* **ViT variant** (:mod:`.clip`): a transformers CLIP (e.g. ViT-B/32) on a 224 px resize and
  centre crop. Its numbers are **not comparable with published CLIP-IQA numbers**; tables
  and outputs say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import WeightsError

DEFAULT_PROMPTS = ("Good photo.", "Bad photo.")
VIT_NOTE = "ViT variant (224 px resize + centre crop): not comparable with published CLIP-IQA numbers"
OFFICIAL_NOTE = "ResNet-50 CLIP, full resolution, no positional embedding (the published CLIP-IQA configuration)"


def is_official(clip: Any) -> bool:
    """True for the ResNet CLIP in CLIP-IQA's published configuration (no positional embedding)."""
    from .clip_resnet import ResNetCLIPIQA

    return isinstance(clip, ResNetCLIPIQA) and not clip.positional_embedding


def variant_note(clip: Any) -> str:
    """One line saying which CLIP-IQA this is (and whether its numbers compare with the paper's)."""
    return OFFICIAL_NOTE if is_official(clip) else VIT_NOTE


@torch.no_grad()
def clip_iqa(clip: Any, image: torch.Tensor, prompts: tuple[str, str] = DEFAULT_PROMPTS) -> torch.Tensor:
    """``[B]`` CLIP-IQA scores in 0..1 (higher is better) of ``[B,C,H,W]`` images in 0..1.

    ``clip``: a :class:`~.clip_resnet.ResNetCLIPIQA` (official) or a :class:`~.clip.FrozenCLIP`.
    """
    img = clip.image_features(image)
    txt = clip.text_features(list(prompts)).to(img.device)
    logits = clip.logit_scale.to(img.device) * img @ txt.T
    return logits.softmax(dim=-1)[:, 0]


def load(source: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """The CLIP for CLIP-IQA at ``source``: a ResNet CLIP ``.safetensors`` (or its folder) gives the
    official configuration; a transformers CLIP folder (``config.json``) gives the ViT variant."""
    source = Path(source)
    if source.is_dir() and (source / "config.json").is_file():
        from .clip import load_clip

        return load_clip(source, device, dtype)
    if not source.exists():
        raise WeightsError(
            f"{source}: not found. CLIP-IQA needs the ResNet-50 CLIP (`gendeg weights fetch clip-rn50-openai`) "
            "or, as a variant not comparable with published numbers, a transformers CLIP folder"
        )
    from .clip_resnet import load_resnet_clip_iqa

    return load_resnet_clip_iqa(source, device, dtype)

"""CLIP-IQA (Wang, Chan, Loy 2023): quality as CLIP's preference between antonym prompts.

score = softmax(s·[cos(img, "Good photo."), cos(img, "Bad photo.")])[0], with s CLIP's own
logit scale (100 for OpenAI's models). In 0..1, higher is better. Other antonym pairs
(e.g. "Sharp photo." / "Blurry photo.") measure other attributes.
"""

from __future__ import annotations

import torch

from .clip import FrozenCLIP

DEFAULT_PROMPTS = ("Good photo.", "Bad photo.")


@torch.no_grad()
def clip_iqa(clip: FrozenCLIP, image: torch.Tensor, prompts: tuple[str, str] = DEFAULT_PROMPTS) -> torch.Tensor:
    """``[B]`` CLIP-IQA scores in 0..1 (higher is better) of ``[B,C,H,W]`` images in 0..1."""
    img = clip.image_features(image)
    txt = clip.text_features(list(prompts)).to(img.device)
    logits = clip.logit_scale.to(img.device) * img @ txt.T
    return logits.softmax(dim=-1)[:, 0]

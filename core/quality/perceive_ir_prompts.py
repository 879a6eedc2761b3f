"""Perceive-IR's official stage-1 quality prompts (``quality_prompts_*.pth``) as a quality perceiver.

The release's prompt-learning checkpoint is a dict whose ``prompt_learner`` holds:

* ``context`` ``[3, n, W]`` (n = 16, W = 512 for OpenAI's ViT-B/32): the learned vectors of the
  tiers ``terrible``, ``mediocre``, ``excellent`` (rows 0, 1, 2; ``quality_names`` when present
  says so); the tier word's token embedding only initialised the last slot, all n are trained;
* ``token_prefix`` ``[3, 1, W]``: the start token's embedding;
* ``token_suffix`` ``[3, L-1-n, W]``: the embeddings after the n placeholders (end token, then
  padding tokens), L = 77 for OpenAI's CLIP;
* ``tokenized_prompts`` ``[3, L]``: the token ids; the text feature is read where they are
  largest (the end token), as OpenAI's ``encode_text`` does.

So a prompt is ``[SOS] v_1 … v_n [EOS] pad…`` with no template words; its text feature is
CLIP's text transformer output at the end token, projected and L2-normalised, and the image
feature is CLIP's of a plain 224×224 bicubic resize (no crop, no antialiasing). Tier
probabilities are softmax(logit_scale · cos) (logit_scale = 100 for OpenAI's CLIP).

Only ``prompt_learner`` is read (optimizer, scheduler and bookkeeping entries are ignored);
the pickle is opened with ``weights_only=True`` (no code runs). The contexts are reordered to
the pack's tier order (excellent, mediocre, terrible), so the result is the same
:class:`~.perceiver.QualityPerceiver` that ``gendeg train perceiver`` makes.

CLIP: the Hugging Face folder of OpenAI's ViT-B/32 (``openai/clip-vit-base-patch32``, the same
weights as OpenAI's ``ViT-B-32.pt``, which is TorchScript and never loaded). Files made with
another CLIP are refused: their start-token embedding differs from the loaded CLIP's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import WeightsError
from .clip import FrozenCLIP
from .perceiver import TIERS, QualityPerceiver

#: Tier order of the official file (rows of ``context``).
OFFICIAL_TIERS = ("terrible", "mediocre", "excellent")
LEARNER_KEYS = ("context", "token_prefix", "token_suffix", "tokenized_prompts")
#: Largest |difference| tolerated between the file's start-token embedding and the CLIP's.
FRAME_TOLERANCE = 1e-3


@dataclass
class OfficialPrompts:
    """The ``prompt_learner`` tensors of an official file, rows in the file's tier order."""

    context: torch.Tensor  # [3, n, W]
    prefix: torch.Tensor  # [3, 1, W]
    suffix: torch.Tensor  # [3, S, W]
    tokenized: torch.Tensor  # [3, 1 + n + S] int
    tiers: tuple[str, ...]
    iteration: int | None = None

    @property
    def eos(self) -> list[int]:
        """End-token position of each prompt: the argmax of its token ids (the official rule)."""
        return self.tokenized.argmax(dim=-1).tolist()


def read_official_prompts(path: str | Path) -> OfficialPrompts:
    """Read and check the ``prompt_learner`` of an official ``quality_prompts_*.pth`` (safely)."""
    from ..weights import load_pickle

    path = Path(path)
    obj = load_pickle(path)
    if not isinstance(obj, Mapping) or not isinstance(obj.get("prompt_learner"), Mapping):
        hint = ""
        if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
            hint = " It looks like a Perceive-IR restorer checkpoint: load it with GenDegPerceiveIRLoader."
        elif isinstance(obj, Mapping) and "ctx" in obj:
            hint = " It looks like a prompt file of the pack: save it as .safetensors (gendeg train perceiver writes one)."
        raise WeightsError(f"{path.name}: not a Perceive-IR quality-prompts file (expected a dict with a 'prompt_learner' "
                           f"state dict holding {', '.join(LEARNER_KEYS)}).{hint}")
    learner = _strip_module(obj["prompt_learner"])
    missing = [k for k in LEARNER_KEYS if not isinstance(learner.get(k), torch.Tensor)]
    if missing:
        raise WeightsError(f"{path.name}: prompt_learner lacks {', '.join(missing)}; the file is incomplete or of another "
                           "version (it needs context, token_prefix, token_suffix, tokenized_prompts)")
    ctx, prefix, suffix, tok = (learner[k] for k in LEARNER_KEYS)
    names = obj.get("quality_names", OFFICIAL_TIERS)
    tiers = tuple(str(n) for n in names) if isinstance(names, (list, tuple)) else OFFICIAL_TIERS
    if ctx.ndim != 3 or ctx.shape[0] != 3 or sorted(tiers) != sorted(TIERS):
        raise WeightsError(f"{path.name}: context has shape {tuple(ctx.shape)} for tiers {list(tiers)}; expected "
                           "[3, n_ctx, width] for terrible, mediocre, excellent")
    n, width = ctx.shape[1], ctx.shape[2]
    if prefix.shape != (3, 1, width) or suffix.ndim != 3 or suffix.shape[0] != 3 or suffix.shape[2] != width:
        raise WeightsError(f"{path.name}: token_prefix {tuple(prefix.shape)} / token_suffix {tuple(suffix.shape)} do not "
                           f"frame contexts of width {width} (expected [3, 1, {width}] and [3, S, {width}])")
    if tok.shape != (3, 1 + n + suffix.shape[1]) or tok.is_floating_point():
        raise WeightsError(f"{path.name}: tokenized_prompts has shape {tuple(tok.shape)}, expected integer ids "
                           f"[3, {1 + n + suffix.shape[1]}]")
    iteration = obj.get("iteration")
    return OfficialPrompts(ctx.float(), prefix.float(), suffix.float(), tok.long(), tiers,
                           int(iteration) if isinstance(iteration, int) else None)


def _strip_module(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Keys without a DistributedDataParallel ``module.`` prefix."""
    return {k.removeprefix("module."): v for k, v in sd.items()}


def check_frame_matches(prompts: OfficialPrompts, clip: FrozenCLIP, name: str) -> None:
    """The file's start-token embedding must be the loaded CLIP's (else: prompts of another CLIP)."""
    emb = clip.model.text_model.embeddings.token_embedding.weight
    width = emb.shape[1]
    if prompts.context.shape[2] != width:
        raise WeightsError(f"{name}: the prompts have width {prompts.context.shape[2]} but the loaded CLIP {clip.name!r} "
                           f"has text width {width}; load OpenAI's ViT-B/32 (`gendeg weights fetch clip-vit-base-patch32`)")
    sos = int(prompts.tokenized[0, 0])
    if not 0 <= sos < emb.shape[0]:
        raise WeightsError(f"{name}: start token id {sos} is outside the loaded CLIP's vocabulary ({emb.shape[0]})")
    diff = float((prompts.prefix[:, 0].to(emb.device) - emb[sos].detach().float()).abs().max())
    if diff > FRAME_TOLERANCE:
        raise WeightsError(f"{name}: these prompts were made with another CLIP (their start-token embedding differs from "
                           f"{clip.name!r}'s by {diff:.3g}); load OpenAI's ViT-B/32 in Hugging Face layout "
                           "(`gendeg weights fetch clip-vit-base-patch32`)")


def load_official_prompts(path: str | Path, clip: FrozenCLIP) -> QualityPerceiver:
    """A :class:`QualityPerceiver` (tiers excellent, mediocre, terrible) from an official prompts file."""
    path = Path(path)
    p = read_official_prompts(path)
    check_frame_matches(p, clip, path.name)
    eos = p.eos
    order = [p.tiers.index(t) for t in TIERS]
    return QualityPerceiver(clip, tiers=TIERS, ctx=p.context[order], frame=(p.prefix[order], p.suffix[order]),
                            eos=[eos[i] for i in order], image_mode="resize")


__all__ = ["OFFICIAL_TIERS", "OfficialPrompts", "check_frame_matches", "load_official_prompts", "read_official_prompts"]

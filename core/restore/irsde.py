"""Restore images with an :class:`~.irsde_loader.SDERestorer` (IR-SDE, Refusion, DA-CLIP).

:func:`restore_sde` takes ``[B,3,H,W]`` images in 0..1 (the degraded ``mu``), runs the
chosen reverse sampler and returns ``[B,3,H,W]`` in 0..1 (float32, on ``x``'s device).

* DA-CLIP's embeddings are computed once per image from the whole image (as officially),
  not per tile.
* Tiling (``tile > 0``) splits the **network evaluation** of every step into overlapping
  tiles blended with feathered weights (:mod:`core.tiling`); the sampler's state, noise and
  arithmetic stay whole-image, so the noise is seamless and a tile covering the image gives
  exactly the untiled result. On out-of-memory the tile side is halved (down to
  ``min_tile``) and the step is retried; later steps keep the smaller tile.
* ``precision``: ``fp32``, ``bf16`` or ``fp16`` autocast for the networks (the SDE arithmetic
  stays float32). ``channels_last`` converts the network's memory format (faster convolutions
  on GPUs).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch

from ..errors import InputError
from ..tiling import ShrinkingTile, tiled_apply
from .irsde_loader import SDERestorer, ensure_daclip_text
from .nets.daclip import clip_preprocess
from .sde import SAMPLERS

PRECISIONS = ("fp32", "bf16", "fp16")
ProgressFn = Callable[[int, int], None]


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.inference_mode()
def daclip_embeddings(
    restorer: SDERestorer, x: torch.Tensor, device: torch.device, precision: str = "fp32"
) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
    """``(content, degradation)`` embeddings ``[B, D]`` float32 for DA-CLIP restorers, else ``(None, None)``."""
    if restorer.daclip is None:
        return None, None
    model = restorer.daclip.to(device)
    with _autocast(device, precision):
        content, degra = model.encode_image(clip_preprocess(x.to(device), model.image_size))
    return content.float(), degra.float()


@torch.inference_mode()
def restore_sde(
    restorer: SDERestorer,
    x: torch.Tensor,
    *,
    sampler: str = "posterior",
    steps: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    tile: int = 0,
    overlap: int = 32,
    tile_batch: int = 1,
    min_tile: int = 64,
    is_oom: Callable[[BaseException], bool] | None = None,
    on_oom: Callable[[], None] | None = None,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Restore ``x`` (``[B,3,H,W]``, 0..1, the degraded images); returns ``[B,3,H,W]`` 0..1 float32.

    Args:
        sampler: ``posterior`` (official default), ``reverse_sde`` or ``reverse_ode``.
        steps: number of reverse steps (``None``/0: all ``T``; fewer visits an even subset).
        generator: source of all noise (``x_T`` and the per-step noise); CPU generators give
            the same result on every device up to the network's float rounding.
        device: where the networks run (default ``x.device``).
        tile, overlap, tile_batch: tiled network evaluation (``tile`` <= 0: whole image).
        is_oom, on_oom: out-of-memory predicate and cleanup (from the host), enabling tile halving.
        progress: ``progress(step, n_steps)``.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise InputError(f"restore_sde expects [B,3,H,W] RGB images, got shape {tuple(x.shape)}")
    if sampler not in SAMPLERS:
        raise InputError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
    if steps is not None and steps > restorer.sde.T:
        raise InputError(f"steps ({steps}) cannot exceed the model's T={restorer.sde.T}; use {restorer.sde.T} or fewer")
    device = torch.device(device) if device is not None else x.device
    out_device = x.device
    net = restorer.net.to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    mu = x.to(device=device, dtype=torch.float32)
    content, degra = daclip_embeddings(restorer, mu, device, precision)
    tiles = ShrinkingTile(tile, min_tile, is_oom, on_oom)
    mf = torch.channels_last if channels_last else torch.contiguous_format

    def run_net(xt: torch.Tensor, m: torch.Tensor, t: int, deg: torch.Tensor | None, con: torch.Tensor | None) -> torch.Tensor:
        kwargs = {}
        if deg is not None:
            kwargs = {"text_context": deg.expand(xt.shape[0], -1), "image_context": con.expand(xt.shape[0], -1)}
        with _autocast(device, precision):
            eps = net(xt.contiguous(memory_format=mf), m.contiguous(memory_format=mf), t, **kwargs)
        return eps.float()

    def noise_fn(xt: torch.Tensor, m: torch.Tensor, t: int) -> torch.Tensor:
        return tiles.run(lambda tl: _evaluate(xt, m, t, tl), *xt.shape[-2:])

    def _evaluate(xt: torch.Tensor, m: torch.Tensor, t: int, tl: int) -> torch.Tensor:
        h, w = xt.shape[-2:]
        if tl <= 0 or (h <= tl and w <= tl):
            return run_net(xt, m, t, degra, content)
        ov = min(overlap, tl // 2)
        pair = torch.cat([xt, m], dim=1)
        if degra is None:
            return tiled_apply(
                lambda p: run_net(p[:, :3], p[:, 3:], t, None, None), pair, tl, ov,
                pad_multiple=restorer.pad_multiple, tile_batch=tile_batch,
            )
        outs = []
        for b in range(pair.shape[0]):  # the embeddings differ per image
            outs.append(
                tiled_apply(
                    lambda p, b=b: run_net(p[:, :3], p[:, 3:], t, degra[b : b + 1], content[b : b + 1]),
                    pair[b : b + 1], tl, ov, pad_multiple=restorer.pad_multiple, tile_batch=tile_batch,
                )
            )
        return torch.cat(outs)

    out = restorer.sde.sample(noise_fn, mu, sampler=sampler, steps=steps, generator=generator, progress=progress)
    return out.clamp(0, 1).to(out_device)


def openclip_tokens(tokenizer: Callable, texts: list[str], context_length: int = 77) -> torch.Tensor:
    """OpenCLIP-style token ids ``[N, context_length]`` (start, BPE ids, end, zero padding).

    ``tokenizer`` is a Hugging Face CLIP tokenizer (same BPE vocabulary and special tokens as
    OpenCLIP's); texts longer than the context are cut and keep their end token.
    """
    rows = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    out = torch.zeros(len(rows), context_length, dtype=torch.long)
    for i, ids in enumerate(rows):
        ids = list(ids)
        if len(ids) > context_length:
            ids = ids[: context_length - 1] + [ids[-1]]
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


@torch.inference_mode()
def degradation_probabilities(
    restorer: SDERestorer,
    x: torch.Tensor,
    tokenizer: Callable,
    names: tuple[str, ...] | None = None,
    *,
    device: torch.device | str | None = None,
    precision: str = "fp32",
) -> tuple[list[str], torch.Tensor]:
    """DA-CLIP's degradation readout: ``(names, probabilities [B, n])`` for ``[B,3,H,W]`` 0..1 images.

    Softmax over ``100 * cos(degradation embedding, text embedding of each name)``, as the
    official example does. DA-CLIP's text tower is read from its file on first use (restoration
    loads only the image towers).
    """
    from .nets.daclip import DEGRADATIONS

    daclip = ensure_daclip_text(restorer)
    names = tuple(names or DEGRADATIONS)
    device = torch.device(device) if device is not None else x.device
    _, degra = daclip_embeddings(restorer, x, device, precision)
    model = daclip.to(device)
    tokens = openclip_tokens(tokenizer, list(names), int(model.clip.positional_embedding.shape[0])).to(device)
    with _autocast(device, precision):
        text = model.encode_text(tokens)
    probs = model.degradation_logits(degra, text.float()).softmax(dim=-1)
    return list(names), probs.cpu()

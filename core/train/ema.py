"""Exponential moving average of a network's weights (the weights a run exports)."""

from __future__ import annotations

from collections.abc import Mapping

import torch


class EMA:
    """Shadow copies (float32) of every tensor in a module's ``state_dict``.

    After each optimizer step: ``shadow ← d·shadow + (1 − d)·weight`` for floating tensors
    (``d = decay``, or ``min(decay, (1 + step) / (10 + step))`` with ``warmup``); integer
    buffers are copied. ``decay = 0`` keeps the raw weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True) -> None:
        self.decay, self.warmup = float(decay), bool(warmup)
        self.shadow: dict[str, torch.Tensor] = {
            k: (v.detach().float().clone() if v.is_floating_point() else v.detach().clone()) for k, v in model.state_dict().items()
        }

    def decay_at(self, step: int) -> float:
        """The decay used by the update after optimizer step ``step`` (0-based)."""
        if self.warmup:
            return min(self.decay, (1.0 + step) / (10.0 + step))
        return self.decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = self.decay_at(step)
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.lerp_(v.detach().to(s.dtype), 1.0 - d)
            else:
                s.copy_(v)

    def weights(self, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The shadow weights in the dtypes of ``like`` (a module's state dict), for export or evaluation."""
        return {k: self.shadow[k].to(like[k].dtype) for k in like}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        missing = set(self.shadow) ^ set(state)
        if missing:
            raise KeyError(f"EMA state does not match the network: {sorted(missing)[:3]}")
        for k, v in state.items():
            self.shadow[k].copy_(v)

"""Exponential moving average of a network's weights (the weights a run exports)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch


class EMA:
    """Shadow copies (float32) of the tensors ``keys`` of a module's ``state_dict`` (default: all).

    After each optimizer step: ``shadow ← d·shadow + (1 − d)·weight`` for floating tensors
    (``d = decay``, or ``min(decay, (1 + step) / (10 + step))`` with ``warmup``); integer
    buffers are copied. ``decay = 0`` keeps the raw weights. The shadow lives where the
    module's tensors are (create it after moving the module to its device).
    """

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True, keys: Iterable[str] | None = None) -> None:
        self.decay, self.warmup = float(decay), bool(warmup)
        sd = model.state_dict()
        wanted = list(sd) if keys is None else list(keys)
        self.shadow: dict[str, torch.Tensor] = {
            k: (sd[k].detach().float().clone() if sd[k].is_floating_point() else sd[k].detach().clone()) for k in wanted
        }

    def decay_at(self, step: int) -> float:
        """The decay used by the update after optimizer step ``step`` (0-based)."""
        if self.warmup:
            return min(self.decay, (1.0 + step) / (10.0 + step))
        return self.decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = self.decay_at(step)
        sd = model.state_dict()
        for k, s in self.shadow.items():
            v = sd[k]
            if s.is_floating_point():
                s.lerp_(v.detach().to(s.dtype), 1.0 - d)
            else:
                s.copy_(v)

    def weights(self, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The shadow weights in the dtypes of ``like`` (a module's state dict), for export or evaluation;
        entries of ``like`` the EMA does not average are returned as they are."""
        return {k: self.shadow[k].to(like[k].dtype) if k in self.shadow else like[k] for k in like}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        missing = set(self.shadow) ^ set(state)
        if missing:
            raise KeyError(f"EMA state does not match the network: {sorted(missing)[:3]}")
        for k, v in state.items():
            self.shadow[k].copy_(v)

"""Learning-rate schedules as pure functions of the optimizer step (nothing to save or restore)."""

from __future__ import annotations

import bisect
import math

from .config import ScheduleConfig


def lr_at(step: int, base_lr: float, sched: ScheduleConfig, max_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based).

    Linear warm-up ``base·(step+1)/warmup`` for the first ``warmup_steps`` steps, then
    ``constant``: ``base``; ``cosine``: ``min + (base − min)·(1 + cos(π·p))/2`` with
    ``p = (step − warmup)/(max_steps − warmup)``; ``multistep``: ``base·gamma^m`` where ``m``
    is the number of milestones ≤ ``step``.
    """
    warm = sched.warmup_steps
    if step < warm:
        return base_lr * (step + 1) / warm
    if sched.kind == "constant":
        return base_lr
    if sched.kind == "multistep":
        return base_lr * sched.gamma ** bisect.bisect_right(sorted(sched.milestones), step)
    span = max(1, max_steps - warm)
    p = min(1.0, (step - warm) / span)
    return sched.min_lr + (base_lr - sched.min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))

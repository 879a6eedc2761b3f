"""Tiny DriftRec networks and checkpoints in the official layouts (no real weights anywhere)."""

from __future__ import annotations

from pathlib import Path

import torch
from comfyui_gendeg.core.restore.nets.ncsnpp import NCSNpp

#: A 4-level NCSN++ (attention at the nominal 8 px level) small enough for CPU tests.
TINY = {"nf": 16, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 1, "image_size": 32, "attn_resolutions": [8]}

#: What the official run stores in ``hyper_parameters`` (argparse names), for the tiny net.
HPARAMS = {"backbone_name": "ncsnpp", "data_module_name": "imagefolder", "sde_name": "ouve", "gamma": 1.0,
           "sigma_min": 0.01, "sigma_max": 1.0, "sde_n": 100, "t_eps": 0.01, "lr": 1e-4, "ema_decay": 0.999,
           "nf": 16, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 1, "D_jpeg": [0, 100], "batch_size": 8}


def tiny_net(seed: int = 0, **overrides) -> NCSNpp:
    torch.manual_seed(seed)
    return NCSNpp(**{**TINY, **overrides}).eval()


def lightning_checkpoint(raw: NCSNpp, ema: NCSNpp, hparams: dict | None = None) -> dict:
    """The object the official training saves: Lightning's keys around ``backbone.*`` and the torch_ema state."""
    return {
        "epoch": 3, "global_step": 1200, "pytorch-lightning_version": "1.9.4",
        "state_dict": {f"backbone.{k}": v.clone() for k, v in raw.state_dict().items()},
        "ema": {"decay": 0.999, "num_updates": 1200, "shadow_params": [p.detach().clone() for p in ema.parameters()],
                "collected_params": None},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "params": list(range(len(raw.state_dict())))}]}],
        "lr_schedulers": [], "callbacks": {}, "loops": {},
        "hparams_name": "kwargs", "hyper_parameters": dict(HPARAMS if hparams is None else hparams),
    }


def save_official(path: Path, raw: NCSNpp | None = None, ema: NCSNpp | None = None, hparams: dict | None = None) -> Path:
    raw = raw if raw is not None else tiny_net(0)
    ema = ema if ema is not None else tiny_net(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(lightning_checkpoint(raw, ema, hparams), path)
    return path

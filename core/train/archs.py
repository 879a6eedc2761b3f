"""Trainable architectures: one registry entry each, built from config options.

Every architecture here is one that spandrel (the loader ComfyUI, chaiNNer and this pack
use) detects from a state dict, built from spandrel's own module class, so the exported
``state_dict`` has exactly the key layout spandrel detects and loads back into the same
hyper-parameters. Licences (of the architecture's original code, which spandrel carries):

* ``nafnet`` — NAFNet (Chen et al. 2022, megvii-research/NAFNet), MIT. Default: the
  NAFNet-SIDD-width32 layout (width 32, encoder blocks [2,2,4,8], middle 12, decoder [2,2,2,2]).
* ``swinir`` — SwinIR (Liang et al. 2021, JingyunLiang/SwinIR), Apache-2.0; scale 1 (no
  upsampler), as its colour denoising / JPEG models. Default: the official colour denoising
  layout (embed 180, 6×6 blocks, 6 heads, window 8, mlp ratio 2).

Restormer is in ``spandrel_extra_arches`` (non-commercial licence there) and is not offered.

One architecture spandrel does not know, with an objective of its own:

* ``perceive_ir`` — Perceive-IR's all-in-one restorer (House-yuyu/Perceive-IR), Apache-2.0,
  guided by a frozen DINOv2-base (not trained, not exported); trained by
  :class:`~.perceive_ir.PerceiveIRTask` (two crops per sample for the InfoNCE term) and
  exported in the pack's safetensors layout, which ``GenDegPerceiveIRLoader`` reads. Default:
  the released layout (dim 48, blocks (4,6,6,8), heads (1,2,4,8), 4 refinement blocks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .schema import ConfigError


@dataclass(frozen=True)
class ArchSpec:
    name: str
    build: Callable[..., torch.nn.Module]
    defaults: dict[str, Any]
    license: str
    doc: str
    #: image sides the network needs (validation images are padded to it, then cropped back)
    multiple: int = 1
    #: the engine's task class for this architecture (None: the plain ``RestorerTask``, out = net(lq))
    task: Callable[..., Any] | None = None


def _nafnet(**options: Any) -> torch.nn.Module:
    from spandrel.architectures.NAFNet import NAFNet

    if options["middle_blk_num"] < 1 or not options["enc_blk_nums"] or len(options["enc_blk_nums"]) != len(options["dec_blk_nums"]):
        raise ConfigError("config: model.options: nafnet needs middle_blk_num >= 1 and as many dec_blk_nums as enc_blk_nums "
                          "(spandrel only recognises that layout)")
    if min(options["enc_blk_nums"] + options["dec_blk_nums"]) < 1:
        raise ConfigError("config: model.options: every NAFNet stage needs at least one block")
    return NAFNet(**options)


def _swinir(**options: Any) -> torch.nn.Module:
    from spandrel.architectures.SwinIR import SwinIR

    window = options["window_size"]
    if window == 7:  # spandrel infers img_range 255 for window 7 (the official JPEG models)
        raise ConfigError("config: model.options.window_size 7 is reserved for the official JPEG SwinIR layout; use 8")
    if len(options["depths"]) != len(options["num_heads"]):
        raise ConfigError("config: model.options: swinir needs one num_heads entry per depths entry")
    if any(d < 2 for d in options["depths"]):
        raise ConfigError("config: model.options.depths: each SwinIR stage needs at least 2 blocks (shifted windows)")
    if options["embed_dim"] % max(options["num_heads"]) or any(options["embed_dim"] % h for h in options["num_heads"]):
        raise ConfigError("config: model.options.embed_dim must be divisible by every num_heads entry")
    return SwinIR(
        img_size=options["img_size"], patch_size=1, in_chans=3, embed_dim=options["embed_dim"],
        depths=list(options["depths"]), num_heads=list(options["num_heads"]), window_size=window,
        mlp_ratio=float(options["mlp_ratio"]), qkv_bias=True, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0,
        drop_path_rate=float(options["drop_path_rate"]), ape=False, patch_norm=True,
        use_checkpoint=bool(options["use_checkpoint"]), upscale=1, img_range=1.0, upsampler="",
        resi_connection=options["resi_connection"],
    )


def _perceive_ir(dinov2: str = "dinov2-base", **options: Any) -> torch.nn.Module:
    """The network (``dinov2`` names the frozen guidance folder the task loads; not part of the network)."""
    from ..restore.nets.perceive_ir import PerceiveIR

    blocks, heads, dim = options["blocks"], options["heads"], options["dim"]
    if len(blocks) != 4 or len(heads) != 4:
        raise ConfigError("config: model.options: perceive_ir needs four blocks and four heads entries (levels 1..4)")
    if min(blocks) < 1 or min(heads) < 1 or dim < 1 or options["refinement_blocks"] < 0:
        raise ConfigError("config: model.options: perceive_ir needs dim, every blocks and heads entry >= 1 (refinement_blocks >= 0)")
    bad = [i for i in range(4) if (dim * 2**i) % heads[i]]
    if bad:
        raise ConfigError(f"config: model.options.heads[{bad[0]}] = {heads[bad[0]]} does not divide the {dim * 2 ** bad[0]} "
                          f"channels of level {bad[0] + 1} (dim·2^level)")
    if options["semantic_dim"] < 1:
        raise ConfigError("config: model.options.semantic_dim must be the DINOv2 hidden size (768 for dinov2-base)")
    return PerceiveIR(dim, blocks, heads, options["refinement_blocks"], options["semantic_dim"])


def _perceive_ir_task(config: Any, models_dir: Any) -> Any:
    from .perceive_ir import PerceiveIRTask

    return PerceiveIRTask(config, models_dir)


ARCHS: dict[str, ArchSpec] = {
    "nafnet": ArchSpec(
        "nafnet", _nafnet,
        {"img_channel": 3, "width": 32, "middle_blk_num": 12, "enc_blk_nums": [2, 2, 4, 8], "dec_blk_nums": [2, 2, 2, 2]},
        "MIT", "NAFNet (megvii-research/NAFNet); default NAFNet-SIDD-width32", multiple=1,
    ),
    "swinir": ArchSpec(
        "swinir", _swinir,
        {"img_size": 128, "embed_dim": 180, "depths": [6, 6, 6, 6, 6, 6], "num_heads": [6, 6, 6, 6, 6, 6],
         "window_size": 8, "mlp_ratio": 2.0, "resi_connection": "1conv", "drop_path_rate": 0.1, "use_checkpoint": False},
        "Apache-2.0", "SwinIR (JingyunLiang/SwinIR) at scale 1; default the colour denoising layout", multiple=1,
    ),
    "perceive_ir": ArchSpec(
        "perceive_ir", _perceive_ir,
        {"dim": 48, "blocks": [4, 6, 6, 8], "heads": [1, 2, 4, 8], "refinement_blocks": 4, "semantic_dim": 768,
         "dinov2": "dinov2-base"},
        "Apache-2.0", "Perceive-IR (House-yuyu/Perceive-IR) all-in-one restorer guided by a frozen DINOv2 (folder `dinov2` "
        "under <models>/restore); objective L1 + InfoNCE + L_clip + DPL (configs/train/perceive_ir.yaml); exported for "
        "GenDegPerceiveIRLoader", multiple=8, task=_perceive_ir_task,
    ),
}


def get_arch(name: str) -> ArchSpec:
    key = str(name).strip().lower()
    if key not in ARCHS:
        raise ConfigError(f"config: model.arch {name!r} is not a trainable architecture; choose one of {', '.join(ARCHS)}")
    return ARCHS[key]


def resolve_options(spec: ArchSpec, options: dict[str, Any]) -> dict[str, Any]:
    """The architecture's defaults updated with ``options``; unknown names and wrong kinds are errors."""
    unknown = [k for k in options if k not in spec.defaults]
    if unknown:
        raise ConfigError(f"config: model.options.{unknown[0]} is not an option of {spec.name}; "
                          f"valid options: {', '.join(spec.defaults)}")
    merged = dict(spec.defaults)
    for k, v in options.items():
        d = spec.defaults[k]
        ok = (isinstance(v, bool) if isinstance(d, bool)
              else isinstance(v, (int, float)) and not isinstance(v, bool) if isinstance(d, float)
              else isinstance(v, int) and not isinstance(v, bool) if isinstance(d, int)
              else isinstance(v, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in v) if isinstance(d, list)
              else isinstance(v, str))
        if not ok:
            raise ConfigError(f"config: model.options.{k} must be like {d!r}, got {v!r}")
        merged[k] = list(v) if isinstance(d, list) else v
    return merged


def build_model(name: str, options: dict[str, Any], generator_seed: int | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build architecture ``name`` (options merged over its defaults); returns (module, resolved options).

    With ``generator_seed`` the initial weights depend only on that seed.
    """
    spec = get_arch(name)
    opts = resolve_options(spec, options)
    if generator_seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(generator_seed)
            model = spec.build(**opts)
    else:
        model = spec.build(**opts)
    return model, opts


def describe_archs() -> str:
    lines = []
    for spec in ARCHS.values():
        params = ", ".join(f"{k}={v!r}" for k, v in spec.defaults.items())
        lines.append(f"{spec.name} ({spec.license}): {spec.doc}\n    options: {params}")
    return "\n".join(lines)


__all__ = ["ARCHS", "ArchSpec", "build_model", "describe_archs", "get_arch", "resolve_options"]

"""``gendeg train <what>``: training commands.

``gendeg train perceiver`` learns the quality perceiver's prompts. Other training commands
plug in by adding a module ``commands/_train_<what>.py`` that defines
``register_train(subparsers)`` (the leading underscore keeps the top-level CLI from
treating it as a command of its own).
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
from pathlib import Path

from ..core.errors import InputError
from ._args import finite_float


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train models: `gendeg train perceiver`, ...", description="Training commands.")
    ts = t.add_subparsers(dest="train_command", metavar="WHAT")
    p = ts.add_parser(
        "perceiver",
        help="learn the quality perceiver's prompts from (gt, restored, degraded) triplets",
        description="Learn the three prompt contexts (excellent / mediocre / terrible) of the quality perceiver on a "
        "frozen CLIP, with cross-entropy on triplets: DIR/gt/NAME = excellent, DIR/restored/NAME = mediocre, "
        "DIR/degraded/NAME = terrible (same file name stem in the three folders). Writes a small safetensors "
        "with the contexts and the CLIP's name and config hash.",
    )
    p.add_argument("--triplets", required=True, metavar="DIR", help="folder with gt/, restored/ and degraded/")
    p.add_argument("--clip", default="clip-vit-base-patch32", help="CLIP folder (name under the models clip/ folder, or a path)")
    p.add_argument("--out", required=True, metavar="FILE", help="output .safetensors")
    p.add_argument("--n-ctx", type=int, default=8, help="context tokens per tier (default 8)")
    p.add_argument("--epochs", type=int, default=200, help="passes over the triplets (default 200)")
    p.add_argument("--lr", type=finite_float, default=2e-3, help="Adam learning rate (default 2e-3)")
    p.add_argument("--batch-size", type=int, default=256, help="images per step (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation and batch order")
    p.add_argument("--models-dir", help="models folder (default $GENDEG_MODELS_DIR or ./models)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.set_defaults(func=run_train_perceiver)
    t.set_defaults(func=lambda a: (t.print_help(), 2)[1])
    from .. import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_train_"):
            importlib.import_module(f".{info.name}", commands.__name__).register_train(ts)


def run_train_perceiver(args: argparse.Namespace) -> int:
    import torch

    from ..core.device import parse_device
    from ..core.quality.clip import load_clip
    from ..core.quality.perceiver import QualityPerceiver, embed_triplet_folder, train_prompts
    from ..nodes import host
    from ..nodes.quality import _clip_folder

    if args.n_ctx < 1 or args.epochs < 1:
        raise InputError("--n-ctx and --epochs must be at least 1")
    if args.models_dir:
        host.SETTINGS.models_dir = Path(args.models_dir)
    device = parse_device(args.device)
    clip = load_clip(_clip_folder(args.clip), device)
    feats, labels = embed_triplet_folder(clip, args.triplets, host.progress(1, "embed triplets"))
    gen = torch.Generator().manual_seed(args.seed)
    perceiver = QualityPerceiver(clip, n_ctx=args.n_ctx, generator=gen)
    res = train_prompts(perceiver, feats, labels, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                        generator=gen, progress=host.progress(args.epochs, "train prompts"))
    summary = {"triplets": int(labels.numel() // 3), "epochs": args.epochs, "first_loss": res.losses[0],
               "final_loss": res.losses[-1], "accuracy": res.accuracy, "mean_quality": res.mean_quality}
    perceiver.save(args.out, extra={"training": summary})
    print(json.dumps({"out": args.out, "clip": clip.name, "clip_config_hash": clip.config_hash(), **summary}, indent=2))
    return 0

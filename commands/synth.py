"""``gendeg synth`` (degrade one image with the physical synthesizer) and ``gendeg measure`` (GenDeg μ/σ)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

from ..core.errors import InputError
from ._args import finite_float

#: What ``gendeg synth`` can write (``core.io.encode_image``).
OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def _param(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed: Any = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def register(sub: argparse._SubParsersAction) -> None:
    from ..core.synth import TYPES

    p = sub.add_parser(
        "synth",
        help="degrade an image with the physical synthesizer at a GenDeg mu or a strength",
        description="Degrade IN with the physically based synthesizer and write OUT; prints the achieved GenDeg "
        "mu/sigma and every parameter as JSON.",
    )
    p.add_argument("input", metavar="IN", help="clean image file")
    p.add_argument("output", metavar="OUT", help="where to write the degraded image (png, jpg, webp)")
    p.add_argument("--type", "-t", required=True, choices=TYPES, help="degradation type")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--mu", type=finite_float, help="target GenDeg mu (mean |clean - degraded| at 256x256, 0..1)")
    g.add_argument("--strength", type=finite_float,
                   help="strength 0..1 (no calibration; some types extend past 1, see README)")
    p.add_argument("--sigma", type=finite_float,
                   help="target GenDeg sigma (std of |clean - degraded| at 256x256), reached with the type's second "
                   "parameter; with --mu: both; alone: with the typical mu of real data at that sigma. Without it, "
                   "--mu gets the typical sigma of GenDeg's real data at that mu")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--param", "-p", type=_param, action="append", default=[], metavar="NAME=VALUE",
                   help="expert parameter of the type, e.g. -p beta_max=2.5 (repeatable)")
    p.add_argument("--depth", help="haze: depth map image (near = bright unless -p depth_near_is_bright=false)")
    p.add_argument("--tol", type=finite_float, default=0.005, help="calibration tolerance on mu (default 0.005)")
    p.add_argument("--sigma-tol", type=finite_float, default=0.01, help="calibration tolerance on sigma (default 0.01)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps or auto (default cpu)")
    p.set_defaults(func=run_synth)

    m = sub.add_parser(
        "measure",
        help="GenDeg intensity (mu, sigma) of a clean/degraded pair, as JSON; --realism TYPE: how typical of real data",
        description="Print GenDeg's mu and sigma of |clean - degraded| (8-bit RGB, Lanczos to 256x256) as JSON. "
        "With --realism TYPE, also where sigma lies among GenDeg's real data of that type at the same mu "
        "(percentile; typical = inside the 5-95 %% band). CLEAN and DEGRADED may be folders of pairs (matched by "
        "file name, or gt/ and lq/ inside one folder): one record per pair, then a summary.",
    )
    m.add_argument("clean", metavar="CLEAN", help="clean image file, or a folder of them (or a folder with gt/ and lq/)")
    m.add_argument("degraded", metavar="DEGRADED", nargs="?",
                   help="degraded image file, or a folder of them with the same file names")
    m.add_argument("--realism", metavar="TYPE",
                   help="compare with GenDeg's real data of this type (" + ", ".join(realism_types()) + ")")
    m.set_defaults(func=run_measure)


def run_synth(args: argparse.Namespace) -> int:
    from ..core.device import parse_device
    from ..core.errors import explain_out_of_memory
    from ..core.image import restore_channels, to_rgb
    from ..core.io import check_output_file, load_image, save_image
    from ..core.synth import get
    from ..core.synth.calibrate import degrade_at_strength, grey_finish
    from ..core.synth.joint import degrade_to_intensity

    # everything a person can get wrong is checked before the (possibly long) work starts
    device = parse_device(args.device)
    check_output_file(args.output, OUTPUT_SUFFIXES)
    if args.mu is None and args.strength is None and args.sigma is None:
        raise InputError("give --mu (and optionally --sigma), --sigma alone, or --strength")
    if args.strength is not None and args.sigma is not None:
        raise InputError("--sigma needs calibration: use it with --mu or alone, not with --strength "
                         "(--strength uses the default parameters as they are)")
    if args.sigma is not None and args.sigma <= 0:
        raise InputError(f"--sigma must be above 0 (GenDeg's sigma, 0..1), got {args.sigma}")
    if args.depth and not get(args.type).uses_depth:
        raise InputError("--depth only applies to --type haze, rain+haze or snow+haze")
    x = load_image(args.input)
    h, w = x.shape[-2:]
    with explain_out_of_memory("degrade", w, h, device=device), progress_bar(f"synth {args.type}") as progress:
        x = x.to(device)
        rgb, layout = to_rgb(x)
        params = dict(args.param)
        depth = load_image(args.depth, keep_alpha=False).to(device) if args.depth else None
        finish = grey_finish if layout.channels in (1, 2) else None  # measure what is written
        if args.strength is None:
            result = degrade_to_intensity(rgb, args.type, args.mu, args.sigma, args.seed, depth=depth, params=params,
                                          tol=args.tol, sigma_tol=args.sigma_tol, finish=finish, progress=progress)
        else:
            result = degrade_at_strength(rgb, args.type, args.strength, args.seed, depth=depth, params=params,
                                         finish=finish, progress=progress)
        del x, rgb  # the input is no longer needed: free it before the output is encoded (large images)
        out = restore_channels(result.image, layout).cpu()
    with explain_out_of_memory("write", w, h):
        save_image(args.output, out)
    report = {
        "type": args.type,
        **result.intensity_of(0),
        "seed": args.seed,
        "params": result.params_of(0),
        "output": args.output,
        "warnings": result.warnings,
    }
    print(json.dumps(report))
    return 0


@contextlib.contextmanager
def progress_bar(desc: str) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(i, n)`` callable drawing a tqdm bar on stderr: shown on a terminal once a job
    takes more than half a second (large images), never in pipes/logs or with GENDEG_NO_PROGRESS=1."""
    from tqdm.auto import tqdm

    disable = True if os.environ.get("GENDEG_NO_PROGRESS") == "1" else None  # None: only on a terminal
    bar = tqdm(total=1, desc=desc, delay=0.5, leave=False, disable=disable, unit="step")

    def update(i: int, n: int) -> None:
        if bar.total != n:
            bar.total = n
        bar.n = i
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


def realism_types() -> tuple[str, ...]:
    from ..core.realism import STATS_OF

    return tuple(STATS_OF)


def run_measure(args: argparse.Namespace) -> int:
    from ..core.gendeg.conditioning import normalize_type
    from ..core.realism_check import check_pairs, find_pairs, summarize

    kind = None if args.realism is None else normalize_type(args.realism)  # GenDeg's types: those with real-data statistics
    pairs = find_pairs(args.clean, args.degraded)
    rows = check_pairs(pairs, kind)
    single = len(rows) == 1 and not os.path.isdir(args.clean)
    if single:
        print(json.dumps(rows[0]))
        return 0
    for row in rows:
        print(json.dumps(row))
    print(json.dumps({"summary": summarize(rows, kind)}))
    return 0

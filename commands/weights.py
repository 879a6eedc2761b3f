"""``gendeg weights list | verify [ID] | fetch ID | convert FILE``: the checkpoints the pack knows.

Model folders: ``--models-dir D`` (else ``GENDEG_MODELS_DIR``, else ``./models``); each
entry's files live in ``D/<kind>/`` (``gendeg``, ``restore``, ``quality``, ``sd``, ``clip``),
the same layout as ``ComfyUI/models/gendeg/<kind>/``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..core.errors import WeightsError


def _models_root(args: argparse.Namespace) -> Path:
    if getattr(args, "models_dir", None):
        return Path(args.models_dir)
    env = os.environ.get("GENDEG_MODELS_DIR")
    return Path(env) if env else Path("models")


def _folders(args: argparse.Namespace, entry) -> list[Path]:  # noqa: ANN001
    from ..core.weights import default_folders

    return default_folders(entry, _models_root(args))


def _human(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _cmd_list(args: argparse.Namespace) -> int:
    from ..core.weights import load_manifest
    from ..core.weights.store import find_file

    manifest = load_manifest()
    rows = []
    for entry in manifest.values():
        folders = _folders(args, entry)
        present = [find_file(f.path, folders) is not None for f in entry.files]
        rows.append(
            {
                "id": entry.id,
                "family": entry.family,
                "folder": str(folders[0]),
                "files": [f.path for f in entry.files],
                "present": all(present),
                "size": sum(f.size or 0 for f in entry.files) or None,
                "downloadable": all(f.downloadable for f in entry.files),
                "sha256_known": all(f.sha256 for f in entry.files),
                "licence": entry.licence,
                "format": entry.format,
                "description": entry.description,
                "source": entry.source,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("the manifest lists no checkpoints")
        return 0
    width = max(len(r["id"]) for r in rows)
    print(f"models root: {_models_root(args)}")
    for r in rows:
        state = "present" if r["present"] else ("missing" if r["downloadable"] else "missing (manual download)")
        hashed = "" if r["sha256_known"] else ", no sha256"
        print(f"{r['id']:<{width}}  {r['family']:<16} {_human(r['size']):>10}  {state}{hashed}  [{r['licence']}]")
        if r["description"]:
            print(f"{'':<{width}}  {r['description']}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from ..core.weights import check_entry, get_entry, load_manifest

    manifest = load_manifest()
    entries = [get_entry(args.id, manifest)] if args.id else list(manifest.values())
    bad = 0
    for entry in entries:
        for st in check_entry(entry, _folders(args, entry)):
            if st.status == "ok":
                print(f"ok          {entry.id}: {st.location} (sha256 {st.sha256})")
            elif st.status == "unverified":
                print(f"unverified  {entry.id}: {st.location} sha256 {st.sha256} (the manifest has no hash to compare)")
            elif st.status == "missing":
                print(f"missing     {entry.id}: {st.message}")
                bad += bool(args.id)  # a named entry must be there; in the full list missing is normal
            else:
                print(f"MISMATCH    {entry.id}: {st.message}")
                bad += 1
    return 1 if bad else 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from ..core.weights import fetch_entry, get_entry

    entry = get_entry(args.id)
    folder = _folders(args, entry)[0]
    paths = fetch_entry(entry, folder, force=args.force, progress=not args.quiet, report=print)
    for p in paths:
        print(p)
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from ..core.weights import convert_to_safetensors, entry_for_file, load_manifest, resolve

    path = Path(args.file)
    allow = list(args.allow or [])
    found = None
    if not path.is_file():
        # an id or a manifest file name: look in the models folders
        manifest = load_manifest()
        found = (manifest[args.file], manifest[args.file].files[0]) if args.file in manifest else entry_for_file(args.file, manifest)
        if found is None:
            raise WeightsError(f"{args.file}: no such file (and no manifest entry of that name)")
        path = resolve(args.file, _folders(args, found[0]))
    else:
        found = entry_for_file(path.name)
    if found is not None and not args.allow:
        allow = list(found[0].allow)  # the manifest says which harmless extras this checkpoint carries
    out, digest = convert_to_safetensors(path, allow, out=args.output, overwrite=args.force)
    print(f"wrote {out}")
    print(f"sha256 {digest}")
    print(f"(the original {path.name} was left untouched)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--models-dir",
        metavar="DIR",
        help="root of the model folders (files go in DIR/<kind>/; default $GENDEG_MODELS_DIR or ./models)",
    )
    p = subparsers.add_parser("weights", help="list, verify, fetch and convert checkpoints", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    q = sub.add_parser("list", parents=[common], help="every checkpoint in the manifest and whether it is present")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=_cmd_list)

    q = sub.add_parser("verify", parents=[common], help="check size and sha256 of present files (all, or one id)")
    q.add_argument("id", nargs="?", help="manifest id (default: every entry)")
    q.set_defaults(func=_cmd_verify)

    q = sub.add_parser("fetch", parents=[common], help="download an entry's files (Hugging Face Hub or HTTPS, resumable, hash-checked)")
    q.add_argument("id", help="manifest id (see `gendeg weights list`)")
    q.add_argument("--force", action="store_true", help="download again even if a file is there")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_fetch)

    q = sub.add_parser("convert", parents=[common], help="convert a checkpoint to .safetensors beside it (the original is kept)")
    q.add_argument("file", help="checkpoint path, or a manifest id / file name found in the models folders")
    q.add_argument(
        "--allow",
        action="append",
        choices=["numpy", "lightning"],
        help="accept the harmless extras of official checkpoints: numpy scalars/arrays (DA-CLIP), "
        "PyTorch-Lightning callback and hyper-parameter objects (GenDeg .ckpt); repeatable",
    )
    q.add_argument("-o", "--output", help="output path (default: FILE with the .safetensors suffix)")
    q.add_argument("--force", action="store_true", help="replace an existing output file")
    q.set_defaults(func=_cmd_convert)

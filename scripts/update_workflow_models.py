"""Write the missing-model metadata of the shipped workflows from the weights manifest.

For every GenDeg node of ``workflows/*.json`` whose widget names a manifest file with a direct
download URL, ``properties.models`` gets ``{name, url, directory, hash, hash_type}`` records
(what the ComfyUI frontend reads to offer missing models; see
``core/weights/catalog.node_models``); nodes without such a file get none. Run from the
repository root after changing the manifest or a workflow:

    python scripts/update_workflow_models.py          # rewrite what is stale
    python scripts/update_workflow_models.py --check  # exit 1 if anything is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from comfyui_gendeg.core.weights.catalog import node_models

ROOT = Path(__file__).resolve().parents[1]


def updated(doc: dict) -> dict:
    """``doc`` with every GenDeg node's ``properties.models`` set from the manifest (in place)."""
    nodes = list(doc.get("nodes", []))
    for sub in (doc.get("definitions") or {}).get("subgraphs", []) or []:
        nodes += list(sub.get("nodes", []))
    for node in nodes:
        if not str(node.get("type", "")).startswith("GenDeg"):
            continue
        props = node.setdefault("properties", {})
        models = node_models(node.get("widgets_values"))
        if models:
            props["models"] = models
        else:
            props.pop("models", None)
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    args = parser.parse_args(argv)
    stale = []
    for path in sorted((ROOT / "workflows").glob("*.json")):
        text = path.read_text(encoding="utf-8")
        new = json.dumps(updated(json.loads(text)), indent=2, ensure_ascii=False) + "\n"
        if new != text:
            stale.append(path.name)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    verb = "stale" if args.check else "updated"
    print(f"{verb}: {', '.join(stale)}" if stale else "all workflows are up to date")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())

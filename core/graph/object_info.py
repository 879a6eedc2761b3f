"""ComfyUI's ``/object_info`` description of node classes, built from a registry ``{id: class}``.

Same keys and meaning as ComfyUI's server (``node_info``): ``input`` (required / optional /
hidden, as ``INPUT_TYPES`` returns them), ``input_order``, ``output``, ``output_is_list``,
``output_name``, ``output_tooltips`` (when declared), ``name``, ``display_name``,
``description``, ``python_module``, ``category``, ``output_node``. Tuples become lists
(as the JSON ComfyUI sends), so the result can be dumped with :func:`json.dumps`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def _jsonable(x: Any) -> Any:
    """Tuples → lists, other non-JSON values → their ``str`` (ComfyUI would fail on them)."""
    return json.loads(json.dumps(x, default=str))


def node_info(
    node_id: str, cls: type, display_name: str | None = None, python_module: str | None = None
) -> dict[str, Any]:
    """The ``/object_info`` entry of one V1 node class."""
    input_types = cls.INPUT_TYPES()
    returns = list(getattr(cls, "RETURN_TYPES", ()))
    info: dict[str, Any] = {
        "input": _jsonable(input_types),
        "input_order": {key: list(value.keys()) for key, value in input_types.items()},
        "output": _jsonable(returns),
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(returns))),
        "output_name": list(getattr(cls, "RETURN_NAMES", returns)),
        "name": node_id,
        "display_name": display_name or node_id,
        "description": getattr(cls, "DESCRIPTION", ""),
        "python_module": python_module or getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
    }
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = list(cls.OUTPUT_TOOLTIPS)
    if getattr(cls, "DEPRECATED", False):
        info["deprecated"] = True
    if getattr(cls, "EXPERIMENTAL", False):
        info["experimental"] = True
    return info


def object_info(
    registry: Mapping[str, type],
    display_names: Mapping[str, str] | None = None,
    python_modules: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """``{node_id: node_info}`` for every class of ``registry``.

    ``python_modules`` maps a node id to the module ComfyUI would report
    (``custom_nodes.<folder>`` for a custom pack, ``nodes`` for core nodes).
    """
    display_names = display_names or {}
    python_modules = python_modules or {}
    return {
        nid: node_info(nid, cls, display_names.get(nid), python_modules.get(nid)) for nid, cls in registry.items()
    }


def format_table(info: Mapping[str, Mapping[str, Any]]) -> str:
    """A readable listing: one block per node with its inputs and outputs."""
    lines: list[str] = []
    for nid in sorted(info, key=lambda k: (str(info[k].get("category")), k)):
        entry = info[nid]
        head = f"{nid}  [{entry.get('category')}]"
        if entry.get("display_name") and entry["display_name"] != nid:
            head += f"  \"{entry['display_name']}\""
        if entry.get("output_node"):
            head += "  (output node)"
        lines.append(head)
        for cat in ("required", "optional"):
            for name, spec in (entry.get("input", {}).get(cat) or {}).items():
                typ = spec[0] if isinstance(spec, list) and spec else spec
                opts = spec[1] if isinstance(spec, list) and len(spec) > 1 and isinstance(spec[1], dict) else {}
                if isinstance(typ, list):
                    shown = "COMBO" + (f"[{', '.join(map(str, typ[:6]))}{', …' if len(typ) > 6 else ''}]" if typ else "[]")
                else:
                    shown = str(typ)
                extra = []
                for key in ("default", "min", "max"):
                    if key in opts:
                        extra.append(f"{key}={opts[key]!r}")
                tag = "" if cat == "required" else " (optional)"
                lines.append(f"    in   {name}: {shown}{tag}{'  ' + ' '.join(extra) if extra else ''}")
        names = entry.get("output_name") or entry.get("output") or []
        for i, typ in enumerate(entry.get("output") or []):
            lst = " (list)" if (entry.get("output_is_list") or [False] * (i + 1))[i] else ""
            lines.append(f"    out  {names[i] if i < len(names) else typ}: {typ}{lst}")
    return "\n".join(lines)

"""Every node class of the pack has a valid ComfyUI V1 definition (runs over whatever nodes exist)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping

import pytest
from comfyui_gendeg import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from comfyui_gendeg.nodes import IMPORT_ERRORS

CATEGORIES = ("GenDeg/Degrade", "GenDeg/Restore", "GenDeg/Quality", "GenDeg/Dataset")
WIDGETS = ("INT", "FLOAT", "STRING", "BOOLEAN")
HIDDEN_KINDS = ("PROMPT", "EXTRA_PNGINFO", "UNIQUE_ID", "DYNPROMPT", "AUTH_TOKEN_COMFY_ORG", "API_KEY_COMFY_ORG")


def test_pack_has_nodes_and_every_module_imports():
    assert NODE_CLASS_MAPPINGS, "the pack registers no nodes"
    assert IMPORT_ERRORS == {}, "\n".join(f"nodes.{k}:\n{v}" for k, v in IMPORT_ERRORS.items())
    assert set(NODE_DISPLAY_NAME_MAPPINGS) <= set(NODE_CLASS_MAPPINGS), "display names for unknown node ids"


def _specs(cls):
    types = cls.INPUT_TYPES()
    assert isinstance(types, Mapping), "INPUT_TYPES() must return a dict"
    assert set(types) <= {"required", "optional", "hidden"}, f"unexpected INPUT_TYPES keys {set(types)}"
    for cat in ("required", "optional"):
        for name, spec in (types.get(cat) or {}).items():
            yield cat, name, spec
    for name, kind in (types.get("hidden") or {}).items():
        yield "hidden", name, kind


@pytest.mark.parametrize("node_id", sorted(NODE_CLASS_MAPPINGS))
def test_v1_definition(node_id):
    cls = NODE_CLASS_MAPPINGS[node_id]
    problems: list[str] = []
    if not node_id.startswith("GenDeg"):
        problems.append("node id must start with 'GenDeg'")
    category = getattr(cls, "CATEGORY", None)
    if not isinstance(category, str) or not any(category == c or category.startswith(c + "/") for c in CATEGORIES):
        problems.append(f"CATEGORY {category!r} must be one of {CATEGORIES} (or below one)")
    if not isinstance(getattr(cls, "DESCRIPTION", None), str) or not cls.DESCRIPTION.strip():
        problems.append("DESCRIPTION missing or empty")
    returns = getattr(cls, "RETURN_TYPES", None)
    if not isinstance(returns, tuple):
        problems.append(f"RETURN_TYPES must be a tuple, got {type(returns).__name__}")
        returns = tuple(returns or ())
    for attr in ("RETURN_NAMES", "OUTPUT_IS_LIST", "OUTPUT_TOOLTIPS"):
        if hasattr(cls, attr) and len(getattr(cls, attr)) != len(returns):
            problems.append(f"{attr} has {len(getattr(cls, attr))} entries, RETURN_TYPES has {len(returns)}")
    if not returns and getattr(cls, "OUTPUT_NODE", False) is not True:
        problems.append("a node without outputs must be an OUTPUT_NODE (else it never runs)")
    if hasattr(cls, "OUTPUT_NODE") and not isinstance(cls.OUTPUT_NODE, bool):
        problems.append("OUTPUT_NODE must be a bool")
    try:
        json.dumps(cls.INPUT_TYPES())
    except TypeError as exc:
        problems.append(f"INPUT_TYPES() is not JSON-serialisable (ComfyUI's /object_info would fail): {exc}")

    func_name = getattr(cls, "FUNCTION", None)
    func = getattr(cls(), func_name, None) if isinstance(func_name, str) else None
    if not callable(func):
        problems.append(f"FUNCTION {func_name!r} is not a method of the class")
        params, varkw = {}, True
    else:
        sig = inspect.signature(func)
        params = sig.parameters
        varkw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())

    for cat, name, spec in _specs(cls):
        if not varkw and name not in params:
            problems.append(f"input {name!r} is not a parameter of {func_name}()")
        if cat == "hidden":
            if spec not in HIDDEN_KINDS:
                problems.append(f"hidden input {name!r} has unknown kind {spec!r}")
            continue
        if not isinstance(spec, tuple | list) or not spec:
            problems.append(f"input {name!r}: spec must be a tuple (TYPE, {{options}})")
            continue
        opts = spec[1] if len(spec) > 1 else {}
        if not isinstance(opts, Mapping) or not str(opts.get("tooltip", "")).strip():
            problems.append(f"input {name!r} has no tooltip")
            continue
        typ = spec[0]
        if cat == "optional" and not varkw and name in params:
            p = params[name]
            if p.default is inspect.Parameter.empty and "default" not in opts:
                problems.append(f"optional input {name!r} has neither a Python default nor a declared default")
        if isinstance(typ, list | tuple) or typ == "COMBO":
            options = list(typ) if isinstance(typ, list | tuple) else list(opts.get("options", []))
            if "default" in opts and options and opts["default"] not in options:
                problems.append(f"combo {name!r}: default {opts['default']!r} is not an option")
        elif typ in ("INT", "FLOAT"):
            d, lo, hi = opts.get("default"), opts.get("min"), opts.get("max")
            if d is None:
                if not opts.get("forceInput"):  # a widget needs a starting value; a socket does not
                    problems.append(f"{typ} input {name!r} has no default")
            elif (lo is not None and d < lo) or (hi is not None and d > hi):
                problems.append(f"{typ} input {name!r}: default {d} outside [{lo}, {hi}]")
            if typ == "INT" and d is not None and not isinstance(d, int):
                problems.append(f"INT input {name!r}: default {d!r} is not an int")
        elif not isinstance(typ, str) or not typ:
            problems.append(f"input {name!r}: type must be a string or a list of options")
    for _cat, name, spec in _specs(cls):
        if name in ("seed", "noise_seed") and (spec[0] != "INT" or dict(spec[1]).get("min", 0) < 0):
            problems.append(f"{name!r} must be an INT with min >= 0 (torch.Generator seeds)")
    assert not problems, f"{node_id}:\n  " + "\n  ".join(problems)


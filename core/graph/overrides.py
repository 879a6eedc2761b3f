"""``--set NODE_ID.INPUT=VALUE``: change an input of a prompt before it runs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import InputError
from .validate import declared_inputs


def parse_value(text: str) -> Any:
    """JSON if it parses (``5``, ``0.5``, ``true``, ``"a"``, ``[1, 2]``), else the text itself."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return text


def parse_override(item: str) -> tuple[str, str, Any]:
    """``"7.seed=3"`` → ``("7", "seed", 3)``; a malformed item raises :class:`InputError`."""
    target, eq, value = item.partition("=")
    node_id, dot, name = target.partition(".")
    if not eq or not dot or not node_id.strip() or not name.strip():
        raise InputError(f"--set {item!r}: expected NODE_ID.INPUT=VALUE, e.g. --set 3.seed=42")
    return node_id.strip(), name.strip(), parse_value(value)


def apply_overrides(prompt: dict[str, dict[str, Any]], items: Iterable[str], registry: Mapping[str, type]) -> None:
    """Apply ``--set`` items to ``prompt`` in place.

    The node id is the one in the file (UI or API). An unknown id or input name raises
    :class:`InputError` listing what exists. A value replaces a link too.
    """
    for item in items:
        node_id, name, value = parse_override(item)
        node = prompt.get(node_id)
        if node is None:
            listing = ", ".join(
                f"{k} ({v.get('class_type') if isinstance(v, dict) else '?'})"
                for k, v in sorted(prompt.items(), key=lambda kv: _key(kv[0]))
            )
            raise InputError(f"--set {item!r}: there is no node {node_id!r} in this workflow; nodes: {listing}")
        if not isinstance(node, dict) or not isinstance(node.get("inputs", {}), dict):
            raise InputError(f"--set {item!r}: node {node_id} is malformed in this file (its inputs are not a mapping)")
        cls = registry.get(node.get("class_type")) if isinstance(node.get("class_type"), str) else None
        if cls is not None:
            names = [n for n, s in declared_inputs(cls).items() if s.category != "hidden"]
        else:
            names = list(node.get("inputs", {}))
        if name not in names:
            raise InputError(
                f"--set {item!r}: node {node_id} ({node.get('class_type')}) has no input {name!r}; "
                f"its inputs: {', '.join(names) or 'none'}"
            )
        node.setdefault("inputs", {})[name] = {"__value__": value} if isinstance(value, list) else value


def _key(nid: str) -> tuple[int, int | str]:
    return (0, int(nid)) if nid.isdigit() else (1, nid)

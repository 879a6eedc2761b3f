"""Validate a whole API prompt before anything runs, with ComfyUI-like per-node errors.

As in ComfyUI's ``validate_prompt``, every node must name a known class; the other checks
cover only the nodes the output nodes depend on (what would run), so a stray unconnected
node (a loader whose file is missing) does not block the run. Every problem is reported
(not only the first): unknown or non-text ``class_type`` (with close names suggested),
``inputs`` that is not an object, missing required inputs, links to missing nodes or output slots,
malformed links, a link whose output type the input does not accept (``*`` and
comma-separated type lists are understood, as in ComfyUI), values of the wrong type, INT
and FLOAT values outside ``min``/``max``, combo values not in their list (file lists get a
hint saying where the file belongs), a node's own ``VALIDATE_INPUTS``, cycles, and a prompt
without output node. Literal values are normalised in place (``"3"`` → 3 for an INT, a
``{"__value__": [...]}`` wrapper unwrapped), as ComfyUI does.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..checks import finite_float
from .formats import BROKEN_LINK, InputSpec

#: Suffixes that mark a combo value as a file on disk (model or image).
FILE_SUFFIXES = (
    ".safetensors", ".pth", ".pt", ".ckpt", ".bin", ".pkl", ".onnx", ".yaml", ".json",
    ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif",
)  # fmt: skip


@dataclass(frozen=True)
class NodeError:
    """One problem: which node (``None`` for the whole prompt), which input, what is wrong."""

    node_id: str | None
    class_type: str | None
    input_name: str | None
    kind: str
    message: str

    def __str__(self) -> str:
        where = "prompt" if self.node_id is None else f"node {self.node_id}"
        if self.node_id is not None and self.class_type is not None:
            where += f" ({self.class_type})"
        if self.input_name:
            where += f" input '{self.input_name}'"
        return f"{where}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "class_type": self.class_type,
            "input_name": self.input_name,
            "type": self.kind,
            "message": self.message,
        }


def types_compatible(received: Any, wanted: Any) -> bool:
    """ComfyUI's non-strict rule: equal, ``*`` on either side, or overlapping ``"A,B"`` lists."""
    if received == wanted:
        return True
    if not isinstance(received, str) or not isinstance(wanted, str):
        return False
    r = {t.strip() for t in received.split(",")}
    w = {t.strip() for t in wanted.split(",")}
    return "*" in r or "*" in w or bool(r & w)


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str | int) and isinstance(value[1], int)


def _looks_like_file(value: Any, options: list[Any] | None) -> bool:
    vals = [value, *(options or [])[:20]]
    return any(isinstance(v, str) and v.lower().endswith(FILE_SUFFIXES) for v in vals) or options == []


def declared_inputs(cls: type) -> dict[str, InputSpec]:
    """``{name: InputSpec}`` of required, optional and hidden inputs of a V1 class."""
    types = cls.INPUT_TYPES()
    out: dict[str, InputSpec] = {}
    for cat in ("required", "optional", "hidden"):
        for name, spec in (types.get(cat) or {}).items():
            out[name] = InputSpec(name, spec, cat)
    return out


def _convert(value: Any, typ: str) -> Any:
    """Convert a literal to the declared widget type; raise ValueError with a reason."""
    if typ == "INT":
        if isinstance(value, bool):
            raise ValueError("a boolean is not an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
        raise ValueError(f"expected a whole number, got {type(value).__name__} {value!r}")
    if typ == "FLOAT":
        if isinstance(value, bool):
            raise ValueError("a boolean is not a number")
        if isinstance(value, int | float | str):
            return finite_float(value)  # NaN would pass the min/max checks and run silently
        raise ValueError(f"expected a number, got {type(value).__name__} {value!r}")
    if typ == "STRING":
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"expected text, got {type(value).__name__} {value!r}")
    if typ == "BOOLEAN":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _custom_validator(cls: type) -> tuple[Callable[..., Any] | None, list[str], bool]:
    fn = getattr(cls, "VALIDATE_INPUTS", None)
    if fn is None:
        return None, [], False
    spec = inspect.getfullargspec(fn)
    args = [a for a in spec.args if a not in ("self", "cls", "s")]
    return fn, args, spec.varkw is not None


def link_sources(prompt: Mapping[str, Mapping[str, Any]], nid: str) -> list[str]:
    """Ids of the nodes of ``prompt`` that node ``nid``'s inputs are linked to, in input order."""
    inputs = prompt[nid].get("inputs") or {}
    if not isinstance(inputs, Mapping):
        return []
    return [str(v[0]) for v in inputs.values() if is_link(v) and str(v[0]) in prompt]


def find_cycles(prompt: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """Cycles among linked nodes, each as a list of node ids (first id repeated at the end).

    Depth-first with an explicit stack, so a chain of any length cannot exhaust Python's.
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles: list[list[str]] = []
    for root in prompt:
        if root in state:
            continue
        state[root] = 1
        path.append(root)
        pending = [iter(link_sources(prompt, root))]
        while pending:
            src = next(pending[-1], None)
            if src is None:
                pending.pop()
                state[path.pop()] = 2
            elif state.get(src) == 1:
                cycles.append([*path[path.index(src) :], src])
            elif src not in state:
                state[src] = 1
                path.append(src)
                pending.append(iter(link_sources(prompt, src)))
    return cycles


def needed_nodes(prompt: Mapping[str, Mapping[str, Any]], outputs: list[str], known: Mapping[str, Any]) -> set[str]:
    """Ids of ``outputs`` and every node (of ``known``) they depend on through links.

    The same closure the executor runs (``Executor.execution_order``): links are followed
    from any input, whatever its name; links to missing nodes are left to the per-node checks.
    """
    needed: set[str] = set()
    pending = [nid for nid in outputs if nid in known]
    while pending:
        nid = pending.pop()
        if nid in needed:
            continue
        needed.add(nid)
        inputs = prompt[nid].get("inputs") or {}
        for v in inputs.values() if isinstance(inputs, Mapping) else ():
            if is_link(v) and str(v[0]) in known and str(v[0]) not in needed:
                pending.append(str(v[0]))
    return needed


def validate_prompt(
    prompt: dict[str, dict[str, Any]],
    registry: Mapping[str, type],
    *,
    check_files: bool = True,
    file_hint: Callable[[str, str, Any], str] | None = None,
) -> list[NodeError]:
    """Every problem of ``prompt`` (an API prompt) against ``registry`` (``{class_type: class}``).

    ``check_files=False`` checks structure only: combo values that name files, and the
    nodes' own ``VALIDATE_INPUTS`` (which look at files), are not checked, so a workflow can
    be checked on a machine without its models or images. ``file_hint(class_type, input,
    value)`` adds where a missing file belongs to the message. Values are normalised in place.
    As in ComfyUI, a node no output node depends on is only checked for a known class.
    """
    errors: list[NodeError] = []
    if not isinstance(prompt, Mapping) or not prompt:
        return [NodeError(None, None, None, "invalid_prompt", "the workflow has no nodes")]
    known: dict[str, type] = {}
    for nid, node in prompt.items():
        if not isinstance(node, Mapping) or "class_type" not in node:
            errors.append(NodeError(nid, None, None, "invalid_prompt", "the node has no class_type"))
            continue
        ct = node["class_type"]
        if not isinstance(ct, str):
            errors.append(
                NodeError(nid, None, None, "invalid_prompt", f"class_type must be a node class name (text), not {ct!r}"[:200])
            )
            continue
        cls = registry.get(ct)
        if cls is None:
            close = difflib.get_close_matches(str(ct), list(registry), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else "; `gendeg nodes` lists the known ones"
            errors.append(NodeError(nid, ct, None, "missing_node_type", f"unknown node class {ct!r}{hint}"))
            continue
        if not isinstance(node.get("inputs", {}), Mapping):
            got = type(node["inputs"]).__name__
            errors.append(NodeError(nid, ct, None, "invalid_prompt", f"'inputs' must be an object {{name: value}}, not {got}"))
            continue
        node.setdefault("inputs", {})
        known[nid] = cls

    outputs = [nid for nid, cls in known.items() if getattr(cls, "OUTPUT_NODE", False) is True]
    if not outputs and not errors:  # (a broken node may be the output node)
        errors.append(
            NodeError(None, None, None, "prompt_no_outputs", "the workflow has no output node (SaveImage, PreviewImage, ...)")
        )

    # Like ComfyUI, inputs and cycles are checked only where the outputs' results come from.
    needed = needed_nodes(prompt, outputs, known)
    for nid, cls in known.items():
        if nid in needed:
            errors.extend(_validate_node(nid, prompt, registry, cls, check_files, file_hint))

    for cycle in find_cycles({k: v for k, v in prompt.items() if k in needed}):
        path = " → ".join(cycle)
        for nid in dict.fromkeys(cycle):
            errors.append(NodeError(nid, prompt[nid]["class_type"], None, "dependency_cycle", f"part of a cycle: {path}"))
    return errors


def _validate_node(
    nid: str,
    prompt: dict[str, dict[str, Any]],
    registry: Mapping[str, type],
    cls: type,
    check_files: bool,
    file_hint: Callable[[str, str, Any], str] | None,
) -> list[NodeError]:
    node = prompt[nid]
    ct = node["class_type"]
    inputs: dict[str, Any] = node["inputs"]
    errs: list[NodeError] = []

    def err(name: str | None, kind: str, msg: str) -> None:
        errs.append(NodeError(nid, ct, name, kind, msg))

    try:
        declared = declared_inputs(cls)
    except Exception as exc:  # noqa: BLE001 - a broken INPUT_TYPES is a per-node problem
        return [NodeError(nid, ct, None, "exception_during_validation", f"INPUT_TYPES failed: {exc}")]
    validator, v_args, v_kwargs = _custom_validator(cls) if check_files else (None, [], False)
    received_types: dict[str, Any] = {}

    for name, spec in declared.items():
        if spec.category == "hidden":
            continue
        if name not in inputs:
            if spec.category == "required":
                err(name, "required_input_missing", "required input is missing (connect it or give it a value)")
            continue
        value = inputs[name]
        if isinstance(value, Mapping) and BROKEN_LINK in value:
            err(name, "bad_linked_input", str(value[BROKEN_LINK]))
            continue
        if isinstance(value, list) and not is_link(value):
            err(name, "bad_linked_input", f"a link must be [node_id, output_index], got {value!r}")
            continue
        if is_link(value):
            src_id, slot = str(value[0]), value[1]
            src = prompt.get(src_id)
            if src is None:
                err(name, "bad_linked_input", f"linked to node {src_id}, which is not in the workflow")
                continue
            src_ct = src.get("class_type") if isinstance(src, Mapping) else None
            src_cls = registry.get(src_ct) if isinstance(src_ct, str) else None
            if src_cls is None:
                continue  # reported on that node
            returns = list(getattr(src_cls, "RETURN_TYPES", ()))
            if not 0 <= slot < len(returns):
                err(
                    name,
                    "bad_linked_input",
                    f"linked to output {slot} of node {src_id} ({src['class_type']}), which has {len(returns)} output(s)",
                )
                continue
            received = returns[slot]
            received_types[name] = received
            if "input_types" in v_args:
                continue
            if spec.type == "COMBO" and isinstance(received, list | tuple):
                continue  # an output that declares its options, as combo sources do
            if not types_compatible(received, spec.type):
                err(
                    name,
                    "return_type_mismatch",
                    f"expects {spec.type}, but is linked to output {slot} of node {src_id} ({src['class_type']}) which gives {received}",
                )
            continue
        # A literal value.
        if isinstance(value, Mapping) and "__value__" in value:
            value = inputs[name] = value["__value__"]
        if spec.type in ("INT", "FLOAT", "STRING", "BOOLEAN"):
            try:
                value = inputs[name] = _convert(value, spec.type)
            except (ValueError, TypeError) as exc:
                err(name, "invalid_input_type", f"cannot use {value!r} as {spec.type}: {exc}")
                continue
        elif not spec.is_widget:
            err(name, "invalid_input_type", f"expects a link from a node giving {spec.type}, not the value {value!r}")
            continue
        if name in v_args or v_kwargs:
            continue  # the node checks this input itself
        if spec.type in ("INT", "FLOAT"):
            if "min" in spec.opts and value < spec.opts["min"]:
                err(name, "value_smaller_than_min", f"value {value} is smaller than the minimum {spec.opts['min']}")
                continue
            if "max" in spec.opts and value > spec.opts["max"]:
                err(name, "value_bigger_than_max", f"value {value} is bigger than the maximum {spec.opts['max']}")
                continue
        if spec.type == "COMBO":
            options = spec.options or []
            if value in options:
                continue
            file_like = _looks_like_file(value, options)
            if file_like and not check_files:
                continue
            shown = f"{len(options)} choices" if len(options) > 20 else (", ".join(map(repr, options)) or "nothing")
            msg = f"{value!r} is not one of: {shown}"
            if file_like:
                extra = file_hint(ct, name, value) if file_hint else ""
                msg = f"file {value!r} was not found (found: {shown})" + (f"; {extra}" if extra else "")
            err(name, "value_not_in_list", msg)

    if validator is not None and not any(e.kind == "required_input_missing" for e in errs):
        kwargs = {}
        for a in v_args if not v_kwargs else list(declared):
            if a == "input_types":
                kwargs[a] = received_types
            elif a in inputs and not is_link(inputs[a]):
                kwargs[a] = inputs[a]
            elif a in declared:
                kwargs[a] = None
        try:
            result = validator(**kwargs)
        except Exception as exc:  # noqa: BLE001 - reported per node
            result = f"VALIDATE_INPUTS raised {type(exc).__name__}: {exc}"
        if result is not True:
            first = next(iter(kwargs), None)
            err(first, "custom_validation_failed", str(result) if result is not False else "the node rejected its inputs")
    return errs


def format_errors(errors: list[NodeError]) -> str:
    return "\n".join(f"  - {e}" for e in errors)

"""Workflow formats: the UI format the ComfyUI frontend saves ⇄ the API prompt it posts.

*API prompt* (what ``/prompt`` receives)::

    {"3": {"class_type": "KSampler", "inputs": {"seed": 5, "model": ["4", 0]}, "_meta": {"title": "..."}}}

A list value ``[node_id, output_slot]`` is a link; anything else is a widget value (a
literal list travels wrapped as ``{"__value__": [...]}``).

*UI workflow* (what the editor saves, schema version 0.4)::

    {"last_node_id", "last_link_id", "nodes": [...], "links": [[id, from, from_slot, to, to_slot, type]],
     "groups", "config", "extra", "version": 0.4}

Each node has ``id, type, pos, size, flags, order, mode, inputs, outputs, properties`` and
``widgets_values``: the values of the node's widgets in widget order. Widgets are the
inputs of type INT, FLOAT, STRING, BOOLEAN and combo (a list of options) that are not
``forceInput``, in ``input_order`` (required, then optional). The editor adds extra widgets
that are saved too: an INT named ``seed``/``noise_seed`` (or with ``control_after_generate``)
is followed by its control value (``"fixed"``, ``"increment"``, ``"decrement"``,
``"randomize"``), a combo with ``image_upload`` by the upload button's value (``"image"``).

Frontend-only nodes are resolved the way the editor does when it builds a prompt:
``Reroute`` (followed through), ``PrimitiveNode`` (its value is given to the inputs it
feeds), ``Note``/``MarkdownNote`` (ignored). Muted nodes (mode 2) are dropped, and so are
the links they feed; bypassed nodes (mode 4) pass an input of the type the consumer wants
on to it (the input at the same slot first, then the first of that type), like ComfyUI.

Both converters need ``object_info`` (the shape of ComfyUI's ``/object_info``, see
:mod:`.object_info`) to know which inputs are widgets.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import GenDegError

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
NOTE_TYPES = frozenset({"Note", "MarkdownNote", "Label (rgthree)"})
REROUTE_TYPES = frozenset({"Reroute"})
PRIMITIVE_TYPES = frozenset({"PrimitiveNode"})
#: Node ``mode`` values of the editor.
MODE_NORMAL, MODE_NEVER, MODE_BYPASS = 0, 2, 4
#: Node properties the editor copies into ``_meta`` (Comfy Registry id, repository id, version).
META_PROPERTIES = ("cnr_id", "aux_id", "ver")
#: Property that keeps a non-integer API node id through a UI round trip.
API_ID_PROPERTY = "gendeg_api_id"
#: The API value ``{BROKEN_LINK: why}`` marks an input whose UI link is broken (missing from
#: ``links``, or from a node that is not there); the validator reports it for that node.
BROKEN_LINK = "__broken_link__"


class WorkflowFormatError(GenDegError, ValueError):
    """A workflow file is neither a valid UI workflow nor a valid API prompt."""


#: What a malformed entry of a UI workflow raises while it is converted (a string where a
#: number or object belongs, a missing key): turned into :class:`WorkflowFormatError`.
_MALFORMED = (ValueError, TypeError, AttributeError, KeyError, IndexError)
_RESAVE = "fix it, or open the workflow in the ComfyUI editor and save it again"


def _order(node: Mapping[str, Any]) -> int:
    """The editor's execution ``order`` of a UI node, for a stable emit order (0 when absent or odd)."""
    order = node.get("order", 0)
    return order if isinstance(order, int) else 0


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- input specs -----------------------------------------------------------------------


class InputSpec:
    """One declared input of a node class, as ``/object_info`` describes it."""

    __slots__ = ("name", "type", "options", "opts", "category")

    def __init__(self, name: str, spec: Any, category: str) -> None:
        self.name = name
        self.category = category
        if isinstance(spec, str):  # hidden inputs: "PROMPT"
            spec = [spec]
        spec = list(spec) if isinstance(spec, list | tuple) else [spec]
        first = spec[0] if spec else "*"
        self.opts: dict[str, Any] = dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
        if isinstance(first, list | tuple):
            self.type = "COMBO"
            self.options: list[Any] | None = list(first)
        elif first == "COMBO":
            self.type = "COMBO"
            self.options = list(self.opts.get("options", []))
        else:
            self.type = str(first)
            self.options = None

    @property
    def is_widget(self) -> bool:
        return self.category != "hidden" and self.type in WIDGET_TYPES and not self.opts.get("forceInput", False)

    @property
    def has_control(self) -> bool:
        """The editor adds a 'control after generate' widget after this one."""
        if not self.is_widget:
            return False
        if "control_after_generate" in self.opts:
            return bool(self.opts["control_after_generate"])
        return self.type == "INT" and self.name in ("seed", "noise_seed")

    @property
    def has_upload(self) -> bool:
        """The editor adds an upload button widget (saved as ``"image"``) after this one."""
        return self.type == "COMBO" and bool(self.opts.get("image_upload"))

    def default(self) -> Any:
        if "default" in self.opts:
            return self.opts["default"]
        if self.type == "COMBO":
            return self.options[0] if self.options else ""
        return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(self.type)

    @property
    def ui_type(self) -> str:
        return self.type


def input_specs(info: Mapping[str, Any], include_hidden: bool = False) -> list[InputSpec]:
    """Declared inputs of one ``/object_info`` entry, in the editor's order (required, optional)."""
    inputs = info.get("input", {}) or {}
    order = info.get("input_order") or {k: list(v.keys()) for k, v in inputs.items()}
    cats = ("required", "optional", "hidden") if include_hidden else ("required", "optional")
    out = []
    for cat in cats:
        declared = inputs.get(cat) or {}
        names = [n for n in order.get(cat, []) if n in declared] + [n for n in declared if n not in order.get(cat, [])]
        out.extend(InputSpec(name, declared[name], cat) for name in names)
    return out


def widget_specs(info: Mapping[str, Any]) -> list[InputSpec]:
    return [s for s in input_specs(info) if s.is_widget]


# --- format detection ----------------------------------------------------------------


def is_api_prompt(doc: Any) -> bool:
    return (
        isinstance(doc, Mapping)
        and len(doc) > 0
        and all(isinstance(v, Mapping) and "class_type" in v for v in doc.values())
    )


def is_ui_workflow(doc: Any) -> bool:
    return isinstance(doc, Mapping) and isinstance(doc.get("nodes"), list) and "links" in doc


def _links_table(workflow: Mapping[str, Any]) -> dict[int, tuple[Any, int, Any, int, Any]]:
    """``{link_id: (from_node, from_slot, to_node, to_slot, type)}`` from either link layout."""
    table: dict[int, tuple[Any, int, Any, int, Any]] = {}
    for link in workflow.get("links") or []:
        if link is None:
            continue
        if isinstance(link, list | tuple) and len(link) >= 5:
            lid, a, a_slot, b, b_slot = link[:5]
            typ = link[5] if len(link) > 5 else "*"
        elif isinstance(link, Mapping):
            lid, a, a_slot = link.get("id"), link.get("origin_id"), link.get("origin_slot")
            b, b_slot, typ = link.get("target_id"), link.get("target_slot"), link.get("type", "*")
        else:
            raise WorkflowFormatError(f"link {_short(link)} is neither [id, from, slot, to, slot, type] nor an object")
        try:
            table[int(lid)] = (a, int(a_slot), b, int(b_slot), typ)
        except (ValueError, TypeError) as exc:
            raise WorkflowFormatError(
                f"link {_short(link)}: its id and slots must be whole numbers (id {lid!r}, slots {a_slot!r}, {b_slot!r}); {_RESAVE}"
            ) from exc
    return table


# --- UI -> API -------------------------------------------------------------------------


def _widget_positions(node: Mapping[str, Any], specs: list[InputSpec]) -> dict[str, Any]:
    """``{widget name: index in widgets_values}`` (or the key, for the dict layout)."""
    values = node.get("widgets_values")
    if values is None:
        return {}
    if isinstance(values, Mapping):  # some nodes save {name: value}
        return {s.name: s.name for s in specs if s.name in values}
    values = list(values)
    out: dict[str, Any] = {}
    i = 0
    for k, spec in enumerate(specs):
        if i >= len(values):
            break
        out[spec.name] = i
        i += 1
        needed_after = len(specs) - k - 1
        # Extra editor widgets: consume their saved value when there is one to spare, so files from
        # editors that do not save them still align; a control value that the next widget could not
        # take is consumed anyway (a file saved before a widget was added at the end of the node).
        if spec.has_control and i < len(values) and values[i] in CONTROL_VALUES and (
                len(values) - i > needed_after or not _could_take(specs[k + 1] if k + 1 < len(specs) else None, values[i])):
            i += 1
        elif spec.has_upload and i < len(values) and len(values) - i > needed_after and isinstance(values[i], str):
            i += 1
    return out


def _could_take(spec: InputSpec | None, value: Any) -> bool:
    """Whether widget ``spec`` could hold the text ``value`` (a string, or a combo offering it)."""
    if spec is None:
        return False
    if spec.type == "COMBO":
        return value in (spec.options or [])
    return spec.type == "STRING"


def _has_default(spec: InputSpec) -> bool:
    return "default" in spec.opts or (spec.type == "COMBO" and bool(spec.options))


def _align_widget_values(node: Mapping[str, Any], specs: list[InputSpec]) -> dict[str, Any]:
    """Map a node's ``widgets_values`` onto its widget names (list or dict layout)."""
    values = node.get("widgets_values")
    return {name: values[pos] for name, pos in _widget_positions(node, specs).items()}


def set_widget_value(
    workflow: dict[str, Any], node_id: str, name: str, value: Any, object_info: Mapping[str, Mapping[str, Any]]
) -> bool:
    """Write ``value`` into widget ``name`` of node ``node_id`` of a UI workflow (``--set`` on a UI file).

    Returns False when the node or widget is not there (then only the prompt changes).
    """
    for node in workflow.get("nodes") or []:
        props = node.get("properties") or {}
        if str(props.get(API_ID_PROPERTY, node.get("id"))) != str(node_id):
            continue
        info = object_info.get(node.get("type"))
        if info is None:
            return False
        pos = _widget_positions(node, widget_specs(info)).get(name)
        if pos is None:
            return False
        node["widgets_values"][pos] = value
        # A PrimitiveNode feeding this widget would put its own value back when the file is opened.
        links = _links_table(workflow)
        by_id = {n.get("id"): n for n in workflow.get("nodes") or []}
        for slot in node.get("inputs") or []:
            if slot.get("name") == name and slot.get("link") in links:
                origin = by_id.get(links[slot["link"]][0])
                if origin is not None and origin.get("type") in PRIMITIVE_TYPES and origin.get("widgets_values"):
                    origin["widgets_values"][0] = value
        return True
    return False


def _node_title(node: Mapping[str, Any], info: Mapping[str, Any] | None) -> str:
    if node.get("title"):
        return str(node["title"])
    if info:
        return str(info.get("display_name") or info.get("name") or node.get("type"))
    return str(node.get("type"))


def _wrap_value(v: Any) -> Any:
    return {"__value__": v} if isinstance(v, list) else v


SUBGRAPH_INPUT_ID, SUBGRAPH_OUTPUT_ID = -10, -20
MAX_SUBGRAPH_DEPTH = 32


class _Scope:
    """One graph level: the root workflow, or the inside of one subgraph instance."""

    def __init__(
        self,
        nodes: list[Any],
        links: Mapping[int, tuple[Any, int, Any, int, Any]],
        prefix: str,
        parent: _Scope | None = None,
        instance: Mapping[str, Any] | None = None,
        definition: Mapping[str, Any] | None = None,
    ) -> None:
        self.nodes: dict[Any, Mapping[str, Any]] = {}
        for node in nodes:
            if not isinstance(node, Mapping) or "id" not in node or "type" not in node:
                raise WorkflowFormatError(f"a node entry lacks 'id' or 'type': {str(node)[:120]}")
            if not isinstance(node["id"], int | str) or not isinstance(node["type"], str):
                raise WorkflowFormatError(
                    f"node {_short(node['id'])}: 'id' must be a number and 'type' a node class name, "
                    f"got type {_short(node['type'])}; {_RESAVE}"
                )
            _check_slots(node, prefix)
            if str(node["type"]).startswith(("workflow>", "workflow/")):
                raise WorkflowFormatError(
                    f"node {node['id']} is a group node ({node['type']}); convert it to nodes in the editor "
                    "(right-click → Convert to nodes) and save again"
                )
            self.nodes[node["id"]] = node
        self.links = links
        self.prefix = prefix
        self.parent = parent
        self.instance = instance
        self.definition = definition
        self.depth = 0 if parent is None else parent.depth + 1

    def api_id(self, node_id: Any) -> str:
        if self.parent is None:
            props = self.nodes[node_id].get("properties") or {}
            return str(props.get(API_ID_PROPERTY, node_id))
        return f"{self.prefix}{node_id}"


def _check_slots(node: Mapping[str, Any], prefix: str) -> None:
    """A UI node's ``inputs``: a list of ``{name, type, link}`` slots, each link an id or null."""
    slots = node.get("inputs") or []
    where = f"node {prefix}{node['id']} ({node['type']})"
    if not isinstance(slots, list) or not all(isinstance(x, Mapping) for x in slots):
        raise WorkflowFormatError(
            f"{where}: 'inputs' must be a list of input slots ({{name, type, link}}), got {_short(slots, 40)}; {_RESAVE}"
        )
    for slot in slots:
        link = slot.get("link")
        if link is not None and (not isinstance(link, int) or isinstance(link, bool)):
            raise WorkflowFormatError(
                f"{where}: input {slot.get('name')!r} has link {_short(link, 40)}; a link is a link id "
                f"(a whole number) or null; {_RESAVE}"
            )


def _subgraph_definitions(workflow: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    defs: dict[str, Mapping[str, Any]] = {}
    pending = list((workflow.get("definitions") or {}).get("subgraphs") or [])
    while pending:
        sg = pending.pop()
        if isinstance(sg, Mapping) and sg.get("id") and sg["id"] not in defs:
            defs[str(sg["id"])] = sg
            pending.extend((sg.get("definitions") or {}).get("subgraphs") or [])
    return defs


def _instance_widget_values(scope: _Scope) -> dict[int, Any]:
    """``{subgraph input index: value}`` of the widgets a subgraph instance shows for its inputs.

    The editor shows a widget on the instance for each subgraph input that feeds a widget
    inside; the instance's ``widgets_values`` hold them in input order.
    """
    inst, sg = scope.instance, scope.definition
    if inst is None or sg is None or not isinstance(inst.get("widgets_values"), list):
        return {}
    backed: list[int] = []
    for idx, _inp in enumerate(sg.get("inputs") or []):
        for a, a_slot, b, b_slot, _t in scope.links.values():
            if a == SUBGRAPH_INPUT_ID and a_slot == idx:
                target = scope.nodes.get(b)
                ins = (target or {}).get("inputs") or []
                if 0 <= b_slot < len(ins) and ins[b_slot].get("widget"):
                    backed.append(idx)
                    break
    values = inst["widgets_values"]
    if len(values) != len(backed):
        return {}
    return dict(zip(backed, values, strict=True))


def ui_to_api(workflow: Mapping[str, Any], object_info: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Convert a UI workflow to an API prompt, resolving reroutes, primitives, mutes, bypasses and subgraphs.

    Node ids become strings (``"7"``), or the original API id kept in the node's
    properties by :func:`api_to_ui`; nodes inside a subgraph instance get the editor's
    path ids (``"10:4"``: node 4 inside instance 10). Nodes whose class is unknown keep
    their links (their widget values cannot be named); the validator reports them.
    """
    if not is_ui_workflow(workflow):
        raise WorkflowFormatError("not a UI workflow: expected an object with 'nodes' and 'links'")
    defs = _subgraph_definitions(workflow)
    root = _Scope(workflow["nodes"], _links_table(workflow), "")
    children: dict[tuple[int, Any], _Scope] = {}

    def child(scope: _Scope, inst: Mapping[str, Any]) -> _Scope:
        key = (id(scope), inst["id"])
        if key not in children:
            if scope.depth >= MAX_SUBGRAPH_DEPTH:
                raise WorkflowFormatError(f"subgraphs nested deeper than {MAX_SUBGRAPH_DEPTH} (a subgraph inside itself?)")
            sg = defs[str(inst["type"])]
            children[key] = _Scope(
                sg.get("nodes") or [], _links_table(sg), f"{scope.prefix}{inst['id']}:", scope, inst, sg
            )
        return children[key]

    def bypass_link(origin: Mapping[str, Any], origin_slot: int, want_type: Any) -> int | None:
        ins = origin.get("inputs") or []
        for idx in [origin_slot, *range(len(ins))]:
            if 0 <= idx < len(ins) and _types_match(ins[idx].get("type"), want_type):
                return ins[idx].get("link")
        return None

    def resolve(scope: _Scope, link_id: int | None, want_type: Any) -> tuple[str, Any] | None:
        """Follow a link back to a real node output: ('link', [id, slot]) / ('value', v) / None
        (not connected: a muted source, an open subgraph input) / ('broken', why)."""
        seen = set()
        while link_id is not None:
            if link_id not in scope.links:
                return ("broken", f"its link {link_id} is missing from the workflow's links")
            if (id(scope), link_id) in seen:
                return ("broken", f"its link {link_id} runs in a loop through reroutes or bypassed nodes")
            seen.add((id(scope), link_id))
            origin_id, origin_slot = scope.links[link_id][0], scope.links[link_id][1]
            if origin_id == SUBGRAPH_INPUT_ID and scope.parent is not None:
                # Leave the subgraph through the instance's matching input.
                inputs_def = (scope.definition or {}).get("inputs") or []
                name = inputs_def[origin_slot].get("name") if 0 <= origin_slot < len(inputs_def) else None
                slot = next((i for i in scope.instance.get("inputs") or [] if i.get("name") == name), None)
                if slot is not None and slot.get("link") is not None:
                    link_id, scope = slot["link"], scope.parent
                    continue
                values = _instance_widget_values(scope)
                return ("value", values[origin_slot]) if origin_slot in values else None
            origin = scope.nodes.get(origin_id)
            if origin is None:
                return ("broken", f"its link {link_id} comes from node {scope.prefix}{origin_id}, which is not in the workflow")
            otype, mode = origin["type"], origin.get("mode", MODE_NORMAL)
            if otype in PRIMITIVE_TYPES:
                vals = origin.get("widgets_values") or []
                return ("value", vals[0]) if vals else None
            if otype in REROUTE_TYPES:
                ins = origin.get("inputs") or []
                link_id = ins[0].get("link") if ins else None
                continue
            if mode == MODE_NEVER:
                return None
            if mode == MODE_BYPASS:
                link_id = bypass_link(origin, origin_slot, want_type)
                continue
            if str(otype) in defs:
                # Enter the subgraph: the inner link that reaches this output.
                inner = child(scope, origin)
                link_id = next(
                    (lid for lid, ln in inner.links.items() if ln[2] == SUBGRAPH_OUTPUT_ID and ln[3] == origin_slot),
                    None,
                )
                scope = inner
                continue
            return ("link", [scope.api_id(origin_id), origin_slot])
        return None

    prompt: dict[str, dict[str, Any]] = {}

    def emit(scope: _Scope) -> None:
        for node in sorted(scope.nodes.values(), key=lambda n: (_order(n), str(n["id"]))):
            try:
                emit_node(scope, node)
            except WorkflowFormatError:
                raise
            except _MALFORMED as exc:
                raise WorkflowFormatError(
                    f"node {scope.prefix}{node['id']} ({node['type']}) is malformed "
                    f"({type(exc).__name__}: {exc}); {_RESAVE}"
                ) from exc

    def emit_node(scope: _Scope, node: Mapping[str, Any]) -> None:
        ntype = node["type"]
        if ntype in NOTE_TYPES or ntype in REROUTE_TYPES or ntype in PRIMITIVE_TYPES:
            return
        if node.get("mode", MODE_NORMAL) in (MODE_NEVER, MODE_BYPASS):
            return
        if str(ntype) in defs:
            emit(child(scope, node))
            return
        slots = node.get("inputs") or []
        info = object_info.get(ntype)
        inputs: dict[str, Any] = {}
        declared: dict[str, InputSpec] = {}
        if info is not None:
            specs = widget_specs(info)
            declared = {s.name: s for s in input_specs(info)}
            for name, value in _align_widget_values(node, specs).items():
                inputs[name] = _wrap_value(value)
            if node.get("widgets_values") is not None:
                # widgets the file has no value for (saved before they were added to the node): the
                # editor creates them with their default and sends that, so do we
                for spec in specs:
                    if spec.name not in inputs and _has_default(spec):
                        inputs[spec.name] = _wrap_value(spec.default())
        for slot in slots:
            name = slot.get("name")
            if slot.get("link") is None or name is None:
                continue
            want = declared[name].type if name in declared else slot.get("type", "*")
            got = resolve(scope, slot["link"], slot.get("type", want))
            if got is None:
                if not (name in declared and declared[name].is_widget):
                    inputs.pop(name, None)
                continue
            kind, value = got
            if kind == "broken":  # reported by the validator, never run with the widget's value instead
                inputs[name] = {BROKEN_LINK: f"{value}; reconnect this input in the editor and save again"}
            else:
                inputs[name] = value if kind == "link" else _wrap_value(value)
        meta: dict[str, Any] = {"title": _node_title(node, info)}
        props = node.get("properties") or {}
        for key in META_PROPERTIES:  # the editor copies the node's registry id and version
            if isinstance(props.get(key), str) and props[key]:
                meta[key] = props[key]
        prompt[scope.api_id(node["id"])] = {"inputs": inputs, "class_type": ntype, "_meta": meta}

    emit(root)
    return prompt


def _types_match(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    a, b = str(a), str(b)
    if a == b or "*" in (a, b):
        return True
    return bool({t.strip() for t in a.split(",")} & {t.strip() for t in b.split(",")})


# --- API -> UI -------------------------------------------------------------------------

NODE_WIDTH = 320
COLUMN_GAP = 80
ROW_GAP = 50
SLOT_HEIGHT = 22
TITLE_HEIGHT = 30


def _is_link(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str | int) and isinstance(v[1], int)


def _depths(prompt: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Longest distance from a source node (cycles are cut); an explicit stack, so any chain length works."""
    depth: dict[str, int] = {}
    visiting: set[str] = set()

    def sources(nid: str) -> Any:
        return iter([str(v[0]) for v in (prompt[nid].get("inputs") or {}).values() if _is_link(v)])

    for start in prompt:
        if start in depth:
            continue
        visiting.add(start)
        frames: list[list[Any]] = [[start, sources(start), 0]]  # node, its sources, depth so far
        while frames:
            frame = frames[-1]
            src = next(frame[1], None)
            if src is None:
                frames.pop()
                visiting.discard(frame[0])
                depth[frame[0]] = frame[2]
                if frames:
                    frames[-1][2] = max(frames[-1][2], frame[2] + 1)
            elif src in depth:
                frame[2] = max(frame[2], depth[src] + 1)
            elif src in visiting or src not in prompt:
                frame[2] = max(frame[2], 0)  # a cycle or a dangling link is cut here
            else:
                visiting.add(src)
                frames.append([src, sources(src), 0])
    return depth


def _node_height(n_widgets: int, n_slots: int) -> int:
    return TITLE_HEIGHT + SLOT_HEIGHT * (n_slots + n_widgets) + 10


def api_to_ui(prompt: Mapping[str, Mapping[str, Any]], object_info: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Convert an API prompt to a UI workflow the editor opens (laid out left to right by depth).

    Seed-like widgets get the control value ``"fixed"`` (a shared file reproduces its run).
    Integer ids are kept; other ids are numbered and kept in the node's properties so that
    :func:`ui_to_api` gives the original prompt back.
    """
    if not is_api_prompt(prompt):
        raise WorkflowFormatError("not an API prompt: expected {node_id: {'class_type': ..., 'inputs': {...}}}")
    unknown = sorted({str(n["class_type"]) for n in prompt.values() if n["class_type"] not in object_info})
    if unknown:
        raise WorkflowFormatError(f"cannot lay out unknown node classes {unknown}: their widgets are not known")

    keys = [str(k) for k in prompt]
    numeric = all(k.isdigit() for k in keys)
    ui_id = {k: (int(k) if numeric else i + 1) for i, k in enumerate(keys)}
    prompt = {str(k): v for k, v in prompt.items()}
    depth = _depths(prompt)
    order_list = sorted(keys, key=lambda k: (depth.get(k, 0), ui_id[k]))
    order = {k: i for i, k in enumerate(order_list)}

    nodes: dict[str, dict[str, Any]] = {}
    for k in keys:
        data = prompt[k]
        info = object_info[data["class_type"]]
        node: dict[str, Any] = {
            "id": ui_id[k],
            "type": data["class_type"],
            "pos": [0, 0],
            "size": [NODE_WIDTH, 60],
            "flags": {},
            "order": order[k],
            "mode": MODE_NORMAL,
            "inputs": [],
            "outputs": [],
            "properties": {"Node name for S&R": data["class_type"]},
            "widgets_values": [],
        }
        if not numeric:
            node["properties"][API_ID_PROPERTY] = k
        meta = data.get("_meta") or {}
        for key in META_PROPERTIES:
            if isinstance(meta.get(key), str):
                node["properties"][key] = meta[key]
        title = meta.get("title")
        if title and title != info.get("display_name", data["class_type"]):
            node["title"] = title
        outputs = list(info.get("output") or [])
        names = list(info.get("output_name") or outputs)
        is_list = list(info.get("output_is_list") or [False] * len(outputs))
        for i, t in enumerate(outputs):
            out = {"name": names[i] if i < len(names) else str(t), "type": t, "links": [], "slot_index": i}
            if i < len(is_list) and is_list[i]:
                out["shape"] = 6
            node["outputs"].append(out)
        nodes[k] = node

    links: list[list[Any]] = []
    for k in order_list:
        data, node = prompt[k], nodes[k]
        info = object_info[data["class_type"]]
        given = data.get("inputs") or {}
        for spec in input_specs(info):
            v = given.get(spec.name)
            linked = _is_link(v) and str(v[0]) in nodes
            if spec.is_widget:
                value = spec.default() if (linked or spec.name not in given) else v
                if isinstance(value, Mapping) and "__value__" in value:
                    value = value["__value__"]
                node["widgets_values"].append(value)
                if spec.has_control:
                    node["widgets_values"].append("fixed")
                if spec.has_upload:
                    node["widgets_values"].append("image")
                if not linked:
                    continue
            slot: dict[str, Any] = {"name": spec.name, "type": spec.ui_type, "link": None}
            if spec.is_widget:
                slot["widget"] = {"name": spec.name}
            if linked:
                src = nodes[str(v[0])]
                lid = len(links) + 1
                out_type = src["outputs"][v[1]]["type"] if v[1] < len(src["outputs"]) else "*"
                links.append([lid, src["id"], v[1], node["id"], len(node["inputs"]), out_type])
                slot["link"] = lid
                if v[1] < len(src["outputs"]):
                    src["outputs"][v[1]]["links"].append(lid)
            node["inputs"].append(slot)

    # Layout: one column per depth, stacked top to bottom.
    column, y = None, 50
    col_x: dict[int, int] = {}
    for k in order_list:
        node, d = nodes[k], depth.get(k, 0)
        n_widgets = sum(1 for s in widget_specs(object_info[node["type"]]))
        n_slots = max(len(node["inputs"]), len(node["outputs"]))
        node["size"] = [NODE_WIDTH, _node_height(n_widgets, n_slots)]
        if d != column:
            column, y = d, 50
            col_x[d] = 50 if not col_x else max(col_x.values()) + NODE_WIDTH + COLUMN_GAP
        node["pos"] = [col_x[d], y]
        y += node["size"][1] + ROW_GAP

    return {
        "last_node_id": max((n["id"] for n in nodes.values()), default=0),
        "last_link_id": len(links),
        "nodes": [nodes[k] for k in order_list],
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}},
        "version": 0.4,
    }


# --- loading ------------------------------------------------------------------------------


def load_any(doc: Any, object_info: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """``(api_prompt, ui_workflow_or_None)`` from a parsed file in either format.

    Also accepted: a PNG's ``{"prompt": ..., "workflow": ...}`` (see :func:`read_json`) and the
    body the editor POSTs to ``/prompt`` (``{"prompt": ..., "extra_data": {"extra_pnginfo": {"workflow": ...}}}``).
    A malformed UI workflow raises :class:`WorkflowFormatError` naming the node or link; an API
    prompt's odd entries (``class_type`` not text, ``inputs`` not an object) are left to the validator.
    """
    check_nesting(doc)
    if isinstance(doc, Mapping) and "prompt" in doc and is_api_prompt(doc.get("prompt")):
        # A PNG's chunks, or the body the editor POSTs to /prompt (workflow in extra_data).
        workflow = doc.get("workflow") or ((doc.get("extra_data") or {}).get("extra_pnginfo") or {}).get("workflow")
        prompt = {str(k): copy.deepcopy(dict(v)) for k, v in doc["prompt"].items()}
        return prompt, copy.deepcopy(workflow) if is_ui_workflow(workflow) else None
    if is_ui_workflow(doc):
        try:
            prompt = ui_to_api(doc, object_info)
        except WorkflowFormatError:
            raise
        except _MALFORMED as exc:  # an entry of an odd shape the converter did not expect
            raise WorkflowFormatError(
                f"this UI workflow is malformed ({type(exc).__name__}: {exc}); {_RESAVE}"
            ) from exc
        return prompt, copy.deepcopy(dict(doc))
    if is_api_prompt(doc):
        return {str(k): copy.deepcopy(dict(v)) for k, v in doc.items()}, None
    raise WorkflowFormatError(
        "this JSON is neither a UI workflow (with 'nodes' and 'links') nor an API prompt "
        "({id: {'class_type', 'inputs'}}); save it from the ComfyUI editor with Workflow → Save or Export (API)"
    )


def read_json(path: str) -> Any:
    """A workflow file: JSON (UI or API), or a PNG/WebP saved by ComfyUI or ``gendeg run``.

    From an image, ``{"prompt": ..., "workflow": ...}`` is returned (the prompt that made
    it, and the editor's workflow), which :func:`load_any` understands.
    """
    if os.path.isdir(path):
        found = sorted(p.name for p in Path(path).glob("*.json"))[:3]
        hint = f" such as {path}/{found[0]}" if found else ""
        raise WorkflowFormatError(f"{path} is a folder, not a workflow; give a workflow file (.json, or a PNG made by ComfyUI){hint}")
    if str(path).lower().endswith((".png", ".webp")):
        return check_nesting(_read_image_workflow(path), str(path))
    too_deep = False
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError as exc:
        raise WorkflowFormatError(f"{path}: no such workflow file") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WorkflowFormatError(f"{path}: not valid JSON ({exc})") from exc
    except RecursionError:
        too_deep = True  # raised below, once the parser's deep stack is released
    if too_deep:
        raise WorkflowFormatError(f"{path}: {_TOO_DEEP}")
    return check_nesting(doc, str(path))


#: JSON nesting a workflow may have: real ones (subgraphs inside subgraphs included) stay far
#: below it, and it leaves the converters and validators room on Python's stack.
MAX_NESTING = 200
_TOO_DEEP = (
    f"nested more than {MAX_NESTING} levels deep; a workflow is a flat list of nodes, so this file is "
    "not one (or is damaged)"
)


def check_nesting(doc: Any, where: str = "the workflow") -> Any:
    """Return ``doc``, or raise :class:`WorkflowFormatError` if it nests deeper than :data:`MAX_NESTING` (iterative walk)."""
    pending = [(doc, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_NESTING:
            raise WorkflowFormatError(f"{where}: {_TOO_DEEP}")
        if isinstance(value, Mapping):
            pending.extend((v, depth + 1) for v in value.values() if isinstance(v, Mapping | list))
        elif isinstance(value, list):
            pending.extend((v, depth + 1) for v in value if isinstance(v, Mapping | list))
    return doc


def _read_image_workflow(path: str) -> dict[str, Any]:
    from PIL import Image

    try:
        with Image.open(path) as img:
            text = dict(getattr(img, "text", {}) or {})
            if not text and "exif" in img.info:  # WebP: ComfyUI stores "prompt:{...}" in EXIF
                for value in img.getexif().values():
                    if isinstance(value, str) and ":" in value:
                        key, _, body = value.partition(":")
                        text[key.lower()] = body
    except FileNotFoundError as exc:
        raise WorkflowFormatError(f"{path}: no such file") from exc
    except OSError as exc:
        raise WorkflowFormatError(f"{path}: cannot read this image ({exc})") from exc
    out: dict[str, Any] = {}
    for key in ("prompt", "workflow"):
        if key in text:
            try:
                out[key] = json.loads(text[key])
            except json.JSONDecodeError as exc:
                raise WorkflowFormatError(f"{path}: its {key!r} text is not valid JSON ({exc})") from exc
    if "prompt" not in out and "workflow" in out:
        return out["workflow"]
    if "prompt" not in out:
        raise WorkflowFormatError(f"{path}: this image carries no workflow (no 'prompt' or 'workflow' text chunk)")
    return out

"""Run an API prompt with ComfyUI's execution semantics, without ComfyUI.

* Only what the output nodes (``OUTPUT_NODE = True``) need runs, in dependency order, and
  only after the whole prompt validated (:mod:`.validate`).
* Every node output is a list (one entry per call). A node runs once per item of its
  longest input list (shorter lists repeat their last item), unless it declares
  ``INPUT_IS_LIST`` (then it gets the lists, once). Outputs flagged in ``OUTPUT_IS_LIST``
  are lists that are concatenated rather than collected.
* Hidden inputs: ``PROMPT`` (the prompt), ``EXTRA_PNGINFO`` (``{"workflow": ...}``),
  ``UNIQUE_ID`` (the node id). Missing optional inputs are not passed (the function's
  default applies; the declared default when the function has none).
* A node may return a tuple, or ``{"ui": {...}, "result": (...)}``; ``ui`` parts of the
  calls are merged per key.
* Events: ``on_event(kind, data)`` with ``executing`` {node}, ``progress`` {node, value,
  max}, ``executed`` {node, output}, ``execution_error`` {node, message}, and
  ``execution_cached`` {nodes} when ``cache=True`` reused outputs.
* ``cacheable(node_id)`` (with ``cache=True``) limits what is kept between runs to the nodes
  it accepts: a Ray worker keeps its model loaders but not the images of the last batch.

This module is plain Python: the host (progress listeners, interruption flag) is injected
by the caller (``commands/run.py``, the studio), so ``core`` never imports ``nodes``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import threading
import traceback
from collections.abc import Callable, Mapping, MutableSequence
from typing import Any

from ..errors import GenDegError, Interrupted
from .validate import NodeError, declared_inputs, format_errors, is_link, link_sources, validate_prompt

log = logging.getLogger("gendeg")

EventCallback = Callable[[str, dict[str, Any]], None]


class ValidationFailed(GenDegError):
    """The prompt has problems; ``errors`` lists every one of them."""

    def __init__(self, errors: list[NodeError]) -> None:
        self.errors = errors
        super().__init__(f"the workflow is not valid ({len(errors)} problem(s)):\n{format_errors(errors)}")


class NodeExecutionError(GenDegError):
    """A node raised while running; names the node id and class."""

    def __init__(self, node_id: str, class_type: str, exc: BaseException) -> None:
        self.node_id, self.class_type, self.original = node_id, class_type, exc
        detail = str(exc) if isinstance(exc, GenDegError) else f"{type(exc).__name__}: {exc}"
        super().__init__(f"node {node_id} ({class_type}) failed: {detail}")


class Executor:
    """Validates and runs API prompts over a node registry ``{class_type: class}``."""

    def __init__(
        self,
        registry: Mapping[str, type],
        *,
        cache: bool = False,
        progress_listeners: MutableSequence[Callable[[int, int], None]] | None = None,
        interrupted: Callable[[], bool] | None = None,
        file_hint: Callable[[str, str, Any], str] | None = None,
        cacheable: Callable[[str], bool] | None = None,
    ) -> None:
        self.registry = registry
        self.cache_enabled = cache
        self.cacheable = cacheable or (lambda nid: True)
        self.progress_listeners = progress_listeners
        self.interrupted = interrupted or (lambda: False)
        self.file_hint = file_hint
        self._cache: dict[str, tuple[list[list[Any]], dict[str, list] | None]] = {}
        self._lock = threading.Lock()
        #: Raw outputs of the last run: ``{node_id: [list per output slot]}`` (emptied once consumed).
        self.last_outputs: dict[str, list[list[Any]]] = {}

    # --- validation --------------------------------------------------------------------

    def validate(self, prompt: dict[str, dict[str, Any]], *, check_files: bool = True) -> list[NodeError]:
        """Every problem of ``prompt`` (empty list: it can run). Literal values are normalised in place."""
        return validate_prompt(prompt, self.registry, check_files=check_files, file_hint=self.file_hint)

    # --- execution ---------------------------------------------------------------------

    def execution_order(self, prompt: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Ids of the nodes the output nodes need, dependencies first (ties: id order)."""
        outputs = [nid for nid, n in prompt.items() if getattr(self.registry[n["class_type"]], "OUTPUT_NODE", False) is True]
        order: list[str] = []
        done: set[str] = set()
        for out in sorted(outputs, key=_id_key):
            if out in done:
                continue
            done.add(out)
            pending = [(out, iter(link_sources(prompt, out)))]  # an explicit stack: chains of any length
            while pending:
                nid, sources = pending[-1]
                src = next(sources, None)
                if src is None:
                    pending.pop()
                    order.append(nid)
                elif src not in done:
                    done.add(src)
                    pending.append((src, iter(link_sources(prompt, src))))
        return order

    def execute(
        self,
        prompt: dict[str, dict[str, Any]],
        *,
        extra_pnginfo: dict[str, Any] | None = None,
        on_event: EventCallback | None = None,
        prompt_id: str | None = None,
        check_files: bool = True,
    ) -> dict[str, dict[str, list]]:
        """Validate, then run; returns ``{node_id: ui}`` of the nodes that showed something.

        Raises :class:`ValidationFailed` (nothing ran), :class:`Interrupted`, or
        :class:`NodeExecutionError` (naming the node).
        """
        emit = on_event or (lambda kind, data: None)
        errors = self.validate(prompt, check_files=check_files)
        if errors:
            raise ValidationFailed(errors)
        with self._lock:
            return self._run(prompt, extra_pnginfo, emit, prompt_id)

    def _run(
        self, prompt: dict[str, dict[str, Any]], extra_pnginfo: dict[str, Any] | None, emit: EventCallback, prompt_id: str | None
    ) -> dict[str, dict[str, list]]:
        order = self.execution_order(prompt)
        outputs: dict[str, list[list[Any]]] = {}
        uis: dict[str, dict[str, list]] = {}
        keys: dict[str, str] = {}
        cached_nodes: list[str] = []
        current = {"node": None}

        def relay(value: int, total: int) -> None:
            if current["node"] is not None:
                emit("progress", {"node": current["node"], "value": value, "max": total, "prompt_id": prompt_id})

        # Outputs are dropped as soon as their last consumer ran (big dataset runs stay flat in memory).
        consumers: dict[str, int] = {}
        for nid in order:
            for v in prompt[nid].get("inputs", {}).values():
                if is_link(v):
                    consumers[str(v[0])] = consumers.get(str(v[0]), 0) + 1

        def release(nid: str) -> None:
            for v in prompt[nid].get("inputs", {}).values():
                if is_link(v):
                    src = str(v[0])
                    consumers[src] -= 1
                    if consumers[src] == 0 and not (self.cache_enabled and self.cacheable(src)):
                        outputs[src] = []

        if self.progress_listeners is not None:
            self.progress_listeners.append(relay)
        try:
            for nid in order:
                if self.interrupted():
                    raise Interrupted(f"interrupted before node {nid} ({prompt[nid]['class_type']})")
                node = prompt[nid]
                cls = self.registry[node["class_type"]]
                if self.cache_enabled:
                    keys[nid] = self._cache_key(nid, node, cls, keys)
                    hit = self._cache.get(keys[nid])
                    if hit is not None:
                        outputs[nid], ui = hit
                        if ui:
                            uis[nid] = ui
                        cached_nodes.append(nid)
                        release(nid)
                        continue
                current["node"] = nid
                emit("executing", {"node": nid, "prompt_id": prompt_id})
                try:
                    out, ui = self._run_node(nid, node, cls, outputs, prompt, extra_pnginfo)
                except Interrupted:
                    raise
                except Exception as exc:
                    error = NodeExecutionError(nid, node["class_type"], exc)
                    log.debug("node %s failed:\n%s", nid, traceback.format_exc())
                    emit("execution_error", {"node": nid, "message": str(error), "prompt_id": prompt_id})
                    raise error from exc
                finally:
                    current["node"] = None
                outputs[nid] = out
                release(nid)
                if ui:
                    uis[nid] = ui
                if self.cache_enabled and self.cacheable(nid):
                    self._cache[keys[nid]] = (out, ui)
                emit("executed", {"node": nid, "output": ui, "prompt_id": prompt_id})
            if cached_nodes:
                emit("execution_cached", {"nodes": cached_nodes, "prompt_id": prompt_id})
            emit("executing", {"node": None, "prompt_id": prompt_id})
        finally:
            if self.progress_listeners is not None and relay in self.progress_listeners:
                self.progress_listeners.remove(relay)
        self.last_outputs = outputs
        return uis

    def _cache_key(self, nid: str, node: Mapping[str, Any], cls: type, keys: Mapping[str, str]) -> str:
        parts: dict[str, Any] = {}
        for name, v in sorted(node.get("inputs", {}).items()):
            parts[name] = ["link", keys.get(str(v[0])), v[1]] if is_link(v) else v
        changed = None
        if hasattr(cls, "IS_CHANGED"):
            try:
                literal = {k: v for k, v in node.get("inputs", {}).items() if not is_link(v)}
                changed = cls.IS_CHANGED(**_accepted(cls.IS_CHANGED, literal))
            except Exception:  # noqa: BLE001 - unknown: never reuse
                changed = float("nan")
        blob = json.dumps([node["class_type"], parts, str(changed)], sort_keys=True, default=str)
        if changed != changed:  # NaN: always different
            blob += str(id(node))
        return hashlib.sha256(blob.encode()).hexdigest()

    def _run_node(
        self,
        nid: str,
        node: Mapping[str, Any],
        cls: type,
        outputs: Mapping[str, list[list[Any]]],
        prompt: Mapping[str, Any],
        extra_pnginfo: dict[str, Any] | None,
    ) -> tuple[list[list[Any]], dict[str, list] | None]:
        declared = declared_inputs(cls)
        obj = cls()
        func = getattr(obj, cls.FUNCTION)
        params = inspect.signature(func).parameters
        data: dict[str, list[Any]] = {}
        for name, value in node.get("inputs", {}).items():
            if name not in declared:
                continue  # ComfyUI ignores inputs the class does not declare
            if is_link(value):
                data[name] = outputs[str(value[0])][value[1]]
            else:
                data[name] = [value]
        for name, spec in declared.items():
            if name in data:
                continue
            if spec.category == "hidden":
                kind = spec.type
                if kind == "PROMPT":
                    data[name] = [prompt]
                elif kind == "EXTRA_PNGINFO":
                    data[name] = [extra_pnginfo]
                elif kind == "UNIQUE_ID":
                    data[name] = [nid]
            elif spec.category == "optional" and "default" in spec.opts:
                p = params.get(name)
                if p is not None and p.default is inspect.Parameter.empty:
                    data[name] = [spec.opts["default"]]

        results: list[Any] = []
        if getattr(cls, "INPUT_IS_LIST", False):
            results.append(func(**data))
        elif data and any(len(v) == 0 for v in data.values()):
            pass  # an empty list upstream: nothing to do
        else:
            n = max((len(v) for v in data.values()), default=1)
            for i in range(n):
                if i and self.interrupted():
                    raise Interrupted(f"interrupted in node {nid} ({node['class_type']})")
                results.append(func(**{k: v[i] if i < len(v) else v[-1] for k, v in data.items()}))

        returns = list(getattr(cls, "RETURN_TYPES", ()))
        is_list = list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(returns)))
        slots: list[list[Any]] = [[] for _ in returns]
        ui_parts: list[Mapping[str, Any]] = []
        for r in results:
            if isinstance(r, Mapping):
                if r.get("ui"):
                    ui_parts.append(r["ui"])
                r = r.get("result", ())
            if r is None:
                r = ()
            if not isinstance(r, tuple | list):
                raise GenDegError(f"returned {type(r).__name__}; a node must return a tuple of {len(returns)} value(s)")
            if len(r) != len(returns):
                raise GenDegError(f"returned {len(r)} value(s) but declares {len(returns)} ({', '.join(map(str, returns))})")
            for k, value in enumerate(r):
                if k < len(is_list) and is_list[k]:
                    slots[k].extend(value)
                else:
                    slots[k].append(value)
        ui: dict[str, list] | None = None
        if ui_parts:
            ui = {}
            for part in ui_parts:
                for key, value in part.items():
                    ui.setdefault(key, []).extend(value if isinstance(value, list | tuple) else [value])
        return slots, ui


def _accepted(fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    spec = inspect.getfullargspec(fn)
    if spec.varkw is not None:
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in spec.args or k in spec.kwonlyargs}


def _id_key(nid: str) -> tuple[int, int | str]:
    return (0, int(nid)) if str(nid).isdigit() else (1, str(nid))

"""The studio's view of the workflow engine: the same executor as ``gendeg run``.

:class:`ExecutorBackend` wraps :class:`..graph.executor.Executor` for :class:`.queue.PromptQueue`:
``/object_info`` is rebuilt on every call (like ComfyUI: combo lists such as LoadImage's
follow the input folder), and validation problems are reported in ComfyUI's JSON shape
``{"error": {...}, "node_errors": {id: {"errors": [...], "dependent_outputs": [...], "class_type"}}}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..graph.object_info import object_info as build_object_info


def _error_fields(err: Any) -> dict[str, Any]:
    """One executor validation problem (object or mapping) → ComfyUI's error dict.

    A node's own ``VALIDATE_INPUTS`` message (``custom_validation_failed``, e.g. a missing
    checkpoint) is reported as ComfyUI reports it, message "Custom validation failed for node"
    and details "<input> - <the node's message>": the frontend shows those details.
    """
    get = err.get if isinstance(err, Mapping) else lambda k, d=None: getattr(err, k, d)
    message = get("message") or str(err)
    kind = get("type") or get("kind") or "invalid_input"
    name = get("input_name") or get("input")
    details = get("details") or ""
    if kind == "custom_validation_failed" and not details:
        message, details = "Custom validation failed for node", f"{name} - {message}" if name else message
    return {
        "type": kind,
        "message": message,
        "details": details,
        "extra_info": dict(get("extra_info") or ({"input_name": name} if name else {})),
    }


def node_errors_from(problems: Any, prompt: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Group the executor's per-node problems into ComfyUI's ``node_errors``.

    Accepts a list of problems that carry a ``node``/``node_id`` (objects or dicts), or a
    mapping ``{node_id: [problems]}``.
    """
    grouped: dict[str, list[Any]] = {}
    if isinstance(problems, Mapping):
        for nid, errs in problems.items():
            grouped.setdefault(str(nid), []).extend(errs if isinstance(errs, list | tuple) else [errs])
    else:
        for err in problems or []:
            get = err.get if isinstance(err, Mapping) else lambda k, d=None, e=err: getattr(e, k, d)
            nid = get("node") if get("node") is not None else get("node_id")
            grouped.setdefault(str(nid) if nid is not None else "", []).append(err)
    out: dict[str, dict[str, Any]] = {}
    for nid, errs in grouped.items():
        out[nid] = {
            "errors": [_error_fields(e) for e in errs],
            "dependent_outputs": [],
            "class_type": (prompt.get(nid) or {}).get("class_type", "")
            if isinstance(prompt.get(nid), Mapping)
            else "",
        }
    return out


class ExecutorBackend:
    """``object_info`` / ``validate`` / ``execute`` over one executor and node registry."""

    def __init__(
        self,
        executor: Any,
        registry: Mapping[str, type],
        display_names: Mapping[str, str] | None = None,
        python_modules: Mapping[str, str] | None = None,
    ) -> None:
        """``executor``: a :class:`..graph.executor.Executor` over ``registry`` (as ``gendeg run`` makes it)."""
        self.executor = executor
        self.registry = dict(registry)
        self.display_names = dict(display_names or {})
        self.python_modules = dict(python_modules or {})

    def object_info(self) -> dict[str, Any]:
        return build_object_info(self.registry, self.display_names, self.python_modules)

    def output_nodes(self, prompt: Mapping[str, Any]) -> list[str]:
        return [
            str(nid)
            for nid, node in prompt.items()
            if isinstance(node, Mapping)
            and getattr(self.registry.get(node.get("class_type")), "OUTPUT_NODE", False) is True
        ]

    def validate(self, prompt: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any], list[str]]:
        outputs = self.output_nodes(prompt)
        try:
            problems = self.executor.validate(prompt)
        except Exception as exc:  # noqa: BLE001 - a malformed prompt is the client's error
            return (
                {
                    "type": "invalid_prompt",
                    "message": f"Invalid prompt: {exc}",
                    "details": str(exc),
                    "extra_info": {},
                },
                {},
                outputs,
            )
        node_errors = node_errors_from(problems, prompt)
        if node_errors:
            general = node_errors.pop("", None)
            message = "Prompt outputs failed validation"
            if general:
                message += ": " + "; ".join(e["message"] for e in general["errors"])
            return (
                {
                    "type": "prompt_outputs_failed_validation",
                    "message": message,
                    "details": "",
                    "extra_info": {},
                },
                node_errors,
                outputs,
            )
        if not outputs:
            return (
                {
                    "type": "prompt_no_outputs",
                    "message": "Prompt has no outputs",
                    "details": "add an output node (SaveImage, PreviewImage or a GenDeg save node)",
                    "extra_info": {},
                },
                {},
                outputs,
            )
        return None, {}, outputs

    def execute(
        self,
        prompt: Mapping[str, Any],
        *,
        extra_pnginfo: Mapping[str, Any] | None,
        on_event: Callable[[str, dict[str, Any]], None],
        prompt_id: str,
    ) -> None:
        self.executor.execute(
            dict(prompt),
            extra_pnginfo=dict(extra_pnginfo) if extra_pnginfo else None,
            on_event=on_event,
            prompt_id=prompt_id,
        )

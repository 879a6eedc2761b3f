"""One prompt queue with one worker thread, a history, and ComfyUI-shaped execution events.

No aiohttp here: the worker reports through ``emit(event, data, sid)`` (the server turns
that into websocket messages) and the queue is usable (and tested) on its own.

Shapes follow ComfyUI's ``execution.PromptQueue`` so the frontend reads them unchanged:
a queue item is ``[number, prompt_id, prompt, extra_data, outputs_to_execute]``; a
history entry is ``{"prompt": item, "outputs": {node: ui}, "status": {...}, "meta": {...}}``.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

log = logging.getLogger("gendeg.studio")

MAX_HISTORY = 1000


class Backend(Protocol):
    """What the studio needs from the workflow engine (see :mod:`.backend`)."""

    def object_info(self) -> dict[str, Any]:
        """Node definitions in ComfyUI's ``/object_info`` shape."""

    def validate(self, prompt: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any], list[str]]:
        """``(error or None, node_errors, output node ids)`` in ComfyUI's JSON shapes."""

    def execute(
        self,
        prompt: Mapping[str, Any],
        *,
        extra_pnginfo: Mapping[str, Any] | None,
        on_event: Callable[[str, dict[str, Any]], None],
        prompt_id: str,
    ) -> None:
        """Run a validated API prompt, reporting ``executing/progress/executed/execution_error``."""


Emit = Callable[[str, dict[str, Any], "str | None"], None]


def _now_ms() -> int:
    return int(time.time() * 1000)


class PromptQueue:
    """Pending prompts run one at a time, in order, by one worker thread.

    ``interrupt`` is the event the nodes' progress callbacks check (``host.SETTINGS.interrupt``);
    setting it stops the running prompt at its next progress step.
    """

    def __init__(self, backend: Backend, emit: Emit, interrupt: threading.Event) -> None:
        self.backend = backend
        self.emit = emit
        self.interrupt = interrupt
        self._cond = threading.Condition()
        self._pending: list[list[Any]] = []
        self._running: list[Any] | None = None
        self._running_since: float | None = None
        self.history: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._created: dict[str, float] = {}
        self._number = 0
        self._stop = False
        self.last_node: str | None = None
        self.client_id: str | None = None
        self._thread = threading.Thread(target=self._work, name="gendeg-studio-queue", daemon=True)
        self._thread.start()

    # --- queue state ---------------------------------------------------------------

    def next_number(self, front: bool = False) -> int:
        with self._cond:
            n = self._number
            self._number += 1
        return -n if front else n

    def put(self, number: float, prompt_id: str, prompt: dict, extra_data: dict, outputs: list[str]) -> None:
        with self._cond:
            self._pending.append([number, prompt_id, prompt, extra_data, outputs])
            self._pending.sort(key=lambda item: item[0])
            self._created[prompt_id] = time.time()
            self._cond.notify_all()
        self.status_changed()

    def remaining(self) -> int:
        with self._cond:
            return len(self._pending) + (1 if self._running is not None else 0)

    def queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.remaining()}}

    def snapshot(self) -> tuple[list[list[Any]], list[list[Any]]]:
        """(running items, pending items), deep-copied."""
        with self._cond:
            running = [copy.deepcopy(self._running)] if self._running is not None else []
            return running, copy.deepcopy(self._pending)

    def running_id(self) -> str | None:
        with self._cond:
            return self._running[1] if self._running is not None else None

    def delete(self, prompt_ids: list[str]) -> None:
        with self._cond:
            self._pending = [item for item in self._pending if item[1] not in set(prompt_ids)]
        self.status_changed()

    def clear(self) -> None:
        with self._cond:
            self._pending = []
        self.status_changed()

    def get_history(
        self, prompt_id: str | None = None, max_items: int | None = None, offset: int = -1
    ) -> dict:
        with self._cond:
            if prompt_id is not None:
                return (
                    {prompt_id: copy.deepcopy(self.history[prompt_id])} if prompt_id in self.history else {}
                )
            keys = list(self.history)
            if offset < 0 and max_items is not None:
                offset = len(keys) - max_items
            keys = keys[max(offset, 0) :]
            if max_items is not None:
                keys = keys[:max_items]
            return {k: copy.deepcopy(self.history[k]) for k in keys}

    def delete_history(self, prompt_ids: list[str] | None = None) -> None:
        with self._cond:
            if prompt_ids is None:
                self.history.clear()
            else:
                for pid in prompt_ids:
                    self.history.pop(pid, None)

    def created(self, prompt_id: str) -> float | None:
        return self._created.get(prompt_id)

    def started(self) -> float | None:
        return self._running_since

    def status_changed(self) -> None:
        self.emit("status", {"status": self.queue_info()}, None)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until nothing is pending or running (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._running is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self.interrupt.set()
        self._thread.join(timeout=10)

    # --- worker --------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                item = self._pending.pop(0)
                self._running = item
                self._running_since = time.time()
            self.status_changed()
            try:
                self._run(item)
            finally:
                with self._cond:
                    self._running = None
                    self._running_since = None
                    self._cond.notify_all()
                self.status_changed()

    def _run(self, item: list[Any]) -> None:
        number, prompt_id, prompt, extra_data, outputs = item
        sid = extra_data.get("client_id")
        self.client_id = sid
        messages: list[tuple[str, dict]] = []
        ui_outputs: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        executed: list[str] = []
        failed: dict[str, Any] = {}
        self.interrupt.clear()

        def message(event: str, data: dict[str, Any]) -> None:
            data = {**data, "timestamp": _now_ms()}
            messages.append((event, data))
            self.emit(event, data, sid)

        def on_event(kind: str, data: dict[str, Any]) -> None:
            node = str(data.get("node")) if data.get("node") is not None else None
            if kind == "executing":
                if node is None:  # the queue itself says when the prompt is over
                    return
                self.last_node = node
                if node is not None and node not in executed:
                    executed.append(node)
                self.emit("executing", {"node": node, "display_node": node, "prompt_id": prompt_id}, sid)
            elif kind == "progress":
                self.emit(
                    "progress",
                    {
                        "value": data.get("value", 0),
                        "max": data.get("max", 1),
                        "prompt_id": prompt_id,
                        "node": node,
                    },
                    sid,
                )
            elif kind == "executed":
                output = data.get("output") or {}
                if output:
                    ui_outputs[node] = output
                    meta[node] = {
                        "node_id": node,
                        "display_node": node,
                        "parent_node": None,
                        "real_node_id": node,
                    }
                    self.emit(
                        "executed",
                        {"node": node, "display_node": node, "output": output, "prompt_id": prompt_id},
                        sid,
                    )
            elif kind == "execution_error":
                failed.update(data)
                failed["node"] = node

        message("execution_start", {"prompt_id": prompt_id})
        message("execution_cached", {"nodes": [], "prompt_id": prompt_id})
        error: BaseException | None = None
        try:
            self.backend.execute(
                prompt,
                extra_pnginfo=(extra_data.get("extra_pnginfo") or None),
                on_event=on_event,
                prompt_id=prompt_id,
            )
        except BaseException as exc:  # noqa: BLE001 - reported to the client, the worker lives on
            error = exc
        interrupted = self.interrupt.is_set() or (error is not None and type(error).__name__ == "Interrupted")
        node = failed.get("node") or self.last_node
        if error is None and not failed:
            message("execution_success", {"prompt_id": prompt_id})
            status = "success"
        elif interrupted:
            message(
                "execution_interrupted",
                {
                    "prompt_id": prompt_id,
                    "node_id": node,
                    "node_type": (prompt.get(node) or {}).get("class_type", "") if node else "",
                    "executed": [n for n in executed if n != node],
                },
            )
            status = "error"
        else:
            # as ComfyUI: the node's own exception (not the executor's wrapper), type with its module
            original = getattr(error, "original", None)
            shown = original if isinstance(original, BaseException) else error
            text = str(shown) if shown is not None else failed.get("message") or "error"
            tb = (
                traceback.format_exception(type(shown), shown, shown.__traceback__)
                if shown is not None
                else [str(failed.get("traceback", text))]
            )
            message(
                "execution_error",
                {
                    "prompt_id": prompt_id,
                    "node_id": node,
                    "node_type": (prompt.get(node) or {}).get("class_type", "") if node else "",
                    "executed": [n for n in executed if n != node],
                    "exception_message": text,
                    "exception_type": _type_name(shown) if shown is not None else "GenDegError",
                    "traceback": tb,
                    "current_inputs": {},
                    "current_outputs": [],
                },
            )
            log.error("[GenDeg studio] prompt %s failed at node %s: %s", prompt_id, node, text)
            status = "error"
        self.emit("executing", {"node": None, "prompt_id": prompt_id}, sid)
        self.last_node = None
        self.interrupt.clear()
        with self._cond:
            extra = {
                k: v for k, v in extra_data.items() if k not in ("auth_token_comfy_org", "api_key_comfy_org")
            }
            self.history[prompt_id] = {
                "prompt": [number, prompt_id, prompt, extra, outputs],
                "outputs": ui_outputs,
                "status": {"status_str": status, "completed": status == "success", "messages": messages},
                "meta": meta,
            }
            while len(self.history) > MAX_HISTORY:
                self.history.popitem(last=False)


def _type_name(exc: BaseException) -> str:
    """``module.QualName`` of an exception's type (bare for builtins), as ComfyUI reports it."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"

"""The HTTP + websocket server of ``gendeg studio``: the ComfyUI frontend on loopback.

It serves the static frontend of ``comfyui-frontend-package`` and the endpoints that the
frontend calls at start-up and for running graphs, in the shapes ComfyUI's ``server.py``
uses (every route is reachable both as ``/api/<path>`` and as the bare ``/<path>``):

``system_stats``, ``features``, ``object_info[/{node}]``, ``settings[/{id}]`` (GET/POST),
``users``, ``i18n``, ``extensions`` (plus the pack's js under ``/extensions/<pack>/``),
``userdata`` (list/get/post/move/delete, confined to the user's folder), ``prompt``
(GET queue info, POST run), ``queue``, ``history``, ``jobs`` (newer frontends),
``view`` and ``upload/image`` (confined to the input/output/temp folders), ``interrupt``,
``workflow_templates`` (the pack's shipped workflows) and ``/ws``.

aiohttp is imported here, so import this module only when the studio runs (it is in
the pack's ``studio`` extra).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import mimetypes
import os
import platform
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from aiohttp import WSMsgType, web

from ..io import atomic_write_bytes
from .queue import Backend, PromptQueue

log = logging.getLogger("gendeg.studio")

DEFAULT_USER = "default"
_PUBLISHER = web.AppKey("gendeg_publisher", asyncio.Task)
SERVER_FEATURES = {"supports_preview_metadata": False, "max_upload_size": 100 * 1024 * 1024}


@dataclass
class StudioConfig:
    """Folders and switches of one studio server (plain paths, no ComfyUI)."""

    web_root: Path
    """The frontend's static folder (``comfyui_frontend_package/static``)."""
    input_dir: Path
    output_dir: Path
    temp_dir: Path
    user_dir: Path
    """Per-user settings and saved workflows live in ``user_dir/default``."""
    extensions: dict[str, Path] = field(default_factory=dict)
    """Web extension folders by pack name, served as ``/extensions/<name>/``."""
    workflows: dict[str, Path] = field(default_factory=dict)
    """Workflow folders by pack name, offered as templates."""
    interrupt: threading.Event = field(default_factory=threading.Event)
    version: str = "0.1.0"
    loopback_only: bool = True
    """Refuse requests whose Host header is not a loopback name (DNS rebinding); off when the
    user chose to listen on another address."""


def frontend_root() -> Path:
    """The static folder of the installed ``comfyui-frontend-package``."""
    try:
        import comfyui_frontend_package
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "gendeg studio needs the ComfyUI frontend: pip install 'comfyui-gendeg[studio]' "
            "(or pip install comfyui-frontend-package aiohttp)"
        ) from exc
    return Path(comfyui_frontend_package.__file__).resolve().parent / "static"


def _inside(root: Path, *parts: str) -> Path | None:
    """``root/parts...`` resolved, or None when it would leave ``root``."""
    root = root.resolve()
    path = root.joinpath(*parts).resolve()
    try:
        path.relative_to(root)
    except ValueError:
        return None
    return path


def _file_info(path: Path, relative_to: Path) -> dict[str, Any]:
    st = path.stat()
    return {
        "path": path.relative_to(relative_to).as_posix(),
        "size": st.st_size,
        "modified": st.st_mtime,
        "created": st.st_ctime,
    }


#: Deepest JSON nesting a request body may have. Workflows (with subgraphs) stay far below it;
#: deeper bodies are refused before any code walks them recursively.
MAX_JSON_DEPTH = 100


class BadRequestBody(ValueError):
    """A request body that is not usable JSON (answered with 400 and this message)."""


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists/objects deeper than ``limit`` levels (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def parse_json_body(raw: bytes, *, limit: int = MAX_JSON_DEPTH) -> Any:
    """The JSON value of a request body; :class:`BadRequestBody` (one line saying what is wrong) otherwise."""
    if not raw.strip():
        raise BadRequestBody("the request body is empty; send JSON")
    try:
        value = json.loads(raw)
    except RecursionError:
        raise BadRequestBody(f"the JSON body is nested too deeply (the limit is {limit} levels)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestBody(f"the body is not valid JSON ({exc})") from None
    if json_depth_exceeds(value, limit):
        raise BadRequestBody(f"the JSON body is nested too deeply (the limit is {limit} levels)")
    return value


async def _json_body(request: web.Request) -> Any:
    return parse_json_body(await request.read())


async def _json_object(request: web.Request) -> dict[str, Any]:
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise BadRequestBody(f"expected a JSON object, got {type(body).__name__}")
    return body


class Studio:
    """The aiohttp application plus the queue that runs prompts."""

    def __init__(self, backend: Backend, config: StudioConfig) -> None:
        self.backend = backend
        self.config = config
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._messages: asyncio.Queue | None = None
        self.queue = PromptQueue(backend, self._emit, config.interrupt)
        mimetypes.add_type("application/javascript", ".js")
        mimetypes.add_type("application/javascript", ".mjs")
        mimetypes.add_type("image/webp", ".webp")
        self.app = web.Application(
            client_max_size=SERVER_FEATURES["max_upload_size"], middlewares=[self._same_origin, self._bad_request, self._no_cache]
        )
        self.app.on_startup.append(self._startup)
        self.app.on_shutdown.append(self._shutdown)
        self._add_routes()

    # --- plumbing ------------------------------------------------------------------

    @web.middleware
    async def _same_origin(self, request: web.Request, handler):  # noqa: ANN001
        """Only pages served by this studio may drive it.

        A web page open in the same browser can send requests to 127.0.0.1 (to queue graphs or
        write files): browsers then send an ``Origin`` that differs from ``Host``, which is
        refused, as ComfyUI does. With ``loopback_only`` the ``Host`` itself must be a loopback
        name, which stops DNS-rebinding pages.
        """
        host = request.headers.get("Host", "")
        if self.config.loopback_only and host and not _is_loopback_host(urlsplit("//" + host).hostname):
            log.warning("[GenDeg studio] refused a request for host %r (not a loopback address)", host)
            return web.Response(status=403, text="this studio only answers on a loopback address")
        origin = request.headers.get("Origin")
        if origin and host:
            # "null" comes from sandboxed iframes and data: pages: never this studio's own page
            if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
                log.warning("[GenDeg studio] refused a cross-origin request from %s", origin)
                return web.Response(status=403, text="cross-origin requests are refused")
        return await handler(request)

    @web.middleware
    async def _bad_request(self, request: web.Request, handler):  # noqa: ANN001
        """A malformed query or body (``number=x``, ``limit=abc``, not JSON) is the client's error: 400, not 500."""
        try:
            return await handler(request)
        except (ValueError, TypeError) as exc:
            log.warning("[GenDeg studio] bad request %s %s: %s", request.method, request.path, exc)
            return web.Response(status=400, text=f"bad request: {exc}")
        except RecursionError:
            log.warning("[GenDeg studio] bad request %s %s: nested too deeply", request.method, request.path)
            return web.Response(status=400, text="bad request: the request is nested too deeply")

    @web.middleware
    async def _no_cache(self, request: web.Request, handler):  # noqa: ANN001
        response = await handler(request)
        path = request.path
        if path == "/" or path.endswith(".html") or path.endswith(".js") and path.startswith("/extensions/"):
            response.headers.setdefault("Cache-Control", "no-cache")
        return response

    async def _startup(self, app: web.Application) -> None:
        self.loop = asyncio.get_running_loop()
        self._messages = asyncio.Queue()
        app[_PUBLISHER] = asyncio.create_task(self._publish())

    async def _shutdown(self, app: web.Application) -> None:
        for ws in list(self.sockets.values()):
            await ws.close()
        task = app.get(_PUBLISHER)
        if task is not None:
            task.cancel()
        self.queue.stop()

    def _emit(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        """Thread-safe: queue a websocket message (sid None → every client)."""
        if self.loop is None or self._messages is None or self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self._messages.put_nowait, (event, data, sid))

    async def _publish(self) -> None:
        assert self._messages is not None
        while True:
            event, data, sid = await self._messages.get()
            message = {"type": event, "data": data}
            targets = (
                list(self.sockets.values())
                if sid is None
                else [self.sockets[sid]]
                if sid in self.sockets
                else []
            )
            if sid is not None and not targets:  # the client that queued it has gone: tell everybody
                targets = list(self.sockets.values())
            for ws in targets:
                try:
                    await ws.send_json(message)
                except Exception as exc:  # noqa: BLE001 - a closed socket must not stop the loop
                    log.debug("websocket send failed: %s", exc)

    def object_info(self) -> dict[str, Any]:
        """Rebuilt on every request, like ComfyUI (LoadImage's list follows the input folder)."""
        return self.backend.object_info()

    def _user_root(self) -> Path:
        root = self.config.user_dir / DEFAULT_USER
        for sub in ("workflows", "subgraphs"):  # the editor lists these at start-up
            (root / sub).mkdir(parents=True, exist_ok=True)
        return root

    def _settings_path(self) -> Path:
        return self._user_root() / "comfy.settings.json"

    def _read_settings(self) -> dict[str, Any]:
        path = self._settings_path()
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                log.error("the studio's settings file is corrupt: %s", path)
        return {}

    def _write_settings(self, settings: dict[str, Any]) -> None:
        atomic_write_bytes(self._settings_path(), json.dumps(settings, indent=2).encode("utf-8"))

    def _dir_by_type(self, kind: str | None) -> Path | None:
        return {
            "input": self.config.input_dir,
            "output": self.config.output_dir,
            "temp": self.config.temp_dir,
        }.get(kind or "input")

    # --- routes --------------------------------------------------------------------

    def _add_routes(self) -> None:
        r = web.RouteTableDef()
        self.routes = r

        @r.get("/ws")
        async def websocket(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse(heartbeat=30)
            await ws.prepare(request)
            sid = request.query.get("clientId") or uuid.uuid4().hex
            self.sockets[sid] = ws
            try:
                await ws.send_json(
                    {"type": "status", "data": {"status": self.queue.queue_info(), "sid": sid}}
                )
                if self.queue.client_id == sid and self.queue.last_node is not None:
                    await ws.send_json({"type": "executing", "data": {"node": self.queue.last_node}})
                first = True
                async for msg in ws:
                    if msg.type == WSMsgType.TEXT:
                        try:
                            data = parse_json_body(msg.data.encode("utf-8"))
                        except BadRequestBody:
                            continue
                        if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                            await ws.send_json({"type": "feature_flags", "data": SERVER_FEATURES})
                        first = False
            finally:
                if self.sockets.get(sid) is ws:
                    self.sockets.pop(sid, None)
            return ws

        @r.get("/system_stats")
        async def system_stats(request: web.Request) -> web.Response:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
            ram_total, ram_free = _ram()
            vram_total = vram_free = ram_total if device == "cpu" else 0
            if device == "cuda":
                vram_free, vram_total = torch.cuda.mem_get_info()
            return web.json_response(
                {
                    "system": {
                        "os": os.name,
                        "ram_total": ram_total,
                        "ram_free": ram_free,
                        "comfyui_version": self.config.version,
                        "required_frontend_version": "",
                        "installed_templates_version": "",
                        "required_templates_version": "",
                        "python_version": sys.version,
                        "pytorch_version": torch.__version__,
                        "embedded_python": False,
                        "argv": sys.argv,
                        "gendeg_studio": True,
                    },
                    "devices": [
                        {
                            "name": torch.cuda.get_device_name()
                            if device == "cuda"
                            else f"cpu ({platform.machine()})",
                            "type": device,
                            "index": 0 if device == "cuda" else None,
                            "vram_total": vram_total,
                            "vram_free": vram_free,
                            "torch_vram_total": 0,
                            "torch_vram_free": 0,
                        }
                    ],
                }
            )

        @r.get("/features")
        async def features(request: web.Request) -> web.Response:
            return web.json_response(SERVER_FEATURES)

        @r.get("/object_info")
        async def object_info(request: web.Request) -> web.Response:
            return web.json_response(self.object_info())

        @r.get("/object_info/{node_class}")
        async def object_info_node(request: web.Request) -> web.Response:
            name = request.match_info["node_class"]
            info = self.object_info()
            return web.json_response({name: info[name]} if name in info else {})

        @r.get("/embeddings")
        async def embeddings(request: web.Request) -> web.Response:
            return web.json_response([])

        @r.get("/models")
        async def models(request: web.Request) -> web.Response:
            return web.json_response([])

        @r.get("/models/{folder}")
        async def models_folder(request: web.Request) -> web.Response:
            return web.Response(status=404)

        @r.get("/extensions")
        async def extensions(request: web.Request) -> web.Response:
            out = []
            core = self.config.web_root / "extensions"
            if core.is_dir():
                out += [
                    "/" + p.relative_to(self.config.web_root).as_posix() for p in sorted(core.rglob("*.js"))
                ]
            for name, folder in self.config.extensions.items():
                out += [
                    f"/extensions/{name}/{p.relative_to(folder).as_posix()}"
                    for p in sorted(folder.rglob("*.js"))
                ]
            return web.json_response(out)

        @r.get("/i18n")
        async def i18n(request: web.Request) -> web.Response:
            return web.json_response({})

        @r.get("/node_replacements")
        async def node_replacements(request: web.Request) -> web.Response:
            return web.json_response({})

        @r.get("/experiment/models")
        async def experiment_models(request: web.Request) -> web.Response:
            return web.json_response([])

        @r.get("/global_subgraphs")
        async def global_subgraphs(request: web.Request) -> web.Response:
            return web.json_response({})

        # settings and users (single user, like ComfyUI without --multi-user)
        @r.get("/users")
        async def users(request: web.Request) -> web.Response:
            return web.json_response({"storage": "server", "migrated": True})

        @r.get("/settings")
        async def get_settings(request: web.Request) -> web.Response:
            return web.json_response(self._read_settings())

        @r.get("/settings/{id}")
        async def get_setting(request: web.Request) -> web.Response:
            return web.json_response(self._read_settings().get(request.match_info["id"]))

        @r.post("/settings")
        async def post_settings(request: web.Request) -> web.Response:
            new = await _json_body(request)
            if not isinstance(new, dict):
                return web.Response(status=400, text="settings must be a JSON object")
            self._write_settings({**self._read_settings(), **new})
            return web.Response(status=200)

        @r.post("/settings/{id}")
        async def post_setting(request: web.Request) -> web.Response:
            settings = self._read_settings()
            settings[request.match_info["id"]] = await _json_body(request)
            self._write_settings(settings)
            return web.Response(status=200)

        # userdata: saved workflows and other per-user files
        def user_path(name: str | None) -> Path | web.Response:
            if not name:
                return web.Response(status=400, text="no file given")
            name = unquote(name)
            if name.startswith(("/", "\\")) or "\x00" in name:
                return web.Response(status=403, text="path outside the user folder")
            path = _inside(self._user_root(), name)
            if path is None or path == self._user_root().resolve():
                return web.Response(status=403, text="path outside the user folder")
            return path

        @r.get("/userdata")
        async def list_userdata(request: web.Request) -> web.Response:
            directory = request.query.get("dir", "")
            if not directory:
                return web.Response(status=400, text="Directory not provided")
            path = user_path(directory)
            if isinstance(path, web.Response):
                return path
            if not path.is_dir():
                return web.Response(status=404, text="Directory not found")
            recurse = request.query.get("recurse", "").lower() == "true"
            full_info = request.query.get("full_info", "").lower() == "true"
            split = request.query.get("split", "").lower() == "true"
            files = sorted(p for p in (path.rglob("*") if recurse else path.glob("*")) if p.is_file())
            out: list[Any] = []
            for p in files:
                rel = p.relative_to(path).as_posix()
                if full_info:
                    out.append(_file_info(p, path))
                elif split:
                    out.append([rel, *rel.split("/")])
                else:
                    out.append(rel)
            return web.json_response(out)

        @r.get("/userdata/{file}")
        async def get_userdata(request: web.Request) -> web.StreamResponse:
            path = user_path(request.match_info["file"])
            if isinstance(path, web.Response):
                return path
            if not path.is_file():
                if path.name == "user.css":  # the page always asks for it: an empty sheet, not an error
                    return web.Response(text="", content_type="text/css")
                return web.Response(status=404)
            return web.FileResponse(path)

        @r.post("/userdata/{file}")
        async def post_userdata(request: web.Request) -> web.Response:
            path = user_path(request.match_info["file"])
            if isinstance(path, web.Response):
                return path
            overwrite = request.query.get("overwrite", "true") != "false"
            full_info = request.query.get("full_info", "false").lower() == "true"
            if not overwrite and path.exists():
                return web.Response(status=409, text="File already exists")
            body = await request.read()
            try:
                atomic_write_bytes(path, body)
            except OSError as exc:
                return web.Response(status=400, text=f"could not save {path.name}: {exc}")
            root = self._user_root().resolve()
            return web.json_response(
                _file_info(path, root) if full_info else path.relative_to(root).as_posix()
            )

        @r.delete("/userdata/{file}")
        async def delete_userdata(request: web.Request) -> web.Response:
            path = user_path(request.match_info["file"])
            if isinstance(path, web.Response):
                return path
            if not path.is_file():
                return web.Response(status=404)
            path.unlink()
            return web.Response(status=204)

        @r.post("/userdata/{file}/move/{dest}")
        async def move_userdata(request: web.Request) -> web.Response:
            source = user_path(request.match_info["file"])
            if isinstance(source, web.Response):
                return source
            dest = user_path(request.match_info["dest"])
            if isinstance(dest, web.Response):
                return dest
            if not source.is_file():
                return web.Response(status=404)
            overwrite = request.query.get("overwrite", "true") != "false"
            full_info = request.query.get("full_info", "false").lower() == "true"
            if not overwrite and dest.exists():
                return web.Response(status=409, text="File already exists")
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, dest)
            root = self._user_root().resolve()
            return web.json_response(
                _file_info(dest, root) if full_info else dest.relative_to(root).as_posix()
            )

        # running
        @r.get("/prompt")
        async def get_prompt(request: web.Request) -> web.Response:
            return web.json_response(self.queue.queue_info())

        @r.post("/prompt")
        async def post_prompt(request: web.Request) -> web.Response:
            try:
                body = await _json_body(request)
            except BadRequestBody as exc:
                if "nested too deeply" not in str(exc):
                    body = None  # not JSON at all: ComfyUI's "no prompt"
                else:
                    error = {"type": "invalid_prompt", "message": f"Invalid prompt: {exc}", "details": str(exc),
                             "extra_info": {}}
                    log.warning("[GenDeg studio] refused a prompt: %s", exc)
                    return web.json_response({"error": error, "node_errors": {}}, status=400)
            if not isinstance(body, dict) or not isinstance(body.get("prompt"), dict):
                error = {
                    "type": "no_prompt",
                    "message": "No prompt provided",
                    "details": "No prompt provided",
                    "extra_info": {},
                }
                return web.json_response({"error": error, "node_errors": {}}, status=400)
            prompt = body["prompt"]
            prompt_id = str(body.get("prompt_id") or uuid.uuid4())
            number = (
                float(body["number"]) if "number" in body else self.queue.next_number(bool(body.get("front")))
            )
            error, node_errors, outputs = await asyncio.get_running_loop().run_in_executor(
                None, self.backend.validate, prompt
            )
            if error is not None:
                log.warning("[GenDeg studio] invalid prompt: %s", error.get("message"))
                return web.json_response({"error": error, "node_errors": node_errors}, status=400)
            extra_data = dict(body.get("extra_data") or {})
            if body.get("client_id"):
                extra_data["client_id"] = body["client_id"]
            self.queue.put(number, prompt_id, prompt, extra_data, outputs)
            return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": {}})

        @r.get("/queue")
        async def get_queue(request: web.Request) -> web.Response:
            running, pending = self.queue.snapshot()
            return web.json_response({"queue_running": running, "queue_pending": pending})

        @r.post("/queue")
        async def post_queue(request: web.Request) -> web.Response:
            body = await _json_object(request)
            if body.get("clear"):
                self.queue.clear()
            if body.get("delete"):
                self.queue.delete([str(x) for x in body["delete"]])
            return web.Response(status=200)

        @r.post("/interrupt")
        async def interrupt(request: web.Request) -> web.Response:
            try:
                body = await _json_body(request)
            except BadRequestBody:  # an empty (or odd) body interrupts whatever runs, as in ComfyUI
                body = {}
            target = body.get("prompt_id") if isinstance(body, dict) else None
            running = self.queue.running_id()
            if running is not None and (not target or target == running):
                log.info("[GenDeg studio] interrupting %s", running)
                self.config.interrupt.set()
            return web.Response(status=200)

        @r.post("/free")
        async def free(request: web.Request) -> web.Response:
            return web.Response(status=200)

        @r.get("/history")
        async def get_history(request: web.Request) -> web.Response:
            max_items = request.query.get("max_items")
            offset = request.query.get("offset")
            return web.json_response(
                self.queue.get_history(
                    max_items=int(max_items) if max_items else None, offset=int(offset) if offset else -1
                )
            )

        @r.get("/history/{prompt_id}")
        async def get_history_one(request: web.Request) -> web.Response:
            return web.json_response(self.queue.get_history(prompt_id=request.match_info["prompt_id"]))

        @r.post("/history")
        async def post_history(request: web.Request) -> web.Response:
            body = await _json_object(request)
            if body.get("clear"):
                self.queue.delete_history()
            if body.get("delete"):
                self.queue.delete_history([str(x) for x in body["delete"]])
            return web.Response(status=200)

        # jobs: the queue/history API of newer frontends
        @r.get("/jobs")
        async def jobs(request: web.Request) -> web.Response:
            wanted = set(filter(None, request.query.get("status", "").split(","))) or {
                "pending",
                "in_progress",
                "completed",
                "failed",
                "cancelled",
            }
            limit = int(request.query.get("limit", "200"))
            offset = int(request.query.get("offset", "0"))
            items = [job for job in self._jobs() if job["status"] in wanted]
            page = items[offset : offset + limit]
            return web.json_response(
                {
                    "jobs": page,
                    "pagination": {
                        "offset": offset,
                        "limit": limit,
                        "total": len(items),
                        "has_more": offset + limit < len(items),
                    },
                }
            )

        @r.get("/jobs/{job_id}")
        async def job(request: web.Request) -> web.Response:
            job_id = request.match_info["job_id"]
            for job in self._jobs():
                if job["id"] == job_id:
                    entry = self.queue.get_history(prompt_id=job_id).get(job_id)
                    detail = dict(job)
                    if entry is not None:
                        item = entry["prompt"]
                        detail["workflow"] = {"prompt": item[2], "extra_data": item[3]}
                        detail["outputs"] = entry["outputs"]
                        detail["execution_status"] = entry["status"]
                        detail["execution_meta"] = entry["meta"]
                    return web.json_response(detail)
            return web.Response(status=404, text="job not found")

        @r.get("/jobs/{job_id}/assets")
        async def job_assets(request: web.Request) -> web.Response:
            return web.json_response(
                {"job_id": request.match_info["job_id"], "assets": [], "pagination": {"has_more": False}}
            )

        @r.post("/jobs/{job_id}/cancel")
        async def job_cancel(request: web.Request) -> web.Response:
            job_id = request.match_info["job_id"]
            if self.queue.running_id() == job_id:
                self.config.interrupt.set()
            else:
                self.queue.delete([job_id])
            return web.Response(status=200)

        # files
        @r.get("/view")
        async def view(request: web.Request) -> web.StreamResponse:
            filename = request.query.get("filename", "")
            if not filename:
                return web.Response(status=400, text="no filename")
            kind = request.query.get("type", "output")
            if filename.endswith("]") and " [" in filename:  # ComfyUI's "name.png [output]" form
                filename, _, kind = filename[:-1].rpartition(" [")
            if filename.startswith(("/", "\\")) or ".." in filename:
                return web.Response(status=400, text="bad filename")
            root = self._dir_by_type(kind)
            if root is None:
                return web.Response(status=400, text=f"unknown type {kind!r}")
            subfolder = request.query.get("subfolder", "")
            folder = _inside(root, subfolder) if subfolder else root.resolve()
            if folder is None:
                return web.Response(status=403, text="subfolder outside the allowed folder")
            path = folder / os.path.basename(filename)
            if not path.is_file():
                return web.Response(status=404)
            real = path.resolve()
            try:  # a symbolic link in the folder may point anywhere: serve only what lies inside
                real.relative_to(root.resolve())
            except ValueError:
                log.warning("[GenDeg studio] refused %s: it links outside %s", path, root)
                return web.Response(status=403, text="the file links outside the allowed folder")
            preview = request.query.get("preview")
            channel = request.query.get("channel", "")
            if (preview or channel in ("rgb", "a")) and path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
                return _converted_image(real, preview, channel, path.name)
            ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if ctype in {
                "text/html",
                "application/xhtml+xml",
                "text/javascript",
                "application/javascript",
                "text/css",
            }:
                ctype = "application/octet-stream"
            return web.FileResponse(
                real, headers={"Content-Disposition": f'filename="{path.name}"', "Content-Type": ctype}
            )

        @r.post("/upload/image")
        async def upload_image(request: web.Request) -> web.Response:
            post = await request.post()
            image = post.get("image")
            if image is None or not getattr(image, "file", None) or not image.filename:
                return web.Response(status=400, text="no image")
            root = self._dir_by_type(str(post.get("type") or "input"))
            if root is None:
                return web.Response(status=400, text="unknown type")
            subfolder = str(post.get("subfolder") or "")
            name = os.path.basename(image.filename)
            folder = _inside(root, subfolder) if subfolder else root.resolve()
            decoded = unquote(image.filename)
            if folder is None or not name or ".." in decoded or "/" in decoded or "\\" in decoded:
                return web.Response(status=400, text="path outside the allowed folder")
            folder.mkdir(parents=True, exist_ok=True)
            data = image.file.read()
            path = folder / name
            overwrite = str(post.get("overwrite", "")).lower() in ("true", "1")
            if not overwrite:
                stem, suffix = os.path.splitext(name)
                i = 1
                while path.exists() and path.read_bytes() != data:
                    path = folder / f"{stem} ({i}){suffix}"
                    i += 1
            if not path.exists() or overwrite:
                atomic_write_bytes(path, data)
            return web.json_response(
                {"name": path.name, "subfolder": subfolder, "type": str(post.get("type") or "input")}
            )

        @r.get("/workflow_templates")
        async def workflow_templates(request: web.Request) -> web.Response:
            return web.json_response(
                {
                    name: sorted(p.stem for p in folder.glob("*.json"))
                    for name, folder in self.config.workflows.items()
                    if folder.is_dir() and any(folder.glob("*.json"))
                }
            )

        @r.get("/user.css")
        async def user_css(request: web.Request) -> web.Response:
            return web.Response(text="", content_type="text/css")

        @r.get("/")
        async def index(request: web.Request) -> web.StreamResponse:
            return web.FileResponse(
                self.config.web_root / "index.html", headers={"Cache-Control": "no-cache"}
            )

        api = web.RouteTableDef()
        for route in r:
            if isinstance(route, web.RouteDef) and route.path != "/":
                api.route(route.method, "/api" + route.path)(route.handler)
        self.app.add_routes(api)
        self.app.add_routes(r)
        for name, folder in self.config.workflows.items():
            if folder.is_dir():
                self.app.add_routes([web.static(f"/api/workflow_templates/{name}", folder)])
        # core templates come from the comfyui-workflow-templates package, which the studio does
        # not ship: an empty index instead of a 404 (the pack's own are in workflow_templates)
        async def no_templates(request: web.Request) -> web.Response:
            return web.json_response([] if request.path.endswith("index.json") else {})

        self.app.router.add_get("/templates/index.json", no_templates)
        self.app.router.add_get("/templates/index_logo.json", no_templates)
        for name, folder in self.config.extensions.items():
            if folder.is_dir():
                self.app.add_routes([web.static(f"/extensions/{name}", folder)])
        self.app.add_routes([web.static("/", self.config.web_root)])

    def _jobs(self) -> list[dict[str, Any]]:
        """Every job, newest first: running, pending, then history."""
        running, pending = self.queue.snapshot()
        out: list[dict[str, Any]] = []

        def base(item: list[Any], status: str) -> dict[str, Any]:
            created = self.queue.created(item[1]) or time.time()
            return {
                "id": item[1],
                "status": status,
                "create_time": int(created * 1000),
                "execution_start_time": None,
                "execution_end_time": None,
                "preview_output": None,
                "outputs_count": 0,
                "previewable_outputs_count": 0,
                "execution_error": None,
                "workflow_id": None,
                "priority": item[0],
            }

        for item in running:
            job = base(item, "in_progress")
            start = self.queue.started()
            job["execution_start_time"] = int(start * 1000) if start else None
            out.append(job)
        out += [base(item, "pending") for item in pending]
        for entry in reversed(list(self.queue.get_history().values())):
            status = entry["status"]
            messages = dict((k, v) for k, v in status.get("messages", []))
            state = (
                "completed"
                if status.get("status_str") == "success"
                else "cancelled"
                if "execution_interrupted" in messages
                else "failed"
            )
            job = base(entry["prompt"], state)
            if "execution_start" in messages:
                job["execution_start_time"] = messages["execution_start"].get("timestamp")
            ends = [m.get("timestamp") for k, m in status.get("messages", []) if k != "execution_start"]
            job["execution_end_time"] = ends[-1] if ends else None
            previews = []
            count = 0
            for node, ui in entry["outputs"].items():
                for key in ("images", "video", "audio"):
                    for ref in ui.get(key, []) or []:
                        count += 1
                        if isinstance(ref, dict) and "filename" in ref:
                            previews.append({**ref, "nodeId": node, "mediaType": key})
            job["outputs_count"] = count
            job["previewable_outputs_count"] = len(previews)
            job["preview_output"] = previews[-1] if previews else None
            if "execution_error" in messages:
                err = messages["execution_error"]
                job["execution_error"] = {
                    k: err.get(k)
                    for k in (
                        "prompt_id",
                        "timestamp",
                        "node_id",
                        "node_type",
                        "executed",
                        "exception_message",
                        "exception_type",
                        "traceback",
                    )
                }
                job["execution_error"]["node_id"] = str(job["execution_error"]["node_id"] or "")
                job["execution_error"]["node_type"] = job["execution_error"]["node_type"] or ""
            out.append(job)
        return out


def _converted_image(path: Path, preview: str | None, channel: str, name: str | None = None) -> web.Response:
    """``/view`` with ``preview=webp|jpeg[;quality]`` or ``channel=rgb|a``, as ComfyUI answers them."""
    import io

    from PIL import Image

    with Image.open(path) as img:
        img.load()
        if channel == "a":
            alpha = img.getchannel("A") if "A" in img.getbands() else Image.new("L", img.size, 255)
            out = Image.new("RGBA", img.size)
            out.putalpha(alpha)
            img = out
        elif channel == "rgb":
            img = img.convert("RGB")
        fmt, quality = "png", 90
        if preview:
            parts = preview.split(";")
            fmt = parts[0] if parts[0] in ("webp", "jpeg") and channel != "a" else "webp"
            if parts[-1].isdigit():
                quality = int(parts[-1])
            if fmt == "jpeg":
                img = img.convert("RGB")
        buf = io.BytesIO()
        img.save(buf, format=fmt.upper(), quality=quality)
    return web.Response(
        body=buf.getvalue(), content_type=f"image/{fmt}", headers={"Content-Disposition": f'filename="{name or path.name}"'}
    )


def _is_loopback_host(name: str | None) -> bool:
    if not name:
        return False
    if name.lower() == "localhost" or name.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def _ram() -> tuple[int, int]:
    try:
        import psutil  # type: ignore[import-untyped]

        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except ImportError:
        try:
            pages = os.sysconf("SC_PHYS_PAGES")
            size = os.sysconf("SC_PAGE_SIZE")
            avail = os.sysconf("SC_AVPHYS_PAGES")
            return int(pages * size), int(avail * size)
        except (ValueError, OSError, AttributeError):
            return 0, 0


def run_studio(
    studio: Studio, host: str = "127.0.0.1", port: int = 8188, *, ready: threading.Event | None = None
) -> None:
    """Serve until interrupted (Ctrl-C). ``ready`` is set once the port is bound."""

    async def main() -> None:
        runner = web.AppRunner(studio.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        shown = f"[{host}]" if ":" in host else host
        log.info("GenDeg studio: open http://%s:%d in a browser (Ctrl-C stops it)", shown, port)
        if ready is not None:
            ready.set()
        try:
            while True:
                await asyncio.sleep(3600)
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass

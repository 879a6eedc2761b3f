"""``gendeg studio``: the ComfyUI editor in a browser, without ComfyUI.

Serves the frontend of ``comfyui-frontend-package`` on loopback and runs graphs with the
same executor as ``gendeg run`` (this pack's nodes plus stand-ins for LoadImage,
SaveImage and PreviewImage). Needs the ``studio`` extra: ``pip install 'comfyui-gendeg[studio]'``.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import threading
from pathlib import Path

from ..core.errors import InputError

log = logging.getLogger("gendeg.studio")

PACK_ROOT = Path(__file__).resolve().parent.parent
#: The name the pack's js is served under (``/extensions/<name>/``), as a ComfyUI folder would be.
PACK_WEB_NAME = "ComfyUI-GenDeg"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_studio(
    *,
    input_dir: Path | None = None,
    output_dir: Path | None = None,
    temp_dir: Path | None = None,
    user_dir: Path | None = None,
    models_dir: Path | None = None,
    device: str | None = None,
    frontend_root: Path | None = None,
    loopback_only: bool = True,
):
    """A :class:`..core.studio.server.Studio` wired to this pack (host settings updated in place)."""
    try:
        from ..core.studio.server import Studio, StudioConfig
        from ..core.studio.server import frontend_root as default_frontend
    except ImportError as exc:
        raise InputError(
            f"gendeg studio needs aiohttp and the ComfyUI frontend ({exc}); "
            "install them with: pip install 'comfyui-gendeg[studio]'"
        ) from exc
    from ..core.studio.backend import ExecutorBackend
    from ..nodes import host
    from ..nodes.standins import runner_registry
    from ..nodes.ui import prune_previews
    from .run import apply_host_settings, make_executor

    # the same host settings and executor as `gendeg run`
    apply_host_settings(
        argparse.Namespace(
            input_dir=input_dir, output_dir=output_dir, temp_dir=temp_dir, models_dir=models_dir, device=device
        )
    )
    settings = host.SETTINGS
    settings.keep_models_loaded = True  # like ComfyUI: models stay on the device between queued graphs
    settings.check_models_when_run = True  # like ComfyUI: a missing checkpoint is the loader's run-time error
    for folder in (settings.input_dir, settings.output_dir):
        Path(folder).mkdir(parents=True, exist_ok=True)
    temp = host.temp_dir()  # the default preview folder is made private there (one code path)
    temp.mkdir(parents=True, exist_ok=True)  # a --temp-dir of the user's choosing
    prune_previews(temp)

    try:
        web_root = Path(frontend_root) if frontend_root else default_frontend()
    except RuntimeError as exc:
        raise InputError(str(exc)) from exc
    if not (web_root / "index.html").is_file():
        raise InputError(
            f"{web_root} has no index.html: point --frontend-root at the frontend's static folder"
        )

    classes, names, modules = runner_registry()
    backend = ExecutorBackend(make_executor(), classes, names, modules)
    config = StudioConfig(
        web_root=web_root,
        input_dir=Path(settings.input_dir),
        output_dir=Path(settings.output_dir),
        temp_dir=temp,
        user_dir=Path(user_dir) if user_dir is not None else Path("user"),
        extensions={PACK_WEB_NAME: PACK_ROOT / "js"},
        workflows={PACK_WEB_NAME: PACK_ROOT / "workflows"},
        interrupt=settings.interrupt,
        loopback_only=loopback_only,
    )
    return Studio(backend, config)


def _cmd_studio(args: argparse.Namespace) -> int:
    from ..core.studio.server import run_studio

    if not _is_loopback(args.host):
        log.warning(
            "gendeg studio is listening on %s: anyone who can reach this address can run graphs and read "
            "your input/output folders. Use 127.0.0.1 unless you mean it.",
            args.host,
        )
    studio = build_studio(
        input_dir=args.input_dir,
        output_dir=args.output_dir,
        temp_dir=args.temp_dir,
        user_dir=args.user_dir,
        models_dir=args.models_dir,
        device=args.device,
        frontend_root=args.frontend_root,
        loopback_only=_is_loopback(args.host),
    )
    ready = threading.Event()
    run_studio(studio, args.host, args.port, ready=ready)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "studio",
        help="open the ComfyUI editor in a browser and run this pack's graphs (no ComfyUI needed)",
        description="Serve the ComfyUI frontend (comfyui-frontend-package) on loopback with the endpoints it needs; "
        "graphs run with the same executor as `gendeg run`.",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8188, help="port (default 8188, like ComfyUI)")
    p.add_argument("--input-dir", type=Path, help="folder LoadImage and uploads use (default ./input)")
    p.add_argument("--output-dir", type=Path, help="folder outputs are written to (default ./output)")
    p.add_argument("--temp-dir", type=Path, help="folder for previews (default: the system temp folder)")
    p.add_argument("--user-dir", type=Path, help="settings and saved workflows (default ./user)")
    p.add_argument("--models-dir", type=Path, help="models folder (default $GENDEG_MODELS_DIR or ./models)")
    p.add_argument("--device", help="torch device: cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument(
        "--frontend-root", type=Path, help="serve this frontend build instead of comfyui-frontend-package's"
    )
    p.set_defaults(func=_cmd_studio)

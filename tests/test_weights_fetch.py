"""Weights fetch: HTTPS-style download with resume over a loopback server, hash checks, Hub files."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from comfyui_gendeg.cli import main as cli_main
from comfyui_gendeg.core.errors import HashMismatchError, WeightsError
from comfyui_gendeg.core.weights import download_url, fetch_entry, get_entry, sha256_file, store
from comfyui_gendeg.core.weights import manifest as manifest_mod

PAYLOAD = bytes(range(256)) * 400  # 102400 bytes
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Server:
    """A loopback HTTP server serving PAYLOAD at /w.bin, honouring Range unless told not to.

    ``cut``: ``None`` sends the whole body; ``("close", n)`` announces the full length, sends
    ``n`` bytes and closes; ``("reset", n)`` sends ``n`` bytes, then resets the connection.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.honour_range = True
        self.body = PAYLOAD
        self.cut: tuple[str, int] | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                server.requests.append({"path": self.path, "range": self.headers.get("Range", "")})
                if self.path != "/w.bin":
                    self.send_error(404)
                    return
                body, start = server.body, 0
                rng = self.headers.get("Range")
                if rng and server.honour_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if server.cut is None:
                    self.wfile.write(body[start:])
                    return
                how, n = server.cut
                self.wfile.write(body[start : start + n])
                if how == "reset":
                    time.sleep(0.3)  # let the client read what was sent, then RST (linger 0)
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/w.bin"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    s = _Server()
    yield s
    s.close()


def _manifest(tmp_path, monkeypatch, files, entry_id="tiny-net"):
    path = tmp_path / "manifest.yaml"
    entry = {"id": entry_id, "family": "feedforward", "files": files, "format": "safetensors", "licence": "MIT", "source": "tests"}
    path.write_text(yaml.safe_dump({"entries": [entry]}))
    monkeypatch.setattr(manifest_mod, "MANIFEST_PATH", path)
    return get_entry(entry_id)


def test_download_whole_file_checks_hash_and_leaves_no_part(tmp_path, server):
    dest = tmp_path / "models" / "w.bin"
    digest = download_url(server.url, dest, sha256=PAYLOAD_SHA, size=len(PAYLOAD), progress=False)
    assert digest == PAYLOAD_SHA and dest.read_bytes() == PAYLOAD
    assert not dest.with_name("w.bin.part").exists()
    assert server.requests == [{"path": "/w.bin", "range": ""}]


def test_download_resumes_from_a_partial_file(tmp_path, server, monkeypatch):
    dest = tmp_path / "w.bin"
    part = tmp_path / "w.bin.part"
    part.write_bytes(PAYLOAD[:30000])  # an earlier, interrupted download
    hashed = []
    real = store._hash_file
    monkeypatch.setattr("comfyui_gendeg.core.weights.fetch._hash_file", lambda p: hashed.append(p) or real(p))
    assert download_url(server.url, dest, sha256=PAYLOAD_SHA, size=len(PAYLOAD), progress=False) == PAYLOAD_SHA
    assert server.requests[-1]["range"] == "bytes=30000-"  # only the rest was asked for
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    # the digest computed while checking the download is remembered: verifying costs no re-hash
    assert sha256_file(dest) == PAYLOAD_SHA and len(hashed) == 1


def test_download_restarts_when_the_server_ignores_range(tmp_path, server):
    server.honour_range = False
    dest = tmp_path / "w.bin"
    dest.with_name("w.bin.part").write_bytes(b"stale bytes of something else")
    download_url(server.url, dest, sha256=PAYLOAD_SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_is_checked_without_downloading_again(tmp_path, server):
    dest = tmp_path / "w.bin"
    dest.with_name("w.bin.part").write_bytes(PAYLOAD)
    download_url(server.url, dest, sha256=PAYLOAD_SHA, size=len(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD and server.requests == []


@pytest.mark.parametrize("bad", ["sha", "size"])
def test_mismatch_deletes_the_part_and_says_so(tmp_path, server, bad):
    dest = tmp_path / "w.bin"
    kwargs = {"sha256": "0" * 64} if bad == "sha" else {"size": len(PAYLOAD) - 5}  # the server has more
    with pytest.raises(HashMismatchError, match="deleted"):
        download_url(server.url, dest, progress=False, **kwargs)
    assert not dest.exists() and not dest.with_name("w.bin.part").exists()


def test_http_error_and_bad_scheme(tmp_path, server):
    with pytest.raises(WeightsError, match="HTTP 404"):
        download_url(server.url.replace("w.bin", "nope.bin"), tmp_path / "x", progress=False)
    with pytest.raises(WeightsError, match="only https"):
        download_url("file:///etc/passwd", tmp_path / "x", progress=False)


def test_cli_fetch_into_models_dir_then_skips_present_file(tmp_path, server, monkeypatch, capsys):
    _manifest(tmp_path, monkeypatch, [{"path": "tiny/w.bin", "urls": [server.url], "sha256": PAYLOAD_SHA, "size": len(PAYLOAD)}])
    models = tmp_path / "models"
    assert cli_main(["weights", "fetch", "tiny-net", "--models-dir", str(models), "--quiet"]) == 0
    dest = models / "restore" / "tiny" / "w.bin"
    assert dest.read_bytes() == PAYLOAD
    assert "matches the manifest" in capsys.readouterr().out
    n = len(server.requests)
    assert cli_main(["weights", "fetch", "tiny-net", "--models-dir", str(models), "--quiet"]) == 0
    assert len(server.requests) == n and "already there" in capsys.readouterr().out
    dest.write_bytes(b"corrupted")
    assert cli_main(["weights", "fetch", "tiny-net", "--models-dir", str(models), "--quiet"]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli_main(["weights", "fetch", "tiny-net", "--models-dir", str(models), "--quiet", "--force"]) == 0
    assert dest.read_bytes() == PAYLOAD


def test_mirrors_are_tried_in_order(tmp_path, server, monkeypatch):
    bad = server.url.replace("w.bin", "missing.bin")
    entry = _manifest(tmp_path, monkeypatch, [{"path": "w.bin", "urls": [bad, server.url], "sha256": PAYLOAD_SHA}])
    (path,) = fetch_entry(entry, tmp_path / "f", progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [r["path"] for r in server.requests] == ["/missing.bin", "/w.bin"]


def test_entry_without_links_explains_manual_download(tmp_path, monkeypatch):
    entry = _manifest(tmp_path, monkeypatch, [{"path": "gendeg.ckpt"}])
    with pytest.raises(WeightsError, match=r"get it by hand from tests and put it at .*gendeg\.ckpt"):
        fetch_entry(entry, tmp_path / "f", progress=False)


def _fake_hub(calls, payload=PAYLOAD):
    """A stand-in for huggingface_hub's download function: writes the payload, no network."""

    def fake_download(repo_id, filename, revision=None, local_dir=None, **kw):
        calls.append((repo_id, filename, revision, str(local_dir)))
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(payload)
        (Path(local_dir) / ".cache").mkdir(exist_ok=True)
        return str(target)

    return fake_download


def test_hub_fetch_uses_hf_hub_download_and_checks_hash(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _fake_hub(calls))
    hf = {"repo": "weblzw/daclip-uir-ViT-B-32-irsde", "filename": "daclip_ViT-B-32.pt", "revision": "main"}
    entry = _manifest(tmp_path, monkeypatch, [{"path": "daclip/daclip_ViT-B-32.pt", "hf": hf, "sha256": PAYLOAD_SHA}])
    folder = tmp_path / "models" / "restore"
    (path,) = fetch_entry(entry, folder, progress=False)
    assert path == folder / "daclip" / "daclip_ViT-B-32.pt" and path.read_bytes() == PAYLOAD
    staging = folder / "daclip" / ".hf-staging-daclip_ViT-B-32.pt"
    assert calls == [("weblzw/daclip-uir-ViT-B-32-irsde", "daclip_ViT-B-32.pt", "main", str(staging))]
    assert not staging.exists()


def test_hub_fetch_hash_mismatch_removes_the_download(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _fake_hub([], payload=b"tampered"))
    hf = {"repo": "a/b", "filename": "w.pt"}
    entry = _manifest(tmp_path, monkeypatch, [{"path": "w.pt", "hf": hf, "sha256": PAYLOAD_SHA}])
    folder = tmp_path / "models"
    with pytest.raises(HashMismatchError, match="does not match"):
        fetch_entry(entry, folder, progress=False)
    assert not (folder / "w.pt").exists()
    assert not [p for p in folder.rglob("*") if p.is_file() and p.name.startswith("w.pt")]
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # the test set-up really kept the Hub offline


def test_server_closing_early_keeps_the_part_and_the_next_run_resumes(tmp_path, server):
    server.cut = ("close", 100)  # Content-Length 102400, then 100 bytes and close
    dest, part = tmp_path / "w.bin", tmp_path / "w.bin.part"
    with pytest.raises(WeightsError, match=r"incomplete download \(100 of 102400 bytes\).*run the same command again to resume") as info:
        download_url(server.url, dest, sha256=PAYLOAD_SHA, size=len(PAYLOAD), progress=False)
    assert not isinstance(info.value, HashMismatchError)
    assert part.read_bytes() == PAYLOAD[:100] and not dest.exists()
    # without a size in the manifest, the announced Content-Length tells the download is short
    server.cut = ("close", 50)
    with pytest.raises(WeightsError, match=r"incomplete download \(150 of 102400 bytes\)"):
        download_url(server.url, dest, sha256=PAYLOAD_SHA, progress=False)
    assert part.read_bytes() == PAYLOAD[:150]
    server.cut = None
    assert download_url(server.url, dest, sha256=PAYLOAD_SHA, size=len(PAYLOAD), progress=False) == PAYLOAD_SHA
    assert server.requests[-1]["range"] == "bytes=150-" and dest.read_bytes() == PAYLOAD and not part.exists()


def test_connection_reset_is_a_clear_error_and_keeps_the_part(tmp_path, server, monkeypatch):
    monkeypatch.setattr("comfyui_gendeg.core.weights.fetch.CHUNK", 1000)
    server.cut = ("reset", 5000)
    dest, part = tmp_path / "w.bin", tmp_path / "w.bin.part"
    with pytest.raises(WeightsError, match=r"incomplete download \(5000 of 102400 bytes\).*ConnectionResetError.*resume"):
        download_url(server.url, dest, size=len(PAYLOAD), progress=False)
    assert part.read_bytes() == PAYLOAD[:5000]
    server.cut = None
    download_url(server.url, dest, sha256=PAYLOAD_SHA, size=len(PAYLOAD), progress=False)
    assert server.requests[-1]["range"] == "bytes=5000-" and dest.read_bytes() == PAYLOAD


def test_reset_tries_the_next_mirror_which_resumes(tmp_path, server, monkeypatch):
    monkeypatch.setattr("comfyui_gendeg.core.weights.fetch.CHUNK", 1000)
    other = _Server()  # a second, healthy mirror
    try:
        server.cut = ("reset", 3000)
        entry = _manifest(tmp_path, monkeypatch, [{"path": "w.bin", "urls": [server.url, other.url], "sha256": PAYLOAD_SHA, "size": len(PAYLOAD)}])
        (path,) = fetch_entry(entry, tmp_path / "f", progress=False)
        assert path.read_bytes() == PAYLOAD
        assert len(server.requests) == 1 and other.requests == [{"path": "/w.bin", "range": "bytes=3000-"}]
    finally:
        other.close()


def test_cli_reports_a_reset_in_one_line_and_a_rerun_resumes(tmp_path, server, monkeypatch, capsys):
    monkeypatch.setattr("comfyui_gendeg.core.weights.fetch.CHUNK", 1000)
    _manifest(tmp_path, monkeypatch, [{"path": "w.bin", "urls": [server.url], "sha256": PAYLOAD_SHA, "size": len(PAYLOAD)}])
    models = tmp_path / "models"
    server.cut = ("reset", 2000)
    assert cli_main(["weights", "fetch", "tiny-net", "--models-dir", str(models), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "run the same command again to resume" in err
    server.cut = None
    assert cli_main(["weights", "fetch", "tiny-net", "--models-dir", str(models), "--quiet"]) == 0
    assert server.requests[-1]["range"] == "bytes=2000-" and (models / "restore" / "w.bin").read_bytes() == PAYLOAD


def test_hub_fetches_into_one_folder_keep_each_others_staging(tmp_path, monkeypatch):
    """A second fetch finishing while the first is still downloading must not delete the first's files."""
    import huggingface_hub

    calls = []
    folder = tmp_path / "models"
    entries = {}

    def fake_download(repo_id, filename, revision=None, local_dir=None, **kw):
        calls.append((filename, str(local_dir)))
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(PAYLOAD)
        if filename == "a.pt":  # while a.pt is staged, another fetch of b.pt into the same folder runs
            fetch_entry(entries["b"], folder, progress=False)
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    for name in ("a", "b"):
        entries[name] = _manifest(tmp_path, monkeypatch, [{"path": f"{name}.pt", "hf": {"repo": "x/y", "filename": f"{name}.pt"}, "sha256": PAYLOAD_SHA}], entry_id=f"net-{name}")
    (path,) = fetch_entry(entries["a"], folder, progress=False)
    assert path.read_bytes() == PAYLOAD and (folder / "b.pt").read_bytes() == PAYLOAD
    assert [c[0] for c in calls] == ["a.pt", "b.pt"] and calls[0][1] != calls[1][1]
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".hf-staging")]

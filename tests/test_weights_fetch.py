"""Weights fetch: HTTPS-style download with resume over a loopback server, hash checks, Hub files."""

from __future__ import annotations

import hashlib
import os
import threading
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
    """A loopback HTTP server serving PAYLOAD at /w.bin, honouring Range unless told not to."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.honour_range = True
        self.body = PAYLOAD
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
                self.wfile.write(body[start:])

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
    kwargs = {"sha256": "0" * 64} if bad == "sha" else {"size": len(PAYLOAD) + 5}
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
    def hf_hub_download(repo_id, filename, revision=None, local_dir=None, **kw):
        calls.append((repo_id, filename, revision, str(local_dir)))
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(payload)
        (Path(local_dir) / ".cache").mkdir(exist_ok=True)
        return str(target)

    return hf_hub_download


def test_hub_fetch_uses_hf_hub_download_and_checks_hash(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _fake_hub(calls))
    hf = {"repo": "weblzw/daclip-uir-ViT-B-32-irsde", "filename": "daclip_ViT-B-32.pt", "revision": "main"}
    entry = _manifest(tmp_path, monkeypatch, [{"path": "daclip/daclip_ViT-B-32.pt", "hf": hf, "sha256": PAYLOAD_SHA}])
    folder = tmp_path / "models" / "restore"
    (path,) = fetch_entry(entry, folder, progress=False)
    assert path == folder / "daclip" / "daclip_ViT-B-32.pt" and path.read_bytes() == PAYLOAD
    assert calls == [("weblzw/daclip-uir-ViT-B-32-irsde", "daclip_ViT-B-32.pt", "main", str(folder / "daclip" / ".hf-staging"))]
    assert not (folder / "daclip" / ".hf-staging").exists()


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

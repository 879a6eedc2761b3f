"""Shared test set-up: no network, private caches and model folders, CPU only."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GENDEG_NO_PROGRESS", "1")

_real_connect = socket.socket.connect


def _loopback_only(self, address):  # noqa: ANN001
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1") or host.startswith("/")):
        return _real_connect(self, address)
    if self.family == socket.AF_UNIX:
        return _real_connect(self, address)
    raise OSError(f"tests must not use the network (tried to connect to {address!r})")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny models run fastest single-threaded, and do not fight other jobs for the 2 cores."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)
    yield


@pytest.fixture(autouse=True)
def _private_dirs(tmp_path, monkeypatch):
    """Each test gets its own sha256 cache and models folder, and host settings are reset."""
    monkeypatch.setenv("GENDEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GENDEG_MODELS_DIR", str(tmp_path / "models"))
    from comfyui_gendeg.nodes import host

    saved = host.SETTINGS
    host.SETTINGS = host.Settings(
        device="cpu",
        models_dir=tmp_path / "models",
        input_dir=tmp_path / "input",
        output_dir=tmp_path / "output",
        temp_dir=tmp_path / "temp",
    )
    yield
    host.SETTINGS = saved

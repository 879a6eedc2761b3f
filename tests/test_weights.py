"""Weights: manifest schema, resolve, sha256 cache, verification, safe loading, conversion."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from comfyui_gendeg.cli import main as cli_main
from comfyui_gendeg.core.errors import (
    HashMismatchError,
    MissingWeightError,
    UnsafeCheckpointError,
    UnsafePathError,
    WeightsError,
)
from comfyui_gendeg.core.weights import (
    FAMILIES,
    InertObject,
    convert_to_safetensors,
    load_manifest,
    load_pickle,
    load_state_dict,
    parse_manifest,
    resolve,
    sha256_file,
    store,
    verify_file,
)
from comfyui_gendeg.core.weights import manifest as manifest_mod

# --- helpers ------------------------------------------------------------------------------


def _entry(**over):
    e = {
        "id": "tiny-net",
        "family": "feedforward",
        "description": "a tiny test net",
        "files": [{"path": "tiny/tiny_net.pth", "urls": ["https://example.invalid/tiny_net.pth"], "sha256": None, "size": None}],
        "format": "pytorch-pickle",
        "licence": "MIT",
        "source": "tests",
    }
    e.update(over)
    return e


@pytest.fixture
def manifest_file(tmp_path, monkeypatch):
    """Point the pack at a test manifest; returns a function that (re)writes it."""
    path = tmp_path / "manifest.yaml"

    def write(*entries):
        path.write_text(yaml.safe_dump({"entries": list(entries)}))
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
        return path

    monkeypatch.setattr(manifest_mod, "MANIFEST_PATH", path)
    write(_entry())
    return write


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- manifest --------------------------------------------------------------------------------


def test_shipped_manifest_parses_and_every_entry_is_well_formed():
    raw = yaml.safe_load(manifest_mod.MANIFEST_PATH.read_text())
    entries = load_manifest()
    assert len(entries) == len(raw["entries"]) >= 1
    for entry in entries.values():
        assert entry.family in FAMILIES, entry.id
        assert entry.licence.strip() and entry.source.strip(), entry.id
        assert entry.files, entry.id
        for f in entry.files:
            assert f.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", f.sha256), (entry.id, f.path)
            assert not f.path.startswith("/") and ".." not in f.path.split("/"), (entry.id, f.path)
            assert f.size is None or f.size > 0
            assert all(u.startswith("https://") for u in f.urls), (entry.id, f.urls)
            if not f.downloadable:
                assert entry.notes or entry.source, f"{entry.id}: no download link and no instructions"


@pytest.mark.parametrize(
    "bad, phrase",
    [
        ({"family": "nonsense"}, "unknown family 'nonsense'"),
        ({"licence": ""}, "'licence' must be a non-empty string"),
        ({"files": [{"path": "a.pth", "sha256": "abc"}]}, "not 64 hex digits"),
        ({"files": [{"path": "../a.pth"}]}, "contains '..'"),
        ({"files": [{"path": "/etc/a.pth"}]}, "is absolute"),
        ({"files": [{"path": "a.pth", "urls": ["ftp://x/a.pth"]}]}, "must start with https://"),
        ({"files": [{"path": "a.pth", "hf": {"repo": "x/y"}}]}, "needs both repo and filename"),
        ({"files": [{"path": "a.pth", "size": -3}]}, "positive number of bytes"),
        ({"files": []}, "non-empty list"),
        ({"allow": ["everything"]}, "unknown allow-list"),
        ({"license": "MIT"}, "spelled with a c"),
        ({"id": "has space"}, "id must be"),
    ],
)
def test_manifest_schema_rejects_malformed_entries(bad, phrase):
    with pytest.raises(WeightsError, match=re.escape(phrase)):
        parse_manifest({"entries": [_entry(**bad)]})


def test_manifest_reports_every_problem_and_duplicates():
    with pytest.raises(WeightsError) as info:
        parse_manifest({"entries": [_entry(family="zzz"), _entry(id="b", licence=""), _entry(), _entry()]})
    msg = str(info.value)
    assert "unknown family 'zzz'" in msg and "'licence' must be" in msg and "duplicate id 'tiny-net'" in msg
    missing = {k: v for k, v in _entry().items() if k != "source"}
    with pytest.raises(WeightsError, match="missing source"):
        parse_manifest({"entries": [missing]})


# --- resolve and missing files ------------------------------------------------------------------


def test_resolve_by_id_and_by_file_name(tmp_path, manifest_file):
    folder = tmp_path / "models" / "restore"
    target = folder / "tiny" / "tiny_net.pth"
    target.parent.mkdir(parents=True)
    torch.save({"w": torch.ones(2)}, target)
    assert resolve("tiny-net", [folder]) == target
    assert resolve("tiny/tiny_net.pth", [folder]) == target
    assert resolve("tiny_net.pth", [tmp_path / "elsewhere", folder]) == target  # base name of a manifest file
    other = folder / "mine.safetensors"
    other.write_bytes(b"x")
    assert resolve("mine.safetensors", [folder]) == other
    assert resolve(str(other), []) == other  # absolute paths are taken as they are
    with pytest.raises(UnsafePathError):
        resolve("../../outside.pth", [folder])


def test_missing_file_message_names_file_folder_and_fetch_command(tmp_path, manifest_file):
    folder = tmp_path / "models" / "restore"
    with pytest.raises(MissingWeightError) as info:
        resolve("tiny-net", [folder])
    msg = str(info.value)
    assert "tiny/tiny_net.pth" in msg
    assert str(folder / "tiny") in msg
    assert "gendeg weights fetch tiny-net" in msg
    assert isinstance(info.value, FileNotFoundError)  # callers catching FileNotFoundError still work
    # not downloadable: tell the user where to get it by hand
    manifest_file(_entry(files=[{"path": "g.ckpt"}], source="https://sharepoint.example/gendeg"))
    with pytest.raises(MissingWeightError, match="by hand from https://sharepoint.example/gendeg"):
        resolve("tiny-net", [folder])
    with pytest.raises(MissingWeightError, match="'unknown.pth' not found. It belongs in"):
        resolve("unknown.pth", [folder])


# --- sha256 cache and verification ---------------------------------------------------------------


def test_sha256_is_cached_and_invalidated_on_change(tmp_path, monkeypatch):
    calls = []
    real = store._hash_file
    monkeypatch.setattr(store, "_hash_file", lambda p: calls.append(p) or real(p))
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 1000)
    assert sha256_file(f) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert sha256_file(f) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert len(calls) == 1  # the second call came from the cache
    assert (tmp_path / "cache" / "sha256.json").is_file()
    f.write_bytes(b"b" * 1000)  # same size: the mtime must invalidate
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))
    assert sha256_file(f) == hashlib.sha256(b"b" * 1000).hexdigest()
    assert len(calls) == 2


def test_hash_and_size_mismatch(tmp_path, manifest_file):
    folder = tmp_path / "models" / "restore"
    target = folder / "tiny" / "tiny_net.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the published bytes")
    good = hashlib.sha256(b"not the published bytes").hexdigest()
    assert verify_file(target, good, len(b"not the published bytes")) == good
    with pytest.raises(HashMismatchError, match="does not match"):
        verify_file(target, "0" * 64)
    with pytest.raises(HashMismatchError, match="size 23 bytes, the manifest says 99"):
        verify_file(target, None, 99)
    manifest_file(_entry(files=[{"path": "tiny/tiny_net.pth", "sha256": "f" * 64}]))
    assert resolve("tiny-net", [folder]) == target  # no verification unless asked
    with pytest.raises(HashMismatchError):
        resolve("tiny-net", [folder], verify=True)


def test_cli_verify_reports_ok_mismatch_and_missing(tmp_path, manifest_file, capsys):
    models = tmp_path / "m"
    target = models / "restore" / "tiny" / "tiny_net.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"weights")
    sha = hashlib.sha256(b"weights").hexdigest()
    manifest_file(_entry(files=[{"path": "tiny/tiny_net.pth", "url": "https://example.invalid/t.pth", "sha256": sha}]))
    assert cli_main(["weights", "verify", "tiny-net", "--models-dir", str(models)]) == 0
    assert "ok" in capsys.readouterr().out
    target.write_bytes(b"tampered")
    assert cli_main(["weights", "verify", "--models-dir", str(models)]) == 1
    assert "MISMATCH" in capsys.readouterr().out
    target.unlink()
    assert cli_main(["weights", "verify", "tiny-net", "--models-dir", str(models)]) == 1
    assert f"gendeg weights fetch tiny-net --models-dir {models}" in capsys.readouterr().out
    assert cli_main(["weights", "list", "--json", "--models-dir", str(models)]) == 0
    assert '"id": "tiny-net"' in capsys.readouterr().out


# --- safe loading -----------------------------------------------------------------------------------


def _touch_marker(path):  # what a malicious pickle would run
    Path(path).write_text("pwned")
    return {}


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (_touch_marker, (self.marker,))


class _EvilSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("evil_cls", [_Evil, _EvilSystem])
@pytest.mark.parametrize("zip_format", [True, False])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, evil_cls, zip_format):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.ones(2), "x": evil_cls(str(marker))}, path, _use_new_zipfile_serialization=zip_format)
    for allowed in ((), ("numpy", "lightning")):
        with pytest.raises(UnsafeCheckpointError, match="refused to load") as info:
            load_state_dict(path, allowed)
        assert "allow-list" in str(info.value)
    assert not marker.exists()
    # the file really is malicious: an unsafe load would have run it
    if evil_cls is _Evil:
        torch.load(path, weights_only=False)
        assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_file_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(UnsafeCheckpointError):
        load_pickle(path)
    assert not marker.exists()


def test_daclip_like_pickle_with_numpy_scalars_needs_the_numpy_list(tmp_path):
    path = tmp_path / "daclip_ViT-B-32.pt"
    sd = {"visual.proj": torch.randn(4, 2), "logit_scale": torch.tensor(4.6)}
    torch.save({"epoch": np.int64(30), "best_loss": np.float64(0.25), "hist": np.arange(3), "state_dict": sd}, path)
    with pytest.raises(UnsafeCheckpointError, match="--allow numpy"):
        load_state_dict(path)
    obj = load_pickle(path, ["numpy"])
    assert obj["epoch"] == 30 and obj["best_loss"] == 0.25 and obj["hist"].tolist() == [0, 1, 2]
    loaded = load_state_dict(path, ["numpy"])
    assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in sd)


_PL_MODULE = "pytorch_lightning.callbacks.model_checkpoint"


def _lightning_like_checkpoint(path: Path, marker: Path) -> dict[str, torch.Tensor]:
    """A Lightning-style .ckpt whose callback objects are classes defined here, posing as Lightning's."""

    class ModelCheckpoint:  # stands in for the real callback class
        def __init__(self, monitor):
            self.monitor = monitor
            self.best_model_score = torch.tensor(0.5)

        def __setstate__(self, state):  # would run on a normal unpickle
            marker.write_text("ran")
            self.__dict__.update(state)

    ModelCheckpoint.__module__ = _PL_MODULE
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    fake = types.ModuleType(_PL_MODULE)
    fake.ModelCheckpoint = ModelCheckpoint
    sd = {"model.diffusion_model.w": torch.randn(3, 3), "model_ema.decay": torch.tensor(0.9999)}
    saved = {k: sys.modules.get(k) for k in ("pytorch_lightning", "pytorch_lightning.callbacks", _PL_MODULE)}
    for name in saved:
        sys.modules[name] = fake
    try:
        torch.save(
            {
                "epoch": 7,
                "global_step": 1000,
                "pytorch-lightning_version": "1.4.2",
                "state_dict": sd,
                "callbacks": {ModelCheckpoint: {"best": 0.1}, "cb": ModelCheckpoint("val/loss")},
                "hyper_parameters": {"lr": 1e-4},
            },
            path,
        )
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
    return sd


def test_lightning_like_checkpoint_loads_inert_with_lightning_list(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "gendeg.ckpt"
    sd = _lightning_like_checkpoint(path, marker)
    with pytest.raises(UnsafeCheckpointError, match="ModelCheckpoint.*--allow lightning"):
        load_state_dict(path)
    obj = load_pickle(path, ["lightning"])
    assert obj["epoch"] == 7 and obj["global_step"] == 1000
    cb = obj["callbacks"]["cb"]
    assert isinstance(cb, InertObject) and cb.__gendeg_global__ == f"{_PL_MODULE}.ModelCheckpoint"
    assert cb["__state__"]["monitor"] == "val/loss"  # its data is kept as plain data
    key = next(k for k in obj["callbacks"] if k != "cb")
    assert issubclass(key, InertObject)  # the class used as a key is a placeholder, not the real class
    assert not marker.exists()  # nothing of the foreign class ran
    assert _PL_MODULE not in sys.modules  # and nothing was imported to build them
    loaded = load_state_dict(path, ["lightning"])
    assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in sd)


@pytest.mark.parametrize("kind", ["zip", "legacy", "safetensors", "garbage", "empty"])
def test_truncated_or_corrupt_files_give_weights_error(tmp_path, kind):
    sd = {"w": torch.randn(64, 64)}
    if kind == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "w.safetensors"
        save_file(sd, str(path))
    else:
        path = tmp_path / "w.pth"
        torch.save(sd, path, _use_new_zipfile_serialization=kind != "legacy")
    data = path.read_bytes()
    path.write_bytes({"garbage": b"\x00\x01 this is not a checkpoint", "empty": b""}.get(kind, data[: len(data) // 2]))
    with pytest.raises(WeightsError) as info:
        load_state_dict(path)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert "corrupt" in str(info.value) or "not a readable" in str(info.value)


# --- conversion -------------------------------------------------------------------------------------


def test_convert_round_trip_keeps_original_and_prints_sha(tmp_path, capsys):
    base = torch.arange(24, dtype=torch.float32)
    sd = {
        "a": base,
        "view": base[4:10],  # shares storage with a
        "t": base.view(4, 6).t(),  # non-contiguous view
        "half": torch.randn(3, 3).half(),
        "p": torch.nn.Parameter(torch.randn(2)),
    }
    src = tmp_path / "net.pth"
    torch.save({"state_dict": sd, "epoch": np.int64(3)}, src)
    before = src.read_bytes()
    before_mtime = src.stat().st_mtime_ns
    with pytest.raises(UnsafeCheckpointError):
        convert_to_safetensors(src)
    assert cli_main(["weights", "convert", str(src), "--allow", "numpy"]) == 0
    out = capsys.readouterr().out
    dst = tmp_path / "net.safetensors"
    assert f"sha256 {_sha(dst)}" in out
    assert src.read_bytes() == before and src.stat().st_mtime_ns == before_mtime
    loaded = load_state_dict(dst)
    assert loaded.keys() == sd.keys()
    for k, v in sd.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v.detach()), k
    assert not list(tmp_path.glob(".*.part"))
    with pytest.raises(WeightsError, match="already exists"):
        convert_to_safetensors(src, ["numpy"])
    path2, digest2 = convert_to_safetensors(src, ["numpy"], overwrite=True)
    assert path2 == dst and digest2 == _sha(dst)
    with pytest.raises(WeightsError, match="already a safetensors"):
        convert_to_safetensors(dst)


def test_convert_uses_the_manifest_allow_list(tmp_path, manifest_file, capsys):
    manifest_file(_entry(files=[{"path": "tiny/tiny_net.pth"}], allow=["numpy"]))
    models = tmp_path / "m"
    src = models / "restore" / "tiny" / "tiny_net.pth"
    src.parent.mkdir(parents=True)
    torch.save({"params": {"w": torch.ones(3)}, "iter": np.int64(5)}, src)
    assert cli_main(["weights", "convert", "tiny-net", "--models-dir", str(models)]) == 0
    assert torch.equal(load_state_dict(src.with_suffix(".safetensors"))["w"], torch.ones(3))


def test_safetensors_metadata_round_trips_and_equal_values_give_equal_headers(tmp_path):
    from comfyui_gendeg.core.weights.safe_load import decode_metadata, encode_metadata
    from safetensors import safe_open
    from safetensors.torch import save_file

    values = {"name": "x2 restorer", "config": {"width": 16, "blocks": [1, 2]}, "steps": 3, "ema": True}
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata=encode_metadata(values))
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
    assert header["name"] == "x2 restorer"  # text stays text
    assert decode_metadata(header) == values
    reordered = {"config": {"blocks": [1, 2], "width": 16}}
    assert encode_metadata(reordered)["config"] == encode_metadata(values)["config"]


def test_loaded_safetensors_own_their_memory(tmp_path):
    """Rewriting a weights file on disk (a re-download, a re-conversion) must not change a model
    already loaded from it, and its tensors sit at aligned addresses like any torch allocation."""
    from comfyui_gendeg.core.weights.safe_load import load_safetensors
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file({"small": torch.arange(3.0), "big": torch.ones(100_000)}, str(path))
    loaded = load_safetensors(path)
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # zero the data in place (same inode, same size)
        fh.seek(size - 400_000)
        fh.write(b"\0" * 400_000)
    assert float(loaded["big"].sum()) == 100_000.0
    assert torch.equal(loaded["small"], torch.arange(3.0))
    assert all(t.data_ptr() % 64 == 0 for t in loaded.values())

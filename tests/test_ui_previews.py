"""Previews: what nodes save for the editor, and how old ones are cleared."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
import torch
from comfyui_gendeg.nodes import host, ui


def test_compare_previews_are_saved_in_the_temp_folder_and_downscaled():
    before, after = torch.rand(2, 1500, 900, 3), torch.rand(2, 1500, 900, 3)
    out = ui.compare_ui(before, after)
    refs = out["gendeg_compare"]
    assert len(refs) == 2
    for pair in refs:
        for side in ("before", "after"):
            ref = pair[side]
            assert ref["type"] == "temp" and ref["subfolder"] == ""
            from PIL import Image

            with Image.open(host.temp_dir() / ref["filename"]) as im:
                assert max(im.size) == ui.PREVIEW_MAX_SIDE


def test_prune_removes_only_old_preview_files(tmp_path):
    names = [
        "gendeg_before_0123abcd_00001.png",
        "gendeg_after_0123abcd_00002.png",
        "ComfyUI_temp_ab12c_00001_.png",
    ]
    keep = ["my_photo.png", "gendeg_notes.txt", "gendeg_before_0123abcd_00003.png"]
    for name in names + keep:
        (tmp_path / name).write_bytes(b"x")
    old = time.time() - 7200
    for name in names + keep[:2]:
        os.utime(tmp_path / name, (old, old))
    assert ui.prune_previews(tmp_path) == len(names)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_gendeg_run_prunes_old_previews(tmp_path):
    from comfyui_gendeg.cli import main

    temp = tmp_path / "temp"
    temp.mkdir()
    stale = temp / "gendeg_after_deadbeef_00007.png"
    stale.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200,) * 2)
    wf = tmp_path / "wf.json"
    wf.write_text('{"1": {"class_type": "GenDegSampleImage", "inputs": {"sample": "chelsea.png"}},'
                  ' "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}')
    assert main(["run", str(wf), "--temp-dir", str(temp), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 0
    assert not stale.exists()
    assert any(p.name.endswith("_.png") for p in temp.iterdir())  # this run's preview stays


def test_gendeg_run_saves_no_comparison_previews_nobody_sees(tmp_path):
    """The synthesizer's before/after slider previews are for the editor; `gendeg run` skips them."""
    from comfyui_gendeg.cli import main

    temp = tmp_path / "temp"
    wf = tmp_path / "wf.json"
    wf.write_text('{"1": {"class_type": "GenDegSampleImage", "inputs": {"sample": "chelsea.png"}},'
                  ' "2": {"class_type": "GenDegSynthesize", "inputs": {"image": ["1", 0], "type": "noise",'
                  ' "intensity_mode": "strength", "mu": 0.1, "strength": 0.3, "seed": 1}},'
                  ' "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "n"}}}')
    assert main(["run", str(wf), "--temp-dir", str(temp), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 0
    assert len(list((tmp_path / "out").glob("n_*.png"))) == 1
    assert not temp.exists() or not [p for p in temp.iterdir() if p.name.startswith("gendeg_")]
    # the same node in an editor session (the studio's default settings) still saves them
    from comfyui_gendeg.nodes.synth import GenDegSynthesize

    host.SETTINGS.compare_previews = True
    img = torch.rand(1, 16, 16, 3)
    out = GenDegSynthesize().synthesize(img, "noise", "strength", 0.1, 0.3, 1)
    assert len(out["ui"]["gendeg_compare"]) == 1


@pytest.fixture
def system_temp(tmp_path, monkeypatch):
    """A private stand-in for the system temp folder (never what other processes left in /tmp)."""
    folder = tmp_path / "systemp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _default_temp() -> Path:
    """host.temp_dir() with the default settings (the per-user folder in the system temp folder)."""
    saved = host.SETTINGS
    host.SETTINGS = host.Settings()
    try:
        return host.temp_dir()
    finally:
        host.SETTINGS = saved


def test_default_preview_folder_is_private_to_the_user(system_temp):
    folder = _default_temp()
    assert folder.parent == system_temp and str(os.getuid()) in folder.name
    assert folder.is_dir() and (folder.stat().st_mode & 0o777) == 0o700 and folder.stat().st_uid == os.getuid()


def test_an_existing_open_preview_folder_of_ours_is_tightened(system_temp, caplog):
    folder = system_temp / f"comfyui-gendeg-{os.getuid()}"
    folder.mkdir()
    os.chmod(folder, 0o755)  # as `gendeg studio` used to leave it
    (folder / "gendeg_after_0123abcd_00001.png").write_bytes(b"x")
    assert _default_temp() == folder
    assert (folder.stat().st_mode & 0o777) == 0o700
    assert (folder / "gendeg_after_0123abcd_00001.png").is_file()  # nothing lost
    assert "made it private" in caplog.text


def test_a_preview_folder_that_is_not_ours_is_refused(system_temp, monkeypatch, tmp_path):
    from comfyui_gendeg.core.errors import UnsafePathError

    elsewhere = tmp_path / "planted"
    elsewhere.mkdir()
    link = system_temp / f"comfyui-gendeg-{os.getuid()}"
    link.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="not a plain folder.*--temp-dir"):
        _default_temp()
    link.unlink()
    # a folder owned by someone else (seen from a user with another uid)
    other = os.getuid() + 1
    (system_temp / f"comfyui-gendeg-{other}").mkdir(mode=0o700)
    monkeypatch.setattr(os, "getuid", lambda: other)
    with pytest.raises(UnsafePathError, match="belongs to another user.*--temp-dir"):
        _default_temp()


def test_gendeg_studio_uses_the_same_private_preview_folder(system_temp):
    pytest.importorskip("aiohttp", reason="aiohttp (studio extra) is not installed")
    pytest.importorskip("comfyui_frontend_package", reason="the studio extra is not installed")
    from comfyui_gendeg.commands.studio import build_studio

    folder = system_temp / f"comfyui-gendeg-{os.getuid()}"
    folder.mkdir()
    os.chmod(folder, 0o755)
    saved = host.SETTINGS
    host.SETTINGS = host.Settings(device="cpu")
    try:
        studio = build_studio(input_dir=system_temp / "in", output_dir=system_temp / "out", user_dir=system_temp / "u")
    finally:
        host.SETTINGS = saved
    studio.queue.stop()
    assert studio.config.temp_dir == folder
    assert (folder.stat().st_mode & 0o777) == 0o700


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    from comfyui_gendeg.core.errors import InputError
    from comfyui_gendeg.core.io import load_image
    from PIL import Image

    path = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 63)  # PIL alone would only warn here
    import pytest

    with pytest.raises(InputError, match="pixel limit"):
        load_image(path)

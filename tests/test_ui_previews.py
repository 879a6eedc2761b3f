"""Previews: what nodes save for the editor, and how old ones are cleared."""

from __future__ import annotations

import os
import time

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


def test_default_preview_folder_is_private_to_the_user():
    settings = host.Settings()
    assert str(os.getuid()) in settings.temp_dir.name
    saved = host.SETTINGS
    host.SETTINGS = settings
    try:
        folder = host.temp_dir()
        assert folder.is_dir() and (folder.stat().st_mode & 0o077) == 0 and folder.stat().st_uid == os.getuid()
    finally:
        host.SETTINGS = saved


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

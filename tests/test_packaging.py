"""The installable package must contain every sub-package and the data files the pack reads."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_subpackage_is_listed_for_a_non_editable_install():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {"comfyui_gendeg"}
    for init in ROOT.rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        if rel.parts and rel.parts[0] in ("tests", "bench", "build", ".git", "scripts"):
            continue
        if rel.parts:
            found.add("comfyui_gendeg." + ".".join(rel.parts))
    assert found - listed == set(), f"add these to [tool.setuptools] packages: {sorted(found - listed)}"
    assert listed - found == set(), f"listed but missing on disk: {sorted(listed - found)}"


def test_torch_torchvision_and_frontend_are_never_pinned():
    deps = _pyproject()["project"]["dependencies"]
    for dep in deps:
        name = dep.split(">")[0].split("=")[0].split("<")[0].strip().lower()
        if name in ("torch", "torchvision"):
            assert "==" not in dep and "<" not in dep and "~=" not in dep, dep
    req = (ROOT / "requirements.txt").read_text().lower().splitlines()
    reqs = [r.split("#")[0].strip() for r in req if r.split("#")[0].strip()]
    for r in reqs:
        for forbidden in ("torch", "torchvision", "comfyui-frontend-package", "comfyui_frontend_package"):
            assert not r.startswith(forbidden), f"requirements.txt must not list {forbidden}: {r}"


def test_every_shipped_workflow_has_a_template_thumbnail():
    """The editor's template browser asks for workflows/<name>.jpg (scripts/make_thumbnails.py)."""
    from PIL import Image

    for wf in sorted((ROOT / "workflows").glob("*.json")):
        thumb = wf.with_suffix(".jpg")
        assert thumb.is_file(), f"{thumb.name} missing: run python scripts/make_thumbnails.py"
        with Image.open(thumb) as im:
            assert im.format == "JPEG" and im.size == (256, 256)

"""A missing checkpoint is actionable, inside ComfyUI and outside it.

Inside ComfyUI (stub ``comfy``/``folder_paths`` modules): the ``models/gendeg/<kind>`` folders
exist after the pack loads; loaders list the manifest's files even before they are downloaded,
so ComfyUI's validation (which rejects a combo value not in the list, and then runs the
other branches while dropping this one: "Output will be ignored") passes, also for names the
manifest does not know; running the loader then fails with the pack's message (file, folder,
fetch command), which stops the run visibly. Outside ComfyUI the same check happens at
validation, where `gendeg run` and the studio reject the whole prompt.

Shipped workflows carry the ComfyUI frontend's missing-model metadata (``properties.models``:
name, url, directory, hash) for every loader value with a direct download URL.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from comfy_stub import install_comfy_stub
from comfyui_gendeg.core.errors import MissingWeightError
from comfyui_gendeg.core.graph.executor import Executor
from comfyui_gendeg.core.graph.formats import load_any
from comfyui_gendeg.core.graph.object_info import object_info
from comfyui_gendeg.core.weights import load_manifest
from comfyui_gendeg.core.weights.catalog import direct_url, node_models
from comfyui_gendeg.nodes import gendeg, host, restore, restore_sde
from comfyui_gendeg.nodes.standins import runner_registry

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))


@pytest.fixture
def comfy(monkeypatch, tmp_path):
    return install_comfy_stub(monkeypatch, tmp_path)


def _prompt(name: str) -> dict:
    classes, names, modules = runner_registry()
    prompt, _ = load_any(json.loads((ROOT / "workflows" / name).read_text()), object_info(classes, names, modules))
    return prompt


def _options(cls: type, name: str) -> list[str]:
    spec = cls.INPUT_TYPES()["required"][name]
    return list(spec[0])


def test_model_folders_are_registered_and_created_when_the_pack_loads(comfy):
    import folder_paths  # the stub

    for kind in host.MODEL_KINDS:
        folder = comfy.models_dir / "gendeg" / kind
        assert folder.is_dir(), folder
        assert str(folder) in folder_paths.folder_names_and_paths[f"gendeg_{kind}"][0]


def test_loaders_list_the_manifests_files_before_they_are_downloaded(comfy):
    restorers = _options(restore.GenDegRestorerLoader, "model_name")
    assert {"NAFNet-SIDD-width64.pth", "scunet_color_real_psnr.pth"} <= set(restorers)
    assert "diffloss/256x256_diffusion_uncond.pt" not in restorers  # not a restorer
    nets = _options(restore_sde.GenDegIRSDELoader, "checkpoint")
    controllers = _options(restore_sde.GenDegIRSDELoader, "daclip")
    assert {"daclip/universal-ir.pth", "irsde/rain100h_sde.pth", "irsde/refusion_deblurring.pth"} <= set(nets)
    assert "daclip/daclip_ViT-B-32.pt" in controllers and "daclip/daclip_ViT-B-32.pt" not in nets
    assert controllers[0] == "none"
    assert _options(gendeg.GenDegModelLoader, "ckpt_name") == ["gendeg.ckpt"]
    assert "nafnet_sd.ckpt" in _options(gendeg.GenDegStructureCorrect, "ckpt_name")
    # files on disk are listed too
    (comfy.models_dir / "gendeg" / "restore" / "mine.safetensors").write_bytes(b"x")
    assert "mine.safetensors" in _options(restore.GenDegRestorerLoader, "model_name")


def test_inside_comfyui_validation_passes_and_the_loader_says_what_to_do(comfy):
    prompt = _prompt("gendeg_restore_compare_loop.json")
    classes, _, _ = runner_registry()
    assert Executor(classes).validate(copy.deepcopy(prompt)) == []  # no branch is dropped at validation
    # a name the manifest does not know passes too (ComfyUI would drop the branch otherwise)
    assert restore.GenDegRestorerLoader.VALIDATE_INPUTS(model_name="my_own_net.pth") is True
    restore_dir = comfy.models_dir / "gendeg" / "restore"
    with pytest.raises(MissingWeightError) as info:
        restore.GenDegRestorerLoader().load("scunet_color_real_psnr.pth")
    msg = str(info.value)
    assert f"It belongs in {restore_dir} (as {restore_dir / 'scunet_color_real_psnr.pth'})" in msg
    assert f"gendeg weights fetch scunet-color-real-psnr --models-dir {comfy.models_dir / 'gendeg'}." in msg
    with pytest.raises(MissingWeightError, match=r"'daclip/universal-ir\.pth' not found.*gendeg weights fetch universal-ir"):
        restore_sde.GenDegIRSDELoader().load("daclip/universal-ir.pth", "auto", "daclip/daclip_ViT-B-32.pt")
    with pytest.raises(MissingWeightError, match=r"'gendeg\.ckpt' not found.*get it by hand from .*sharepoint"):
        gendeg.GenDegModelLoader().load("gendeg.ckpt")
    with pytest.raises(MissingWeightError, match=rf"'my_own_net\.pth' not found\. It belongs in {re.escape(str(restore_dir))}\."):
        restore.GenDegRestorerLoader().load("my_own_net.pth")


def test_outside_comfyui_validation_names_every_missing_file(tmp_path):
    prompt = _prompt("gendeg_restore_daclip.json")
    classes, _, _ = runner_registry()
    errors = Executor(classes).validate(copy.deepcopy(prompt))
    assert [(e.class_type, e.input_name, e.kind) for e in errors] == [
        ("GenDegIRSDELoader", "checkpoint", "custom_validation_failed")
    ]
    msg = errors[0].message
    models = tmp_path / "models" / "restore"
    assert f"'daclip/universal-ir.pth' not found. It belongs in {models / 'daclip'}" in msg
    assert "Also: weight file 'daclip/daclip_ViT-B-32.pt' not found" in msg
    assert "gendeg weights fetch universal-ir" in msg and "gendeg weights fetch daclip-vit-b-32" in msg
    # with the files in place it validates
    for name in ("daclip/universal-ir.pth", "daclip/daclip_ViT-B-32.pt"):
        (models / name).parent.mkdir(parents=True, exist_ok=True)
        (models / name).write_bytes(b"x")
    assert Executor(classes).validate(copy.deepcopy(prompt)) == []


def _frontend_schema_problems(record: dict) -> list[str]:
    """The ComfyUI frontend's zModelFile: name, url (a URL), directory required; hash, hash_type optional."""
    problems = [f"{k} missing" for k in ("name", "url", "directory") if not isinstance(record.get(k), str)]
    if not re.match(r"^https://[^\s/]+/\S+$", str(record.get("url", ""))):
        problems.append(f"url {record.get('url')!r} is not an https URL")
    if set(record) - {"name", "url", "directory", "hash", "hash_type"}:
        problems.append(f"unknown keys {set(record) - {'name', 'url', 'directory', 'hash', 'hash_type'}}")
    if "hash" in record and not (record.get("hash_type") == "sha256" and re.fullmatch(r"[0-9a-f]{64}", record["hash"])):
        problems.append("hash must be a sha256 with hash_type sha256")
    return problems


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_shipped_workflows_carry_the_frontends_missing_model_metadata(path):
    doc = json.loads(path.read_text(encoding="utf-8"))
    manifest_files = {f.path: f for e in load_manifest().values() for f in e.files}
    for node in doc["nodes"]:
        declared = node.get("properties", {}).get("models", [])
        values = [v for v in node.get("widgets_values") or [] if isinstance(v, str)]
        expected = [
            name for name in values if name in manifest_files and direct_url(manifest_files[name]) is not None
        ]
        assert [m["name"] for m in declared] == expected, f"{path.name} node {node['id']} ({node['type']})"
        for record in declared:
            assert _frontend_schema_problems(record) == [], record
            assert record["directory"] in {f"gendeg_{k}" for k in host.MODEL_KINDS}
            assert record["url"] == direct_url(manifest_files[record["name"]])
        assert declared == node_models(node.get("widgets_values")), "run python scripts/update_workflow_models.py"


def test_workflows_with_downloadable_weights_declare_them():
    declared = {
        m["name"]: m
        for p in WORKFLOWS
        for n in json.loads(p.read_text())["nodes"]
        for m in n.get("properties", {}).get("models", [])
    }
    assert set(declared) == {"scunet_color_real_psnr.pth", "daclip/universal-ir.pth", "daclip/daclip_ViT-B-32.pt",
                             "fbcnn_color.pth"}
    hub = declared["daclip/universal-ir.pth"]
    assert hub["url"] == "https://huggingface.co/weblzw/daclip-uir-ViT-B-32-irsde/resolve/main/universal-ir.pth"
    assert hub["directory"] == "gendeg_restore" and hub["hash_type"] == "sha256"

"""Every shipped workflow (workflows/*.json) converts and validates against the real registry.

Structure only: combo values naming model or image files are not checked (the files are
not on the test machine); everything else is (classes, links, types, ranges, cycles).
New workflows are covered automatically.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from comfyui_gendeg import cli
from comfyui_gendeg.core.graph.executor import Executor
from comfyui_gendeg.core.graph.formats import api_to_ui, is_ui_workflow, load_any, ui_to_api
from comfyui_gendeg.core.graph.object_info import object_info
from comfyui_gendeg.nodes.standins import runner_registry

WORKFLOWS = sorted((Path(__file__).resolve().parents[1] / "workflows").glob("*.json"))


@pytest.fixture(scope="module")
def registry():
    classes, names, modules = runner_registry()
    return classes, object_info(classes, names, modules)


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflow_converts_and_validates(path, registry):
    classes, info = registry
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert is_ui_workflow(doc), f"{path.name}: ship workflows in the UI format (convert with `gendeg workflow to-ui`)"
    assert path.name.startswith("gendeg_"), "name workflows gendeg_<area>_<what>.json"
    prompt, _ = load_any(doc, info)
    errors = Executor(classes).validate(copy.deepcopy(prompt), check_files=False)
    assert not errors, f"{path.name}:\n" + "\n".join(f"  - {e}" for e in errors)
    # Every node of the file is either run or a frontend-only helper; links reference existing nodes.
    ids = {n["id"] for n in doc["nodes"]}
    for link in doc["links"]:
        link = link if isinstance(link, list) else [link["id"], link["origin_id"], 0, link["target_id"]]
        assert link[1] in ids and link[3] in ids, f"{path.name}: link {link[0]} references a missing node"
    # Converting back and forth keeps the graph.
    assert ui_to_api(api_to_ui(copy.deepcopy(prompt), info), info) == prompt


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflow_passes_validate_only_on_the_command_line(path):
    assert cli.main(["run", str(path), "--validate-only", "--structure-only"]) == 0


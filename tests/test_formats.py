"""UI workflow ⇄ API prompt conversion (core/graph/formats.py) and `gendeg workflow`."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path

import pytest
from comfyui_gendeg import cli
from comfyui_gendeg.core.graph.formats import (
    WorkflowFormatError,
    api_to_ui,
    load_any,
    ui_to_api,
)
from comfyui_gendeg.core.graph.object_info import object_info
from comfyui_gendeg.nodes.standins import STANDIN_CLASS_MAPPINGS, STANDIN_DISPLAY_NAME_MAPPINGS

DATA = Path(__file__).parent / "data" / "workflows"


def _test_nodes():
    spec = importlib.util.spec_from_file_location("gendeg_runner_test_nodes", DATA / "runner_nodes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


NODES = _test_nodes()
REGISTRY = {**STANDIN_CLASS_MAPPINGS, **NODES.TEST_NODES}


@pytest.fixture
def info(tmp_path):
    from comfyui_gendeg.nodes import host

    host.SETTINGS.input_dir.mkdir(parents=True, exist_ok=True)
    (host.SETTINGS.input_dir / "clean.png").write_bytes(b"")  # listed by LoadImage's combo
    return object_info(REGISTRY, STANDIN_DISPLAY_NAME_MAPPINGS)


def _fixture():
    return json.loads((DATA / "ui_reroute_primitive_bypass.json").read_text())


def test_ui_workflow_converts_like_the_editor(info):
    prompt = ui_to_api(_fixture(), info)
    assert prompt == {
        # The editor copies the registry id and version of a node into _meta.
        "1": {
            "inputs": {"image": "clean.png"},
            "class_type": "LoadImage",
            "_meta": {"title": "Load Image", "cnr_id": "comfy-core", "ver": "0.3.66"},
        },
        # Reroute followed, PrimitiveNode's value given to the converted widget, seed control value skipped.
        "4": {
            "inputs": {"image": ["1", 0], "amount": 0.2, "seed": 1234},
            "class_type": "TestNoise",
            "_meta": {"title": "TestNoise"},
        },
        # Bypassed TestInvert passes its IMAGE input through; muted PreviewImage and the notes are gone.
        "6": {
            "inputs": {"images": ["4", 0], "filename_prefix": "runner/noisy"},
            "class_type": "SaveImage",
            "_meta": {"title": "Save Image", "cnr_id": "comfy-core", "ver": "0.3.66"},
        },
    }


def test_primitive_value_wins_over_stale_widget_value(info):
    wf = _fixture()
    next(n for n in wf["nodes"] if n["id"] == 3)["widgets_values"] = [0.7, "fixed"]
    assert ui_to_api(wf, info)["4"]["inputs"]["amount"] == 0.7


def test_bypass_without_matching_input_drops_the_link(info):
    wf = _fixture()
    inv = next(n for n in wf["nodes"] if n["id"] == 5)
    inv["inputs"][0]["type"] = "MASK"  # nothing of type IMAGE to pass on
    prompt = ui_to_api(wf, info)
    assert "images" not in prompt["6"]["inputs"]


def test_muted_upstream_keeps_widget_value(info):
    wf = _fixture()
    next(n for n in wf["nodes"] if n["id"] == 3)["mode"] = 2  # muting a primitive does not matter
    for n in wf["nodes"]:
        if n["id"] == 4:
            n["mode"] = 2  # muted: dropped, and SaveImage loses its input
    prompt = ui_to_api(wf, info)
    assert "4" not in prompt and "images" not in prompt["6"]["inputs"]


def test_widget_values_align_with_and_without_editor_extras(info):
    base = {"id": 1, "type": "LoadImage", "mode": 0, "inputs": [], "outputs": []}
    for values in (["clean.png", "image"], ["clean.png"]):
        wf = {"nodes": [dict(base, widgets_values=values)], "links": []}
        assert ui_to_api(wf, info)["1"]["inputs"] == {"image": "clean.png"}
    noise = {"id": 2, "type": "TestNoise", "mode": 0, "inputs": [], "outputs": []}
    for values in ([0.3, 7, "increment"], [0.3, 7]):
        wf = {"nodes": [dict(noise, widgets_values=values)], "links": []}
        assert ui_to_api(wf, info)["2"]["inputs"] == {"amount": 0.3, "seed": 7}
    # Some nodes save a dict of widget values.
    wf = {"nodes": [dict(noise, widgets_values={"seed": 9, "amount": 0.5})], "links": []}
    assert ui_to_api(wf, info)["2"]["inputs"] == {"amount": 0.5, "seed": 9}


def test_object_links_of_newer_schema(info):
    wf = _fixture()
    wf["links"] = [
        {"id": k[0], "origin_id": k[1], "origin_slot": k[2], "target_id": k[3], "target_slot": k[4], "type": k[5]}
        for k in wf["links"]
    ]
    assert ui_to_api(wf, info) == ui_to_api(_fixture(), info)


def test_subgraphs_are_flattened_like_the_editor(info):
    # Saved by the editor (frontend 1.58) after turning TestNoise and the bypassed TestInvert
    # of the fixture into a subgraph (instance 10).
    wf = json.loads((DATA / "ui_subgraph.json").read_text())
    prompt = ui_to_api(wf, info)
    assert set(prompt) == {"1", "10:4", "6"}
    assert prompt["10:4"]["inputs"] == {"amount": 0.2, "seed": 1234, "image": ["1", 0]}
    assert prompt["6"]["inputs"]["images"] == ["10:4", 0]  # out of the subgraph through the bypass
    # A value on the instance's promoted widget goes to the widget inside.
    inst = next(n for n in wf["nodes"] if n["id"] == 10)
    inst["widgets_values"] = [0.2, 99]
    assert ui_to_api(wf, info)["10:4"]["inputs"]["seed"] == 99
    inst["mode"] = 2  # a muted instance takes its inside with it
    assert set(ui_to_api(wf, info)) == {"1", "6"}


def test_group_nodes_and_unknown_documents_are_refused(info):
    wf = _fixture()
    wf["nodes"].append({"id": 11, "type": "workflow>my group", "mode": 0, "inputs": [], "outputs": []})
    with pytest.raises(WorkflowFormatError, match="group node"):
        ui_to_api(wf, info)
    body = {"client_id": "x", "prompt": _api_prompt(), "extra_data": {"extra_pnginfo": {"workflow": _fixture()}}}
    assert load_any(body, info) == (_api_prompt(), _fixture())  # what the editor POSTs to /prompt
    with pytest.raises(WorkflowFormatError, match="neither a UI workflow"):
        load_any({"hello": 1}, info)


def _api_prompt():
    return {
        "1": {"inputs": {"n": 3}, "class_type": "TestBatch", "_meta": {"title": "TestBatch"}},
        "2": {"inputs": {"image": ["1", 0]}, "class_type": "TestSplit", "_meta": {"title": "split"}},
        "3": {
            "inputs": {
                "image": ["2", 0],
                "factor": 2.0,
                "mode": "add",
                "index": ["2", 1],
                "bias": 0.5,
                "flag": True,
                "note": "multi\nline",
            },
            "class_type": "TestScale",
            "_meta": {"title": "TestScale"},
        },
        "4": {"inputs": {"image": ["3", 0], "amount": 0.05, "seed": 11}, "class_type": "TestNoise", "_meta": {"title": "n"}},
        "5": {"inputs": {"images": ["4", 0], "index": ["2", 1]}, "class_type": "TestCollect", "_meta": {"title": "TestCollect"}},
        "6": {"inputs": {"image": "clean.png"}, "class_type": "LoadImage", "_meta": {"title": "Load Image"}},
        "7": {
            "inputs": {"images": ["6", 0], "filename_prefix": "a/b"},
            "class_type": "SaveImage",
            "_meta": {"title": "Save Image", "cnr_id": "comfy-core", "ver": "0.3.66"},
        },
    }


def test_api_ui_api_round_trip_is_identity(info):
    prompt = _api_prompt()
    assert ui_to_api(api_to_ui(copy.deepcopy(prompt), info), info) == prompt
    # Non-numeric ids (e.g. from other tools) survive too.
    named = {"load": prompt["6"], "save": {**prompt["7"], "inputs": {"images": ["load", 0], "filename_prefix": "x"}}}
    assert ui_to_api(api_to_ui(copy.deepcopy(named), info), info) == named


def test_api_to_ui_is_a_file_the_editor_opens(info):
    ui = api_to_ui(_api_prompt(), info)
    assert ui["version"] == 0.4 and ui["last_node_id"] == 7 and ui["last_link_id"] == len(ui["links"]) == 7
    nodes = {n["id"]: n for n in ui["nodes"]}
    # Left to right by depth: every link goes to a node further right.
    for lid, a, a_slot, b, b_slot, typ in ui["links"]:
        assert nodes[a]["pos"][0] < nodes[b]["pos"][0]
        assert nodes[a]["outputs"][a_slot]["type"] == typ and lid in nodes[a]["outputs"][a_slot]["links"]
        assert nodes[b]["inputs"][b_slot]["link"] == lid
    # Nodes in the same column do not overlap.
    by_x: dict[float, list] = {}
    for n in nodes.values():
        by_x.setdefault(n["pos"][0], []).append(n)
    for col in by_x.values():
        col.sort(key=lambda n: n["pos"][1])
        for upper, lower in zip(col, col[1:], strict=False):
            assert upper["pos"][1] + upper["size"][1] < lower["pos"][1]
    # Widget values in widget order, with the editor's extra values.
    assert nodes[4]["widgets_values"] == [0.05, 11, "fixed"]
    assert nodes[6]["widgets_values"] == ["clean.png", "image"]
    assert nodes[3]["widgets_values"] == [2.0, "add", 0.5, True, "multi\nline"]
    assert nodes[2]["outputs"][0]["shape"] == 6  # a list output is drawn as a grid dot
    assert [n["order"] for n in sorted(nodes.values(), key=lambda n: n["order"])] == list(range(7))
    assert nodes[2]["title"] == "split"


def test_workflow_commands_convert_both_ways(tmp_path, info, monkeypatch, capsys):
    from comfyui_gendeg import nodes as pack_nodes

    for k, v in NODES.TEST_NODES.items():
        monkeypatch.setitem(pack_nodes.NODE_CLASS_MAPPINGS, k, v)
    api = tmp_path / "api.json"
    api.write_text(json.dumps(_api_prompt()))
    assert cli.main(["workflow", "to-ui", str(api), str(tmp_path / "ui.json")]) == 0
    assert cli.main(["workflow", "to-api", str(tmp_path / "ui.json"), str(tmp_path / "back.json")]) == 0
    assert json.loads((tmp_path / "back.json").read_text()) == _api_prompt()
    (tmp_path / "bad.json").write_text("{not json")
    assert cli.main(["workflow", "to-ui", str(tmp_path / "bad.json"), str(tmp_path / "x.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def _ui_link_id_not_a_number(wf):
    wf["links"][0][0] = "x"
    wf["nodes"][1]["inputs"][0]["link"] = "x"


def _ui_object_link_without_slot(wf):
    wf["links"] = [{"id": ln[0], "origin_id": ln[1], "origin_slot": ln[2], "target_id": ln[3], "target_slot": ln[4]} for ln in wf["links"]]
    wf["links"][1]["origin_slot"] = None


def _ui_inputs_not_a_list(wf):
    wf["nodes"][3]["inputs"] = "oops"


def _ui_type_not_text(wf):
    wf["nodes"][4]["type"] = ["TestInvert"]


def _ui_link_of_odd_shape(wf):
    wf["nodes"][4]["inputs"][0]["link"] = [4]


def _ui_widgets_not_a_list(wf):
    wf["nodes"][3]["widgets_values"] = 7


def _api(**node3):
    return {
        "1": {"class_type": "TestBatch", "inputs": {"n": 2}},
        "2": {"class_type": "TestShow", "inputs": {"value": ["1", 0]}},
        "3": node3,
    }


MALFORMED = {
    "ui-link-id": (_ui_link_id_not_a_number, r"link \['x', 1, 0, 2, 0, '\*'\]: its id and slots must be whole numbers"),
    "ui-object-link": (_ui_object_link_without_slot, r"link \{'id': 2, .*whole numbers \(id 2, slots None, 0\)"),
    "ui-inputs": (_ui_inputs_not_a_list, r"node 4 \(TestNoise\): 'inputs' must be a list of input slots .*got 'oops'"),
    "ui-type": (_ui_type_not_text, r"node 5: 'id' must be a number and 'type' a node class name, got type \['TestInvert'\]"),
    "ui-link-shape": (_ui_link_of_odd_shape, r"node 5 \(TestInvert\): input 'image' has link \[4\]; a link is a link id"),
    "ui-widgets": (_ui_widgets_not_a_list, r"node 4 \(TestNoise\) is malformed \(.*\); fix it"),
    "api-class-type": (_api(class_type=["TestShow"], inputs={}), r"node 3: class_type must be a node class name \(text\), not \['TestShow'\]"),
    "api-inputs": (_api(class_type="TestShow", inputs="oops"), r"node 3 \(TestShow\): 'inputs' must be an object \{name: value\}, not str"),
    "api-link-to-bad-node": (
        {**_api(class_type={"a": 1}, inputs={}), "4": {"class_type": "TestShow", "inputs": {"value": ["3", 0]}}},
        r"node 3: class_type must be a node class name \(text\), not \{'a': 1\}",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_workflows_are_one_clear_line_not_a_traceback(case, tmp_path, capsys, monkeypatch):
    from comfyui_gendeg import nodes as pack_nodes

    for k, v in NODES.TEST_NODES.items():
        monkeypatch.setitem(pack_nodes.NODE_CLASS_MAPPINGS, k, v)
    make, message = MALFORMED[case]
    doc = make if isinstance(make, dict) else _fixture()
    if callable(make):
        make(doc)
    path = tmp_path / f"{case}.json"
    path.write_text(json.dumps(doc))
    assert cli.main(["run", str(path), "--validate-only", "--structure-only"]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert sum(bool(re.search(message, line)) for line in lines) == 1, captured.err
    if case.startswith("ui-"):  # a conversion error: one line, naming the node or link
        assert len(lines) == 1 and lines[0].startswith("gendeg: error: ") and "save it again" in lines[0]
    else:  # per-node validation errors, as ComfyUI reports them
        assert "nothing was run" in lines[0] and len(lines) == 2

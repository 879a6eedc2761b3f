"""The headless runner: executor semantics, validation errors, `gendeg run/nodes`, --set, --shard."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from comfyui_gendeg import cli
from comfyui_gendeg import nodes as pack_nodes
from comfyui_gendeg.core.errors import Interrupted
from comfyui_gendeg.core.graph.executor import Executor, NodeExecutionError, ValidationFailed
from comfyui_gendeg.nodes import host
from comfyui_gendeg.nodes.standins import STANDIN_CLASS_MAPPINGS
from PIL import Image

DATA = Path(__file__).parent / "data" / "workflows"


def _load_test_nodes():
    spec = importlib.util.spec_from_file_location("gendeg_runner_test_nodes_r", DATA / "runner_nodes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


T = _load_test_nodes()
REGISTRY = {**STANDIN_CLASS_MAPPINGS, **T.TEST_NODES}


@pytest.fixture(autouse=True)
def _test_nodes(monkeypatch):
    """Make the test nodes visible to `gendeg run` (the registry is the pack's mappings + stand-ins)."""
    for k, v in T.TEST_NODES.items():
        monkeypatch.setitem(pack_nodes.NODE_CLASS_MAPPINGS, k, v)
    T.CALLS.clear()
    yield


def _write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _list_prompt():
    return {
        "1": {"class_type": "TestBatch", "inputs": {"n": 3}},
        "2": {"class_type": "TestSplit", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "TestScale", "inputs": {"image": ["2", 0], "factor": 2.0, "mode": "mul", "index": ["2", 1]}},
        "4": {"class_type": "TestCollect", "inputs": {"images": ["3", 0], "index": ["2", 1]}},
        "9": {"class_type": "TestInvert", "inputs": {"image": ["1", 0]}},  # feeds no output: never runs
    }


# --- executor semantics ----------------------------------------------------------------------------


def test_list_outputs_fan_out_and_input_is_list_collects():
    ex = Executor(REGISTRY)
    extra = {"workflow": {"nodes": []}}
    uis = ex.execute(_list_prompt(), extra_pnginfo=extra)
    scale_calls = [c[1] for c in T.CALLS if c[0] == "TestScale"]
    # TestScale ran once per list item; the optional 'bias' (no Python default) got its declared default.
    assert scale_calls == [(2.0, "mul", 0.25, i, False, "") for i in range(3)]
    assert uis["4"]["count"] == [3]
    assert uis["4"]["means"] == pytest.approx([0.0, 2 / 3, 4 / 3], abs=1e-5)
    n, index, unique_id, prompt_keys, pnginfo = next(c[1] for c in T.CALLS if c[0] == "TestCollect")
    assert (n, index, unique_id, prompt_keys, pnginfo) == (3, [0, 1, 2], "4", ["1", "2", "3", "4", "9"], extra)
    assert not any(c[0] == "TestInvert" for c in T.CALLS)
    assert ex.execution_order(_list_prompt()) == ["1", "2", "3", "4"]
    # Intermediate outputs are let go once their consumers ran.
    assert ex.last_outputs["1"] == [] and ex.last_outputs["3"] == []


def test_events_progress_and_ui():
    events = []
    listeners: list = []
    host.PROGRESS_LISTENERS.clear()
    ex = Executor(REGISTRY, progress_listeners=host.PROGRESS_LISTENERS)
    prompt = {
        "1": {"class_type": "TestProgress", "inputs": {"steps": 3}},
        "2": {"class_type": "TestShow", "inputs": {"value": ["1", 0]}},
    }
    ex.execute(prompt, on_event=lambda k, d: events.append((k, d)), prompt_id="p1")
    kinds = [(k, d.get("node")) for k, d in events]
    assert kinds == [
        ("executing", "1"),
        ("progress", "1"),
        ("progress", "1"),
        ("progress", "1"),
        ("executed", "1"),
        ("executing", "2"),
        ("executed", "2"),
        ("executing", None),
    ]
    assert [(d["value"], d["max"]) for k, d in events if k == "progress"] == [(1, 3), (2, 3), (3, 3)]
    assert events[-2][1]["output"] == {"value": ["3"]}
    assert host.PROGRESS_LISTENERS == listeners  # the relay is removed afterwards


def test_interrupt_and_node_errors_name_the_node():
    flag = {"stop": True}
    ex = Executor(REGISTRY, interrupted=lambda: flag["stop"])
    with pytest.raises(Interrupted):
        ex.execute(_list_prompt())
    assert T.CALLS == []
    events = []
    prompt = {
        "1": {"class_type": "TestBatch", "inputs": {"n": 1}},
        "5": {"class_type": "TestFail", "inputs": {"image": ["1", 0]}},
        "6": {"class_type": "TestShow", "inputs": {"value": ["5", 0]}},
    }
    with pytest.raises(NodeExecutionError, match=r"node 5 \(TestFail\) failed: RuntimeError: boom"):
        Executor(REGISTRY).execute(prompt, on_event=lambda k, d: events.append((k, d)))
    assert events[-1][0] == "execution_error" and events[-1][1]["node"] == "5"


def test_no_cache_between_runs_unless_asked():
    prompt = {
        "1": {"class_type": "TestBatch", "inputs": {"n": 1}},
        "2": {"class_type": "TestNoise", "inputs": {"image": ["1", 0], "amount": 0.1, "seed": 1}},
        "3": {"class_type": "TestShow", "inputs": {"value": ["2", 0]}},
    }
    plain = Executor(REGISTRY)
    plain.execute(copy.deepcopy(prompt))
    plain.execute(copy.deepcopy(prompt))
    assert [c[0] for c in T.CALLS].count("TestNoise") == 2
    T.CALLS.clear()
    cached = Executor(REGISTRY, cache=True)
    first = cached.execute(copy.deepcopy(prompt))
    second = cached.execute(copy.deepcopy(prompt))
    assert [c[0] for c in T.CALLS].count("TestNoise") == 1 and first == second
    changed = copy.deepcopy(prompt)
    changed["2"]["inputs"]["seed"] = 2
    cached.execute(changed)
    assert [c[1] for c in T.CALLS if c[0] == "TestNoise"] == [(0.1, 1), (0.1, 2)]


# --- validation ----------------------------------------------------------------------------------


def _bad_prompt():
    """Problems in nodes that all feed an output (ComfyUI checks only those), one TestShow each."""
    prompt = {
        "1": {"class_type": "TestBatch", "inputs": {"n": 99}},  # above max 16
        "2": {"class_type": "TestNoize", "inputs": {}},  # unknown class
        "3": {"class_type": "TestNoise", "inputs": {"image": ["1", 0], "seed": -1}},  # missing amount, seed < min
        "4": {"class_type": "TestInvert", "inputs": {"image": ["77", 0]}},  # missing node
        "5": {"class_type": "TestInvert", "inputs": {"image": ["1", 3]}},  # missing output slot
        "6": {"class_type": "LoadImage", "inputs": {"image": "nowhere.png"}},
        "7": {"class_type": "TestInvert", "inputs": {"image": ["6", 1]}},  # MASK into IMAGE
        "8": {"class_type": "TestFail", "inputs": {"image": ["6", 1]}},  # "IMAGE,MASK" accepts MASK
        "9": {"class_type": "TestScale", "inputs": {"image": ["1", 0], "factor": "abc", "mode": "pow"}},
        "10": {"class_type": "TestNoise", "inputs": {"image": ["1", 0, 2], "amount": True, "seed": 1}},
        "11": {"class_type": "TestInvert", "inputs": {"image": ["12", 0]}},  # cycle 11 -> 12 -> 11
        "12": {"class_type": "TestInvert", "inputs": {"image": ["11", 0]}},
        "13": {"class_type": "TestInvert", "inputs": {"image": "not a link"}},
        "14": {"class_type": "TestShow", "inputs": {"value": ["6", 1]}},  # "*" accepts anything
    }
    for nid in ("1", "3", "4", "5", "7", "8", "9", "10", "11", "13"):  # 6, 12 are upstream of others
        prompt[f"2{nid}"] = {"class_type": "TestShow", "inputs": {"value": [nid, 0]}}
    return prompt


def test_nodes_no_output_needs_are_only_checked_for_their_class(tmp_path, capsys):
    """ComfyUI's rule: a stray node (missing image, bad value, a cycle) that feeds no output does not block the run."""
    prompt = {
        "1": {"class_type": "TestBatch", "inputs": {"n": 2}},
        "2": {"class_type": "TestShow", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "nowhere.png"}},  # unconnected, file missing
        "4": {"class_type": "TestNoise", "inputs": {"image": ["3", 0], "seed": -1}},  # feeds nothing
        "5": {"class_type": "TestInvert", "inputs": {"image": ["6", 0]}},  # a cycle no output needs
        "6": {"class_type": "TestInvert", "inputs": {"image": ["5", 0]}},
    }
    assert Executor(REGISTRY).validate(copy.deepcopy(prompt)) == []
    path = tmp_path / "stray.json"
    path.write_text(json.dumps(prompt))
    assert cli.main(["run", str(path), "--validate-only"]) == 0
    assert "valid (6 nodes, 2 would run)" in capsys.readouterr().out
    uis = Executor(REGISTRY).execute(copy.deepcopy(prompt))  # LoadImage would raise if it ran
    assert list(uis) == ["2"] and uis["2"]["value"][0].startswith("tensor(")
    # once an output needs the stray nodes, their problems are reported; an unknown class anywhere still is
    prompt["7"] = {"class_type": "TestShow", "inputs": {"value": ["4", 0]}}
    prompt["8"] = {"class_type": "TestNoize", "inputs": {}}
    got = {(e.node_id, e.kind) for e in Executor(REGISTRY).validate(copy.deepcopy(prompt))}
    assert got == {
        ("3", "custom_validation_failed"),
        ("4", "required_input_missing"),
        ("4", "value_smaller_than_min"),
        ("8", "missing_node_type"),
    }


def test_every_validation_error_is_reported_per_node():
    errors = Executor(REGISTRY).validate(_bad_prompt())
    got = {(e.node_id, e.input_name, e.kind) for e in errors}
    expected = {
        ("1", "n", "value_bigger_than_max"),
        ("2", None, "missing_node_type"),
        ("3", "amount", "required_input_missing"),
        ("3", "seed", "value_smaller_than_min"),
        ("4", "image", "bad_linked_input"),
        ("5", "image", "bad_linked_input"),
        ("6", "image", "custom_validation_failed"),
        ("7", "image", "return_type_mismatch"),
        ("9", "factor", "invalid_input_type"),
        ("9", "mode", "value_not_in_list"),
        ("10", "image", "bad_linked_input"),
        ("10", "amount", "invalid_input_type"),
        ("11", None, "dependency_cycle"),
        ("12", None, "dependency_cycle"),
        ("13", "image", "invalid_input_type"),
    }
    assert got == expected
    msg = {(e.node_id, e.input_name): e.message for e in errors}
    assert "did you mean TestNoise" in msg[("2", None)]
    assert "99" in msg[("1", "n")] and "16" in msg[("1", "n")]
    assert "gives MASK" in msg[("7", "image")] and "expects IMAGE" in msg[("7", "image")]
    assert "'pow'" in msg[("9", "mode")] and "'mul'" in msg[("9", "mode")]
    assert "11 → 12 → 11" in msg[("11", None)] or "12 → 11 → 12" in msg[("11", None)]
    assert "input folder" in msg[("6", "image")]
    with pytest.raises(ValidationFailed) as info:
        Executor(REGISTRY).execute(_bad_prompt())
    assert len(info.value.errors) == len(expected) and T.CALLS == []


def test_no_output_node_and_structure_only():
    errors = Executor(REGISTRY).validate({"1": {"class_type": "TestBatch", "inputs": {"n": 2}}})
    assert [(e.node_id, e.kind) for e in errors] == [(None, "prompt_no_outputs")]
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "absent.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    assert Executor(REGISTRY).validate(copy.deepcopy(prompt), check_files=False) == []
    assert len(Executor(REGISTRY).validate(copy.deepcopy(prompt))) == 1


def test_values_are_normalised_like_comfyui():
    prompt = {
        "1": {"class_type": "TestBatch", "inputs": {"n": "2"}},
        "2": {"class_type": "TestScale", "inputs": {"image": ["1", 0], "factor": 3, "mode": "add", "flag": "true", "note": 5}},
        "3": {"class_type": "TestShow", "inputs": {"value": ["2", 0]}},
    }
    assert Executor(REGISTRY).validate(prompt) == []
    assert prompt["1"]["inputs"]["n"] == 2 and isinstance(prompt["2"]["inputs"]["factor"], float)
    assert prompt["2"]["inputs"]["flag"] is True and prompt["2"]["inputs"]["note"] == "5"


def test_run_reports_all_errors_with_exit_code_2_and_runs_nothing(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_bad_prompt()))
    assert cli.main(["run", str(path), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "15 problem(s), nothing was run" in err
    assert "node 2 (TestNoize): unknown node class 'TestNoize'" in err
    assert "node 3 (TestNoise) input 'amount': required input is missing" in err
    assert T.CALLS == [] and not (tmp_path / "out").exists()


# --- gendeg run on files ---------------------------------------------------------------------------


def test_ui_workflow_from_the_editor_runs(tmp_path):
    src = (np.arange(16 * 24 * 3).reshape(16, 24, 3) % 251).astype(np.uint8)
    _write_png(tmp_path / "in" / "clean.png", src)
    wf = DATA / "ui_reroute_primitive_bypass.json"
    rc = cli.main(["run", str(wf), "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"), "--quiet"])
    assert rc == 0
    out = tmp_path / "out" / "runner" / "noisy_00001_.png"
    img = Image.open(out)
    # What TestNoise computes with the PrimitiveNode's amount (0.2) and the saved seed (1234); not inverted (bypassed).
    x = torch.from_numpy(src.astype(np.float32) / 255.0)[None]
    expected = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1234))).clamp(0, 1)
    # Stored like ComfyUI's SaveImage: uint8(clip(255·x)).
    assert np.array_equal(np.asarray(img), np.clip(255.0 * expected[0].numpy(), 0, 255).astype(np.uint8))
    # PNG text chunks like ComfyUI's: the prompt that ran and the workflow as saved.
    prompt = json.loads(img.text["prompt"])
    assert prompt["4"]["inputs"] == {"image": ["1", 0], "amount": 0.2, "seed": 1234}
    assert json.loads(img.text["workflow"]) == json.loads(wf.read_text())
    # The PNG itself is a workflow file: running it again reproduces the image.
    assert cli.main(["run", str(out), "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "again")]) == 0
    again = Image.open(tmp_path / "again" / "runner" / "noisy_00001_.png")
    assert np.array_equal(np.asarray(again), np.asarray(img))
    assert json.loads(again.text["workflow"]) == json.loads(wf.read_text())
    _write_png(tmp_path / "plain.png", src)
    assert cli.main(["run", str(tmp_path / "plain.png")]) == 2
    # A second run continues the counter; muted PreviewImage wrote nothing.
    assert cli.main(["run", str(wf), "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out" / "runner").iterdir()) == ["noisy_00001_.png", "noisy_00002_.png"]
    assert not (host.SETTINGS.temp_dir).exists() or not any(host.SETTINGS.temp_dir.iterdir())


def test_set_overrides_values_and_reports_unknown_names(tmp_path, capsys):
    _write_png(tmp_path / "in" / "clean.png", np.full((8, 8, 3), 128, np.uint8))
    wf = str(DATA / "ui_reroute_primitive_bypass.json")
    common = ["--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out")]
    rc = cli.main(["run", wf, *common, "--set", "4.seed=7", "--set", "6.filename_prefix=over/ride", "--set", "4.amount=0.5"])
    assert rc == 0
    prompt = json.loads(Image.open(tmp_path / "out" / "over" / "ride_00001_.png").text["prompt"])
    assert prompt["4"]["inputs"]["seed"] == 7 and prompt["4"]["inputs"]["amount"] == 0.5
    workflow = json.loads(Image.open(tmp_path / "out" / "over" / "ride_00001_.png").text["workflow"])
    nodes = {n["id"]: n for n in workflow["nodes"]}
    assert nodes[4]["widgets_values"] == [0.5, 7, "randomize"] and nodes[6]["widgets_values"] == ["over/ride"]
    assert nodes[3]["widgets_values"][0] == 0.5  # the PrimitiveNode feeding 'amount' too
    capsys.readouterr()
    assert cli.main(["run", wf, *common, "--set", "42.seed=1"]) == 2
    err = capsys.readouterr().err
    assert "no node '42'" in err and "4 (TestNoise)" in err and "6 (SaveImage)" in err
    assert cli.main(["run", wf, *common, "--set", "4.sead=1"]) == 2
    assert "has no input 'sead'; its inputs: image, amount, seed" in capsys.readouterr().err
    assert cli.main(["run", wf, *common, "--set", "4.seed=abc"]) == 2  # text is not an INT
    assert "cannot use 'abc' as INT" in capsys.readouterr().err
    assert cli.main(["run", wf, *common, "--set", "nonsense"]) == 2


def test_api_prompt_runs_and_validate_only_writes_nothing(tmp_path, capsys):
    rgba = np.zeros((6, 5, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    _write_png(tmp_path / "in" / "a.png", rgba)
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "api"}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        "4": {"class_type": "TestShow", "inputs": {"value": ["1", 1]}},
    }
    path = tmp_path / "api.json"
    path.write_text(json.dumps(prompt))
    args = ["run", str(path), "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"),
            "--temp-dir", str(tmp_path / "tmp")]  # fmt: skip
    assert cli.main([*args, "--validate-only"]) == 0
    assert "valid (4 nodes, 4 would run)" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
    assert cli.main(args) == 0
    saved = Image.open(tmp_path / "out" / "api_00001_.png")
    assert saved.mode == "RGB" and saved.size == (5, 6)  # IMAGE is RGB, alpha went to the MASK
    assert json.loads(saved.text["prompt"])["2"]["class_type"] == "SaveImage"
    assert "workflow" in saved.text  # an API prompt gets a laid-out workflow so the PNG opens in the editor
    previews = list((tmp_path / "tmp").glob("ComfyUI_temp_*_00001_.png"))
    assert len(previews) == 1


def test_loadimage_mask_is_one_minus_alpha(tmp_path):
    rgba = np.zeros((4, 3, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[1, 2, 3] = 0
    _write_png(host.SETTINGS.input_dir / "m.png", rgba)
    _write_png(host.SETTINGS.input_dir / "g.png", np.full((4, 3), 77, np.uint8))
    image, mask = STANDIN_CLASS_MAPPINGS["LoadImage"]().load_image("m.png")
    assert image.shape == (1, 4, 3, 3) and mask.shape == (1, 4, 3)
    assert mask[0, 1, 2] == 1.0 and mask.sum() == 1.0
    grey, mask = STANDIN_CLASS_MAPPINGS["LoadImage"]().load_image("g.png")
    assert grey.shape == (1, 4, 3, 3) and torch.allclose(grey, torch.full_like(grey, 77 / 255))
    assert mask.shape == (1, 64, 64) and mask.sum() == 0  # ComfyUI's placeholder when there is no alpha
    assert STANDIN_CLASS_MAPPINGS["LoadImage"].INPUT_TYPES()["required"]["image"][0] == ["g.png", "m.png"]


def test_saveimage_counter_subfolders_and_escape():
    from comfyui_gendeg.core.errors import UnsafePathError

    save = STANDIN_CLASS_MAPPINGS["SaveImage"]()
    imgs = torch.rand(2, 4, 5, 3)
    out = host.SETTINGS.output_dir
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "pic_00007_.png").write_bytes(b"")
    (out / "sub" / "pic_other_00099_.png").write_bytes(b"")  # another prefix: ignored
    ui = save.save_images(imgs, "sub/pic_%batch_num%_w%width%")
    names = [r["filename"] for r in ui["ui"]["images"]]
    assert names == ["pic_0_w5_00001_.png", "pic_1_w5_00002_.png"]  # ComfyUI: prefix after substitution
    ui = save.save_images(imgs[:1], "sub/pic")
    assert ui["ui"]["images"] == [{"filename": "pic_00008_.png", "subfolder": "sub", "type": "output"}]
    for bad in ("../escape", "/abs/path", "a/../../b"):
        with pytest.raises(UnsafePathError):
            save.save_images(imgs, bad)


# --- --shard, --device, gendeg nodes ------------------------------------------------------------


@pytest.mark.parametrize("bad", ["3/3", "a/b", "1/0", "-1/2", "1"])
def test_bad_shard_is_a_clear_error(tmp_path, bad, capsys):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(_list_prompt()))
    assert cli.main(["run", str(path), f"--shard={bad}"]) == 2
    assert "--shard" in capsys.readouterr().err


def test_shard_and_folders_reach_the_host(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(_list_prompt()))
    assert cli.main(["run", str(path), "--shard", "1/3", "--models-dir", str(tmp_path / "m"), "--device", "cpu"]) == 0
    assert host.shard() == (1, 3) and host.models_dir() == (tmp_path / "m").resolve()
    assert str(host.torch_device()) == "cpu"


@pytest.mark.skipif("GenDegLoadImageFolder" not in pack_nodes.NODE_CLASS_MAPPINGS, reason="dataset nodes not present")
def test_shards_of_a_folder_are_disjoint_and_complete(tmp_path):
    folder = tmp_path / "in" / "set"
    for k in range(7):
        _write_png(folder / f"img{k}.png", np.full((4, 4, 3), 10 * k, np.uint8))
    prompt = {
        "1": {"class_type": "GenDegLoadImageFolder", "inputs": {"folder": str(folder), "pattern": "*", "recursive": False,
                                                                  "start": 0, "limit": 0, "output": "list"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "s"}},
    }  # fmt: skip
    path = tmp_path / "p.json"
    path.write_text(json.dumps(prompt))
    seen = []
    for i in range(3):
        out = tmp_path / f"out{i}"
        assert cli.main(["run", str(path), "--shard", f"{i}/3", "--output-dir", str(out), "--quiet"]) == 0
        seen.append(sorted(int(np.asarray(Image.open(p)).mean()) // 10 for p in out.glob("*.png")))
    assert sorted(k for part in seen for k in part) == list(range(7))
    assert all(2 <= len(part) <= 3 for part in seen)


def test_bad_device_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(_list_prompt()))
    assert cli.main(["run", str(path), "--device", "warp9"]) == 2
    assert "--device" in capsys.readouterr().err


def test_nodes_lists_object_info(capsys):
    assert cli.main(["nodes", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    for nid in ("LoadImage", "SaveImage", "PreviewImage", *pack_nodes.NODE_CLASS_MAPPINGS):
        assert nid in info
    save = info["SaveImage"]
    assert save["output_node"] is True and save["input_order"] == {"required": ["images", "filename_prefix"], "hidden": ["prompt", "extra_pnginfo"]}
    assert save["input"]["required"]["filename_prefix"][0] == "STRING" and save["python_module"] == "nodes"
    split = info["TestSplit"]
    assert split["output"] == ["IMAGE", "INT"] and split["output_is_list"] == [True, True]
    assert split["output_name"] == ["images", "index"] and split["category"] == "GenDeg/Test"
    assert split["python_module"] == "custom_nodes.ComfyUI-GenDeg" and split["description"] == "test"
    assert cli.main(["nodes"]) == 0
    table = capsys.readouterr().out
    assert "TestScale  [GenDeg/Test]" in table and "in   mode: COMBO[mul, add]" in table


@pytest.mark.skipif("GenDegSynthesize" not in pack_nodes.NODE_CLASS_MAPPINGS, reason="synth nodes not present")
def test_editor_workflow_with_load_save_and_pack_nodes_runs(tmp_path):
    """The 'done when' case: an editor-saved UI workflow with LoadImage, a pack node and SaveImage."""
    rng = np.random.default_rng(0)
    src = (rng.random((32, 48, 3)) * 255).astype(np.uint8)
    _write_png(tmp_path / "in" / "clean.png", src)
    wf = DATA / "ui_loadimage_synthesize_save.json"
    args = ["run", str(wf), "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"),
            "--temp-dir", str(tmp_path / "tmp"), "--quiet"]  # fmt: skip
    assert cli.main(args) == 0
    saved = Image.open(tmp_path / "out" / "gendeg" / "haze_00001_.png")
    got = np.asarray(saved)
    # Same result as calling the node directly with the widget values of the file.
    node = pack_nodes.NODE_CLASS_MAPPINGS["GenDegSynthesize"]()
    clean = torch.from_numpy(src.astype(np.float32) / 255.0)[None]
    res = getattr(node, node.FUNCTION)(image=clean, type="haze", intensity_mode="strength", mu=0.08, strength=0.4,
                                       seed=77, depth_near_is_bright=True, tolerance=0.005, expert_params="")  # fmt: skip
    res = res["result"] if isinstance(res, dict) else res
    assert np.array_equal(got, np.clip(255.0 * res[0][0].numpy(), 0, 255).astype(np.uint8))
    assert np.abs(got / 255.0 - src / 255.0).mean() > 0.01  # it really degraded the image
    assert json.loads(saved.text["workflow"])["nodes"][1]["type"] == "GenDegSynthesize"
    assert len(list((tmp_path / "tmp").glob("ComfyUI_temp_*.png"))) == 1  # the PreviewImage


def test_missing_model_file_says_where_it_goes_and_how_to_fetch_it(tmp_path, capsys):
    from comfyui_gendeg.core.weights import load_manifest

    entry, wfile = next((e, f) for e in load_manifest().values() for f in e.files if f.downloadable)
    prompt = {
        "1": {"class_type": "TestModelLoader", "inputs": {"checkpoint": wfile.path}},
        "2": {"class_type": "TestShow", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "TestModelLoader", "inputs": {"checkpoint": "mystery.safetensors"}},
        "4": {"class_type": "TestShow", "inputs": {"value": ["3", 0]}},
    }
    path = tmp_path / "p.json"
    path.write_text(json.dumps(prompt))
    models = tmp_path / "mymodels"
    assert cli.main(["run", str(path), "--models-dir", str(models)]) == 2
    err = capsys.readouterr().err
    line1 = next(ln for ln in err.splitlines() if "node 1 " in ln)
    assert f"`gendeg weights fetch {entry.id}`" in line1 and str(models.resolve()) in line1
    line3 = next(ln for ln in err.splitlines() if "node 3 " in ln)
    assert "'mystery.safetensors' was not found" in line3 and str(models.resolve()) in line3
    # Structure-only validation passes on a machine without the files; with the file in place it runs.
    assert cli.main(["run", str(path), "--validate-only", "--structure-only"]) == 0
    target = models / entry.kind / wfile.path
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    prompt.pop("3"), prompt.pop("4")
    path.write_text(json.dumps(prompt))
    assert cli.main(["run", str(path), "--models-dir", str(models)]) == 0


def test_subgraph_workflow_runs_with_path_ids(tmp_path):
    _write_png(tmp_path / "in" / "clean.png", np.full((8, 8, 3), 100, np.uint8))
    wf = DATA / "ui_subgraph.json"
    args = ["run", str(wf), "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"), "--quiet"]
    assert cli.main([*args, "--set", "10:4.seed=5"]) == 0
    saved = Image.open(tmp_path / "out" / "runner" / "noisy_00001_.png")
    assert json.loads(saved.text["prompt"])["10:4"]["inputs"]["seed"] == 5
    assert [c[1] for c in T.CALLS if c[0] == "TestNoise"] == [(0.2, 5)]


def test_set_on_a_malformed_node_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    wf = tmp_path / "bad.json"
    wf.write_text(json.dumps({
        "1": {"class_type": "GenDegSampleImage", "inputs": "zz"},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
    }))
    rc = cli.main(["run", str(wf), "--set", "1.sample=coffee.png", "--validate-only"])
    err = capsys.readouterr().err
    assert rc == 2 and "node 1 is malformed" in err and "Traceback" not in err

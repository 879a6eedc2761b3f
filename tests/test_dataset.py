"""Dataset: folder listing (sort, recursive, glob, window, shard), path escapes, the two nodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from comfyui_gendeg.core.dataset import PairWriter, list_folder, pair_id, parse_metadata, save_pairs
from comfyui_gendeg.core.errors import InputError, UnsafePathError
from comfyui_gendeg.core.io import load_image, save_image
from comfyui_gendeg.nodes import NODE_CLASS_MAPPINGS, host
from comfyui_gendeg.nodes.dataset import GenDegLoadImageFolder, GenDegSaveDatasetPairs


def _img(path: Path, h: int = 8, w: int = 8, c: int = 3, value: float | None = None) -> torch.Tensor:
    x = torch.rand(1, c, h, w) if value is None else torch.full((1, c, h, w), value)
    save_image(path, x)
    return x


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "input" / "photos"
    names = ["b.png", "a.png", "c.JPG", "img10.png", "img2.png", "sub/z.png", "sub/deeper/y.webp", "sub/x.jpg"]
    for n in names:
        _img(root / n)
    (root / "notes.txt").write_text("not an image")
    _img(root / ".hidden.png")
    _img(root / ".cache" / "thumb.png")
    return root


# --- listing -------------------------------------------------------------------------------------


def test_listing_is_sorted_filtered_and_optionally_recursive(folder):
    assert list_folder(folder) == ["a.png", "b.png", "c.JPG", "img10.png", "img2.png"]
    assert list_folder(folder, recursive=True) == [
        "a.png", "b.png", "c.JPG", "img10.png", "img2.png", "sub/deeper/y.webp", "sub/x.jpg", "sub/z.png",
    ]  # fmt: skip
    assert list_folder(folder, "img*") == ["img10.png", "img2.png"]
    assert list_folder(folder, "*.png;*.jpg", recursive=True) == ["a.png", "b.png", "img10.png", "img2.png", "sub/x.jpg", "sub/z.png"]
    assert list_folder(folder, "sub/*.png", recursive=True) == ["sub/z.png"]
    with pytest.raises(InputError, match="no such folder"):
        list_folder(folder / "nope")


def test_window_and_shards_partition_the_listing(folder):
    everything = list_folder(folder, recursive=True)
    assert list_folder(folder, recursive=True, start=2, limit=3) == everything[2:5]
    assert list_folder(folder, recursive=True, start=6) == everything[6:]
    assert list_folder(folder, recursive=True, start=100) == []
    shards = [list_folder(folder, recursive=True, shard=(i, 3)) for i in range(3)]
    assert shards[1] == [everything[k] for k in range(len(everything)) if k % 3 == 1]
    assert sorted(sum(shards, [])) == sorted(everything)  # disjoint and complete
    assert len(set(sum(shards, []))) == len(everything)
    # a file's shard does not depend on the window (index in the full sorted list)
    win = [list_folder(folder, recursive=True, start=1, limit=5, shard=(i, 2)) for i in range(2)]
    assert win[0] == [everything[k] for k in range(1, 6) if k % 2 == 0]
    assert sorted(win[0] + win[1]) == sorted(everything[1:6])
    with pytest.raises(InputError):
        list_folder(folder, shard=(3, 3))


# --- pair writer paths ------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["../escape", "/abs/path", "a/../../escape", "..", ".", "  "])
def test_dataset_names_that_leave_the_output_folder_are_refused(tmp_path, dataset):
    out = tmp_path / "output"
    with pytest.raises((UnsafePathError, InputError)):
        PairWriter(out, dataset)
    assert not (tmp_path / "escape").exists()


@pytest.mark.parametrize("source", ["../../evil.png", "/etc/evil.png", "a/../../../evil.png"])
def test_source_names_that_leave_the_dataset_are_refused(tmp_path, source):
    writer = PairWriter(tmp_path / "output", "ds")
    x = torch.rand(1, 3, 4, 4)
    with pytest.raises(UnsafePathError):
        writer.write(x, x, source, {"t": 1}, seed=0)
    assert not [p for p in tmp_path.rglob("*evil*")]


def test_pair_id_depends_on_source_params_and_seed_only():
    base = pair_id("a.png", {"type": "haze", "mu": 0.1}, 1)
    assert base == pair_id("a.png", {"mu": 0.1, "type": "haze"}, 1)  # key order does not matter
    assert base == pair_id("a.png", {"type": "haze", "mu": 0.1, "elapsed_s": 3.2}, 1)  # timings do not count
    assert len({base, pair_id("b.png", {"type": "haze", "mu": 0.1}, 1), pair_id("a.png", {"type": "haze", "mu": 0.2}, 1),
                pair_id("a.png", {"type": "haze", "mu": 0.1}, 2)}) == 4  # fmt: skip


def test_metadata_parsing():
    assert parse_metadata('{"type": "rain"}', 2) == [{"type": "rain"}, {"type": "rain"}]
    assert parse_metadata('[{"i": 0}, {"i": 1}]', 2) == [{"i": 0}, {"i": 1}]
    assert parse_metadata('{"i": 0}\n{"i": 1}', 2) == [{"i": 0}, {"i": 1}]
    assert parse_metadata("", 1) == [{}]
    with pytest.raises(InputError, match="not valid JSON"):
        parse_metadata("{oops", 1)
    with pytest.raises(InputError, match="3 records for 2 images"):
        parse_metadata("[{}, {}, {}]", 2)


def test_save_pairs_records_everything_and_png_round_trips(tmp_path):
    clean = torch.rand(1, 3, 6, 10)
    degraded = torch.stack([clean[0] * 0.5, clean[0] * 0.25])
    meta = [{"type": "low_light", "strength": 0.5, "seed": 3}, {"type": "low_light", "strength": 0.75, "seed": 4}]
    rep = save_pairs(tmp_path, "ll", clean, degraded, ["cam/p.png"], meta, seed=3, params={"workflow_sha256": "abc"})
    assert (rep.written, rep.skipped) == (2, 0)
    lines = [json.loads(x) for x in (tmp_path / "ll" / "metadata.jsonl").read_text().splitlines()]
    assert [r["source"] for r in lines] == ["cam/p.png#0", "cam/p.png#1"]
    r0, r1 = lines
    assert r0["type"] == "low_light" and r0["strength"] == 0.5 and r0["seed"] == 3 and "upstream" not in r0
    assert r1["seed"] == 3 and r1["upstream"] == {"seed": 4}  # the saver's seed wins, the other is kept
    assert r0["workflow_sha256"] == "abc" and r0["tool"] == "comfyui-gendeg" and r0["created"].endswith("Z")
    assert (r0["width"], r0["height"]) == (10, 6)
    back = load_image(tmp_path / "ll" / r1["degraded"])
    assert torch.allclose(back, degraded[1:2], atol=1 / 255)
    assert torch.allclose(load_image(tmp_path / "ll" / r1["clean"]), clean, atol=1 / 255)
    assert r0["clean"].startswith("clean/cam/p__") and r0["degraded"] == r0["clean"].replace("clean/", "degraded/", 1)


# --- nodes ---------------------------------------------------------------------------------------------


def _check_v1_definition(cls):
    spec = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, decl in spec.get(section, {}).items():
            assert len(decl) == 2 and decl[1].get("tooltip"), f"{cls.__name__}.{name} needs a tooltip"
    assert cls.CATEGORY == "GenDeg/Dataset" and cls.DESCRIPTION
    assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
    assert callable(getattr(cls(), cls.FUNCTION))


def test_nodes_are_registered_with_valid_definitions():
    for node_id, cls in (("GenDegLoadImageFolder", GenDegLoadImageFolder), ("GenDegSaveDatasetPairs", GenDegSaveDatasetPairs)):
        assert NODE_CLASS_MAPPINGS[node_id] is cls
        _check_v1_definition(cls)
    assert GenDegLoadImageFolder.RETURN_TYPES == ("IMAGE", "MASK", "STRING")
    assert GenDegSaveDatasetPairs.OUTPUT_NODE is True


def test_load_folder_node_list_batch_masks_and_shard(tmp_path):
    root = tmp_path / "input" / "set"
    rgba = torch.rand(1, 4, 6, 5)
    rgba[:, 3] = 0.25
    save_image(root / "a.png", rgba)
    grey = _img(root / "b.png", 6, 5, c=1)
    _img(root / "c.png", 9, 7)
    node = GenDegLoadImageFolder()
    images, masks, names = node.load("set", "*", False, 0, 0, "list")
    assert names == ["a.png", "b.png", "c.png"]
    assert [tuple(i.shape) for i in images] == [(1, 6, 5, 3), (1, 6, 5, 3), (1, 9, 7, 3)]
    assert torch.allclose(masks[0], torch.full((1, 6, 5), 0.75), atol=1 / 255)  # 1 - alpha
    assert torch.equal(masks[1], torch.zeros(1, 6, 5))
    assert torch.allclose(images[1][0, ..., 0], grey[0, 0], atol=1 / 255) and torch.equal(images[1][..., 0], images[1][..., 2])
    with pytest.raises(InputError, match="one size: a.png is 5x6 but c.png is 7x9"):
        node.load("set", "*", False, 0, 0, "batch")
    batch, bmasks, bnames = node.load(str(root), "*", False, 0, 2, "batch")  # absolute folder works too
    assert len(batch) == 1 and batch[0].shape == (2, 6, 5, 3) and bmasks[0].shape == (2, 6, 5)
    assert bnames == ["a.png\nb.png"]
    host.SETTINGS.shard = (1, 2)
    assert node.load("set", "*", False, 0, 0, "list")[2] == ["b.png"]
    host.SETTINGS.shard = (0, 1)
    with pytest.raises(InputError, match="no images match"):
        node.load("set", "*.webp", False, 0, 0, "list")
    sig = GenDegLoadImageFolder.IS_CHANGED("set")
    _img(root / "d.png")
    assert GenDegLoadImageFolder.IS_CHANGED("set") != sig


def test_save_pairs_node_writes_then_skips_and_finds_its_records(tmp_path):
    root = tmp_path / "input" / "src"
    for n in ("x.png", "y.png"):
        _img(root / n, 8, 12)
    images, _, names = GenDegLoadImageFolder().load("src", "*", False, 0, 0, "list")
    degraded = [(i * 0.5) for i in images]
    meta = [json.dumps({"type": "haze", "strength": 0.4, "mu": 0.11})] * 2
    node = GenDegSaveDatasetPairs()
    out = node.save(images, degraded, ["pairs"], ["png"], [5], names, meta, prompt=[{"1": {"class_type": "X", "inputs": {}}}])
    assert out["ui"]["gendeg_stats"] == [{"written": 2, "skipped": 0}]
    ds_dir = Path(out["result"][0])
    assert ds_dir == (tmp_path / "output" / "pairs").resolve() or ds_dir == tmp_path / "output" / "pairs"
    records = [json.loads(x) for x in (ds_dir / "metadata.jsonl").read_text().splitlines()]
    assert [r["source"] for r in records] == ["x.png", "y.png"]
    assert all(r["type"] == "haze" and r["mu"] == 0.11 and r["seed"] == 5 and len(r["workflow_sha256"]) == 64 for r in records)
    again = node.save(images, degraded, ["pairs"], ["png"], [5], names, meta)
    assert again["ui"]["gendeg_stats"] == [{"written": 0, "skipped": 2}]
    other_seed = node.save(images, degraded, ["pairs"], ["png"], [6], names, meta)
    assert other_seed["ui"]["gendeg_stats"] == [{"written": 2, "skipped": 0}]
    assert len((ds_dir / "metadata.jsonl").read_text().splitlines()) == 4
    with pytest.raises(UnsafePathError):
        node.save(images, degraded, ["../outside"], ["png"], [5], names, meta)
    # without file names (e.g. ComfyUI's LoadImage), pairs are told apart by content
    anon = node.save(images, degraded, ["anon"], ["jpg"], [0])
    assert anon["ui"]["gendeg_stats"] == [{"written": 2, "skipped": 0}]
    assert len(list((tmp_path / "output" / "anon" / "degraded").glob("pair__*.jpg"))) == 2


def test_save_pairs_node_with_nothing_left_writes_nothing_and_does_not_fail(tmp_path):
    """A quality gate upstream may drop every image: the saver then has empty lists."""
    node = GenDegSaveDatasetPairs()
    out = node.save([], [], ["pairs"], ["png"], [0], [], [])
    assert out["ui"]["gendeg_stats"] == [{"written": 0, "skipped": 0}] and out["result"] == ("",)
    assert not (tmp_path / "output" / "pairs").exists()
    img = torch.rand(1, 8, 8, 3)
    with pytest.raises(InputError, match="same length"):
        node.save([img, img], [img, img, img], ["pairs"], ["png"], [0])


def test_gate_that_drops_everything_still_writes_the_score_report(tmp_path):
    """workflows/gendeg_quality_dataset_gate.json with an impossible rule: no pairs, but the CSV explains why."""
    from comfyui_gendeg.cli import main

    src = tmp_path / "in" / "clean"
    for n in ("a.png", "b.png"):
        _img(src / n, 24, 32)
    wf = Path(__file__).resolve().parents[1] / "workflows" / "gendeg_quality_dataset_gate.json"
    out = tmp_path / "out"
    rc = main(["run", str(wf), "--input-dir", str(tmp_path / "in"), "--output-dir", str(out), "--quiet",
               "--set", '4.rules="ssim >= 2"'])
    assert rc == 0
    assert list(out.rglob("*.csv")), "the all-scores CSV must be written even when the gate drops everything"
    assert not list(out.rglob("degraded/*.png"))


def test_gendeg_run_shards_write_the_same_dataset_as_one_run(tmp_path):
    from comfyui_gendeg.cli import main as cli_main

    src = tmp_path / "in" / "clean"
    for i in range(5):
        _img(src / f"im{i}.png", 6, 6)
    prompt = {
        "1": {"class_type": "GenDegLoadImageFolder", "inputs": {"folder": "clean", "pattern": "*", "recursive": False, "start": 0, "limit": 0, "output": "list"}},
        "2": {"class_type": "GenDegSaveDatasetPairs", "inputs": {"clean": ["1", 0], "degraded": ["1", 0], "filename": ["1", 2], "dataset": "d", "image_format": "png", "seed": 1}},
    }  # fmt: skip
    wf = tmp_path / "prompt.json"
    wf.write_text(json.dumps(prompt))
    base = ["run", str(wf), "--input-dir", str(tmp_path / "in"), "--quiet"]
    assert cli_main([*base, "--output-dir", str(tmp_path / "whole")]) == 0
    for i in range(2):
        assert cli_main([*base, "--output-dir", str(tmp_path / "sharded"), "--shard", f"{i}/2"]) == 0
    whole, sharded = tmp_path / "whole" / "d", tmp_path / "sharded" / "d"
    files = sorted(p.relative_to(whole).as_posix() for p in whole.rglob("*.png"))
    assert len(files) == 10 and files == sorted(p.relative_to(sharded).as_posix() for p in sharded.rglob("*.png"))
    assert all((whole / f).read_bytes() == (sharded / f).read_bytes() for f in files)

    def records(root):
        rows = [json.loads(x) for x in (root / "metadata.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "created"} for r in rows]

    assert records(whole) == records(sharded) and len(records(whole)) == 5
    # the shards' lock on the dataset leaves no file behind (no hidden .metadata.lock)
    assert [p.name for p in (tmp_path / "sharded").rglob(".*")] == []


def test_records_carry_the_checkouts_version_when_comfyui_loads_it_uninstalled(monkeypatch, tmp_path):
    """ComfyUI imports a clone in custom_nodes without installing it: the version comes from its
    pyproject.toml, also over an older installed distribution of the pack."""
    import importlib.metadata

    import tomllib
    from comfyui_gendeg.core import dataset

    expected = tomllib.loads(dataset.PYPROJECT.read_text())["project"]["version"]
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "9.9.9")
    dataset.tool_version.cache_clear()
    try:
        assert dataset.tool_version() == expected
        clean = torch.rand(1, 3, 6, 10)
        save_pairs(tmp_path, "v", clean, clean * 0.5, ["p.png"], [{"type": "haze"}], seed=1)
        record = json.loads((tmp_path / "v" / "metadata.jsonl").read_text().splitlines()[0])
        assert record["version"] == expected
        monkeypatch.setattr(dataset, "PYPROJECT", tmp_path / "missing" / "pyproject.toml")  # a wheel: no checkout
        dataset.tool_version.cache_clear()
        assert dataset.tool_version() == "9.9.9"
    finally:
        dataset.tool_version.cache_clear()
    other = tmp_path / "pyproject.toml"
    other.write_text('[project]\nname = "another-pack"\nversion = "2.0"\n')
    assert dataset.project_version(other) is None
    other.write_text('[tool.x]\nversion = "5"\n[project]\nname = "comfyui-gendeg"\nversion = "1.2.3"\n[tool.y]\nversion = "7"\n')
    assert dataset.project_version(other) == "1.2.3"

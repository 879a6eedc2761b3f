"""DriftRec restoration: tiling, averaging, colour correction, seeds, interruption, and the two nodes."""

from __future__ import annotations

import pytest
import torch
from comfyui_gendeg import cli
from comfyui_gendeg.core.errors import Interrupted
from comfyui_gendeg.core.restore.driftrec import colour_correct, restore_driftrec, sample
from comfyui_gendeg.core.restore.driftrec_loader import DriftRecRestorer
from comfyui_gendeg.core.restore.driftrec_sde import make_sde
from comfyui_gendeg.nodes import host
from comfyui_gendeg.nodes.restore_driftrec import GenDegDriftRecLoader, GenDegDriftRecRestore
from driftrec_helpers import save_official, tiny_net


def _restorer(seed: int = 0) -> DriftRecRestorer:
    return DriftRecRestorer(tiny_net(seed), make_sde("ouve"), {})


def _run(model, y, seed=0, **kw):
    return restore_driftrec(model, y, steps=kw.pop("steps", 3), generator=torch.Generator().manual_seed(seed), **kw)


def test_restore_uses_the_network_on_x_and_y_with_sigma():
    """restore_driftrec == sample() with the score cat(x, y) -> net(., std(t)) (same noise)."""
    model = _restorer()
    y = torch.rand(1, 3, 24, 20)
    got = _run(model, y, steps=4)

    def score(x, y_, t):
        return model.net(torch.cat([x, y_], 1), torch.full((x.shape[0],), float(model.sde.std(t[:1])[0])))

    with torch.no_grad():
        ref = sample(model.sde, score, y, steps=4, generator=torch.Generator().manual_seed(0)).clamp(0, 1)
    torch.testing.assert_close(got, ref)


def test_tiling_one_tile_is_exact_and_several_tiles_are_close():
    model = _restorer()
    y = torch.rand(1, 3, 72, 80)
    whole = _run(model, y)
    assert torch.equal(_run(model, y, tile=128), whole)
    tiled = _run(model, y, tile=64, overlap=32)
    assert tiled.shape == whole.shape and float((tiled - whole).abs().mean()) < 0.02


def test_samples_average_and_colour_correction():
    model = _restorer()
    y = torch.rand(1, 3, 16, 16)
    one, two = _run(model, y, seed=1), _run(model, y, seed=1, samples=2)
    g = torch.Generator().manual_seed(1)
    a = restore_driftrec(model, y, steps=3, generator=g)
    b = restore_driftrec(model, y, steps=3, generator=g)  # the same generator continues: the second sample
    torch.testing.assert_close(two, (a + b) / 2)
    assert not torch.equal(one, two)
    cc = _run(model, y, seed=1, colour_correction=True)
    torch.testing.assert_close(cc, colour_correct(one, y))
    torch.testing.assert_close(colour_correct(torch.full((1, 3, 4, 4), 0.2), torch.full((1, 3, 4, 4), 0.5)),
                               torch.full((1, 3, 4, 4), 0.5))


def test_seed_and_batch_independence():
    model = _restorer()
    y = torch.rand(2, 3, 16, 16)
    assert torch.equal(_run(model, y, seed=4), _run(model, y, seed=4))
    assert not torch.equal(_run(model, y, seed=4), _run(model, y, seed=5))


def test_interruption_stops_between_steps():
    model = _restorer()
    seen = []

    def progress(i, n):
        seen.append(i)
        if i == 2:
            raise Interrupted("stop")

    with pytest.raises(Interrupted):
        _run(model, torch.rand(1, 3, 16, 16), steps=10, progress=progress)
    assert seen == [0, 1, 2]


def test_loader_and_restore_nodes(tmp_path):
    save_official(host.SETTINGS.models_dir / "restore" / "driftrec" / "d2kf2k.ckpt")
    loader = GenDegDriftRecLoader()
    assert "driftrec/d2kf2k.ckpt" in loader.INPUT_TYPES()["required"]["checkpoint"][0]
    (model,) = loader.load("driftrec/d2kf2k.ckpt", "ema", "auto")
    assert (host.SETTINGS.models_dir / "restore" / "driftrec" / "d2kf2k.driftrec.safetensors").is_file()
    node = GenDegDriftRecRestore()
    rgba = torch.rand(2, 21, 30, 4)
    out = node.restore(rgba, model, steps=2, seed=3, samples=1)
    (restored,) = out["result"]
    assert restored.shape == rgba.shape and torch.equal(restored[..., 3], rgba[..., 3])
    again = node.restore(rgba, model, steps=2, seed=3)["result"][0]
    assert torch.equal(restored, again)
    grey = node.restore(torch.rand(1, 16, 16, 1), model, steps=2, corrector="langevin", sampler="probability_flow")["result"][0]
    assert grey.shape == (1, 16, 16, 1)


def test_nodes_are_listed_on_the_command_line(capsys):
    assert cli.main(["nodes"]) == 0
    text = capsys.readouterr().out
    assert "GenDegDriftRecLoader" in text and "GenDegDriftRecRestore" in text


def test_missing_checkpoint_names_the_file(tmp_path):
    from comfyui_gendeg.core.errors import MissingWeightError

    with pytest.raises(MissingWeightError, match="driftrec/d2kf2k.ckpt"):
        GenDegDriftRecLoader().load("driftrec/d2kf2k.ckpt")

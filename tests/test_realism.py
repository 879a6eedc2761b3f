"""GenDeg's real-data statistics (issue 17): the table, the API over it, and the official sampling.

Everything is checked against computations written here from the committed counts
(``core/realism_table.py``) and the published facts, not against the module's own helpers:
percentiles by summing bins by hand, the official sampler re-written from the procedure of
``get_samples_mu_sigma_nested.py`` / ``edit_dataset.py`` (sudraj2002/GenDeg) on histograms laid
out as the published JSON files are, and goodness of fit (scipy's chi-square) on many draws.
"""

from __future__ import annotations

import bisect
import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from comfyui_gendeg.core import realism
from comfyui_gendeg.core import realism_table as table
from comfyui_gendeg.core.errors import InputError
from comfyui_gendeg.core.presets import GENDEG_PRESETS

stats = pytest.importorskip("scipy.stats")
ROOT = Path(__file__).resolve().parents[1]
MU_EDGES = np.linspace(0.0, 0.7, 129)
SG_EDGES = np.linspace(0.0, 0.4, 129)

#: the datasets GenDeg lists per type (issue 17 / the paper), under the published file names
DATASETS = {
    "haze": {"CityscapesFog", "DenseHaze", "I-HAZE", "NH-HAZE", "RESIDE"},
    "rain": {"ORD", "Rain13K", "Rain1400", "RainDS", "RealRain1k", "SPAC"},
    "snow": {"CSD", "CityscapesSnow", "Snow100k"},
    "motion_blur": {"HIDE", "REDS", "RealBlur"},
    "low_light": {"LOLv2", "SID"},
    "raindrop": {"RainDS", "Raindrop"},
}


def dense(first: int, values: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(128, dtype=np.int64)
    out[first : first + len(values)] = values
    return out


def joint_by_hand(kind: str) -> np.ndarray:
    out = np.zeros((128, 128), dtype=np.int64)
    for i, first, values in table.JOINT[kind]:
        out[i] += dense(first, values)
    return out


# --- the table ----------------------------------------------------------------------------------


def test_table_holds_every_published_dataset_and_consistent_marginals():
    assert {k: set(v) for k, v in table.MU_COUNTS.items()} == DATASETS
    assert {k: set(v) for k, v in table.SIGMA_COUNTS.items()} == DATASETS
    for kind in DATASETS:
        j = joint_by_hand(kind)
        mu_sum = sum(dense(*v) for v in table.MU_COUNTS[kind].values())
        sg_sum = sum(dense(*v) for v in table.SIGMA_COUNTS[kind].values())
        assert np.array_equal(j.sum(axis=1), mu_sum), kind  # the joint is all datasets pooled
        assert np.array_equal(j.sum(axis=0), sg_sum), kind
        for ds in DATASETS[kind]:
            assert dense(*table.MU_COUNTS[kind][ds]).sum() == dense(*table.SIGMA_COUNTS[kind][ds]).sum() > 0
    # a few published sizes (images per dataset, from the histograms' totals)
    assert dense(*table.MU_COUNTS["low_light"]["LOLv2"]).sum() + dense(*table.MU_COUNTS["low_light"]["SID"]).sum() == \
        joint_by_hand("low_light").sum()
    assert dense(*table.MU_COUNTS["raindrop"]["RainDS"]).sum() == 23 + 83 + 124 + 400 + 242 + 28


def _write_published(folder: Path, rng: np.random.Generator, *, break_joint: bool = False) -> dict:
    """Tiny histograms laid out as GenDeg's JSON files (one folder per type), for the generator script."""
    names = {"haze": "haze", "rain": "rain", "snow": "snow", "motion blur": "motion_blur", "low-light": "low_light",
             "raindrop": "raindrop"}
    truth = {}
    for d, kind in names.items():
        (folder / d).mkdir(parents=True)
        joint = np.zeros((128, 128), dtype=np.int64)
        per = {}
        for ds in ("A", "B"):
            pairs = [(int(rng.integers(0, 40)), int(rng.integers(0, 60))) for _ in range(30)]
            mu = np.bincount([p[0] for p in pairs], minlength=128)
            sg = np.bincount([p[1] for p in pairs], minlength=128)
            for a, b in pairs:
                joint[a, b] += 1
            per[ds] = (mu, sg)
        for ds, (mu, sg) in per.items():
            (folder / d / f"Mu_{ds}.json").write_text(json.dumps(
                [{"Mu min": float(MU_EDGES[i]), "Mu max": float(MU_EDGES[i + 1]), "Count": int(c), "Dataset": ds}
                 for i, c in enumerate(mu)]))
            (folder / d / f"Sigma_{ds}.json").write_text(json.dumps(
                [{"Sigma min": float(SG_EDGES[i]), "Sigma max": float(SG_EDGES[i + 1]), "Count": int(c), "Dataset": ds}
                 for i, c in enumerate(sg)]))
            j = joint.copy()
            if break_joint and ds == "B":
                j[0, 0] += 1
            (folder / d / f"Mu-Sigma-_{ds}.json").write_text(json.dumps(
                [{"Mu range": f"{MU_EDGES[i]:.3f} - {MU_EDGES[i + 1]:.3f}", "Dataset": ds,
                  "Count": [{"Sigma min": float(SG_EDGES[k]), "Sigma max": float(SG_EDGES[k + 1]), "Count": int(c),
                             "Dataset": ds} for k, c in enumerate(row)]} for i, row in enumerate(j)]))
        truth[kind] = (per, joint)
    return truth


def test_generator_script_writes_the_counts_and_refuses_inconsistent_files(tmp_path):
    data = tmp_path / "data"
    truth = _write_published(data, np.random.default_rng(0))
    out = tmp_path / "table.py"
    script = ROOT / "scripts" / "make_realism_table.py"
    run = subprocess.run([sys.executable, str(script), str(data), "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    spec = importlib.util.spec_from_file_location("gen_table", out)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for kind, (per, joint) in truth.items():
        for ds, (mu, sg) in per.items():
            assert np.array_equal(dense(*mod.MU_COUNTS[kind][ds]), mu)
            assert np.array_equal(dense(*mod.SIGMA_COUNTS[kind][ds]), sg)
        got = np.zeros((128, 128), dtype=np.int64)
        for i, first, values in mod.JOINT[kind]:
            got[i] += dense(first, values)
        assert np.array_equal(got, joint)
    check = subprocess.run([sys.executable, str(script), str(data), "--out", str(out), "--check"], capture_output=True, text=True)
    assert check.returncode == 0 and "up to date" in check.stdout
    bad = tmp_path / "bad"
    _write_published(bad, np.random.default_rng(0), break_joint=True)
    run = subprocess.run([sys.executable, str(script), str(bad), "--out", str(tmp_path / "t2.py")], capture_output=True, text=True)
    assert run.returncode == 2 and "differ between datasets" in run.stderr and not (tmp_path / "t2.py").exists()
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "GenDeg/data" in run.stderr


# --- conditional distributions ------------------------------------------------------------------


def pct_by_hand(counts: np.ndarray, edges: np.ndarray, value: float) -> float:
    """Percent of images below ``value``, values uniform inside each bin (a plain loop)."""
    below = 0.0
    for k, c in enumerate(counts):
        lo, hi = edges[k], edges[k + 1]
        if value >= hi:
            below += c
        elif value > lo:
            below += c * (value - lo) / (hi - lo)
    return 100.0 * below / counts.sum()


def quantile_by_hand(counts: np.ndarray, edges: np.ndarray, q: float) -> float:
    lo, hi = float(edges[0]), float(edges[-1])
    for _ in range(60):  # bisection on the percentile
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if pct_by_hand(counts, edges, mid) < 100 * q else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("kind", sorted(DATASETS))
def test_conditional_sigma_percentiles_match_a_computation_by_hand(kind):
    j = joint_by_hand(kind)
    rows = j.sum(axis=1)
    for mu in (0.01, 0.05, 0.1, 0.2, 0.3, 0.45):
        i = min(int(mu / 0.7 * 128), 127)
        # GenDeg's bin of mu; rows with fewer than 50 images take neighbours symmetrically
        nz = np.nonzero(rows)[0]
        i = int(np.clip(i, nz[0], nz[-1]))
        lo = hi = i
        while rows[lo : hi + 1].sum() < realism.MIN_COUNT and (lo > 0 or hi < 127):
            lo, hi = max(0, lo - 1), min(127, hi + 1)
        counts = j[lo : hi + 1].sum(axis=0)
        dist = realism.conditional_sigma(kind, mu)
        assert np.array_equal(dist.counts, counts) and dist.bins == (lo, hi)
        for q in (0.05, 0.25, 0.5, 0.75, 0.95):
            assert dist.quantile(q) == pytest.approx(quantile_by_hand(counts, SG_EDGES, q), abs=1e-9)
        med = quantile_by_hand(counts, SG_EDGES, 0.5)
        assert realism.typical_sigma(kind, mu) == pytest.approx(med, abs=1e-9)
        for v in (0.0, 0.013, 0.05, 0.0999, 0.2, 0.4):
            assert realism.sigma_percentile(kind, mu, v) == pytest.approx(pct_by_hand(counts, SG_EDGES, v), abs=1e-9)
        b5, b95 = dist.band()
        assert realism.is_typical(kind, mu, (b5 + b95) / 2) and not realism.is_typical(kind, mu, b95 + 0.02)


def test_presets_carry_the_typical_sigma_of_real_data():
    for kind in DATASETS:
        for level, (mu, sigma) in GENDEG_PRESETS[kind].items():
            assert sigma == round(realism.typical_sigma(kind, mu), 3), (kind, level)


def test_api_refuses_bad_input_with_one_line():
    with pytest.raises(InputError, match="no real-data statistics for 'jpeg'|publishes no real-data statistics"):
        realism.conditional_sigma("jpeg", 0.05)
    with pytest.raises(InputError, match="finite number"):
        realism.conditional_sigma("rain", float("nan"))
    with pytest.raises(InputError, match="choose one of ORD, Rain13K"):
        realism.mu_counts("rain", "Rain100L")
    with pytest.raises(InputError, match="ask for rain"):
        realism.sample_official("rain+haze", random.Random(0), 1)


# --- GenDeg's sampling --------------------------------------------------------------------------


def published_layout(kind: str) -> tuple[dict, dict, dict]:
    """The histograms as GenDeg's loader holds them: per dataset, lists of bin dicts (μ, σ) and the
    joint as a lookup from the ``"{min:.3f} - {max:.3f}"`` μ range to a list of σ bin dicts."""
    def bins(counts: np.ndarray, edges: np.ndarray, key: str) -> list[dict]:
        return [{f"{key} min": float(edges[i]), f"{key} max": float(edges[i + 1]), "Count": int(c)}
                for i, c in enumerate(counts)]

    j = joint_by_hand(kind)
    joint = {f"{MU_EDGES[i]:.3f} - {MU_EDGES[i + 1]:.3f}": bins(j[i], SG_EDGES, "Sigma") for i in range(128)}
    mus = {ds: bins(dense(*v), MU_EDGES, "Mu") for ds, v in table.MU_COUNTS[kind].items()}
    sgs = {ds: bins(dense(*v), SG_EDGES, "Sigma") for ds, v in table.SIGMA_COUNTS[kind].items()}
    return mus, sgs, joint


def official_draws(kind: str, n: int, seed: int) -> list[tuple[str, float, float, bool]]:
    """The official procedure, written from its description (Sec. 3.2 and edit_dataset.py)."""
    mus, sgs, joint = published_layout(kind)
    names = sorted(mus)
    down = {"ORD": 0.2, "DenseHaze": 0.05, "NH-HAZE": 0.1, "I-HAZE": 0.25, "SID": 0.2}
    weights = [down.get(d, 1.0) * 1 / len(names) for d in names]
    rng = random.Random(seed)
    out = []
    for counter in range(n):
        uniform = counter % 20 == 0
        ds = rng.choices(names, weights=weights, k=1)[0]
        if uniform:
            def span(h: list[dict], key: str) -> tuple[float, float]:
                nz = [b for b in h if b["Count"] > 0]
                return min(b[f"{key} min"] for b in nz), max(b[f"{key} max"] for b in nz)
            mu = rng.uniform(*span(mus[ds], "Mu"))
            sg = rng.uniform(*span(sgs[ds], "Sigma"))
        else:
            def draw(h: list[dict], key: str) -> tuple[float, dict]:
                cum, total = [], 0
                for b in h:
                    total += b["Count"]
                    cum.append(total)
                b = h[bisect.bisect_left(cum, rng.randint(1, total))]
                return rng.uniform(b[f"{key} min"], b[f"{key} max"]), b
            mu, b = draw(mus[ds], "Mu")
            sg, _ = draw(joint[f"{b['Mu min']:.3f} - {b['Mu max']:.3f}"], "Sigma")
        out.append((ds, mu, sg, uniform))
    return out


@pytest.mark.parametrize("kind", sorted(DATASETS))
def test_sampling_is_the_official_procedure_draw_for_draw(kind):
    ours = realism.sample_many(kind, 600, seed=7)
    ref = official_draws(kind, 600, seed=7)
    assert [(d.dataset, d.uniform) for d in ours] == [(r[0], r[3]) for r in ref]
    assert np.allclose([(d.mu, d.sigma) for d in ours], [(r[1], r[2]) for r in ref], rtol=0, atol=1e-12)
    mixed = {"rain": ("ORD", "rain+haze"), "snow": ("CSD", "snow+haze")}.get(kind)
    for d in ours:
        assert d.type == (mixed[1] if mixed and d.dataset == mixed[0] else kind)


def _chi2(observed: np.ndarray, expected_p: np.ndarray) -> float:
    """p-value of a chi-square goodness of fit, bins with fewer than 5 expected merged into one."""
    n = observed.sum()
    exp = expected_p / expected_p.sum() * n
    small = exp < 5
    obs = np.append(observed[~small], observed[small].sum()) if small.any() else observed
    ex = np.append(exp[~small], exp[small].sum()) if small.any() else exp
    if small.any() and ex[-1] == 0:
        obs, ex = obs[:-1], ex[:-1]
    return float(stats.chisquare(obs, ex * obs.sum() / ex.sum()).pvalue)


@pytest.mark.parametrize("kind", ["rain", "haze", "low_light", "snow"])
def test_sampling_matches_the_histograms_and_the_dataset_weights(kind):
    draws = realism.sample_many(kind, 24000, seed=3)
    names = realism.datasets(kind)
    w = realism.dataset_weights(kind)
    down = {"rain": {"ORD": 0.2}, "haze": {"DenseHaze": 0.05, "NH-HAZE": 0.1, "I-HAZE": 0.25}, "low_light": {"SID": 0.2}}
    raw = np.array([down.get(kind, {}).get(d, 1.0) for d in names])
    assert np.allclose([w[d] for d in names], raw / raw.sum())
    picked = np.array([sum(d.dataset == name for d in draws) for name in names])
    assert _chi2(picked, raw) > 1e-3
    regular = [d for d in draws if not d.uniform]
    assert len(regular) == 24000 - 24000 // 20
    # μ of the draws from the largest dataset against its μ histogram
    big = max(names, key=lambda n: picked[names.index(n)])
    mus = np.array([d.mu for d in regular if d.dataset == big])
    obs = np.histogram(mus, MU_EDGES)[0]
    assert _chi2(obs, dense(*table.MU_COUNTS[kind][big]).astype(float)) > 1e-3
    # σ of the regular draws against the mixture of the joint's σ rows, weighted as the draws' μ bins are
    j = joint_by_hand(kind)
    expected = np.zeros(128)
    for name in names:
        p_ds = raw[names.index(name)] / raw.sum()
        mu_p = dense(*table.MU_COUNTS[kind][name]) / dense(*table.MU_COUNTS[kind][name]).sum()
        rows = j / np.maximum(j.sum(axis=1, keepdims=True), 1)
        expected += p_ds * (mu_p @ rows)
    obs = np.histogram([d.sigma for d in regular], SG_EDGES)[0]
    assert _chi2(obs, expected) > 1e-3
    # and within one μ bin, σ follows that bin's row
    k = int(np.argmax(j.sum(axis=1)))
    sel = [d.sigma for d in regular if min(int(np.digitize(d.mu, MU_EDGES)) - 1, 127) == k]
    assert len(sel) > 200
    assert _chi2(np.histogram(sel, SG_EDGES)[0], j[k].astype(float)) > 1e-3


def test_every_20th_draw_is_uniform_between_the_lowest_and_highest_non_empty_bins():
    draws = realism.sample_many("rain", 20 * 1500, seed=11)
    assert [i for i, d in enumerate(draws) if d.uniform] == list(range(0, 20 * 1500, 20))
    uni = [d for d in draws if d.uniform and d.dataset == "Rain13K"]
    nz_mu = np.nonzero(dense(*table.MU_COUNTS["rain"]["Rain13K"]))[0]
    nz_sg = np.nonzero(dense(*table.SIGMA_COUNTS["rain"]["Rain13K"]))[0]
    lo_mu, hi_mu = MU_EDGES[nz_mu[0]], MU_EDGES[nz_mu[-1] + 1]
    lo_sg, hi_sg = SG_EDGES[nz_sg[0]], SG_EDGES[nz_sg[-1] + 1]
    mus, sgs = np.array([d.mu for d in uni]), np.array([d.sigma for d in uni])
    assert len(uni) > 150 and mus.min() >= lo_mu and mus.max() <= hi_mu and sgs.min() >= lo_sg and sgs.max() <= hi_sg
    assert stats.kstest(mus, stats.uniform(lo_mu, hi_mu - lo_mu).cdf).pvalue > 1e-3
    assert stats.kstest(sgs, stats.uniform(lo_sg, hi_sg - lo_sg).cdf).pvalue > 1e-3

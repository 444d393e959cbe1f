"""examples/batchnorm_decay.py: one ``--quick`` run (digits, 2 seeds), its numbers recomputed.

The quick run records every step, so record 0 is the first update from the init, where the math
of a scale-invariant layer is exact: on SGDW's first step ``dw = -lambda*w - alpha*g`` with
``<g, w> = 0``, so ``(||dw||/||w||)^2 = angular^2 + lambda^2``.
"""

import json

import numpy as np
import pytest

from examples import batchnorm_decay, models, optimizers

OPTIMIZERS, SEEDS = ("sgdw", "adamw"), [0, 1]  # the defaults; --quick: 2 seeds
LAYERS, METRICS = ("layers.0", "layers.1"), batchnorm_decay.METRICS  # the MLP's pre-BN layers


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("batchnorm_decay")
    returned = batchnorm_decay.main(["--quick", "--no-progress", "--out", str(out)])
    return out, returned, json.loads((out / "results.json").read_text())


def group(report, name):
    """The records of one optimizer (decay-major, then seed) and its history as arrays."""
    h = {k: np.asarray(v) for k, v in report["history"][name].items()}
    return [r for r in report["results"] if r["optimizer"] == name], h


def test_records_seeds_and_files(quick):
    out, returned, report = quick
    config, records = report["config"], report["results"]
    assert all((out / f).stat().st_size for f in ("results.json", "summary.md", "batchnorm.png"))
    assert returned["results"] == records
    folds, steps = config["decay_folds"], config["steps"]
    assert config["seed_list"] == SEEDS and len(records) == 2 * len(folds) * len(SEEDS)
    for name in OPTIMIZERS:
        rs, h = group(report, name)
        assert [r["seed"] for r in rs] == SEEDS * len(folds) == h["seed"].tolist()
        lam = [k / (0.5 * steps) for k in folds for _ in SEEDS]  # paper form: sgdw, adamw alike
        np.testing.assert_allclose([r["weight_decay"] for r in rs], lam, rtol=1e-6)
        np.testing.assert_allclose(h["weight_decay"], lam, rtol=1e-6)
        for layer in LAYERS:
            norm, eff, ang = (h[f"{layer}/{m}"] for m in METRICS)
            assert norm.shape == eff.shape == ang.shape == (steps, len(rs))  # --quick: every step
            assert np.all(norm > 0) and np.all(ang >= 0) and np.all(ang <= eff * (1 + 1e-5))
        eta = np.asarray(optimizers.schedule(steps)(h["steps"] - 1))  # record i: update i + 1
        np.testing.assert_allclose(h["eta"], eta, rtol=1e-5, atol=1e-7)
    for r in records:
        numbers = [r[k] for k in ("test_accuracy", "batch_stat_accuracy", "first_layer_norm")]
        assert np.all(np.isfinite(numbers)) and 0 < min(numbers) and max(numbers[:2]) <= 1
    summary = (out / "summary.md").read_text()
    for i in range(0, len(records), len(SEEDS)):  # a mean ± std (ddof 1) per optimizer and decay
        acc = [r["test_accuracy"] for r in records[i : i + len(SEEDS)]]
        assert f"{np.mean(acc):.4f} ± {np.std(acc, ddof=1):.4f}" in summary


def test_derived_numbers_recomputed(quick):
    _, _, report = quick
    steps, mu = report["config"]["steps"], optimizers.MOMENTUM  # sgdw's mu = adamw's beta1
    for name in OPTIMIZERS:
        rs, h = group(report, name)
        norm, eff, ang = (h[f"layers.0/{m}"] for m in METRICS)
        late, mid = h["steps"] > 0.8 * steps, np.abs(h["steps"] / steps - 0.5) <= 0.05
        for j, r in enumerate(rs):
            b = SEEDS.index(r["seed"])  # the same seed's lambda = 0 member (decay 0 comes first)
            assert rs[b]["weight_decay"] == 0 and rs[b]["seed"] == r["seed"]
            assert r["late_effective_step"] == pytest.approx(eff[late, j].mean(), rel=1e-6)
            ratio = eff[late, j].mean() / eff[late, b].mean()
            assert r["late_effective_step_ratio"] == pytest.approx(ratio, rel=1e-6)
            assert r["accuracy_change"] == pytest.approx(
                r["test_accuracy"] - rs[b]["test_accuracy"]
            )
            lam, ratio = r["weight_decay"], r["mid_equilibrium_ratio"]
            pred = np.sqrt(2 * lam * h["eta"][mid] * (1 - mu) / (1 + mu))
            assert (
                ratio is None if lam == 0 else ratio == pytest.approx(np.mean(ang[mid, j] / pred))
            )
            assert r["first_layer_norm"] == pytest.approx(norm[-1, j], rel=1e-3)  # eta_T ~ 0
            assert r["first_layer_norm"] < r["weight_norm"]  # one of the decayed kernels


def test_decay_shrinks_the_norm_and_raises_the_step(quick):
    """The claim's robust part, per seed: a smaller pre-BN norm, a larger late step."""
    _, _, report = quick
    for name in OPTIMIZERS:
        rs, h = group(report, name)
        for s in range(len(SEEDS)):
            norms = [r["first_layer_norm"] for r in rs[s :: len(SEEDS)]]
            assert norms == sorted(norms, reverse=True) and norms[0] > norms[-1]
            assert all(r["late_effective_step_ratio"] > 1 for r in rs[s :: len(SEEDS)][1:])
            assert h["layers.0/weight_norm"][-1, s] >= 0.99 * h["layers.0/weight_norm"][0, s]


def test_first_sgdw_step_matches_scale_invariance(quick):
    rs, h = group(quick[2], "sgdw")
    lam = np.asarray([r["weight_decay"] for r in rs], np.float64)
    inits = [  # each seed's init, shared by its decays (the default width 256,256)
        models.make_model("mlp", (8, 8, 1), 10, norm="batch", seed=s, width=(256, 256)).layers
        for s in SEEDS
    ]
    for i, layer in enumerate(LAYERS):
        norm, eff, ang = (h[f"{layer}/{m}"][0].astype(np.float64) for m in METRICS)
        np.testing.assert_allclose(eff**2 - ang**2, lam**2, rtol=1e-3, atol=1e-8)
        for values in (norm, ang):  # ang = alpha*||g||/||w||: the same for every decay
            by_seed = values.reshape(-1, len(SEEDS))
            np.testing.assert_allclose(by_seed, by_seed[:1].repeat(len(by_seed), 0), rtol=1e-3)
        w0 = [np.linalg.norm(np.asarray(layers[i].kernel[...])) for layers in inits]
        np.testing.assert_allclose(norm[: len(SEEDS)], w0, rtol=1e-5)

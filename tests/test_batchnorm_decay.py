"""examples/batchnorm_decay.py: weight decay on the layers before a BatchNorm.

One ``--quick`` run (digits) is shared by most tests; they recompute the
reported numbers from the recorded history in ``results.json``. A one-step run
checks the tracker against the math of a scale-invariant layer, independently
of the script: on the first SGDW step ``Delta w = -lambda*w - alpha*g`` with
``<g, w> = 0``, so ``(||Delta w||/||w||)^2 = lambda^2 + (alpha*||g||/||w||)^2``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

from examples import batchnorm_decay, data, models

REQUIRED = ("optimizer", "learning_rate", "weight_decay", "test_accuracy", "weight_norm")
EXTRA = (
    "batch_stat_accuracy",
    "first_layer_norm",
    "late_effective_step",
    "late_effective_step_ratio",
    "late_angular_step",
    "late_angular_step_ratio",
    "mid_equilibrium_ratio",
    "tracked_layer",
    "steps",
    "batchnorm",
)
OPTIMIZERS = ("sgdw", "adamw")  # the script's default
LAYERS = ("layers.0", "layers.1")  # the default MLP has two hidden layers, each before a BN
METRICS = ("weight_norm", "effective_step", "angular_step")


def _run(argv):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        returned = batchnorm_decay.main(argv)
    return returned, stdout.getvalue()


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("batchnorm_decay")
    returned, stdout = _run(["--quick", "--no-progress", "--out", str(out)])
    report = json.loads((out / "results.json").read_text())
    return {"out": out, "returned": returned, "stdout": stdout, "report": report}


def _group(report, name):
    return [r for r in report["results"] if r["optimizer"] == name]


def test_outputs_and_required_keys(quick):
    out, report = quick["out"], quick["report"]
    for name in ("results.json", "summary.md", "batchnorm.png"):
        assert (out / name).stat().st_size > 0, name
    records = report["results"]
    assert quick["returned"]["records"] == records
    assert [r["optimizer"] for r in records] == [n for n in OPTIMIZERS for _ in range(3)]
    for r in records:
        for key in REQUIRED + EXTRA:
            assert key in r, key
        assert 0.0 <= r["test_accuracy"] <= 1.0
        assert 0.0 <= r["batch_stat_accuracy"] <= 1.0
        assert math.isfinite(r["weight_norm"]) and r["weight_norm"] > 0
        assert r["batchnorm"] is True and r["tracked_layer"] == "layers.0"
    assert report["config"]["quick"] is True
    # The summary is printed and written: a table row per run.
    summary = (out / "summary.md").read_text()
    for text in (quick["stdout"], summary):
        rows = [
            line
            for line in text.splitlines()
            if line.startswith("| sgdw") or line.startswith("| adamw")
        ]
        assert len(rows) == len(records)
    assert "What came out" in summary


def test_history_is_complete_and_json_ready(quick):
    report = quick["report"]
    steps = report["config"]["steps"]
    assert set(report["history"]) == set(OPTIMIZERS)
    for name, h in report["history"].items():
        group = _group(report, name)
        assert h["weight_decay"] == [r["weight_decay"] for r in group]
        every = report["config"]["track_every"]
        assert h["steps"] == list(range(every, steps + 1, every))
        # eta of record i is the cosine at t = steps[i] - 1 (the update's own step count).
        t = np.asarray(h["steps"]) - 1
        np.testing.assert_allclose(h["eta"], 0.5 * (1 + np.cos(np.pi * t / steps)), rtol=1e-12)
        for layer in LAYERS:
            for metric in METRICS:
                values = np.asarray(h[f"{layer}/{metric}"])
                assert values.shape == (len(h["steps"]), len(group)), (layer, metric)
                assert np.all(np.isfinite(values)) and np.all(values >= 0)
            # The angular part never exceeds the whole step.
            eff = np.asarray(h[f"{layer}/effective_step"])
            ang = np.asarray(h[f"{layer}/angular_step"])
            assert np.all(ang <= eff * (1 + 1e-5) + 1e-12)


def test_reported_numbers_recomputed_from_history(quick):
    report = quick["report"]
    steps = report["config"]["steps"]
    for name, h in report["history"].items():
        group = _group(report, name)
        rec_steps = np.asarray(h["steps"])
        eta = np.asarray(h["eta"])
        eff = np.asarray(h["layers.0/effective_step"])
        ang = np.asarray(h["layers.0/angular_step"])
        late = rec_steps > 0.8 * steps
        zero = [i for i, r in enumerate(group) if r["weight_decay"] == 0][0]
        mid = (rec_steps >= 0.45 * steps) & (rec_steps <= 0.55 * steps)
        momentum = 0.9  # SGD momentum and Adam's beta1
        for j, r in enumerate(group):
            assert r["late_effective_step"] == pytest.approx(eff[late, j].mean(), rel=1e-6)
            assert r["late_angular_step"] == pytest.approx(ang[late, j].mean(), rel=1e-6)
            assert r["late_effective_step_ratio"] == pytest.approx(
                eff[late, j].mean() / eff[late, zero].mean(), rel=1e-6
            )
            assert r["late_angular_step_ratio"] == pytest.approx(
                ang[late, j].mean() / ang[late, zero].mean(), rel=1e-6
            )
            lam = r["weight_decay"]  # sgdw and adamw are paper-form: lambda per step
            if lam == 0:
                assert r["mid_equilibrium_ratio"] is None
            else:
                pred = np.sqrt(2 * lam * eta[mid] * (1 - momentum) / (1 + momentum))
                assert r["mid_equilibrium_ratio"] == pytest.approx(
                    np.mean(ang[mid, j] / pred), rel=1e-6
                )
            # The last update has eta ~ 0, so the final norm is the last recorded one.
            last = np.asarray(h["layers.0/weight_norm"])[-1, j]
            assert r["first_layer_norm"] == pytest.approx(last, rel=1e-3)
            # The pre-BN kernel is part of the decayed weights.
            assert r["first_layer_norm"] < r["weight_norm"]


def test_default_decays_follow_the_folds(quick):
    """lambda_paper = k / (0.5*steps) for the quick folds, identical for sgdw and adamw."""
    report = quick["report"]
    steps = report["config"]["steps"]
    folds = report["config"]["decay_folds"]
    for name in OPTIMIZERS:
        got = [r["weight_decay"] for r in _group(report, name)]
        np.testing.assert_allclose(got, [k / (0.5 * steps) for k in folds], rtol=1e-6)


def test_decay_shrinks_the_pre_bn_norm_and_raises_the_step(quick):
    """The claim's robust part, visible even in the quick run."""
    report = quick["report"]
    for name in OPTIMIZERS:
        group = sorted(_group(report, name), key=lambda r: r["weight_decay"])
        norms = [r["first_layer_norm"] for r in group]
        assert norms == sorted(norms, reverse=True) and norms[0] > norms[-1], norms
        for r in group[1:]:
            assert r["late_angular_step_ratio"] > 1, (name, r["weight_decay"])
        # Without decay the scale-invariant kernel's norm does not shrink.
        base = np.asarray(report["history"][name]["layers.0/weight_norm"])[:, 0]
        assert base[-1] >= 0.99 * base[0]


def test_first_step_matches_scale_invariance(tmp_path):
    """One SGDW step from the shared init: the step's square grows by exactly lambda^2."""
    decays = (0.0, 0.1, 0.3)
    returned, _ = _run(
        [
            "--quick",
            "--no-progress",
            "--out",
            str(tmp_path),
            "--steps",
            "1",
            "--track-every",
            "1",
            "--optimizers",
            "sgdw",
            "--weight-decays",
            ",".join(map(str, decays)),
        ],
    )
    h = returned["history"]["sgdw"]
    assert h["steps"] == [1] and h["eta"] == [1.0]
    digits = data.load("digits")
    model = models.make_model(
        "mlp", digits.image_shape, digits.num_classes, norm="batch", seed=0, width=(256, 256)
    )
    for i, layer in enumerate(LAYERS):
        w0 = np.asarray(model.layers[i].kernel[...], np.float64)
        np.testing.assert_allclose(h[f"{layer}/weight_norm"][0], np.linalg.norm(w0), rtol=1e-5)
        eff = np.asarray(h[f"{layer}/effective_step"][0], np.float64)
        ang = np.asarray(h[f"{layer}/angular_step"][0], np.float64)
        # alpha*||g||/||w||: the same for every lambda, and all of the step without decay.
        np.testing.assert_allclose(ang, ang[0], rtol=1e-3)
        assert eff[0] == pytest.approx(ang[0], rel=1e-3)
        np.testing.assert_allclose(eff**2 - eff[0] ** 2, np.square(decays), rtol=1e-3, atol=1e-7)


def test_no_bn_control(tmp_path):
    returned, stdout = _run(
        [
            "--quick",
            "--no-progress",
            "--no-bn",
            "--steps",
            "20",
            "--optimizers",
            "adamw",
            "--out",
            str(tmp_path),
        ],
    )
    for r in returned["records"]:
        assert r["batchnorm"] is False
        assert r["batch_stat_accuracy"] is None and r["mid_equilibrium_ratio"] is None
    assert "without BatchNorm" in stdout
    summary = (tmp_path / "summary.md").read_text().splitlines()
    header = next(line for line in summary if line.startswith("| optimizer"))
    assert "batch stats" not in header  # the diagnostic needs BatchNorm

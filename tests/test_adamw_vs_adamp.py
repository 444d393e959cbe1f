"""examples/adamw_vs_adamp.py: its records and per-seed statistics, recomputed from results.json."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from helpers import quick_run

from examples import adamw_vs_adamp
from examples.reporting import mean_pm

LRS, WDS = (1e-3, 1e-2, 1e-1), (1e-5, 1e-4, 1e-3, 1e-2)
OPTIMIZERS, SEEDS = ("adamw_coupled", "adamp"), (0, 1)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The one ``--quick`` run: its folder, results.json, stdout and return value."""
    out = tmp_path_factory.mktemp("adamw_vs_adamp")
    returned, report, stdout = quick_run(adamw_vs_adamp.main, out)
    return {"out": out, "report": report, "stdout": stdout, "returned": returned}


def test_outputs(quick):
    for name in ("results.json", "summary.md", "accuracy.png", "weight_norm.png", "curves.png"):
        assert (quick["out"] / name).stat().st_size > 0, name
    config = quick["report"]["config"]
    assert config["quick"] and config["dataset"] == "digits" and config["seed_list"] == [0, 1]
    assert quick["report"]["results"] == quick["returned"]["results"]
    assert quick["report"]["per_seed"] == quick["returned"]["per_seed"]


def _grid(records, optimizer, seed):
    """``{(alpha, lambda): record}`` of one optimizer and seed."""
    mine = [r for r in records if (r["optimizer"], r["seed"]) == (optimizer, seed)]
    return {(r["learning_rate"], r["weight_decay"]): r for r in mine}


def test_one_record_per_optimizer_point_and_seed(quick):
    records = quick["report"]["results"]
    members = [(r["optimizer"], r["learning_rate"], r["weight_decay"], r["seed"]) for r in records]
    assert sorted(members) == sorted(itertools.product(OPTIMIZERS, LRS, WDS, SEEDS))
    for r in records:
        assert r["model"] == "cnn" and r["batchnorm"] is False and r["steps"] == 100
        assert 0.0 <= r["test_accuracy"] <= 1.0
        assert math.isfinite(r["train_loss"]) and 0 < r["weight_norm"] < math.inf
    for name in OPTIMIZERS:  # the seed axis is real: other initial weights, other norms
        first, second = _grid(records, name, 0), _grid(records, name, 1)
        assert all(first[k]["weight_norm"] != second[k]["weight_norm"] for k in first)


def test_per_seed_statistics_from_the_records(quick):
    records, per_seed = quick["report"]["results"], quick["report"]["per_seed"]
    order = [(s["optimizer"], s["seed"]) for s in per_seed]
    assert order == list(itertools.product(OPTIMIZERS, SEEDS))
    for s in per_seed:
        mine = _grid(records, s["optimizer"], s["seed"])
        ref = _grid(records, OPTIMIZERS[0], s["seed"])
        best = mine[(s["best_learning_rate"], s["best_weight_decay"])]
        top = max(r["test_accuracy"] for r in mine.values())
        assert s["best_accuracy"] == best["test_accuracy"] == top
        assert s["weight_norm_at_best"] == best["weight_norm"]
        norms = [[mine[(lr, wd)]["weight_norm"] for wd in WDS] for lr in LRS]
        effect = max(max(row) / min(row) - 1 for row in norms)
        assert s["lambda_effect"] == pytest.approx(effect, rel=1e-6)
        ratios = [mine[k]["weight_norm"] / ref[k]["weight_norm"] for k in mine]
        assert s["median_norm_ratio"] == pytest.approx(float(np.median(ratios)), rel=1e-6)
        assert s["smaller_norm_count"] == sum(r < 1 for r in ratios)
        diffs = [mine[k]["test_accuracy"] - ref[k]["test_accuracy"] for k in mine]
        assert s["median_accuracy_difference"] == pytest.approx(float(np.median(diffs)), abs=1e-9)


def test_summary_holds_the_seed_means(quick):
    summary = (quick["out"] / "summary.md").read_text()
    assert summary.strip() in quick["stdout"]
    records, per_seed = quick["report"]["results"], quick["report"]["per_seed"]
    rows = [line for line in summary.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 + len(LRS) * len(WDS) + len(OPTIMIZERS)  # two headers, then the rows
    for name in OPTIMIZERS:
        point = [_grid(records, name, seed)[(LRS[1], WDS[2])] for seed in SEEDS]
        assert mean_pm([r["test_accuracy"] for r in point]) in summary
        assert mean_pm([r["weight_norm"] for r in point], ".3g") in summary
        assert mean_pm([s["best_accuracy"] for s in per_seed if s["optimizer"] == name]) in summary


def test_seed_stats_on_a_hand_made_grid():
    """One alpha, two lambdas: norms (2, 4) vs the reference's (4, 2); accuracies (0.5, 0.7)."""
    run = np.array([[[0.5, 0.7]], [[2.0, 4.0]]])
    ref = np.array([[[0.6, 0.6]], [[4.0, 2.0]]])
    got = adamw_vs_adamp.seed_stats(run, ref, [0.1], [1e-3, 1e-2])
    assert got["best_accuracy"] == 0.7 and got["best_weight_decay"] == 1e-2
    assert got["weight_norm_at_best"] == 4.0 and got["lambda_effect"] == 1.0
    assert got["median_norm_ratio"] == pytest.approx(1.25)  # median of 0.5 and 2
    assert got["smaller_norm_count"] == 1
    assert got["median_accuracy_difference"] == pytest.approx(0.0)

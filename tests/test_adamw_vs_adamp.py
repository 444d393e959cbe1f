"""examples/adamw_vs_adamp.py: the AdamW (coupled) vs AdamP grid, its headline numbers and errors."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math

import numpy as np
import pytest

from examples import adamw_vs_adamp

REQUIRED = ("optimizer", "learning_rate", "weight_decay", "test_accuracy", "weight_norm")
LEARNING_RATES = (1e-3, 1e-2, 1e-1)
WEIGHT_DECAYS = (1e-5, 1e-4, 1e-3, 1e-2)
OPTIMIZERS = ("adamw_coupled", "adamp")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One ``--quick`` run: its output folder, results.json, stdout and return value."""
    out = tmp_path_factory.mktemp("adamw_vs_adamp")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        returned = adamw_vs_adamp.main(["--quick", "--no-progress", "--out", str(out)])
    report = json.loads((out / "results.json").read_text())
    return {"out": out, "report": report, "stdout": stdout.getvalue(), "returned": returned}


def _by_point(records, optimizer):
    return {
        (r["learning_rate"], r["weight_decay"]): r for r in records if r["optimizer"] == optimizer
    }


def test_outputs_exist(quick):
    for name in ("results.json", "summary.md", "accuracy.png", "weight_norm.png"):
        path = quick["out"] / name
        assert path.is_file() and path.stat().st_size > 0, name
    assert quick["report"]["config"]["quick"] is True
    assert quick["report"]["config"]["dataset"] == "digits"


def test_one_record_per_optimizer_and_grid_point(quick):
    records = quick["report"]["results"]
    assert records == quick["returned"]["results"]
    for rec in records:
        for key in REQUIRED:
            assert key in rec, key
        assert 0.0 <= rec["test_accuracy"] <= 1.0
        assert rec["model"] == "cnn" and rec["batchnorm"] is False
        assert rec["steps"] == quick["report"]["config"]["steps"]
    points = sorted((r["optimizer"], r["learning_rate"], r["weight_decay"]) for r in records)
    want = sorted(itertools.product(OPTIMIZERS, LEARNING_RATES, WEIGHT_DECAYS))
    assert points == want and len(set(points)) == len(want)


def test_best_accuracy_and_norm_at_best(quick):
    records, comp = quick["report"]["results"], quick["report"]["comparison"]
    assert comp == quick["returned"]["comparison"]
    assert comp["reference"] == "adamw_coupled"
    for name in OPTIMIZERS:
        runs = [r for r in records if r["optimizer"] == name]
        top = max(r["test_accuracy"] for r in runs)
        best = comp["best"][name]
        assert best["best_accuracy"] == top
        # Ties are possible: the reported setting must be one of the best ones, with its norm.
        at_top = [
            (r["learning_rate"], r["weight_decay"], r["weight_norm"])
            for r in runs
            if r["test_accuracy"] == top
        ]
        assert (best["learning_rate"], best["weight_decay"], best["weight_norm_at_best"]) in at_top


def test_norm_ratio_and_smaller_count(quick):
    records, comp = quick["report"]["results"], quick["report"]["comparison"]
    ref, other = _by_point(records, "adamw_coupled"), _by_point(records, "adamp")
    assert ref.keys() == other.keys()
    ratios = [other[k]["weight_norm"] / ref[k]["weight_norm"] for k in ref]
    smaller = sum(other[k]["weight_norm"] < ref[k]["weight_norm"] for k in ref)
    got = comp["versus_reference"]["adamp"]
    assert got["median_norm_ratio"] == pytest.approx(float(np.median(ratios)), rel=1e-12)
    assert got["smaller_norm_count"] == smaller
    assert got["grid_points"] == len(ref) == 12
    assert got["finite_ratios"] == sum(math.isfinite(x) for x in ratios)


def test_lambda_effect(quick):
    """Per optimizer: the largest relative spread of the norm across lambda at a fixed alpha."""
    records, comp = quick["report"]["results"], quick["report"]["comparison"]
    for name in OPTIMIZERS:
        spreads = []
        for lr in LEARNING_RATES:
            norms = [
                r["weight_norm"]
                for r in records
                if r["optimizer"] == name and r["learning_rate"] == lr
            ]
            assert len(norms) == len(WEIGHT_DECAYS)
            spreads.append(max(norms) / min(norms) - 1)
        assert comp["lambda_effect"][name] == pytest.approx(max(spreads), rel=1e-12)


def test_summary_reports_the_numbers(quick):
    summary = (quick["out"] / "summary.md").read_text()
    comp = quick["report"]["comparison"]
    v = comp["versus_reference"]["adamp"]
    assert f"{v['median_norm_ratio']:.3g}" in summary
    assert f"smaller at {v['smaller_norm_count']} of 12 grid points" in summary
    for name in OPTIMIZERS:
        assert f"best test accuracy {comp['best'][name]['best_accuracy']:.4f}" in summary
    assert "## What came out" in summary
    # The side-by-side table: header, separator, one row per grid point; printed too.
    rows = [line for line in summary.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(LEARNING_RATES) * len(WEIGHT_DECAYS)
    assert rows[0] in quick["stdout"] and rows[-1] in quick["stdout"]
    # Each row holds the records' accuracies and norms.
    first = _by_point(quick["report"]["results"], "adamp")[(LEARNING_RATES[0], WEIGHT_DECAYS[0])]
    assert f"{first['test_accuracy']:.4f}" in rows[1] and f"{first['weight_norm']:.3g}" in rows[1]


def test_versus_on_hand_made_records():
    """Hand-computed: ratios 0.5, 2, 0.25 (and a diverged point); two smaller norms."""

    def rec(opt, lr, norm, acc=0.5):
        return {
            "optimizer": opt,
            "learning_rate": lr,
            "weight_decay": 0.0,
            "weight_norm": norm,
            "test_accuracy": acc,
        }

    records = [
        rec("a", 1.0, 2.0),
        rec("a", 2.0, 1.0),
        rec("a", 3.0, 4.0),
        rec("a", 4.0, 1.0),
        rec("b", 1.0, 1.0, acc=0.7),
        rec("b", 2.0, 2.0),
        rec("b", 3.0, 1.0),
        rec("b", 4.0, math.nan, acc=0.1),
    ]
    got = adamw_vs_adamp.versus(records, "a", "b")
    assert got["median_norm_ratio"] == pytest.approx(0.5)
    assert got["finite_ratios"] == 3
    assert got["smaller_norm_count"] == 2
    assert got["grid_points"] == 4
    assert got["median_accuracy_difference"] == pytest.approx(0.0)
    best = adamw_vs_adamp.best_of(records, "b")
    assert best["best_accuracy"] == 0.7 and best["learning_rate"] == 1.0
    assert best["weight_norm_at_best"] == 1.0


def test_flags_set_the_grid_and_optimizers(tmp_path):
    out = tmp_path / "one"
    with contextlib.redirect_stdout(io.StringIO()):
        got = adamw_vs_adamp.main(
            [
                "--quick",
                "--no-progress",
                "--steps",
                "3",
                "--optimizers",
                "adamp",
                "--learning-rates",
                "1e-2",
                "--weight-decays",
                "1e-3,1e-2",
                "--out",
                str(out),
            ]
        )
    assert [(r["optimizer"], r["learning_rate"], r["weight_decay"]) for r in got["results"]] == [
        ("adamp", 1e-2, 1e-3),
        ("adamp", 1e-2, 1e-2),
    ]
    assert got["comparison"]["versus_reference"] == {}
    assert (out / "weight_norm.png").is_file()

"""examples/lr_wd_map.py: the learning rate x weight decay maps and their decoupling numbers."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

from examples import lr_wd_map

REQUIRED = ("optimizer", "learning_rate", "weight_decay", "test_accuracy", "weight_norm")
DEFAULT_SIX = ("sgd_l2", "sgdw", "adam_l2", "adamw", "prox_adam", "adamp")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("lr_wd_map")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        returned = lr_wd_map.main(["--quick", "--no-progress", "--out", str(out)])
    report = json.loads((out / "results.json").read_text())
    return {"out": out, "report": report, "returned": returned, "stdout": stdout.getvalue()}


def _maps(report):
    """optimizer -> (sorted lrs, sorted wds, {(lr, wd): accuracy}) rebuilt from the records."""
    maps = {}
    for rec in report["results"]:
        lrs, wds, acc = maps.setdefault(rec["optimizer"], (set(), set(), {}))
        lrs.add(rec["learning_rate"])
        wds.add(rec["weight_decay"])
        key = (rec["learning_rate"], rec["weight_decay"])
        assert key not in acc, f"duplicate run {rec['optimizer']} {key}"
        acc[key] = rec["test_accuracy"]
    return {name: (sorted(lrs), sorted(wds), acc) for name, (lrs, wds, acc) in maps.items()}


def test_outputs_and_record_keys(quick):
    out, report = quick["out"], quick["report"]
    for name in ("results.json", "summary.md", "lr_wd_maps.png", "best_lr.png"):
        assert (out / name).stat().st_size > 0, name
    assert report["config"]["quick"] is True
    assert report["results"], "no records"
    for rec in report["results"]:
        for key in REQUIRED:
            assert key in rec, f"record lacks {key!r}: {rec}"
        assert 0.0 <= rec["test_accuracy"] <= 1.0
        assert rec["test_error"] == pytest.approx(1.0 - rec["test_accuracy"])
        assert rec["dataset"] == "digits" and rec["steps"] == report["config"]["steps"]
    assert quick["returned"]["results"] == report["results"]
    assert quick["returned"]["decoupling"] == report["decoupling"]


def test_every_optimizer_has_a_full_grid(quick):
    maps = _maps(quick["report"])
    assert tuple(maps) == DEFAULT_SIX
    for name, (lrs, wds, acc) in maps.items():
        assert len(lrs) >= 2 and len(wds) >= 2, name
        assert len(acc) == len(lrs) * len(wds), f"{name}: grid not full"
        grid = quick["report"]["grids"][name]
        assert grid["learning_rate"] == lrs and grid["weight_decay"] == wds


def test_decoupling_numbers_recomputed_from_records(quick):
    report = quick["report"]
    for name, (lrs, wds, acc) in _maps(report).items():
        stats = report["decoupling"][name]
        best_lr, best_acc = [], []
        for wd in wds:
            column = [acc[(lr, wd)] for lr in lrs]
            top = max(column)
            best_acc.append(top)
            best_lr.append(lrs[column.index(top)])  # the smallest rate on a tie
        assert stats["weight_decays"] == wds
        assert stats["best_lr_per_wd"] == best_lr, name
        assert stats["best_accuracy_per_wd"] == pytest.approx(best_acc)
        spread = math.log10(max(best_lr) / min(best_lr))
        assert stats["spread_decades"] == pytest.approx(spread, abs=1e-9)
        overall = max(acc.values())
        assert stats["best_test_accuracy"] == pytest.approx(overall)
        assert acc[(stats["best_learning_rate"], stats["best_weight_decay"])] == overall
        assert stats["gain_from_decay"] == pytest.approx(overall - best_acc[0])
        assert stats["drop_at_largest_wd"] == pytest.approx(overall - best_acc[-1])
        tol = report["config"]["tolerance"]
        good = [i for i, a in enumerate(best_acc) if a >= overall - tol]
        assert stats["good_weight_decays"] == [wds[i] for i in good]
        good_lr = [best_lr[i] for i in good]
        assert stats["spread_decades_good"] == pytest.approx(
            math.log10(max(good_lr) / min(good_lr)), abs=1e-9
        )
        assert 0 <= stats["spread_decades_good"] <= stats["spread_decades"] + 1e-12


def test_decoupling_on_a_hand_made_map():
    """A map worked out by hand, with a tie: rows are learning rates, columns weight decays."""
    lrs, wds = [1e-3, 1e-2, 1e-1], [0.0, 1e-4, 1e-3, 1e-2]
    acc = np.array(
        [
            [0.70, 0.82, 0.86, 0.60],
            [0.80, 0.82, 0.85, 0.70],
            [0.75, 0.78, 0.50, 0.78],
        ]
    )
    stats = lr_wd_map.decoupling(acc, lrs, wds, 0.065)
    assert stats["best_lr_per_wd"] == [1e-2, 1e-3, 1e-3, 1e-1]  # the tie goes to 1e-3
    assert stats["best_accuracy_per_wd"] == pytest.approx([0.80, 0.82, 0.86, 0.78])
    assert stats["spread_decades"] == pytest.approx(2.0)
    assert stats["best_test_accuracy"] == pytest.approx(0.86)
    assert (stats["best_learning_rate"], stats["best_weight_decay"]) == (1e-3, 1e-3)
    assert stats["gain_from_decay"] == pytest.approx(0.06)
    assert stats["drop_at_largest_wd"] == pytest.approx(0.08)
    # threshold 0.86 - 0.065 = 0.795: the first three columns
    assert stats["good_weight_decays"] == [0.0, 1e-4, 1e-3]
    assert stats["spread_decades_good"] == pytest.approx(1.0)
    narrow = lr_wd_map.decoupling(acc, lrs, wds, 0.05)  # threshold 0.81
    assert narrow["good_weight_decays"] == [1e-4, 1e-3]
    assert narrow["spread_decades_good"] == 0.0
    wide = lr_wd_map.decoupling(acc, lrs, wds, 0.1)
    assert wide["good_weight_decays"] == wds
    assert wide["spread_decades_good"] == pytest.approx(2.0)


def test_decay_timescales_of_paper_form(quick):
    report = quick["report"]
    for rec in report["results"]:
        if rec["optimizer"] in ("sgdw", "adamw", "prox_adam"):
            want = rec["weight_decay"] * report["eta_sum"]
            assert rec["decay_timescales"] == pytest.approx(want)
    # the cosine schedule averages 1/2 over the run
    assert report["eta_sum"] == pytest.approx(report["config"]["steps"] / 2, rel=0.02)


def test_summary_reports_the_spreads(quick):
    summary = (quick["out"] / "summary.md").read_text()
    assert "## What came out" in summary
    assert summary.strip() in quick["stdout"]
    for name, stats in quick["report"]["decoupling"].items():
        row = next(line for line in summary.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1]) == pytest.approx(stats["best_test_accuracy"], abs=5e-5)
        assert float(cells[4]) == pytest.approx(stats["spread_decades"], abs=0.05)


def test_user_grid_applies_to_every_chosen_optimizer(tmp_path):
    out = tmp_path / "custom"
    with contextlib.redirect_stdout(io.StringIO()):
        returned = lr_wd_map.main(
            [
                "--quick",
                "--no-progress",
                "--steps",
                "5",
                "--optimizers",
                "adamw,sgdw",
                "--learning-rates",
                "1e-2,1e-3",
                "--weight-decays",
                "0,1e-2",
                "--out",
                str(out),
            ]
        )
    assert set(returned["grids"]) == {"adamw", "sgdw"}
    for grid in returned["grids"].values():
        assert grid == {"learning_rate": [1e-3, 1e-2], "weight_decay": [0.0, 1e-2]}
    assert len(returned["results"]) == 8
    assert (out / "best_lr.png").stat().st_size > 0

"""examples/lr_wd_map.py: the maps over seeds and their decoupling numbers."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

from examples.lr_wd_map import DEFAULT_OPTIMIZERS, decoupling, main
from examples.reporting import mean_pm


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("lr_wd_map")
    with contextlib.redirect_stdout(io.StringIO()):
        returned = main(["--quick", "--no-progress", "--out", str(out)])
    return out, returned, json.loads((out / "results.json").read_text())


def _maps(report):
    """optimizer -> (lrs, wds, acc[i, j, s]) rebuilt from the records, seeds in config order."""
    seeds, maps = report["config"]["seed_list"], {}
    for name, grid in report["config"]["grids"].items():
        lrs, wds = grid["learning_rate"], grid["weight_decay"]
        runs = [r for r in report["results"] if r["optimizer"] == name]
        cell = {
            (r["learning_rate"], r["weight_decay"], r["seed"]): r["test_accuracy"] for r in runs
        }
        acc = [
            [[cell[a, w, s] for s in seeds] for w in wds] for a in lrs
        ]  # KeyError: a missing run
        maps[name] = lrs, wds, np.array(acc)
    return maps


def test_outputs_and_records(quick):
    out, returned, report = quick
    for name in ("results.json", "summary.md", "lr_wd_maps.png", "best_lr.png"):
        assert (out / name).stat().st_size > 0, name
    assert returned["results"] == report["results"]
    config, grids = report["config"], report["config"]["grids"]
    assert config["quick"] and config["seed_list"] == [0, 1]
    assert list(grids) == list(DEFAULT_OPTIMIZERS)
    points = sum(len(g["learning_rate"]) * len(g["weight_decay"]) for g in grids.values())
    assert len(report["results"]) == points * 2  # every point x every seed
    for rec in report["results"]:
        assert 0 <= rec["test_accuracy"] <= 1 and math.isfinite(rec["weight_norm"])
        assert math.isfinite(rec["train_loss"]) and rec["dataset"] == "digits"
        if rec["optimizer"] in ("sgdw", "adamw", "prox_adam"):  # paper form
            assert rec["decay_timescales"] == pytest.approx(rec["weight_decay"] * report["eta_sum"])
    assert report["eta_sum"] == pytest.approx(config["steps"] / 2, rel=0.02)  # cosine: mean 1/2
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# Learning rate x weight decay maps")
    for name, s in report["decoupling"].items():
        row = next(line for line in summary.splitlines() if line.startswith(f"| {name} |"))
        assert mean_pm(s["best_test_accuracy_per_seed"]) in row


def test_decoupling_recomputed_from_records(quick):
    report = quick[2]
    for name, (lrs, wds, acc) in _maps(report).items():
        s, lrs, cols = report["decoupling"][name], np.array(lrs), np.arange(len(wds))
        mean = acc.mean(axis=2)
        best, own = mean.argmax(axis=0), acc.argmax(axis=0).T  # own[s, j]; ties: smaller alpha
        assert s["best_lr_per_wd"] == lrs[best].tolist()
        assert s["best_lr_per_wd_per_seed"] == lrs[own].tolist()
        assert s["seeds_agreeing"] == (own == best).sum(axis=0).tolist()
        assert s["spread_decades"] == pytest.approx(math.log10(lrs[best].max() / lrs[best].min()))
        per_seed = [math.log10(lrs[row].max() / lrs[row].min()) for row in own]
        assert s["spread_decades_per_seed"] == pytest.approx(per_seed)
        top = int(mean[best, cols].argmax())
        assert (s["best_learning_rate"], s["best_weight_decay"]) == (lrs[best[top]], wds[top])
        at = acc[best, cols]  # (W, S)
        assert s["best_test_accuracy_per_seed"] == pytest.approx(at[top])
        assert s["gain_from_decay_per_seed"] == pytest.approx(at[top] - at[0])
        assert s["drop_at_largest_wd_per_seed"] == pytest.approx(at[top] - at[-1])
        good = mean[best, cols] >= mean[best[top], top] - report["config"]["tolerance"]
        assert s["good_weight_decays"] == [w for w, g in zip(wds, good, strict=True) if g]
        shifts = np.diff(np.log10(lrs[own]), axis=1)  # (S, W - 1)
        assert s["shift_decades_mean"] == pytest.approx(shifts.mean(axis=0))
        assert s["shift_decades_std"] == pytest.approx(shifts.std(axis=0, ddof=1))
        assert s["shifts_beyond_spread"] == np.sum(abs(shifts.mean(0)) > shifts.std(0, ddof=1))


def test_decoupling_on_a_hand_made_map():
    """Two seeds worked out by hand; seed 1 ties in the last column (the smaller rate wins)."""
    seed0 = [[0.70, 0.80, 0.86], [0.80, 0.82, 0.84], [0.75, 0.78, 0.60]]
    seed1 = [[0.72, 0.84, 0.84], [0.78, 0.80, 0.84], [0.74, 0.70, 0.62]]
    acc, lrs, wds = np.stack([seed0, seed1], axis=2), [1e-3, 1e-2, 1e-1], [0, 1e-4, 1e-3]
    s = decoupling(acc, lrs, wds, 0.05)
    assert s["best_lr_per_wd"] == [1e-2, 1e-3, 1e-3]  # mean map: 0.79, 0.82, 0.85
    assert s["best_lr_per_wd_per_seed"] == [[1e-2, 1e-2, 1e-3], [1e-2, 1e-3, 1e-3]]
    assert s["seeds_agreeing"] == [2, 1, 2]
    at_best = [[0.8, 0.8, 0.86], [0.78, 0.84, 0.84]]  # per seed, at the mean map's best cells
    np.testing.assert_allclose(s["best_accuracy_per_wd_per_seed"], at_best)
    assert s["spread_decades"] == pytest.approx(1.0)
    assert s["good_weight_decays"] == [1e-4, 1e-3] and s["spread_decades_good"] == 0.0  # >= 0.80
    assert decoupling(acc, lrs, wds, 0.07)["spread_decades_good"] == pytest.approx(1.0)  # >= 0.78
    # shifts in decades, seed 0: 0, -1; seed 1: -1, 0
    assert s["shift_decades_mean"] == pytest.approx([-0.5, -0.5]) and s["shifts_beyond_spread"] == 0
    assert s["shift_decades_std"] == pytest.approx([math.sqrt(0.5)] * 2)
    assert (s["best_learning_rate"], s["best_weight_decay"]) == (1e-3, 1e-3)
    assert s["best_test_accuracy_per_seed"] == pytest.approx([0.86, 0.84])
    assert s["gain_from_decay_per_seed"] == pytest.approx([0.06, 0.06])  # minus column 0's cell
    assert s["drop_at_largest_wd_per_seed"] == pytest.approx([0.0, 0.0])  # the top is there


def test_user_grid_applies_to_every_chosen_optimizer(tmp_path):
    argv = ["--quick", "--no-progress", "--steps", "3", "--seeds", "1", "--hidden", "4"]
    argv += ["--optimizers", "adamw,sgdw", "--learning-rates", "1e-2,1e-3"]
    with contextlib.redirect_stdout(io.StringIO()):
        returned = main([*argv, "--weight-decays", "0,1e-2", "--out", str(tmp_path)])
    assert returned["grids"] == {
        n: {"learning_rate": [1e-3, 1e-2], "weight_decay": [0.0, 1e-2]} for n in ("adamw", "sgdw")
    }
    assert len(returned["results"]) == 8 and {r["seed"] for r in returned["results"]} == {0}
    assert (tmp_path / "best_lr.png").stat().st_size > 0

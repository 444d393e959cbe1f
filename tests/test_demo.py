"""The demo (examples/demo.py) runs, reports every optimizer, and decoupled decay shrinks weights."""

from __future__ import annotations

import math

import pytest
from helpers import quick_run

from examples import data, demo

DECOUPLED = ("sgdw", "adamw", "adamw(coupled=True)", "prox_adam", "adamp", "optax.adamw")
OPTIMIZERS = ("sgd_l2", "adam_l2", *DECOUPLED)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One ``--quick`` run: its stdout, results.json, the rows by name, and the output folder."""
    out = tmp_path_factory.mktemp("demo")
    returned, report, stdout = quick_run(demo.main, out)
    assert returned == report["results"]
    rows = {r["optimizer"]: r for r in report["results"]}
    return stdout, report, rows, out


def test_every_optimizer_is_reported_and_learns(quick):
    stdout, report, rows, out = quick
    printed = [line.split("|")[1].strip() for line in stdout.splitlines() if line.startswith("| ")]
    for name in OPTIMIZERS:
        assert name in printed and name in rows, name
    assert report["config"]["quick"] is True
    assert (out / "demo.png").stat().st_size > 0
    for name, r in rows.items():
        assert math.isfinite(r["weight_norm"]) and r["weight_norm"] > 0, name
        assert math.isfinite(r["final_loss"]), name
        assert 0.8 < r["test_accuracy"] <= 1.0, (name, r["test_accuracy"])  # chance is 0.1


def test_adamw_conventions_agree(quick):
    """Paper adamw, adamw(coupled=True) with the converted lambda and optax.adamw: one run."""
    rows = quick[2]
    for name in ("adamw(coupled=True)", "optax.adamw"):
        assert rows[name]["weight_norm"] == pytest.approx(rows["adamw"]["weight_norm"], rel=1e-3)
        assert rows[name]["test_accuracy"] == pytest.approx(
            rows["adamw"]["test_accuracy"], abs=1e-6
        )


@pytest.mark.parametrize("name", DECOUPLED)
def test_decoupled_decay_shrinks_weights(quick, name):
    """Each decoupled method with weight decay ends with a smaller weight norm than without."""
    decayed = quick[2][name]
    assert decayed["weight_decay"] > 0
    args = demo.parse_args(["--quick"])  # the fixture's steps, batch size and seed
    run = next(run for run in demo.default_runs(args.steps) if run[0] == name)
    undecayed = demo.train(*run[:3], 0.0, data.load_digits(args.seed), args)
    assert decayed["weight_norm"] < 0.95 * undecayed["weight_norm"], (decayed, undecayed)

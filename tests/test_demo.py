"""The demo (examples/demo.py) runs, reports every optimizer, and decoupled decay shrinks weights."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math

import pytest

from examples import data, demo

OPTIMIZERS = (
    "sgd_l2",
    "sgdw",
    "adam_l2",
    "adamw",
    "adamw(coupled=True)",
    "prox_adam",
    "adamp",
    "optax.adamw",
)
DECOUPLED = ("sgdw", "adamw", "adamw(coupled=True)", "prox_adam", "adamp", "optax.adamw")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``--quick`` run of the demo: its stdout, results.json and output folder."""
    out = tmp_path_factory.mktemp("demo")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        returned = demo.main(["--quick", "--no-progress", "--out", str(out)])
    report = json.loads((out / "results.json").read_text())
    return {"stdout": stdout.getvalue(), "report": report, "returned": returned, "out": out}


def _rows(quick_run):
    return {r["optimizer"]: r for r in quick_run["report"]["results"]}


def test_table_and_json_list_every_optimizer(quick_run):
    table_rows = [
        line.split("|")[1].strip()
        for line in quick_run["stdout"].splitlines()
        if line.startswith("| ") and not line.startswith("| optimizer")
    ]
    rows = _rows(quick_run)
    for name in OPTIMIZERS:
        assert name in table_rows, f"{name} missing from the printed table"
        assert name in rows, f"{name} missing from results.json"
    assert quick_run["returned"] == quick_run["report"]["results"]
    assert quick_run["report"]["config"]["quick"] is True
    assert (quick_run["out"] / "demo.png").stat().st_size > 0


def test_accuracies_and_norms_are_sane(quick_run):
    for name, r in _rows(quick_run).items():
        assert 0.0 <= r["test_accuracy"] <= 1.0, name
        assert math.isfinite(r["weight_norm"]) and r["weight_norm"] > 0, name
        assert math.isfinite(r["final_loss"]), name
        # Even the quick run learns: chance is 0.1.
        assert r["test_accuracy"] > 0.8, (name, r["test_accuracy"])


def test_adamw_conventions_agree(quick_run):
    """Paper adamw, adamw(coupled=True) with the converted lambda and optax.adamw: one run."""
    rows = _rows(quick_run)
    ref = rows["adamw"]
    for name in ("adamw(coupled=True)", "optax.adamw"):
        assert rows[name]["weight_norm"] == pytest.approx(ref["weight_norm"], rel=1e-3), name
        assert rows[name]["test_accuracy"] == pytest.approx(ref["test_accuracy"], abs=1e-6), name


@pytest.mark.parametrize("name", DECOUPLED)
def test_decoupled_decay_shrinks_weights(quick_run, name):
    """Each decoupled method with weight decay ends with a smaller weight norm than without."""
    config = quick_run["report"]["config"]
    decayed = _rows(quick_run)[name]
    assert decayed["weight_decay"] > 0
    run = next(r for r in demo.default_runs(config["steps"]) if r.name == name)
    undecayed = demo.train(
        dataclasses.replace(run, weight_decay=0.0),
        data.load_digits(config["seed"]),
        steps=config["steps"],
        batch_size=config["batch_size"],
        seed=config["seed"],
    )
    assert decayed["weight_norm"] < 0.95 * undecayed["weight_norm"], (
        f"{name}: weight norm {decayed['weight_norm']:.4f} with weight_decay="
        f"{decayed['weight_decay']:g}, {undecayed['weight_norm']:.4f} without"
    )

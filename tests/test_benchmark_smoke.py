"""Smoke tests of the benchmark scripts: --quick runs every optimizer on every tree or model."""

import itertools
import json
import subprocess
import sys

import jax
import pytest
from helpers import ROOT, quick_run

from benchmarks import harness
from benchmarks import step_benchmark as bench
from benchmarks import train_step_benchmark as train_bench


# Donation is a no-op where a backend cannot reuse a buffer; that warning (and only
# it) is harmless for a benchmark.
@pytest.mark.filterwarnings("ignore:Some donated buffers were not usable:UserWarning")
def test_quick_benchmark_writes_every_record(tmp_path):
    _, result, stdout = quick_run(bench.main, tmp_path)
    optimizers = set(bench.optimizers())
    assert bench.REFERENCE in optimizers
    assert {"sgd_l2", "sgdw", "adam_l2", "adamw", "prox_adam", "adamp"} <= optimizers
    assert set(result["trees"]) == set(bench.TREES)
    assert {"machine", "versions", "date", "args"} <= set(result)
    for key in ("jax", "jaxlib", "optax", "python"):
        assert result["versions"][key]

    assert bench.FLATTEN in optimizers  # the peer of the flat path, on the tree path only
    got = {(r["tree"], r["optimizer"], r["mode"]) for r in result["records"]}
    flat = {f"{o} [flat]" for o in optimizers - {bench.FLATTEN}}
    flat |= {"adamw [flat+mask]", "adamw [flat+multipliers]"}
    want = {(t, o, m) for t in bench.TREES for o in optimizers | flat for m in bench.MODES}
    assert got == want
    assert len(result["records"]) == len(want)
    for r in result["records"]:
        assert r["seconds_per_step"]["median"] > 0
        assert r["x_roofline"] > 0
        assert r["params_finite"]
        assert r["path"] == ("flat" if "[flat" in r["optimizer"] else "tree")
        if r["optimizer"] == bench.REFERENCE:
            assert r["x_optax_adamw"] == pytest.approx(1.0)
            assert r["x_optax_adamw_paired"] == pytest.approx(1.0)
        adam_like = not r["optimizer"].startswith("sgd")
        center = 4.0 if "center" in r["optimizer"] else 0.0  # read once, never written
        # a reduction pass (a norm per leaf, adams' global mean) reads some arrays again
        reduction = bench.REDUCTION_BYTES.get(r["optimizer"].removesuffix(" [flat]"), 0)
        want = (28.0 if adam_like else 12.0) + center + reduction
        # (the radii of project_to_norm, one per leaf, add a few bytes per step)
        assert r["bytes_per_param"] == pytest.approx(want, rel=0.01), r["optimizer"]
    for info in result["trees"].values():
        assert info["bandwidth_GBps"] > 0

    md = (tmp_path / "results.md").read_text()
    assert md in stdout
    assert md.count(f"| {bench.FLATTEN} | 28 |") == len(bench.TREES)
    for tree in bench.TREES:
        assert f"## {tree}" in md
    assert md.count("| optimizer | bytes/param |") == len(bench.TREES)


@pytest.mark.filterwarnings("ignore:Some donated buffers were not usable:UserWarning")
def test_no_tree_keeps_only_the_reference_on_the_tree_path(tmp_path):
    args = ["--quick", "--no-progress", "--trees", "one_leaf", "--no-tree", "--out", str(tmp_path)]
    bench.main(args)
    result = json.loads((tmp_path / "results.json").read_text())
    tree_rows = {r["optimizer"] for r in result["records"] if r["path"] == "tree"}
    assert tree_rows == {bench.REFERENCE, bench.FLATTEN}
    assert {r["optimizer"] for r in result["records"] if r["path"] == "flat"} == {
        *(f"{o} [flat]" for o in bench.optimizers() if o != bench.FLATTEN),
        "adamw [flat+mask]",
        "adamw [flat+multipliers]",
    }
    with pytest.raises(SystemExit):
        bench.parse_args(["--no-tree", "--no-flat"])


def test_flat_runner_packs_the_whole_tree_in_one_buffer():
    shapes = bench.scale_shapes(bench.tree_shapes("gpt2", gpt2_layers=1), 0.001)
    host = bench.random_tree(shapes, 0, 0.02)
    grads = bench.random_tree(shapes, 1, 1e-3)
    runners = bench.flat_runners(host, grads, {"adamw": bench.optimizers()["adamw"]}, 1)
    n = sum(x.size for x in jax.tree.leaves(host))
    for runner in runners.values():
        assert [x.shape for x in jax.tree.leaves(runner.carry[0])] == [(n,)]
        assert bench.bytes_per_param(runner) == pytest.approx(28.0)
    mask = jax.tree.leaves(bench.alternate_mask(host))
    assert mask == [i % 2 == 0 for i in range(len(mask))]


@pytest.mark.filterwarnings("ignore:Some donated buffers were not usable:UserWarning")
def test_quick_train_step_benchmark(tmp_path, capsys):
    bench = train_bench
    result = bench.main(["--quick", "--no-progress", "--out", str(tmp_path)])
    got = {(r["model"], r["optimizer"], r["path"], r["mode"]) for r in result["records"]}
    want = set(itertools.product(bench.MODELS, ("adamw", "adamp"), ("tree", "flat"), bench.MODES))
    assert got == want
    by_key = {(r["model"], r["optimizer"], r["path"], r["mode"]): r for r in result["records"]}
    for (m, o, p, mode), r in by_key.items():
        assert r["seconds_per_step"] > 0
        assert (r["n_leaves"] == 1) if p == "flat" else (r["n_leaves"] > 1)
        tree = by_key[(m, o, "tree", mode)]
        assert r["x_tree"] == pytest.approx(r["seconds_per_step"] / tree["seconds_per_step"])
        # Both paths ran the same number of identical steps from the same init.
        assert r["final_loss"] == pytest.approx(tree["final_loss"], rel=1e-4)
    assert (tmp_path / "results.md").read_text() in capsys.readouterr().out


def test_both_scripts_time_with_the_one_harness():
    step, train = bench, train_bench
    for name in ("Runner", "time_round_robin", "report_header", "write_report", "MODES"):
        assert getattr(step, name) is getattr(train, name) is getattr(harness, name)
    shapes = step.scale_shapes(step.tree_shapes("one_leaf"), 1e-4)
    host, grads = step.random_tree(shapes, 0, 0.02), step.random_tree(shapes, 1, 1e-3)
    runners = [
        step.optimizer_runner(step.optimizers()[step.FLATTEN], host, grads, 1),
        step.roofline_runner(8, 1),
        *step.flat_runners(host, grads, {"adamw": step.optimizers()["adamw"]}, 1).values(),
    ]
    assert all(type(r) is harness.Runner for r in runners)
    args = train.parse_args(["--quick"])
    model, loss, batch = train.make_problem("mlp", args)
    graphdef, params = train.nnx.split(model, train.nnx.Param)
    tx = train.optimizers(None)["adamw"]
    assert type(train.make_runner(graphdef, params, loss, batch, tx, None, 1)) is harness.Runner


@pytest.mark.parametrize("script", ["step_benchmark.py", "train_step_benchmark.py"])
def test_scripts_run_from_anywhere(script, tmp_path):
    # ``python benchmarks/<script>.py`` finds ``benchmarks.harness`` with no sys.path edits.
    command = [sys.executable, str(ROOT / "benchmarks" / script), "--help"]
    out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--quick" in out.stdout

"""Smoke test of benchmarks/step_benchmark.py: --quick runs every optimizer on every tree."""

import json

import pytest
from helpers import load_script


# Donation is a no-op where a backend cannot reuse a buffer; that warning (and only
# it) is harmless for a benchmark.
@pytest.mark.filterwarnings("ignore:Some donated buffers were not usable:UserWarning")
def test_quick_benchmark_writes_every_record(tmp_path, capsys):
    bench = load_script("benchmarks/step_benchmark.py")
    bench.main(["--quick", "--no-progress", "--out", str(tmp_path)])

    result = json.loads((tmp_path / "results.json").read_text())
    optimizers = set(bench.optimizers())
    assert bench.REFERENCE in optimizers
    assert {"sgd_l2", "sgdw", "adam_l2", "adamw", "prox_adam", "adamp"} <= optimizers
    assert set(result["trees"]) == set(bench.TREES)
    for key in ("machine", "versions", "date", "args"):
        assert key in result
    for key in ("jax", "jaxlib", "optax", "python"):
        assert result["versions"][key]

    got = {(r["tree"], r["optimizer"], r["mode"]) for r in result["records"]}
    want = {(t, o, m) for t in bench.TREES for o in optimizers for m in bench.MODES}
    assert got == want
    assert len(result["records"]) == len(want)
    for r in result["records"]:
        assert r["seconds_per_step"]["median"] > 0
        assert r["x_roofline"] > 0
        assert r["params_finite"]
        if r["optimizer"] == bench.REFERENCE:
            assert r["x_optax_adamw"] == pytest.approx(1.0)
        adam_like = not r["optimizer"].startswith("sgd")
        assert r["bytes_per_param"] == pytest.approx(28.0 if adam_like else 12.0)
    for info in result["trees"].values():
        assert info["bandwidth_GBps"] > 0

    md = (tmp_path / "results.md").read_text()
    assert md in capsys.readouterr().out
    for tree in bench.TREES:
        assert f"## {tree}" in md
    assert md.count("| optimizer | bytes/param |") == len(bench.TREES)

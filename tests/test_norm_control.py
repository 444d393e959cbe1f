"""examples/norm_control.py: one ``--quick`` run (digits, 2 seeds), its numbers recomputed."""

import numpy as np
import pytest
from helpers import quick_run

from examples import norm_control
from examples.reporting import mean_pm

pytestmark = pytest.mark.slow
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("norm_control")
    returned, report, _ = quick_run(norm_control.main, out)
    return out, returned, report


def rows(report, name):
    """One method's records as (value, seed) arrays of ``key``."""
    rs = [r for r in report["results"] if r["optimizer"] == name]
    return lambda key: np.reshape([r[key] for r in rs], (-1, len(SEEDS)))


def test_records_files_and_summary(quick):
    out, returned, report = quick
    config, records = report["config"], report["results"]
    assert returned["results"] == records and returned["best"] == report["best"]
    assert all((out / f).stat().st_size for f in ("summary.md", "norms.png", "sensitivity.png"))
    summary = (out / "summary.md").read_text()
    assert config["optimizers"] == list(norm_control.SWEEPS)
    for name, sweep in config["sweeps"].items():
        get = rows(report, name)
        assert get("seed").tolist() == [SEEDS] * len(sweep)
        np.testing.assert_allclose(get("value")[:, 0], sweep, rtol=1e-6)
        key = norm_control.SWEEPS[name][0]
        np.testing.assert_allclose(get(key)[:, 0], sweep, rtol=1e-6)
        acc = get("test_accuracy")
        assert report["best"][name] == sweep[int(np.argmax(acc.mean(1)))]
        assert f"| {np.ptp(acc.mean(1)):.4f} |" in summary
        for i, value in enumerate(sweep):
            assert (
                f"| {name} | {norm_control.SWEEPS[name][1]} | {value:g} | {mean_pm(acc[i])} |"
                in summary
            )
        history = np.asarray(returned["history"][name]["norms"])
        assert history.shape == (config["steps"], len(sweep) * len(SEEDS), 3)
        np.testing.assert_allclose(history[-1, :, 0], get("norm_layers.0").ravel(), rtol=1e-6)


def test_projection_holds_the_norm(quick):
    """adamw_projected: every kernel stays at r times its initial norm, to float round-off."""
    report = quick[2]
    get = rows(report, "adamw_projected")
    assert np.all(get("norm_error") < 1e-5)
    norms = np.asarray(quick[1]["history"]["adamw_projected"]["norms"])  # (steps, G, layer)
    r = np.repeat(report["config"]["sweeps"]["adamw_projected"], len(SEEDS))
    # same seed, same initial norms: the norms over r agree across the sweep
    per_r = norms / r[None, :, None]
    for s in range(len(SEEDS)):
        same_seed = per_r[:, s :: len(SEEDS)]
        np.testing.assert_allclose(
            same_seed, np.broadcast_to(per_r[:, s : s + 1], same_seed.shape), rtol=1e-5
        )


def test_decay_shrinks_and_cpr_bounds(quick):
    """Per seed: the larger lambda leaves smaller kernel norms (adamw, adams); CPR's kernels end
    near the norms they had when their bound was taken (within 10% of the projection's at r=1
    for k = 1, whose bound is the norm after one step)."""
    report = quick[2]
    for name in ("adamw", "adams"):
        norm = rows(report, name)("weight_norm")
        assert np.all(np.diff(norm, axis=0) < 0)
    cpr, proj = rows(report, "adamcpr_ws"), rows(report, "adamw_projected")
    assert report["config"]["sweeps"]["adamcpr_ws"][0] == 1
    r1 = report["config"]["sweeps"]["adamw_projected"].index(1.0)
    np.testing.assert_allclose(cpr("weight_norm")[0], proj("weight_norm")[r1], rtol=0.1)

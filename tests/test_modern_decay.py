"""examples/modern_decay.py: one ``--quick`` run (digits, 2 seeds), its numbers recomputed from
results.json; and ``train_grid``'s gradient norm against one computed by hand."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import quick_run

from examples import data, grid, models, modern_decay
from examples.reporting import mean_pm

pytestmark = pytest.mark.slow
SEEDS, RULES = [0, 1], list(modern_decay.RULES)  # --quick: 2 seeds, the four rules


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("modern_decay")
    returned, report, stdout = quick_run(modern_decay.main, out)
    return out, returned, report, stdout


def test_records_seeds_and_files(quick):
    out, returned, report, _ = quick
    config, records = report["config"], report["results"]
    for name in ("results.json", "summary.md", "grad_norm.png", "vs_lambda.png"):
        assert (out / name).stat().st_size > 0
    assert returned["results"] == records and config["seed_list"] == SEEDS
    points = [(lr, wd) for lr in config["learning_rates"] for wd in config["weight_decays"]]
    expected = [(n, lr, wd, s) for n in RULES for lr, wd in points for s in SEEDS]
    got = [(r["optimizer"], r["learning_rate"], r["weight_decay"], r["seed"]) for r in records]
    np.testing.assert_allclose([g[1:] for g in got], [e[1:] for e in expected], rtol=1e-6)
    assert [g[0] for g in got] == [e[0] for e in expected]
    for r in records:  # paper form everywhere: the same lambda for all four rules
        assert r["paper_weight_decay"] == r["weight_decay"]
        assert r.get("cautious", False) == (r["optimizer"] == "adamw_cautious")
        assert r.get("corrected", False) == (r["optimizer"] == "adamw_corrected")
        if r["optimizer"] == "adamw_corrected":  # gamma_max: the member's own alpha
            assert r["peak_learning_rate"] == pytest.approx(r["learning_rate"])
        # above chance (0.1); BatchNorm's running averages lag a shrinking norm on 200 steps
        assert 0.2 < r["test_accuracy"] <= 1 and 0 < r["conv_kernel_norm"] < r["weight_norm"]


def test_grad_rise_recomputed_from_history(quick):
    _, _, report, _ = quick
    config = report["config"]
    for name in RULES:
        rs = [r for r in report["results"] if r["optimizer"] == name]
        h = report["history"][name]
        grad = np.asarray(h["grad_norm"])
        assert grad.shape == (config["steps"] // config["grad_every"], len(rs))
        assert np.all(np.isfinite(grad)) and np.all(grad > 0)
        windows = [w.mean(0) for w in np.array_split(grad, 10)]  # deciles of the run
        mid, late = np.min(windows[2:8], axis=0), windows[9]
        np.testing.assert_allclose([r["grad_mid"] for r in rs], mid, rtol=1e-6)
        np.testing.assert_allclose([r["grad_late"] for r in rs], late, rtol=1e-6)
        np.testing.assert_allclose([r["grad_rise"] for r in rs], late / mid, rtol=1e-6)


def test_summary_is_the_records_mean_and_std(quick):
    out, _, report, stdout = quick
    summary, records = (out / "summary.md").read_text(), report["results"]
    assert summary.strip() in stdout
    for i in range(0, len(records), len(SEEDS)):
        group = records[i : i + len(SEEDS)]
        assert mean_pm([r["test_accuracy"] for r in group]) in summary
        assert mean_pm([r["grad_rise"] for r in group], ".3f") in summary


def test_corrected_mask_is_the_conv_kernels():
    model = models.make_model("cnn", (8, 8, 1), 10, norm="batch")
    mults = nnx.to_pure_dict(modern_decay.NORMALIZED(nnx.state(model, nnx.Param)))
    on = {jax.tree_util.keystr(p) for p, m in jax.tree_util.tree_leaves_with_path(mults) if m}
    assert on == {"['layers'][0]['kernel']", "['layers'][1]['kernel']"}


def test_train_grid_records_the_unscaled_gradient_norm():
    digits = data.load("digits")
    model_fn = models.factory("mlp", digits, width=(16,))
    hparams = {"learning_rate": [1e-3, 1e-3], "weight_decay": [0.0, 0.0]}
    run = dict(steps=3, batch_size=32, seeds=[4], grad_norm_every=2, progress=False)
    result = grid.train_grid("adamw", hparams, digits, model_fn, loss_scale=[1.0, 8.0], **run)
    assert result.history["grad_norm"].shape == (1, 2)  # step 2 of 3
    model = model_fn(4)
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    idx = data.batch_indices(len(digits.x_train), 3, 32, 4)
    for t in range(2):  # member 0 by hand: Adam and no decay, two steps of seed 4's batches
        x, y = digits.x_train[idx[t]], digits.y_train[idx[t]]
        grads = nnx.grad(models.cross_entropy)(model, x, y)
        optimizer.update(model, grads)
    expected = float(optax.tree.norm(grads))
    np.testing.assert_allclose(result.history["grad_norm"][0], [expected, expected], rtol=2e-3)

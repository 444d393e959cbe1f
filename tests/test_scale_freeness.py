"""examples/scale_freeness.py: quick run, its numbers recomputed, bad input, and the exact claim.

The last class checks scale-freeness without the training stack: a few steps of
the package's optimizers in float64 with ``eps = 0`` on gradients multiplied by
``c`` give the very same params for AdamW and ProxAdam, and not for AdamP and
Adam+L2.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_decay
from examples import scale_freeness as sf

REQUIRED = (
    "optimizer",
    "learning_rate",
    "weight_decay",
    "test_accuracy",
    "weight_norm",
    "loss_scale",
    "max_rel_param_diff",
    "rel_param_diff_per_leaf",
    "diverged",
    "steps",
    "dataset",
    "seed",
)
DEFAULT_OPTIMIZERS = ["adam_l2", "adamw", "prox_adam", "adamp", "sgdw"]
SCALES = [1e-3, 1.0, 1e3]
THEORY_FREE = ("adamw", "prox_adam")
THEORY_NOT = ("adam_l2", "adamp")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale_freeness")
    returned = sf.main(["--quick", "--no-progress", "--out", str(out)])
    payload = json.loads((out / "results.json").read_text())
    return out, returned, payload


def find(records, name, c):
    (rec,) = [r for r in records if r["optimizer"] == name and r["loss_scale"] == c]
    return rec


def test_outputs_exist(run):
    out, _, payload = run
    for name in ("results.json", "summary.md", "scale_freeness.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert payload["config"]["quick"] is True
    assert payload["config"]["dataset"] == "digits"


def test_one_record_per_method_and_scale(run):
    _, returned, payload = run
    records = payload["results"]
    assert len(records) == len(DEFAULT_OPTIMIZERS) * len(SCALES)
    for rec in records:
        missing = [k for k in REQUIRED if k not in rec]
        assert not missing, (rec["optimizer"], missing)
    got = sorted((r["optimizer"], r["loss_scale"]) for r in records)
    assert got == sorted((n, c) for n in DEFAULT_OPTIMIZERS for c in SCALES)
    # Same lr and wd for every scale of a method: only the loss multiplier differs.
    for name in DEFAULT_OPTIMIZERS:
        rows = [r for r in records if r["optimizer"] == name]
        assert len({(r["learning_rate"], r["weight_decay"]) for r in rows}) == 1
    # What main returns is what it wrote (NaN == NaN here).
    np.testing.assert_equal(json.loads(json.dumps(returned["records"])), records)


def test_max_rel_param_diff_recomputed_from_params(run):
    _, returned, payload = run
    for rec in payload["results"]:
        name, c = rec["optimizer"], rec["loss_scale"]
        p_c = returned["params"][name][c]
        p_1 = returned["params"][name][1.0]
        ratios = []
        for a, b in zip(jax.tree.leaves(p_c), jax.tree.leaves(p_1), strict=True):
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            ratios.append(np.sqrt(np.sum((a - b) ** 2)) / np.sqrt(np.sum(b**2)))
        want = float(np.max(ratios))
        if math.isfinite(want):
            assert rec["max_rel_param_diff"] == pytest.approx(want, rel=1e-6, abs=1e-12)
            assert max(rec["rel_param_diff_per_leaf"].values()) == rec["max_rel_param_diff"]
            assert len(rec["rel_param_diff_per_leaf"]) == len(ratios)
        else:
            assert math.isnan(rec["max_rel_param_diff"]) and rec["diverged"]
        if c == 1.0:
            assert rec["max_rel_param_diff"] == 0.0


def test_weight_norm_matches_returned_params(run):
    # The returned params are those of the records: their kernel norm is the record's.
    _, returned, payload = run
    for rec in payload["results"]:
        params = returned["params"][rec["optimizer"]][rec["loss_scale"]]
        flat = jax.tree_util.tree_flatten_with_path(params)[0]
        sq = sum(
            float(np.sum(np.asarray(v, np.float64) ** 2))
            for path, v in flat
            if "kernel" in jax.tree_util.keystr(path)
        )
        if math.isfinite(rec["weight_norm"]):
            assert rec["weight_norm"] == pytest.approx(math.sqrt(sq), rel=1e-4)


def test_verdicts_and_summary_follow_the_records(run):
    out, _, payload = run
    records, tol = payload["results"], payload["tolerance"]
    summary = (out / "summary.md").read_text()
    for name in DEFAULT_OPTIMIZERS:
        rows = [r for r in records if r["optimizer"] == name]
        free = all(
            math.isfinite(r["max_rel_param_diff"]) and r["max_rel_param_diff"] < tol for r in rows
        ) and not any(r["diverged"] for r in rows)
        control = payload["roundoff_control"]["max_rel_param_diff"][name]
        assert all(r["roundoff_control"] == control for r in rows)
        roundoff = all(r["max_rel_param_diff"] <= 2 * control for r in rows) and not any(
            r["diverged"] for r in rows
        )
        verdict = payload["verdicts"][name]
        if free:
            assert verdict == "scale-free", (name, verdict)
        elif roundoff:
            assert verdict == "scale-free up to round-off", (name, verdict)
        else:
            assert verdict == "not scale-free" or verdict.startswith("not scale-free ("), verdict
        assert f"| {name} | {verdict} |" in summary
    for rec in records:
        if not (math.isfinite(rec["weight_norm"]) and math.isfinite(rec["train_loss"])):
            assert rec["diverged"]
    assert ("diverged" in summary) == any(r["diverged"] for r in records)


def test_claim_in_the_quick_run(run):
    """AdamW/ProxAdam move less with c than AdamP/Adam+L2, whose decay strength moves with c."""
    _, _, payload = run
    records = payload["results"]
    for c in (1e-3, 1e3):
        free = max(find(records, n, c)["max_rel_param_diff"] for n in THEORY_FREE)
        not_free = min(find(records, n, c)["max_rel_param_diff"] for n in THEORY_NOT)
        assert 2 * free < not_free, (c, free, not_free)
    # Scaling the loss up weakens AdamP's and Adam+L2's decay: the weights grow with c.
    for name in THEORY_NOT:
        norms = [find(records, name, c)["weight_norm"] for c in SCALES]
        assert norms[0] < norms[1] < norms[2], (name, norms)


class TestExactScaleFreeness:
    """float64, eps = 0: loss times c gives the same iterates for AdamW and ProxAdam only."""

    FACTORIES = {
        "adamw": optax_decay.adamw,
        "prox_adam": optax_decay.prox_adam,
        "adamp": optax_decay.adamp,
        "adam_l2": optax_decay.adam_l2,
    }

    @staticmethod
    def problem():
        """A float64 softmax regression: data and initial params."""
        rng = np.random.default_rng(3)
        x = jnp.asarray(rng.normal(size=(40, 5)), jnp.float64)
        y = jnp.asarray(rng.integers(0, 3, size=40))
        params = {
            "kernel": jnp.asarray(rng.normal(size=(5, 3)), jnp.float64),
            "bias": jnp.asarray(rng.normal(size=(3,)), jnp.float64),
        }
        return x, y, params

    @classmethod
    def trajectory(cls, name, c, steps=12):
        """``steps`` updates of ``name`` (eps = 0) on the gradients of ``c`` times the loss."""
        x, y, params = cls.problem()

        def loss(p):
            logits = x @ p["kernel"] + p["bias"]
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        tx = cls.FACTORIES[name](
            0.05, 0.1, eps=0.0, schedule=optax.cosine_decay_schedule(1.0, steps)
        )
        state = tx.init(params)
        for _ in range(steps):
            grads = jax.tree.map(lambda g: c * g, jax.grad(loss)(params))
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
        return params

    @pytest.mark.parametrize("c", [1e3, 1e-3])
    @pytest.mark.parametrize("name", THEORY_FREE)
    def test_scale_free(self, name, c):
        with jax.enable_x64(True):
            scaled, plain = self.trajectory(name, c), self.trajectory(name, 1.0)
            for leaf in jax.tree.leaves(scaled):
                assert leaf.dtype == jnp.float64
            init = self.problem()[2]
        for a, b, w0 in zip(*map(jax.tree.leaves, (scaled, plain, init)), strict=True):
            assert not np.allclose(b, w0)  # the params did move
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=0)

    @pytest.mark.parametrize("c", [1e3, 1e-3])
    @pytest.mark.parametrize("name", THEORY_NOT)
    def test_not_scale_free(self, name, c):
        with jax.enable_x64(True):
            scaled, plain = self.trajectory(name, c), self.trajectory(name, 1.0)
        gap = max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.abs(np.asarray(b))))
            for a, b in zip(jax.tree.leaves(scaled), jax.tree.leaves(plain), strict=True)
        )
        assert gap > 1e-6

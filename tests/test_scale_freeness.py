"""examples/scale_freeness.py: one quick run (2 seeds), its numbers recomputed from its records.

The exact statement (float64, ``eps = 0``) is checked in ``tests/test_alias.py``.
"""

import json
import math

import jax
import numpy as np
import pytest

from examples import scale_freeness as sf
from examples.reporting import mean_pm

OPTIMIZERS = ["adam_l2", "adamw", "prox_adam", "adamp", "sgdw"]
SCALES = [1e-3, 1.0, 1e3, sf.CONTROL]
PAIRS = [(n, seed) for n in OPTIMIZERS for seed in (0, 1)]  # seed_stats: method x seed
FIELDS = "optimizer seed learning_rate weight_decay loss_scale test_accuracy weight_norm train_loss"
FIELDS += " max_rel_param_diff rel_param_diff_per_leaf diverged steps dataset eps"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale_freeness")
    returned = sf.main(["--quick", "--no-progress", "--out", str(out)])
    return out, returned, json.loads((out / "results.json").read_text())


def rows(records, name, seed=None):
    return [r for r in records if r["optimizer"] == name and seed in (None, r["seed"])]


def test_outputs_and_records(run):
    out, returned, payload = run
    for name in ("results.json", "summary.md", "scale_freeness.png"):
        assert (out / name).stat().st_size > 0
    assert payload["config"]["dataset"] == "digits" and payload["config"]["seed_list"] == [0, 1]
    records, summary = payload["results"], (out / "summary.md").read_text()
    assert all(set(r) >= set(FIELDS.split()) for r in records)
    members = [(r["optimizer"], r["loss_scale"], r["seed"]) for r in records]  # point x seed
    assert members == [(n, c, s) for n in OPTIMIZERS for c in SCALES for s in (0, 1)]
    for name in OPTIMIZERS:  # only the loss multiplier differs within a method
        assert len({(r["learning_rate"], r["weight_decay"]) for r in rows(records, name)}) == 1
    for r in records:
        assert r["diverged"] or all(math.isfinite(r[k]) for k in ("weight_norm", "train_loss"))
    np.testing.assert_equal(json.loads(json.dumps(returned["records"])), records)
    for name in OPTIMIZERS:  # the summary's test accuracy: mean ± std over the seeds
        for c in SCALES[:3]:
            acc = [r["test_accuracy"] for r in rows(records, name) if r["loss_scale"] == c]
            assert f"| {name} | {c:g} | {mean_pm(acc)} |" in summary


def test_param_diffs_and_norms_recomputed_from_params(run):
    _, returned, payload = run
    for name in OPTIMIZERS:
        recs = rows(payload["results"], name)
        flat = jax.tree_util.tree_flatten_with_path(returned["params"][name])[0]
        leaves = {jax.tree_util.keystr(k): np.asarray(a, np.float64) for k, a in flat}
        ref = {r["seed"]: j for j, r in enumerate(recs) if r["loss_scale"] == 1.0}  # c = 1
        for i, rec in enumerate(recs):
            j = ref[rec["seed"]]
            norm = math.sqrt(sum(np.sum(a[i] ** 2) for k, a in leaves.items() if "kernel" in k))
            if math.isfinite(norm):
                assert rec["weight_norm"] == pytest.approx(norm, rel=1e-4)
            diffs = [np.linalg.norm(a[i] - a[j]) / np.linalg.norm(a[j]) for a in leaves.values()]
            if not np.isfinite(diffs).all():
                assert math.isnan(rec["max_rel_param_diff"]) and rec["diverged"]
                continue
            assert rec["max_rel_param_diff"] == pytest.approx(max(diffs), rel=1e-6, abs=1e-12)
            assert sorted(rec["rel_param_diff_per_leaf"].values()) == pytest.approx(sorted(diffs))
            assert (rec["max_rel_param_diff"] == 0.0) == (i == j)


def test_seed_stats_recomputed_from_records(run):
    _, returned, payload = run
    stats, records = payload["seed_stats"], payload["results"]
    np.testing.assert_equal(json.loads(json.dumps(returned["seed_stats"])), stats)
    assert [(s["optimizer"], s["seed"]) for s in stats] == PAIRS
    for s in stats:
        recs = rows(records, s["optimizer"], s["seed"])
        control = next(r["max_rel_param_diff"] for r in recs if r["loss_scale"] == sf.CONTROL)
        worst = np.max([r["max_rel_param_diff"] for r in recs if r["loss_scale"] != sf.CONTROL])
        np.testing.assert_equal((s["control"], s["worst"]), (control, worst))
        assert s["ratio"] == pytest.approx(worst / control)
        assert (s["eps_share"] is None) == (s["optimizer"] == "sgdw")
        # eps / (c*rms + eps) falls as c grows, and so does the share where it is >= 1%
        shares = [(s["eps_share"] or {}).get(f"{c:g}", 0) for c in SCALES[:3]]
        assert 0 <= shares[2] <= shares[1] <= shares[0] <= 1


def test_claim_in_the_quick_run(run):
    """Per seed: AdamW/ProxAdam move far less with c than AdamP/Adam+L2, whose weight norm grows
    with c (their decay weakens); SGDW blows up at c = 1e3."""
    records = run[2]["results"]
    for seed in (0, 1):
        diff = {(r["optimizer"], r["loss_scale"]): r for r in records if r["seed"] == seed}
        for c in (1e-3, 1e3):
            free = max(diff[n, c]["max_rel_param_diff"] for n in ("adamw", "prox_adam"))
            not_free = min(diff[n, c]["max_rel_param_diff"] for n in ("adam_l2", "adamp"))
            assert 2 * free < not_free, (seed, c, free, not_free)
        for name in ("adam_l2", "adamp"):
            norms = [diff[name, c]["weight_norm"] for c in SCALES[:3]]
            assert norms == sorted(norms), (seed, name, norms)
        assert diff["sgdw", 1e3]["diverged"] and not diff["sgdw", 1.0]["diverged"]

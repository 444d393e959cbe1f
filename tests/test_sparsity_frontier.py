"""examples/sparsity_frontier.py: one ``--quick`` run (digits, 2 seeds), its numbers recomputed."""

import numpy as np
import pytest
from helpers import quick_run

from examples import cli, sparsity_frontier
from examples.reporting import mean_pm

pytestmark = pytest.mark.slow
METHODS, SEEDS = ("prox_adam_l1", "adamp_l1", "adam_group_lasso"), [0, 1]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("sparsity_frontier")
    returned, report, _ = quick_run(sparsity_frontier.main, out)
    return out, returned, report


def rows(report, name):
    """One method's records as (lambda, seed, ...) arrays of ``key``."""
    rs = [r for r in report["results"] if r["optimizer"] == name and r["role"] == "sparse"]
    return lambda key: np.reshape([r[key] for r in rs], (-1, len(SEEDS), *np.shape(rs[0][key])))


def test_records_files_and_summary(quick):
    out, returned, report = quick
    config, records = report["config"], report["results"]
    assert returned["results"] == records
    assert all((out / f).stat().st_size for f in ("summary.md", "sparsity_frontier.png"))
    flags = [config[sparsity_frontier.FLAGS[name]] for name in METHODS]
    assert len(records) == len(SEEDS) * (1 + sum(len(lams) for lams in flags))
    dense = [r for r in records if r["role"] == "dense"]
    assert [r["optimizer"] for r in dense] == ["adamw"] * len(SEEDS)
    assert all(r["zero_fraction"] == 0 and r["removed_units"] == 0 for r in dense)
    summary = (out / "summary.md").read_text()
    assert f"test acc. {mean_pm([r['test_accuracy'] for r in dense])}" in summary
    for name, lams in zip(METHODS, flags, strict=True):
        get = rows(report, name)
        assert get("seed").tolist() == [SEEDS] * len(lams)
        np.testing.assert_allclose(get("weight_decay")[:, 0], lams, rtol=1e-6)
        for i, lam in enumerate(lams):
            keys = ("zero_fraction", "removed_units", "test_accuracy", "pruned_accuracy")
            numbers = " | ".join(mean_pm(get(k)[i]) for k in keys)
            assert f"| {name} | {lam:.3g} | {numbers} |" in summary


def test_counts_are_consistent(quick):
    """Zeros per kernel add up; a removed unit's incoming weights are among the zeros."""
    config = quick[2]["config"]
    width = config["width"]
    fans = [64, *width]  # digits: 8x8 inputs
    sizes = np.array([a * b for a, b in zip(fans, [*width, 10], strict=True)])
    fan_in = sizes[:-1] / np.array(width)
    for name in METHODS:
        get = rows(quick[2], name)
        zeros = get("zero_fraction_layers") * sizes  # (lambda, seed, layer)
        np.testing.assert_allclose(zeros.sum(-1), get("zeros"), atol=1e-6)
        np.testing.assert_allclose(get("zero_fraction"), get("zeros") / sizes.sum(), rtol=1e-12)
        units = get("removed_units_layers")
        assert np.all(units * fan_in <= zeros[..., :-1] + 1e-6)
        np.testing.assert_allclose(get("removed_units"), units.sum(-1) / sum(width), rtol=1e-12)


def test_the_penalties_make_exact_zeros(quick):
    """Per seed, the largest lambda leaves more zeros than the smallest; group lasso's zeros are
    whole units of the hidden kernels (its head is not decayed), and it removes some."""
    for name in METHODS:
        get = rows(quick[2], name)
        assert np.all(get("zeros")[-1] > get("zeros")[0])
    get, width = rows(quick[2], "adam_group_lasso"), quick[2]["config"]["width"]
    fan_in = np.array([64, *width[:-1]])
    zeros = get("zero_fraction_layers")[..., :-1] * fan_in * np.array(width)
    np.testing.assert_allclose(zeros, get("removed_units_layers") * fan_in, atol=1e-6)
    assert np.all(get("zero_fraction_layers")[..., -1] == 0)
    assert np.all(get("removed_units")[-1] > 0)


def test_prune_weights_and_units():
    rng = np.random.default_rng(0)
    ks = [rng.normal(size=(6, 4)), rng.normal(size=(4, 3)), rng.normal(size=(3, 2))]
    pruned = sparsity_frontier.prune_weights(ks, 11)
    flat, kept = np.concatenate([k.ravel() for k in ks]), np.concatenate(pruned)
    assert np.sum(kept == 0) == 11
    assert np.abs(flat[kept == 0]).max() <= np.abs(flat[kept != 0]).min()
    np.testing.assert_array_equal(kept[kept != 0], flat[kept != 0])
    assert [p.size for p in pruned] == [k.size for k in ks]
    units = sparsity_frontier.prune_units(ks, [1, 2])
    stats = sparsity_frontier.sparsity([u[None] for u in units])
    assert stats["removed_units_layers"].tolist() == [[1, 2]]
    np.testing.assert_array_equal(units[-1], ks[-1])
    norms = np.linalg.norm(ks[1], axis=0)
    assert np.all(units[1][:, np.argsort(norms)[:2]] == 0)
    assert np.all(units[1][:, np.argsort(norms)[2:]] == ks[1][:, np.argsort(norms)[2:]])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--group-decays", "-1"], "`--group-decays`"),
        (["--lr", "0"], "`--lr` must be a positive number"),
        (["--adamw-decay", "-1"], "`--adamw-decay`"),
        (["--width", "0"], "`--width`"),
    ],
)
def test_bad_input(argv, expected):
    with pytest.raises(cli.UsageError, match=expected.replace("`", ".")):
        sparsity_frontier.parse_args(argv)

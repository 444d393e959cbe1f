"""examples/finetune_center.py: one ``--quick`` run (digits, 2 seeds), its numbers recomputed."""

import numpy as np
import pytest
from helpers import quick_run

from examples import finetune_center
from examples.reporting import mean_pm

pytestmark = pytest.mark.slow
METHODS, CENTERS, SEEDS = ("adam_l2", "adamw"), ("zero", "pretrained"), [0, 1]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune_center")
    returned, report, _ = quick_run(finetune_center.main, out)
    return out, returned, report


def rows(report, name, center):
    """One method and center's records as (decay, seed) arrays of ``key``."""
    rs = [r for r in report["results"] if (r["optimizer"], r["center"]) == (name, center)]
    return lambda key: np.reshape([r[key] for r in rs], (-1, len(SEEDS)))


def test_records_files_and_summary(quick):
    out, returned, report = quick
    config, records, pre = report["config"], report["results"], report["pretrain"]
    assert returned["results"] == records and returned["pretrain"] == pre
    assert all((out / f).stat().st_size for f in ("summary.md", "finetune_center.png"))
    folds, l2 = config["decay_folds"], config["l2_decays"]
    assert len(records) == len(METHODS) * len(CENTERS) * len(folds) * len(SEEDS)
    summary = (out / "summary.md").read_text()
    assert f"| {mean_pm(pre['old_accuracy'])} | {mean_pm(pre['new_accuracy'])} |" in summary
    for name in METHODS:
        for center in CENTERS:
            get = rows(report, name, center)
            assert get("seed").tolist() == [SEEDS] * len(folds)
            lam = [2 * k / config["steps"] for k in folds] if name == "adamw" else l2
            np.testing.assert_allclose(get("weight_decay")[:, 0], lam, rtol=1e-6)
            assert np.all(get("test_accuracy") <= get("new_accuracy"))  # 10-way right: 5-way too
            np.testing.assert_allclose(get("pretrained_old_accuracy"), [pre["old_accuracy"]] * 5)
            for i, lam_i in enumerate(get("weight_decay")[:, 0]):
                numbers = [mean_pm(get(k)[i]) for k in ("new_accuracy", "old_accuracy")]
                assert f"| {name} | {center} | {lam_i:.3g} | {' | '.join(numbers)} |" in summary


def test_center_cannot_matter_without_decay(quick):
    """lambda = 0: both centers train the same weights, to the float."""
    for name in METHODS:
        zero, pre = rows(quick[2], name, "zero"), rows(quick[2], name, "pretrained")
        assert zero("weight_decay")[0, 0] == 0
        for key in ("new_accuracy", "old_accuracy", "test_accuracy"):
            np.testing.assert_array_equal(zero(key)[0], pre(key)[0])
        for key in ("distance_to_pretrained", "train_loss", "weight_norm"):
            np.testing.assert_allclose(zero(key)[0], pre(key)[0], rtol=1e-5)


def test_decay_toward_pretrained_stays_closer(quick):
    """Per seed: toward w_pre, the distance to it falls with lambda, and at the largest lambda
    it is below the distance that decay toward 0 leaves."""
    for name in METHODS:
        zero, pre = rows(quick[2], name, "zero"), rows(quick[2], name, "pretrained")
        distance = pre("distance_to_pretrained")
        assert np.all(np.diff(distance, axis=0) < 0)
        assert np.all(distance[-1] < zero("distance_to_pretrained")[-1])

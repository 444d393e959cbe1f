"""Conversions between weight-decay conventions."""

import math

import numpy as np
import pytest
from helpers import make_problem, run

import optax_decay as od


def test_coupled_paper_round_trip():
    assert od.coupled_to_paper(0.1, 1e-3) == pytest.approx(1e-4)
    assert od.paper_to_coupled(od.coupled_to_paper(0.05, 3e-4), 3e-4) == pytest.approx(0.05)


@pytest.mark.x64
def test_coupled_to_paper_gives_the_same_optimizer():
    params, grads = make_problem(5)
    a = run(od.adamw(2e-2, 0.3, coupled=True), params, grads)
    b = run(od.adamw(2e-2, od.coupled_to_paper(0.3, 2e-2)), params, grads)
    np.testing.assert_allclose(a[-1]["w"], b[-1]["w"], rtol=1e-12)


def test_timescale():
    assert od.timescale_from_weight_decay(1e-4, schedule=0.5) == pytest.approx(2e4)
    assert od.weight_decay_from_timescale(2e4, schedule=0.5) == pytest.approx(1e-4)
    # After tau steps of decay alone the weights shrink by about 1/e.
    lam = od.weight_decay_from_timescale(500.0)
    assert (1 - lam) ** 500 == pytest.approx(math.exp(-1), rel=2e-3)


def test_normalized_weight_decay():
    b, B, T = 128, 50_000, 200
    assert od.normalized_weight_decay(0.05, b, B, T) == pytest.approx(0.05 * math.sqrt(b / (B * T)))
    # Four times the epochs: half the per-step decay.
    assert od.normalized_weight_decay(0.05, b, B, 4 * T) == pytest.approx(
        od.normalized_weight_decay(0.05, b, B, T) / 2
    )


def test_epoch_timescale_both_ways():
    """tau_epoch = tau_iter * B / N: 1/lambda iterations of B examples, N examples per epoch."""
    lam, batch, n = 2e-4, 64, 60_000
    tau_iter = od.timescale_from_weight_decay(lam)
    tau_epoch = od.timescale_to_epochs(tau_iter, batch, n)
    assert tau_epoch == pytest.approx(batch / (lam * n))
    assert od.timescale_from_epochs(tau_epoch, batch, n) == pytest.approx(tau_iter)
    # Twice the batch at the same lambda: twice as many epochs for one timescale.
    assert od.timescale_to_epochs(tau_iter, 2 * batch, n) == pytest.approx(2 * tau_epoch)


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda: od.paper_to_coupled(1e-4, 0.0), "learning_rate"),
        (lambda: od.coupled_to_paper(-1.0, 1e-3), "weight_decay"),
        (lambda: od.timescale_from_weight_decay(0.0), "weight_decay"),
        (lambda: od.weight_decay_from_timescale(-3.0), "timescale"),
        (lambda: od.normalized_weight_decay(0.05, 0, 100, 10), "batch_size"),
        (lambda: od.timescale_to_epochs(100.0, 32, 0), "num_examples"),
        (lambda: od.timescale_from_epochs(float("inf"), 32, 100), "timescale"),
    ],
)
def test_bad_input(call, arg):
    with pytest.raises(ValueError, match=f"`{arg}`"):
        call()

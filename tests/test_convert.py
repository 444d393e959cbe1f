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


@pytest.mark.x64
@pytest.mark.parametrize(
    "name, momentum", [("adamw", 0.9), ("adamw", 0.0), ("sgdw", 0.9), ("sgdw", 0.0)]
)
def test_equilibrium_angular_update_matches_a_simulation(name, momentum):
    """The optimizer itself on a scale-invariant weight: Gaussian gradients with their component
    along ``w`` removed. After the norm has settled (its timescale is ``1/(2*eta*lambda)`` =
    500 steps), the mean angle between ``w_t`` and ``w_{t+1}`` is the formula's, within 2%."""
    import jax
    import jax.numpy as jnp

    size, steps, lam = 4096, 6000, 1e-3
    if name == "adamw":
        tx = od.adamw(1e-2, lam, b1=momentum)
    else:
        tx = od.sgdw(0.1, lam, momentum=momentum or None)
    w0 = jax.random.normal(jax.random.key(0), (size,), jnp.float64)

    def step(carry, key):
        w, state = carry
        g = jax.random.normal(key, (size,), jnp.float64)
        g = g - (g @ w) / (w @ w) * w
        u, state = tx.update(g, state, w)
        new = w + u
        cos = (w @ new) / (jnp.linalg.norm(w) * jnp.linalg.norm(new))
        return (new, state), jnp.arccos(jnp.clip(cos, -1.0, 1.0))

    keys = jax.random.split(jax.random.key(1), steps)
    _, angles = jax.jit(lambda c: jax.lax.scan(step, c, keys))((w0, tx.init(w0)))
    want = od.equilibrium_angular_update(lam, momentum=momentum)
    np.testing.assert_allclose(float(np.mean(angles[steps // 2 :])), want, rtol=0.02)


def test_equilibrium_angular_update_formula_and_bad_input():
    # sqrt(2*eta*lambda*(1 - mu)/(1 + mu)), and Kosson et al.'s coupled and SGD-with-L2 forms
    assert od.equilibrium_angular_update(2e-4, 0.5, 0.8) == pytest.approx(
        math.sqrt(2e-4 * 0.2 / 1.8)
    )
    alpha, lam_c, b1 = 1e-3, 0.1, 0.9
    got = od.equilibrium_angular_update(od.coupled_to_paper(lam_c, alpha), momentum=b1)
    assert got == pytest.approx(math.sqrt(2 * alpha * lam_c * (1 - b1) / (1 + b1)))
    got = od.equilibrium_angular_update(alpha * lam_c / (1 - b1), momentum=b1)
    assert got == pytest.approx(math.sqrt(2 * alpha * lam_c / (1 + b1)))
    for kwargs in ({"weight_decay": 0.0}, {"weight_decay": 1e-3, "schedule": -1.0}):
        with pytest.raises(ValueError, match="must be a finite number > 0"):
            od.equilibrium_angular_update(**kwargs)
    with pytest.raises(ValueError, match="`momentum` must lie in"):
        od.equilibrium_angular_update(1e-3, momentum=1.0)

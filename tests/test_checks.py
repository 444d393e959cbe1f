"""Argument checks (`_checks`): bad input gets an error that names the argument and the fix.

Schedules are checked at construction on steps 0..1024 and a log grid up to 10**7.
"""

import jax.numpy as jnp
import optax
import pytest
from helpers import OPTIMIZERS, build, make_params

import optax_decay as od

NEGATIVE_LATE = lambda t: 1.0 - 0.6 * t  # negative from t = 2 on
NEGATIVE_VERY_LATE = optax.linear_schedule(1.0, -0.5, 5_000_000)  # negative from t ~ 3.3e6
HYPERPARAMETERS = [
    (n, a) for n in OPTIMIZERS for a in ("learning_rate", "weight_decay", "schedule")
]
HYPERPARAMETERS += [("adaptive_decay", a) for a in ("learning_rate", "weight_decay", "schedule")]
HYPERPARAMETERS += [("decoupled_decay", "schedule"), ("prox_l2", "schedule")]
HYPERPARAMETERS += [(n, "weight_decay") for n in ("add_l2_to_grad", "decoupled_decay", "prox_l2")]


@pytest.mark.parametrize("name, arg", HYPERPARAMETERS)
@pytest.mark.parametrize(
    "bad",
    [-0.1, -1e-4, float("nan"), float("inf"), NEGATIVE_LATE, NEGATIVE_VERY_LATE],
    ids=["-0.1", "-1e-4", "nan", "inf", "t=2", "t=3e6"],
)
def test_bad_hyperparameter(name, arg, bad):
    kwargs = {"learning_rate": 1e-3, "weight_decay": 1e-4, arg: bad}
    got = ", got a schedule" if callable(bad) else ""
    with pytest.raises(ValueError, match=f"`{arg}` must be a finite number >= 0{got}"):
        build(name, **kwargs)


@pytest.mark.parametrize("make", [od.adamw, od.sgdw])
@pytest.mark.parametrize(
    "wd, schedule", [(1.0, None), (2.0, None), (1e3, None), (0.5, 2.0), (5.0, 0.3)]
)
def test_decay_factor_at_or_below_zero(make, wd, schedule):
    with pytest.raises(ValueError, match="`weight_decay` is too large.*1 - eta_t\\*lambda"):
        make(1e-3, wd, schedule=schedule)


def test_decay_factor_coupled_uses_learning_rate():
    od.adamw(1e-3, 10.0, coupled=True)  # factor 1 - 1e-2: fine
    with pytest.raises(ValueError, match="`weight_decay` is too large"):
        od.adamw(0.5, 2.0, coupled=True)
    od.prox_adam(1e-3, 50.0)  # the proximal step is stable for any lambda


@pytest.mark.parametrize("name", ["adamw", "sgdw", "adamw_coupled", "decoupled_decay"])
def test_decay_factor_checked_at_the_schedules_peak(name):
    """A warmup to eta = 2 at t = 500 makes 1 - eta_t*lambda < 0 there, not at t = 0."""
    peak = optax.warmup_cosine_decay_schedule(0.0, 2.0, 500, 10_000)
    if name == "adamw_coupled":  # the peak is in the learning rate: alpha(t) * lambda
        make = lambda schedule: od.adamw(schedule, 0.6, coupled=True)
    else:
        make = lambda schedule: build(name, 1e-3, 0.6, schedule=schedule)
    rate = "alpha\\(t\\)\\*eta_t\\*lambda" if name == "adamw_coupled" else "eta_t\\*lambda"
    with pytest.raises(
        ValueError, match=f"1 - {rate} = 1 - 2\\*0.6 = -0.2 is <= 0 at step t = 500"
    ):
        make(schedule=peak)
    make(schedule=optax.warmup_cosine_decay_schedule(0.0, 1.5, 500, 10_000))  # 0.1 > 0: fine


@pytest.mark.parametrize("name", ["adamw", "sgdw"])
def test_decay_factor_with_a_weight_decay_schedule(name):
    wd = optax.piecewise_constant_schedule(0.1, {1000: 20.0})  # 2.0 from t = 1000
    with pytest.raises(ValueError, match="at step t = 1000"):
        build(name, 1e-3, wd)


def test_schedule_that_is_not_vectorizable_is_checked_step_by_step():
    def python_if(t):
        return 1.0 if t < 100 else -1.0

    with pytest.raises(ValueError, match="whose value at t = 100 is -1"):
        od.adamw(1e-3, 1e-4, schedule=python_if)


@pytest.mark.parametrize(
    "arg, advice",
    [
        ("learning_rate", "climbs the loss"),
        ("weight_decay", "pushes the weights away from zero"),
        ("schedule", "reverses both"),
        ("eps", "keeps D_t"),
        ("eps_root", "under the square root"),
    ],
)
def test_each_argument_has_its_own_advice(arg, advice):
    kwargs = {"learning_rate": 1e-3, "weight_decay": 1e-4, arg: -1.0}
    match = f"`{arg}` must be a finite number >= 0, got -1.0. .*{advice}"
    with pytest.raises(ValueError, match=match) as info:
        od.adamw(**kwargs)
    if arg != "weight_decay":
        assert "abs(" not in str(info.value)


def test_bad_betas():
    with pytest.raises(ValueError, match="`b2` must lie in"):
        od.adamw(1e-3, 1e-4, b2=1.0)
    with pytest.raises(ValueError, match="`eps` must be a finite number >= 0"):
        od.adamp(1e-3, 1e-4, eps=-1.0)


@pytest.mark.parametrize("make", [od.sgdw, od.sgd_l2])
@pytest.mark.parametrize("bad", [float("nan"), -0.9, 1.0, 1.5, float("inf")])
def test_bad_momentum(make, bad):
    with pytest.raises(ValueError, match=r"`momentum` must be a number in \[0, 1\)"):
        make(1e-3, 1e-4, momentum=bad)


@pytest.mark.parametrize("make", [od.sgdw, od.sgd_l2])
def test_nesterov_needs_momentum(make):
    with pytest.raises(ValueError, match="`nesterov=True` needs a `momentum`"):
        make(1e-3, 1e-4, nesterov=True)
    make(1e-3, 1e-4, momentum=0.0, nesterov=True)  # an explicit momentum is fine


# ---- At init or the first update: the params


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_update_without_params_or_with_other_grads(name):
    params = make_params(jnp.float32)
    tx = build(name, 1e-3, 1e-3)
    with pytest.raises(ValueError, match="needs the current `params`"):
        tx.update(params, tx.init(params))
    grads = {k: v for k, v in params.items() if k != "b"}
    with pytest.raises(ValueError, match="different tree structures"):
        tx.update(grads, tx.init(params), params)


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
def test_integer_params(name, dtype):
    params = {"w": jnp.ones((2, 3), jnp.float32), "steps": jnp.zeros((3,), dtype)}
    tx = build(name, 1e-3, 1e-3)
    with pytest.raises(TypeError, match=r"`params` leaf \['steps'\] has dtype .*floating-point"):
        tx.update(params, tx.init(params), params)

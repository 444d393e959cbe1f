"""Bad input gets a clear error naming the argument; non-finite values are not hidden."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import ALL, make_grads, make_params

import optax_decay as od

TRANSFORMS = {
    "add_l2_to_grad": lambda wd, **kw: od.add_l2_to_grad(wd, **kw),
    "decoupled_decay": lambda wd, **kw: od.decoupled_decay(wd, **kw),
    "prox_l2": lambda wd, **kw: od.prox_l2(wd, **kw),
    "adaptive_decay": lambda wd, **kw: od.adaptive_decay(1e-3, wd, **kw),
}


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_bad_learning_rate(name, bad):
    with pytest.raises(ValueError, match="`learning_rate` must be a finite number >= 0"):
        ALL[name](bad, 1e-3)


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("bad", [-1e-4, float("nan"), float("inf")])
def test_bad_weight_decay(name, bad):
    with pytest.raises(ValueError, match="`weight_decay` must be a finite number >= 0"):
        ALL[name](1e-3, bad)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_transforms_reject_bad_weight_decay(name, bad):
    with pytest.raises(ValueError, match="`weight_decay` must be a finite number >= 0"):
        TRANSFORMS[name](bad)


@pytest.mark.parametrize("name", ["decoupled_decay", "prox_l2", "adaptive_decay"])
@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_transforms_reject_bad_schedule(name, bad):
    with pytest.raises(ValueError, match="`schedule` must be a finite number >= 0"):
        TRANSFORMS[name](1e-3, schedule=bad)


@pytest.mark.parametrize("make", [od.adamw, od.sgdw])
@pytest.mark.parametrize("wd, schedule", [(1.0, None), (2.0, None), (0.5, 2.0), (5.0, 0.3)])
def test_decay_factor_at_or_below_zero(make, wd, schedule):
    with pytest.raises(ValueError, match="`weight_decay` is too large.*1 - eta_t\\*lambda"):
        make(1e-3, wd, schedule=schedule)


def test_decay_factor_coupled_uses_learning_rate():
    od.adamw(1e-3, 10.0, coupled=True)  # factor 1 - 1e-2: fine
    with pytest.raises(ValueError, match="`weight_decay` is too large"):
        od.adamw(0.5, 2.0, coupled=True)
    od.prox_adam(1e-3, 50.0)  # the proximal step is stable for any lambda


@pytest.mark.parametrize("name", sorted(ALL))
def test_update_without_params(name):
    params = make_params(jnp.float32)
    tx = ALL[name](1e-3, 1e-3)
    with pytest.raises(ValueError, match="needs the current `params`"):
        tx.update(params, tx.init(params))


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize(
    "mask, error, match",
    [
        ({"w": True, "b": False}, ValueError, "`mask` does not match the structure"),
        ({"w": True, "b": False, "k": True, "x": True}, ValueError, "`mask` does not match"),
        ([True, False], ValueError, "`mask` does not match the structure of the params"),
        ({"w": 1, "b": 0, "k": 1}, TypeError, "`mask` leaves must be Python bools"),
    ],
    ids=["missing-key", "extra-key", "wrong-type", "non-bool-leaves"],
)
def test_bad_mask(name, mask, error, match):
    params = make_params(jnp.float32)
    tx = ALL[name](1e-3, 1e-3, mask=mask)
    with pytest.raises(error, match=match):
        state = tx.init(params)
        tx.update(params, state, params)


@pytest.mark.parametrize("name", sorted(ALL))
def test_non_finite_gradients_propagate(name):
    params = make_params(jnp.float32)
    tx = ALL[name](1e-3, 1e-3)
    g = jax.tree.map(jnp.zeros_like, params)
    g["w"] = g["w"].at[0, 0].set(jnp.nan)
    u, _ = tx.update(g, tx.init(params), params)
    assert bool(jnp.isnan(u["w"][0, 0]))


@pytest.mark.parametrize("name", sorted(ALL))
def test_apply_if_finite_skips_and_keeps_state(name):
    params = make_params(jnp.float32)
    good = make_grads(params, 2)
    tx = optax.apply_if_finite(ALL[name](1e-2, 1e-3), max_consecutive_errors=3)
    update = jax.jit(tx.update)
    state = tx.init(params)
    u, state = update(good[0], state, params)
    params = optax.apply_updates(params, u)
    inner_before = state.inner_state
    bad = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.inf), good[1])
    u, state = update(bad, state, params)
    chex.assert_trees_all_equal(u, jax.tree.map(jnp.zeros_like, u))
    chex.assert_trees_all_equal(state.inner_state, inner_before)
    assert int(state.notfinite_count) == 1


@pytest.mark.parametrize("lam", [1e3, 1e12, 1e30, float(np.finfo(np.float32).max)])
def test_prox_l2_huge_lambda_stays_finite(lam):
    params = make_params(jnp.float32)
    g = make_grads(params, 1)[0]
    tx = od.prox_adam(1e-3, lam)
    u, _ = tx.update(g, tx.init(params), params)
    new = optax.apply_updates(params, u)
    chex.assert_tree_all_finite(new)
    # |(w - alpha*mhat/D) / (1 + lambda)| <= (|w| + alpha) / (1 + lambda)
    for w, x in zip(jax.tree.leaves(params), jax.tree.leaves(new), strict=True):
        assert float(jnp.max(jnp.abs(x))) <= (float(jnp.max(jnp.abs(w))) + 1e-3) / (1 + lam) * 1.001


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("lr, lam", [(1e-3, 1e30), (1.0, 1e39), (1e30, 1e30)])
def test_adamp_huge_lambda_goes_to_zero_not_nan(lr, lam):
    # lambda*alpha overflows float32 in the last two: the weights still go to 0.
    params = make_params(jnp.float32)
    tx = od.adamp(lr, lam)
    u, _ = tx.update(make_grads(params, 1)[0], tx.init(params), params)
    new = optax.apply_updates(params, u)
    chex.assert_tree_all_finite(new)
    chex.assert_trees_all_close(new, jax.tree.map(jnp.zeros_like, new), atol=1e-6)


def test_bad_betas():
    with pytest.raises(ValueError, match="`b2` must lie in"):
        od.adamw(1e-3, 1e-4, b2=1.0)
    with pytest.raises(ValueError, match="`eps` must be a finite number >= 0"):
        od.adamp(1e-3, 1e-4, eps=-1.0)


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
def test_integer_params(name, dtype):
    params = {"w": jnp.ones((2, 3), jnp.float32), "steps": jnp.zeros((3,), dtype)}
    tx = ALL[name](1e-3, 1e-3)
    with pytest.raises(TypeError, match=r"`params` leaf \['steps'\] has dtype .*floating-point"):
        tx.update(params, tx.init(params), params)


@pytest.mark.parametrize("name", ["adamw", "prox_adam", "sgdw", "sgd_l2", "adam_l2", "adamp"])
def test_complex_params_decay_both_parts(name):
    """Decay is linear in w, so it shrinks real and imaginary parts alike."""
    w = jnp.asarray([1.0 + 2.0j, -3.0 + 0.5j], jnp.complex64)
    tx = ALL[name](1e-2, 1e-1)
    u, _ = tx.update(jnp.zeros_like(w), tx.init(w), w)
    new = w + u
    assert new.dtype == jnp.complex64
    ratio = new / w
    # Every element shrinks without turning; the factor is one number except under
    # adam_l2, whose first Adam step (the penalty's gradient is w itself) moves each
    # element by about alpha, whatever its size.
    assert np.all(np.abs(ratio) < 1) and np.all(np.abs(np.angle(ratio)) < 1e-6)
    if name != "adam_l2":
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-6)


@pytest.mark.parametrize("name", sorted(ALL))
def test_params_not_matching_grads(name):
    params = make_params(jnp.float32)
    tx = ALL[name](1e-3, 1e-3)
    state = tx.init(params)
    grads = {k: v for k, v in params.items() if k != "b"}
    with pytest.raises(ValueError, match="different tree structures"):
        tx.update(grads, state, params)


@pytest.mark.parametrize("name", sorted(ALL))
def test_empty_tree(name):
    tx = ALL[name](1e-3, 1e-3, mask=od.weight_decay_mask)
    u, _ = jax.jit(tx.update)({}, tx.init({}), {})
    assert u == {}


@pytest.mark.parametrize("name", sorted(ALL))
def test_none_leaves_pass_through(name):
    params = {"w": jnp.ones((2, 3)), "frozen": None}
    tx = ALL[name](1e-2, 1e-2, mask=od.weight_decay_mask)
    state = tx.init(params)
    grads = {"w": jnp.ones((2, 3)), "frozen": None}
    u, _ = jax.jit(tx.update)(grads, state, params)
    assert u["frozen"] is None
    chex.assert_tree_all_finite(u["w"])


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


@pytest.mark.parametrize(
    "make",
    [
        lambda wd: od.add_l2_to_grad(wd),
        lambda wd: od.decoupled_decay(wd, schedule=0.5),
        lambda wd: od.prox_l2(wd, schedule=0.5),
        lambda wd: od.adaptive_decay(1e-2, wd, schedule=0.5),
        lambda wd: od.master_weights(od.adamw(1e-2, wd)),
    ],
    ids=["add_l2_to_grad", "decoupled_decay", "prox_l2", "adaptive_decay", "master_weights"],
)
def test_transforms_under_inject_hyperparams(make):
    params = make_params(jnp.float32)
    grads = make_grads(params, 3)
    injected = optax.inject_hyperparams(lambda weight_decay: make(weight_decay))(weight_decay=0.05)
    plain = make(0.05)
    si, sp, pi, pp = injected.init(params), plain.init(params), params, params
    for g in grads:
        ui, si = jax.jit(injected.update)(g, si, pi)
        up, sp = plain.update(g, sp, pp)
        pi, pp = optax.apply_updates(pi, ui), optax.apply_updates(pp, up)
    chex.assert_trees_all_close(pi, pp, rtol=1e-6, atol=1e-7)


# ---- Schedules: checked at construction on steps 0..1024 and a log grid up to 10**7 ----

NEGATIVE_LATE = lambda t: 1.0 - 0.6 * t  # noqa: E731 - negative from t = 2 on
NEGATIVE_VERY_LATE = optax.linear_schedule(1.0, -0.5, 5_000_000)  # negative from t ~ 3.3e6


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("arg", ["learning_rate", "weight_decay", "schedule"])
@pytest.mark.parametrize("sched", [NEGATIVE_LATE, NEGATIVE_VERY_LATE], ids=["t=2", "t=3e6"])
def test_negative_schedule_raises(name, arg, sched):
    kwargs = {"learning_rate": 1e-3, "weight_decay": 1e-4, arg: sched}
    with pytest.raises(ValueError, match=f"`{arg}` must be a finite number >= 0, got a schedule"):
        ALL[name](**kwargs)


@pytest.mark.parametrize(
    "name, arg",
    [(n, "weight_decay") for n in sorted(TRANSFORMS)]
    + [(n, "schedule") for n in sorted(TRANSFORMS) if n != "add_l2_to_grad"],
)
def test_transforms_reject_negative_schedules(name, arg):
    kwargs = {arg: NEGATIVE_LATE} if arg == "schedule" else {}
    wd = NEGATIVE_LATE if arg == "weight_decay" else 1e-4
    with pytest.raises(ValueError, match=f"`{arg}` must be a finite number >= 0"):
        TRANSFORMS[name](wd, **kwargs)


@pytest.mark.parametrize("name", ["adamw", "sgdw", "adamw_coupled", "decoupled_decay"])
def test_decay_factor_checked_at_the_schedules_peak(name):
    """A warmup to eta = 2 at t = 500 makes 1 - eta_t*lambda < 0 there, not at t = 0."""
    peak = optax.warmup_cosine_decay_schedule(0.0, 2.0, 500, 10_000)
    if name == "decoupled_decay":
        make = lambda **kw: od.decoupled_decay(0.6, **kw)  # noqa: E731
    elif name == "adamw_coupled":  # the peak is in the learning rate: alpha(t) * lambda
        make = lambda schedule: od.adamw(schedule, 0.6, coupled=True)  # noqa: E731
    else:
        make = lambda **kw: ALL[name](1e-3, 0.6, **kw)  # noqa: E731
    rate = "alpha\\(t\\)\\*eta_t\\*lambda" if name == "adamw_coupled" else "eta_t\\*lambda"
    with pytest.raises(ValueError, match=f"1 - {rate} = 1 - 2\\*0.6 = -0.2 is <= 0 at step t = 500"):
        make(schedule=peak)
    make(schedule=optax.warmup_cosine_decay_schedule(0.0, 1.5, 500, 10_000))  # 0.1 > 0: fine


@pytest.mark.parametrize("name", ["adamw", "sgdw"])
def test_decay_factor_with_a_weight_decay_schedule(name):
    wd = optax.piecewise_constant_schedule(0.1, {1000: 20.0})  # 2.0 from t = 1000
    with pytest.raises(ValueError, match="at step t = 1000"):
        ALL[name](1e-3, wd)


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
    with pytest.raises(ValueError, match=f"`{arg}` must be a finite number >= 0, got -1.0. .*{advice}") as info:
        od.adamw(**kwargs)
    if arg != "weight_decay":
        assert "abs(" not in str(info.value)

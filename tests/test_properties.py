"""Properties every optimizer shares: hyperparameter injection, dtypes, one compile."""

import chex
import jax
import jax.numpy as jnp
import optax
import pytest
from helpers import ALL, HYPER, make_grads, make_params, ref_kwargs, reference, run

import optax_decay as od


@pytest.mark.parametrize("name", sorted(ALL))
def test_inject_hyperparams_matches_plain(name):
    with jax.enable_x64(True):
        params = make_params()
        grads = make_grads(params, 6)
        plain = run(ALL[name](0.05, 0.01, schedule=0.5), params, grads)
        injected = optax.inject_hyperparams(ALL[name])(
            learning_rate=0.05, weight_decay=0.01, schedule=0.5
        )
        chex.assert_trees_all_close(run(injected, params, grads), plain, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(ALL))
def test_injected_weight_decay_can_change_mid_run(name):
    """Changing the injected `weight_decay` in the state changes the next step, under jit."""
    with jax.enable_x64(True):
        params = make_params()
        (g,) = make_grads(params, 1)
        tx = optax.inject_hyperparams(ALL[name])(learning_rate=0.05, weight_decay=0.01)
        update = jax.jit(tx.update)
        state = tx.init(params)
        u_small, _ = update(g, state, params)
        state.hyperparams["weight_decay"] = jnp.asarray(0.2)
        u_big, _ = update(g, state, params)
        expected = run(ALL[name](0.05, 0.2), params, [g])[0]
        chex.assert_trees_all_close(optax.apply_updates(params, u_big), expected, rtol=1e-12)
        assert not jnp.allclose(u_small["w"], u_big["w"])


@pytest.mark.parametrize("name", sorted(ALL))
def test_bf16_params_keep_dtype_and_compile_once(name):
    chex.clear_trace_counter()  # the counter is keyed by function, shared across parameters
    params = make_params(jnp.bfloat16)
    grads = make_grads(params, 4)
    tx = ALL[name](1e-2, 1e-3, schedule=optax.cosine_decay_schedule(1.0, 10))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state, g):
        u, state = tx.update(g, state, params)
        return optax.apply_updates(params, u), state, u

    state = tx.init(params)
    for g in grads:
        params, state, u = step(params, state, g)
    chex.assert_trees_all_equal_dtypes(params, make_params(jnp.bfloat16))
    chex.assert_trees_all_equal_dtypes(u, make_params(jnp.bfloat16))
    chex.assert_tree_all_finite(params)
    state_dtypes = {x.dtype for x in jax.tree.leaves(state) if jnp.ndim(x) > 0}
    assert state_dtypes <= {jnp.dtype(jnp.bfloat16)}


@pytest.mark.parametrize("name", ["adam_l2", "adamw", "prox_adam", "adamp"])
def test_mu_dtype(name):
    params = make_params(jnp.bfloat16)
    tx = ALL[name](1e-2, 1e-3, mu_dtype=jnp.float32)
    state = tx.init(params)
    _, state = tx.update(make_grads(params, 1)[0], state, params)
    mu = optax.tree_utils.tree_get(state, "mu")
    nu = optax.tree_utils.tree_get(state, "nu")
    assert {x.dtype for x in jax.tree.leaves(mu)} == {jnp.dtype(jnp.float32)}
    assert {x.dtype for x in jax.tree.leaves(nu)} == {jnp.dtype(jnp.bfloat16)}


def test_scale_by_adam_equals_optax_bitwise():
    params = make_params(jnp.float32)
    grads = make_grads(params, 5)
    for kw in [{}, dict(b1=0.5, b2=0.9, eps=1e-3, eps_root=1e-6)]:
        ours, ref = od.scale_by_adam(**kw), optax.scale_by_adam(**kw)
        s1, s2 = ours.init(params), ref.init(params)
        for g in grads:
            u1, s1 = jax.jit(ours.update)(g, s1)
            u2, s2 = jax.jit(ref.update)(g, s2)
            chex.assert_trees_all_equal(u1, u2)
        chex.assert_trees_all_equal(s1, s2)


@pytest.mark.parametrize("name", sorted(ALL))
def test_state_has_no_extra_buffers(name):
    """Adam family: exactly 2 param-sized buffers (mu, nu); SGD: 0, or 1 with momentum."""
    params = make_params(jnp.float32)
    state = ALL[name](1e-2, 1e-3).init(params)
    n = sum(x.size for x in jax.tree.leaves(params))
    big = sum(x.size for x in jax.tree.leaves(state) if jnp.ndim(x) > 0)
    expected = 2 if name in ("adam_l2", "adamw", "adamw_coupled", "prox_adam", "adamp") else (
        1 if "momentum" in name or "nesterov" in name else 0)
    assert big == expected * n


# The transforms, by name -> factory(weight_decay, **kwargs).
TRANSFORMS = {
    "add_l2_to_grad": lambda wd, **kw: od.add_l2_to_grad(wd, **kw),
    "decoupled_decay": lambda wd, **kw: od.decoupled_decay(wd, **kw),
    "prox_l2": lambda wd, **kw: od.prox_l2(wd, **kw),
    "adaptive_decay": lambda wd, **kw: od.adaptive_decay(0.05, wd, **kw),
}


@pytest.mark.parametrize("name", sorted(ALL))
def test_weight_decay_schedule_matches_reference(name):
    """`weight_decay=lambda(t)`: the reference formula with lambda evaluated at each t."""
    with jax.enable_x64(True):
        params = make_params()
        grads = make_grads(params, 6)
        alpha, lam = HYPER[name]
        lam_t = lambda t: lam / (1.0 + 0.5 * t)  # noqa: E731 - positive for every t
        out = run(ALL[name](alpha, lam_t), params, grads)
        ref = reference(params=params, grads=grads, alpha=alpha, lam=lam_t, **ref_kwargs(name))
        chex.assert_trees_all_close(out, ref, rtol=1e-10, atol=1e-12)


def test_weight_decay_schedule_in_master_weights():
    """master_weights(adamw(weight_decay=schedule)) in a float64 master: the reference."""
    with jax.enable_x64(True):
        params = make_params(jnp.float32)
        grads = make_grads(params, 5)
        lam = lambda t: 0.2 / (1.0 + 0.5 * t)  # noqa: E731
        tx = od.master_weights(od.adamw(0.05, lam), dtype=jnp.float64)
        state = tx.init(params)
        for g in grads:
            u, state = tx.update(g, state, params)
            params = optax.apply_updates(params, u)
        ref = reference("adamw", make_params(jnp.float32), grads, 0.05, lam)[-1]
        chex.assert_trees_all_close(state.master, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform_weight_decay_schedule_equals_injected_constant(name):
    """A schedule lambda(t) gives, step by step, the transform built with lambda(t)."""
    with jax.enable_x64(True):
        params = make_params()
        grads = make_grads(params, 4)
        sched = optax.linear_schedule(0.3, 0.1, 4)
        tx = TRANSFORMS[name](sched)
        state = tx.init(params)
        p_sched = p_ref = params
        # At an int32 count, as the transform evaluates it.
        ref_states = [TRANSFORMS[name](float(sched(jnp.int32(t)))) for t in range(4)]
        ref_state = ref_states[0].init(params)
        for t, g in enumerate(grads):
            u, state = tx.update(g, state, p_sched)
            p_sched = optax.apply_updates(p_sched, u)
            ur, ref_state = ref_states[t].update(g, ref_state, p_ref)
            p_ref = optax.apply_updates(p_ref, ur)
        chex.assert_trees_all_close(p_sched, p_ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(ALL))
def test_update_takes_extra_args(name):
    """Like Optax's optimizers: `tx.update(g, s, p, value=loss)` works."""
    params = make_params(jnp.float32)
    (g,) = make_grads(params, 1)
    tx = ALL[name](1e-2, 1e-3)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    u_extra, _ = tx.update(g, tx.init(params), params, value=jnp.asarray(1.0))
    u, _ = tx.update(g, tx.init(params), params)
    chex.assert_trees_all_equal(u_extra, u)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transforms_take_extra_args(name):
    params = make_params(jnp.float32)
    tx = TRANSFORMS[name](1e-3)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    tx.update(params, tx.init(params), params, value=jnp.asarray(1.0))
    tx = od.master_weights(od.adamw(1e-2, 1e-3))
    tx.update(params, tx.init(params), params, value=jnp.asarray(1.0))


@pytest.mark.parametrize(
    "make",
    [
        lambda: od.adamw(1e-2, 1e-3),
        lambda: od.adamw(1e-2, 1e-3, coupled=True),
        lambda: od.prox_adam(1e-2, 1e-3),
        lambda: od.adamp(1e-2, 1e-3),
        lambda: od.adam_l2(1e-2, 1e-3),
        lambda: od.master_weights(od.adamw(1e-2, 1e-3)),
        lambda: od.master_weights(od.prox_adam(1e-2, 1e-3)),
        # A schedule on the decay alone adds no second "count".
        lambda: od.adamw(1e-2, optax.linear_schedule(1e-3, 0.0, 10)),
    ],
    ids=["adamw", "adamw_coupled", "prox_adam", "adamp", "adam_l2", "master_adamw",
         "master_prox_adam", "adamw_wd_schedule"],
)
def test_tree_get_count(make):
    """`optax.tree.get(state, "count")` is Adam's step count, as for `optax.adamw`."""
    params = make_params(jnp.float32)
    tx = make()
    state = tx.init(params)
    for g in make_grads(params, 3):
        _, state = tx.update(g, state, params)
    assert int(optax.tree.get(state, "count")) == 3


def test_constant_decay_keeps_no_counter():
    params = make_params(jnp.float32)
    for tx in [od.decoupled_decay(1e-3), od.prox_l2(1e-3), od.add_l2_to_grad(1e-3)]:
        assert tx.init(params) == optax.EmptyState()


@pytest.mark.parametrize("name", sorted(TRANSFORMS) + sorted(ALL))
def test_update_of_none_returns_none(name):
    """As `optax.add_decayed_weights`: no updates in, none out, and the state unchanged."""
    params = make_params(jnp.float32)
    tx = TRANSFORMS[name](1e-3) if name in TRANSFORMS else ALL[name](1e-2, 1e-3)
    state = tx.init(params)
    u, new_state = tx.update(None, state, params)
    assert u is None
    chex.assert_trees_all_equal(new_state, state)
    ref = optax.add_decayed_weights(1e-3)
    assert ref.update(None, ref.init(params), params)[0] is None


@pytest.mark.parametrize("name", sorted(ALL))
def test_python_float_params(name):
    """`tx.update(0.2, tx.init(1.5), 1.5)` works, as for `optax.adamw`, and equals 0-d arrays."""
    tx = ALL[name](0.1, 0.05)
    u, _ = tx.update(0.2, tx.init(1.5), 1.5)
    u_arr, _ = tx.update(jnp.asarray(0.2), tx.init(jnp.asarray(1.5)), jnp.asarray(1.5))
    chex.assert_trees_all_close(jnp.asarray(u), u_arr, rtol=1e-6)
    assert float(u) != 0.0

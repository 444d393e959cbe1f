"""Properties every optimizer shares: hyperparameter injection, dtypes, one compile."""

import chex
import jax
import jax.numpy as jnp
import optax
import pytest
from helpers import ALL, make_grads, make_params, run

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

"""bf16 params: decoupled decay is lost, the warning says so, master weights keep it."""

import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import OPTIMIZERS, REGISTRY, build, make_params, make_problem, reference, run

import optax_decay as od

DECOUPLED = [n for n in OPTIMIZERS if REGISTRY[n].kind in ("paper", "coupled", "prox")]


def decay_only(tx, params, steps):
    """`steps` updates with zero gradients: only the decay moves the weights."""
    zero = jax.tree.map(jnp.zeros_like, params)

    @jax.jit
    def run(params, state):
        def body(_, carry):
            p, s = carry
            u, s = tx.update(zero, s, p)
            return optax.apply_updates(p, u), s

        return jax.lax.fori_loop(0, steps, body, (params, state))

    return run(params, tx.init(params))[0]


def lr_and_decay(name, rate):
    """(alpha, lambda) whose decay per step is `rate` in the optimizer's own convention."""
    alpha = 1e-2
    return alpha, rate / alpha if REGISTRY[name].kind == "coupled" else rate


@pytest.mark.parametrize("name", DECOUPLED)
def test_bf16_decay_is_lost_and_warned(name):
    params = {"w": jnp.linspace(0.5, 4.0, 16, dtype=jnp.bfloat16)}
    with pytest.warns(od.DecayPrecisionWarning, match="below the resolution of bfloat16"):
        out = decay_only(build(name, *lr_and_decay(name, 1e-5)), params, 1000)
    # 1000 steps of (1 - 1e-5) should shrink by 1%, far more than bf16 rounding: but nothing moved.
    chex.assert_trees_all_equal(out, params)


@pytest.mark.parametrize("name", DECOUPLED)
def test_master_weights_apply_the_decay(name):
    params = {"w": jnp.linspace(0.5, 4.0, 16, dtype=jnp.bfloat16)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", od.DecayPrecisionWarning)  # the inner runs in float32
        out = decay_only(od.master_weights(build(name, *lr_and_decay(name, 1e-5))), params, 1000)
    assert out["w"].dtype == jnp.bfloat16
    w0 = np.asarray(params["w"], np.float64)
    factor = (1 - 1e-5) ** 1000 if "prox" not in name else (1 + 1e-5) ** -1000
    # Within one bf16 rounding of the exact decay.
    np.testing.assert_allclose(np.asarray(out["w"], np.float64), w0 * factor, rtol=2**-8)
    assert np.all(np.asarray(out["w"], np.float64) < w0)


def test_master_weights_state_and_float32_passthrough():
    params = {"low": jnp.ones(4, jnp.bfloat16), "full": jnp.ones(4, jnp.float32)}
    tx = od.master_weights(od.adamw(1e-2, 1e-4))
    state = tx.init(params)
    assert state.master["low"].dtype == jnp.float32
    mu = optax.tree_utils.tree_get(state, "mu")
    assert {x.dtype for x in jax.tree.leaves(mu)} == {jnp.dtype(jnp.float32)}
    g = jax.tree.map(lambda x: jnp.full_like(x, 0.5), params)
    u, state = tx.update(g, state, params)
    assert u["low"].dtype == jnp.bfloat16 and u["full"].dtype == jnp.float32
    assert state.master["full"].size == 0  # no copy of leaves that are float32 already
    # A float32 leaf follows the plain optimizer exactly.
    ref = od.adamw(1e-2, 1e-4)
    with pytest.warns(od.DecayPrecisionWarning):  # the plain optimizer on the bf16 leaf
        ru, _ = ref.update(g, ref.init(params), params)
    chex.assert_trees_all_equal(u["full"], ru["full"])


@pytest.mark.x64
def test_weight_decay_schedule_in_master_weights():
    """master_weights(adamw(weight_decay=schedule)) in a float64 master: the reference."""
    params, grads = make_problem(5, jnp.float32)
    lam = lambda t: 0.2 / (1.0 + 0.5 * t)
    tx = od.master_weights(od.adamw(0.05, lam), dtype=jnp.float64)
    _, state = run(tx, params, grads, jit=False, return_state=True)
    ref = reference("adamw", make_params(jnp.float32), grads, 0.05, lam)[-1]
    chex.assert_trees_all_close(state.master, ref, rtol=1e-10, atol=1e-12)


def test_master_weights_equals_float32_run():
    rng = np.random.default_rng(0)
    w32 = {"w": jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)}
    grads = [{"w": jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)} for _ in range(20)]
    tx32 = od.adamw(1e-2, 1e-3)
    txm = od.master_weights(od.adamw(1e-2, 1e-3))
    p32, s32 = w32, tx32.init(w32)
    pm = jax.tree.map(lambda x: x.astype(jnp.bfloat16), w32)
    sm = txm.init(pm)._replace(master=w32)  # start from the same float32 point
    for g in grads:
        u, s32 = tx32.update(g, s32, p32)
        p32 = optax.apply_updates(p32, u)
        u, sm = txm.update(jax.tree.map(lambda x: x.astype(jnp.bfloat16), g), sm, pm)
        pm = optax.apply_updates(pm, u)
    # The master copy saw bf16 gradients; the bf16 params are its rounding.
    chex.assert_trees_all_equal(pm, jax.tree.map(lambda x: x.astype(jnp.bfloat16), sm.master))
    chex.assert_trees_all_close(sm.master, p32, rtol=0.05, atol=0.02)


def test_warning_at_every_init_and_not_for_float32():
    params = {"w": jnp.ones(4, jnp.bfloat16)}
    tx = od.adamw(1e-3, 1e-5)
    with pytest.warns(od.DecayPrecisionWarning) as record:
        state = tx.init(params)
        for _ in range(3):  # updates do not warn again
            tx.update(params, state, params)
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", od.DecayPrecisionWarning)
        p32 = {"w": jnp.ones(4, jnp.float32)}
        tx.update(p32, tx.init(p32), p32)
        # A large enough decay for bf16 does not warn either.
        big = od.sgdw(1e-3, 1e-2)
        big.update(params, big.init(params), params)


def test_every_optimizer_warns_not_only_the_first():
    """The warning was once per process: `sgdw` after `adamw` lost its decay silently."""
    params = {"w": jnp.ones(4, jnp.bfloat16)}
    for make in [od.adamw, od.adamw, od.sgdw, od.prox_adam]:
        with pytest.warns(od.DecayPrecisionWarning, match=make.__name__):
            make(1e-3, 1e-5).init(params)


@pytest.mark.parametrize("name", DECOUPLED)
def test_warns_with_a_schedule_and_under_jit(name):
    """The README's usage: a cosine `schedule`, `init` under `jit`. Uses eta_0 * lambda."""
    params = {"w": jnp.ones(4, jnp.bfloat16)}
    eta = optax.cosine_decay_schedule(1.0, 1000)
    alpha, lam = lr_and_decay(name, 1e-5)
    tx = build(name, alpha, lam, schedule=eta)
    with pytest.warns(od.DecayPrecisionWarning, match=r"1e-05 per step \(at t = 0\)"):
        jax.jit(tx.init)(params)
    # A weight-decay schedule too, evaluated at t = 0.
    tx = build(name, alpha, optax.constant_schedule(lam))
    with pytest.warns(od.DecayPrecisionWarning):
        tx.init(params)


def test_masked_out_bf16_leaf_does_not_warn():
    params = {"w": jnp.ones((2, 2), jnp.float32), "b": jnp.ones(2, jnp.bfloat16)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", od.DecayPrecisionWarning)
        od.adamw(1e-3, 1e-5, mask=od.weight_decay_mask).init(params)


def test_float32_warning_does_not_suggest_master_weights():
    w = jnp.ones(3, jnp.float32)
    tx = od.adamw(0.1, 1e-9)
    with pytest.warns(od.DecayPrecisionWarning, match="Check the convention") as record:
        tx.update(w, tx.init(w), w)
    assert "master_weights" not in str(record[0].message)


def test_master_weights_state_maps_sharding_specs():
    """The sharding-spec idiom `optax.tree.map_params` over a mixed bf16/f32 tree, then device_put."""
    P = jax.sharding.PartitionSpec
    mesh = jax.make_mesh((8,), ("x",))
    params = {"low": jnp.ones((16, 4), jnp.bfloat16), "full": jnp.ones((8,), jnp.float32)}
    specs = {"low": P("x", None), "full": P("x")}
    tx = od.master_weights(od.adamw(1e-2, 1e-2))
    state = tx.init(params)
    state_specs = optax.tree.map_params(
        tx, lambda _, spec: spec, state, specs, transform_non_params=lambda _: P()
    )
    assert state_specs.master == specs
    named = lambda t: jax.tree.map(
        lambda s: jax.sharding.NamedSharding(mesh, s), t, is_leaf=lambda x: isinstance(x, P)
    )
    sharded = jax.device_put(state, named(state_specs))
    params = jax.device_put(params, named(specs))
    u, new = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), sharded, params)
    assert new.master["low"].sharding.spec == P("x", None)
    ref, _ = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    chex.assert_trees_all_close(u, ref)

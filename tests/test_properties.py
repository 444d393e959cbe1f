"""Properties every optimizer (and, where they apply, every transform) of the registry has.

Each test runs over the registry of `helpers.py`: `OPTIMIZERS`, the optimizers of
`_alias`, or `EVERY`, the optimizers and the transforms.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import (
    ADAM_FAMILY,
    OPTIMIZERS,
    REGISTRY,
    TRANSFORMS,
    build,
    make_grads,
    make_params,
    make_problem,
    run,
)

import optax_decay as od

EVERY = OPTIMIZERS + TRANSFORMS


def injectable(name):
    """The entry ``name`` as a factory of named hyperparameters, for `inject_hyperparams`."""
    make = REGISTRY[name].make
    if name == "add_l2_to_grad":  # no schedule
        return lambda learning_rate, weight_decay: make(learning_rate, weight_decay)
    return lambda learning_rate, weight_decay, schedule: make(
        learning_rate, weight_decay, schedule=schedule
    )


@pytest.mark.x64
@pytest.mark.parametrize("name", EVERY)
def test_inject_hyperparams_matches_plain(name):
    params, grads = make_problem(6)
    hyper = dict(learning_rate=0.05, weight_decay=0.01)
    hyper |= {} if name == "add_l2_to_grad" else {"schedule": 0.5}
    got = run(optax.inject_hyperparams(injectable(name))(**hyper), params, grads)
    chex.assert_trees_all_close(
        got, run(injectable(name)(**hyper), params, grads), rtol=1e-12, atol=1e-14
    )


@pytest.mark.x64
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_injected_weight_decay_can_change_mid_run(name):
    """Changing the injected `weight_decay` in the state changes the next step, under jit."""
    params, (g,) = make_problem(1)
    tx = optax.inject_hyperparams(REGISTRY[name].make)(learning_rate=0.05, weight_decay=0.01)
    update = jax.jit(tx.update)
    state = tx.init(params)
    u_small, _ = update(g, state, params)
    state.hyperparams["weight_decay"] = jnp.asarray(0.2)
    u_big, _ = update(g, state, params)
    expected = run(build(name, 0.05, 0.2), params, [g])[0]
    chex.assert_trees_all_close(optax.apply_updates(params, u_big), expected, rtol=1e-12)
    assert not jnp.allclose(u_small["w"], u_big["w"])


@pytest.mark.x64
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_constant_schedule_equals_constant(name):
    params, grads = make_problem(8)
    alpha = REGISTRY[name].alpha
    a = run(build(name, schedule=0.7), params, grads)
    b = run(
        build(name, optax.constant_schedule(alpha), schedule=optax.constant_schedule(0.7)),
        params,
        grads,
    )
    chex.assert_trees_all_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.x64
@pytest.mark.parametrize("name", TRANSFORMS)
def test_weight_decay_schedule_equals_the_constant_of_each_step(name):
    """A schedule lambda(t) gives, step by step, the transform built with lambda(t)."""
    params, grads = make_problem(4)
    sched = optax.linear_schedule(0.3, 0.1, 4)
    tx = build(name, 0.05, sched)
    state = tx.init(params)
    p_sched = p_ref = params
    # At an int32 count, as the transform evaluates it.
    ref_txs = [build(name, 0.05, float(sched(jnp.int32(t)))) for t in range(4)]
    ref_state = ref_txs[0].init(params)
    for ref_tx, g in zip(ref_txs, grads, strict=True):
        u, state = tx.update(g, state, p_sched)
        p_sched = optax.apply_updates(p_sched, u)
        ur, ref_state = ref_tx.update(g, ref_state, p_ref)
        p_ref = optax.apply_updates(p_ref, ur)
    chex.assert_trees_all_close(p_sched, p_ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_bf16_params_keep_dtype_and_compile_once(name):
    chex.clear_trace_counter()  # the counter is keyed by function, shared across parameters
    params, grads = make_problem(4, jnp.bfloat16)
    tx = build(name, 1e-2, 1e-3, schedule=optax.cosine_decay_schedule(1.0, 10))

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


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_has_no_extra_buffers(name):
    """Adam family: exactly 2 param-sized buffers (mu, nu); SGD: 0, or 1 with momentum."""
    params = make_params(jnp.float32)
    state = build(name, 1e-2, 1e-3).init(params)
    n = sum(x.size for x in jax.tree.leaves(params))
    big = sum(x.size for x in jax.tree.leaves(state) if jnp.ndim(x) > 0)
    assert big == (2 if name in ADAM_FAMILY else 1 if REGISTRY[name].sgd else 0) * n


def compiled_memory(name, donate):
    params = {"w": jnp.ones((256, 256)), "b": jnp.ones((1024,))}
    tx = build(name, 1e-3, 1e-4)

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    lowered = jax.jit(step, donate_argnums=donate).lower(params, tx.init(params), params)
    mem = lowered.compile().memory_analysis()
    if mem is None:
        pytest.skip("this backend reports no memory analysis")
    return mem, sum(x.nbytes for x in jax.tree.leaves(params))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_donated_update_is_in_place(name):
    mem, param_bytes = compiled_memory(name, donate=(0, 1))
    # Every output buffer (params and state) reuses a donated input, up to the scalar counts.
    assert mem.alias_size_in_bytes >= mem.output_size_in_bytes - 64
    # No param-sized temporaries: no copy of v, D or the update is kept.
    assert mem.temp_size_in_bytes < 0.01 * param_bytes
    if name == "adamp":  # The check can fail: without donation the outputs are fresh buffers.
        mem, _ = compiled_memory(name, donate=())
        assert mem.alias_size_in_bytes == 0 and mem.output_size_in_bytes > 0


@pytest.mark.parametrize(
    "name",
    [*ADAM_FAMILY, "adaptive_decay", "master_weights", "master_prox_adam", "adamw_wd_schedule"],
)
def test_tree_get_count(name):
    """`optax.tree.get(state, "count")` is Adam's step count, as for `optax.adamw`."""
    params = make_params(jnp.float32)
    if name == "master_prox_adam":
        tx = od.master_weights(od.prox_adam(1e-2, 1e-3))
    elif name == "adamw_wd_schedule":  # a schedule on the decay alone adds no second "count"
        tx = od.adamw(1e-2, optax.linear_schedule(1e-3, 0.0, 10))
    else:
        tx = build(name, 1e-2, 1e-3)
    state = tx.init(params)
    for g in make_grads(params, 3):
        _, state = tx.update(g, state, params)
    assert int(optax.tree.get(state, "count")) == 3


@pytest.mark.parametrize("name", EVERY)
def test_update_takes_extra_args_and_none(name):
    """Like Optax's optimizers: `tx.update(g, s, p, value=loss)` works; as
    `optax.add_decayed_weights`: no updates in, none out, and the state unchanged."""
    params, (g,) = make_problem(1, jnp.float32)
    tx = build(name, 1e-2, 1e-3)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    state = tx.init(params)
    u_extra, _ = tx.update(g, state, params, value=jnp.asarray(1.0))
    chex.assert_trees_all_equal(u_extra, tx.update(g, state, params)[0])
    u, new_state = tx.update(None, state, params)
    assert u is None
    chex.assert_trees_all_equal(new_state, state)
    ref = optax.add_decayed_weights(1e-3)
    assert ref.update(None, ref.init(params), params)[0] is None


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_apply_if_finite_skips_and_keeps_state(name):
    params, good = make_problem(2, jnp.float32)
    tx = optax.apply_if_finite(build(name, 1e-2, 1e-3), max_consecutive_errors=3)
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


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_non_finite_gradients_propagate(name):
    params = make_params(jnp.float32)
    tx = build(name, 1e-3, 1e-3)
    g = jax.tree.map(jnp.zeros_like, params)
    g["w"] = g["w"].at[0, 0].set(jnp.nan)
    u, _ = tx.update(g, tx.init(params), params)
    assert bool(jnp.isnan(u["w"][0, 0]))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_python_float_params(name):
    """`tx.update(0.2, tx.init(1.5), 1.5)` works, as for `optax.adamw`, and equals 0-d arrays."""
    tx = build(name, 0.1, 0.05)
    u, _ = tx.update(0.2, tx.init(1.5), 1.5)
    u_arr, _ = tx.update(jnp.asarray(0.2), tx.init(jnp.asarray(1.5)), jnp.asarray(1.5))
    chex.assert_trees_all_close(jnp.asarray(u), u_arr, rtol=1e-6)
    assert float(u) != 0.0


@pytest.mark.parametrize("name", ["adamw", "prox_adam", "sgdw", "sgd_l2", "adam_l2", "adamp"])
def test_complex_params_decay_both_parts(name):
    """Decay is linear in w, so it shrinks real and imaginary parts alike."""
    w = jnp.asarray([1.0 + 2.0j, -3.0 + 0.5j], jnp.complex64)
    tx = build(name, 1e-2, 1e-1)
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


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_empty_tree_and_none_leaves(name):
    tx = build(name, 1e-2, 1e-2, mask=od.weight_decay_mask)
    u, _ = jax.jit(tx.update)({}, tx.init({}), {})
    assert u == {}
    params = {"w": jnp.ones((2, 3)), "frozen": None}
    grads = {"w": jnp.ones((2, 3)), "frozen": None}
    u, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    assert u["frozen"] is None
    chex.assert_tree_all_finite(u["w"])

"""Multi-device runs equal the single-device run (8 host CPU devices)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import ALL, make_grads, make_params, run
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

SHAPES = {"w": (16, 4), "b": (8,), "k": (8, 2, 3)}


def param_like_leaves(state, params):
    """(state leaf, matching param) pairs for every param-shaped state leaf."""
    by_shape = {p.shape: p for p in jax.tree.leaves(params)}
    return [(x, by_shape[x.shape]) for x in jax.tree.leaves(state) if jnp.ndim(x) > 0]


@pytest.mark.parametrize("name", sorted(ALL))
def test_named_sharding_equals_single_device(name):
    assert jax.device_count() == 8
    mesh = jax.make_mesh((8,), ("fsdp",))
    params = make_params(jnp.float32, shapes=SHAPES)
    grads = make_grads(params, 5)
    tx = ALL[name](1e-2, 1e-3, schedule=optax.cosine_decay_schedule(1.0, 10),
                   mask=lambda p: {"w": True, "b": False, "k": True})
    sharding = NamedSharding(mesh, P("fsdp"))
    sp = jax.device_put(params, sharding)
    state = tx.init(sp)
    for x, p in param_like_leaves(state, sp):
        assert x.sharding.is_equivalent_to(p.sharding, x.ndim), (x.sharding, p.sharding)

    @jax.jit
    def step(params, state, g):
        u, state = tx.update(g, state, params)
        return optax.apply_updates(params, u), state

    for g in grads:
        sp, state = step(sp, state, jax.device_put(g, sharding))
    want = run(tx, params, grads)[-1]
    chex.assert_trees_all_close(sp, want, rtol=1e-6, atol=1e-7)
    for x, _ in param_like_leaves(state, sp):
        assert x.sharding.is_equivalent_to(sharding, x.ndim), (x.sharding, sharding)
    for p in jax.tree.leaves(sp):
        assert p.sharding.is_equivalent_to(sharding, p.ndim)


@pytest.mark.parametrize("name", ["adamw", "prox_adam", "adamp", "sgdw_nesterov"])
def test_pmap_data_parallel_equals_single_device(name):
    """Per-device gradients averaged with `lax.pmean` give the single-device result."""
    n = jax.device_count()
    params = make_params(jnp.float32)
    rng = np.random.default_rng(0)
    local = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=(n, *p.shape)), p.dtype), params)
             for _ in range(4)]
    tx = ALL[name](1e-2, 1e-2)

    def step(params, state, g):
        g = jax.lax.pmean(g, "devices")
        u, state = tx.update(g, state, params)
        return optax.apply_updates(params, u), state

    pstep = jax.pmap(step, axis_name="devices")
    replicate = lambda t: jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *x.shape)), t)
    rp, rs = replicate(params), replicate(tx.init(params))
    for g in local:
        rp, rs = pstep(rp, rs, g)
    want = run(tx, params, [jax.tree.map(lambda x: x.mean(0), g) for g in local])[-1]
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[0], rp), want, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[0], rp), jax.tree.map(lambda x: x[-1], rp))


@pytest.mark.parametrize("name", sorted(ALL))
def test_sharded_update_has_no_collectives(name):
    """An elementwise optimizer on FSDP-sharded params compiles to purely local work."""
    mesh = jax.make_mesh((8,), ("fsdp",))
    sharding = NamedSharding(mesh, P("fsdp"))
    params = jax.device_put(make_params(jnp.float32, shapes=SHAPES), sharding)
    tx = ALL[name](1e-2, 1e-3, schedule=optax.cosine_decay_schedule(1.0, 10),
                   mask=lambda p: {"w": True, "b": False, "k": True})
    state = tx.init(params)

    def step(params, state, g):
        u, state = tx.update(g, state, params)
        return optax.apply_updates(params, u), state

    hlo = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile().as_text()
    for op in ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter"):
        assert op not in hlo, f"{name}: compiled update holds {op}"
    # The test can fail: a norm of the sharded params needs an all-reduce.
    norm = jax.jit(lambda p: optax.tree_utils.tree_norm(p)).lower(params).compile().as_text()
    assert "all-reduce" in norm

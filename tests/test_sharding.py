"""Multi-device runs equal the single-device run (8 host CPU devices)."""

import contextlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import OPTIMIZERS, build, make_grads, make_params, make_problem, run
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import optax_decay as od

SHAPES = {"w": (16, 4), "b": (8,), "k": (8, 2, 3)}
MASK = lambda p: {"w": True, "b": False, "k": True}
COLLECTIVES = ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter")


def make_step(tx):
    def step(params, state, g):
        u, state = tx.update(g, state, params)
        return optax.apply_updates(params, u), state

    return step


def param_like_leaves(state, params):
    """(state leaf, matching param) pairs for every param-shaped state leaf."""
    by_shape = {p.shape: p for p in jax.tree.leaves(params)}
    return [(x, by_shape[x.shape]) for x in jax.tree.leaves(state) if jnp.ndim(x) > 0]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_named_sharding_equals_single_device(name):
    assert jax.device_count() == 8
    params, grads = make_problem(5, jnp.float32, shapes=SHAPES)
    tx = build(name, 1e-2, 1e-3, schedule=optax.cosine_decay_schedule(1.0, 10), mask=MASK)
    sharding = NamedSharding(jax.make_mesh((8,), ("fsdp",)), P("fsdp"))
    sp = jax.device_put(params, sharding)
    state = tx.init(sp)
    for x, p in param_like_leaves(state, sp):
        assert x.sharding.is_equivalent_to(p.sharding, x.ndim), (x.sharding, p.sharding)

    step = jax.jit(make_step(tx))
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
    local = [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=(n, *p.shape)), p.dtype), params)
        for _ in range(4)
    ]
    tx = build(name, 1e-2, 1e-2)

    def step(params, state, g):
        return make_step(tx)(params, state, jax.lax.pmean(g, "devices"))

    pstep = jax.pmap(step, axis_name="devices")
    replicate = lambda t: jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *x.shape)), t)
    rp, rs = replicate(params), replicate(tx.init(params))
    for g in local:
        rp, rs = pstep(rp, rs, g)
    want = run(tx, params, [jax.tree.map(lambda x: x.mean(0), g) for g in local])[-1]
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[0], rp), want, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[0], rp), jax.tree.map(lambda x: x[-1], rp))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_sharded_update_has_no_collectives(name):
    """An elementwise optimizer on FSDP-sharded params compiles to purely local work."""
    sharding = NamedSharding(jax.make_mesh((8,), ("fsdp",)), P("fsdp"))
    params = jax.device_put(make_params(jnp.float32, shapes=SHAPES), sharding)
    tx = build(name, 1e-2, 1e-3, schedule=optax.cosine_decay_schedule(1.0, 10), mask=MASK)
    state = tx.init(params)
    step = jax.jit(make_step(tx), donate_argnums=(0, 1))
    hlo = step.lower(params, state, params).compile().as_text()
    assert not [op for op in COLLECTIVES if op in hlo], name
    # The test can fail: a norm of the sharded params needs an all-reduce.
    norm = jax.jit(lambda p: optax.tree_utils.tree_norm(p)).lower(params).compile().as_text()
    assert "all-reduce" in norm


# ------------------------------------------------------------------ flat buffers on a mesh

# 241 elements (200 + 15 + 26), a buffer length that 8 devices do not divide
AWKWARD = {"w": (8, 25), "b": (15,), "k": (2, 13)}
EXPLICIT = jax.sharding.AxisType.Explicit
set_mesh = getattr(jax, "set_mesh", None) or jax.sharding.use_mesh  # use_mesh: jax < 0.8


def flat_run(tx, layout, flat, grads, sharding=None, mesh=None):
    """Jitted steps on the flat buffers (sharded with `sharding`, under `set_mesh(mesh)`)."""
    with set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
        put = (lambda t: jax.device_put(t, sharding)) if sharding is not None else (lambda t: t)
        flat = put(flat)
        state = tx.init(flat)
        step = jax.jit(make_step(tx)).lower(flat, state, flat).compile()
        for g in grads:
            flat, state = step(flat, state, put(layout.ravel(g)))
    return flat, state, step.as_text()


@pytest.mark.parametrize("axis_type", ["Auto", "Explicit"])
def test_fsdp_padded_flat_buffer_equals_unsharded(axis_type):
    """A 241-element buffer padded to 248 shards over 8 devices; adamw gives the unsharded run."""
    params = make_params(jnp.float32, shapes=AWKWARD)
    assert sum(p.size for p in jax.tree.leaves(params)) == 241
    grads = make_grads(params, 4)
    layout = od.flat_layout(params, mask=od.weight_decay_mask, pad_to_multiple_of=8)
    assert layout.sizes == {"float32": 248} and layout.num_padding == {"float32": 7}
    tx = od.adamw(0.05, 0.2, mask=layout.mask)
    want, want_state, _ = flat_run(tx, layout, layout.ravel(params), grads)

    mesh = jax.make_mesh((8,), ("x",), axis_types=(getattr(jax.sharding.AxisType, axis_type),))
    sharding = NamedSharding(mesh, P("x"))
    with pytest.raises(ValueError):  # 241 elements do not split over 8 devices: why the padding
        jax.device_put(od.flat_layout(params).ravel(params), sharding)
    got, state, hlo = flat_run(
        tx, layout, layout.ravel(params), grads, sharding, mesh if axis_type == "Explicit" else None
    )
    assert got["float32"].sharding.is_equivalent_to(sharding, 1)
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-7)
    for field in ("mu", "nu"):
        ((_, moment),) = optax.tree.get_all_with_path(state, field)
        ((_, want_moment),) = optax.tree.get_all_with_path(want_state, field)
        chex.assert_trees_all_close(moment, want_moment, rtol=1e-6, atol=1e-7)
        assert moment["float32"].sharding.is_equivalent_to(sharding, 1)
        np.testing.assert_array_equal(np.asarray(moment["float32"])[241:], 0)
    np.testing.assert_array_equal(np.asarray(got["float32"])[241:], 0)  # exactly zero
    if axis_type == "Explicit":  # JAX splits no sharded axis unevenly: gather first
        with set_mesh(mesh):
            got = jax.sharding.reshard(got, P())
    tree = layout.unravel(got)
    assert jax.tree.structure(tree) == jax.tree.structure(params)
    want_tree = run(od.adamw(0.05, 0.2, mask=od.weight_decay_mask), params, grads)[-1]
    chex.assert_trees_all_close(tree, want_tree, rtol=1e-6, atol=1e-7)
    assert not np.allclose(tree["k"], params["k"])
    assert not [op for op in COLLECTIVES if op in hlo]


@pytest.mark.parametrize("mask_kind", ["layout.mask", "bool arrays"])
@pytest.mark.parametrize("name", ["adamw", "sgdw", "prox_adam", "adamp", "adam_l2"])
def test_explicit_mesh_flat_buffer_with_element_mask(name, mask_kind):
    """Per-element masks on a buffer sharded over an Explicit-axes mesh, where a sharding
    is part of an array's type: the mask takes its buffer's sharding, and the run equals
    the unsharded one."""
    params = make_params(jnp.float32, shapes=SHAPES)  # 120 elements, 15 per device
    grads = make_grads(params, 4)
    layout = od.flat_layout(params, mask=od.weight_decay_mask)
    flat = layout.ravel(params)
    want, _, _ = flat_run(build(name, mask=layout.mask), layout, flat, grads)

    mesh = jax.make_mesh((8,), ("x",), axis_types=(EXPLICIT,))
    with set_mesh(mesh):
        # built under the mesh: typed replicated on it, unlike the buffer
        mask = layout.mask if mask_kind == "layout.mask" else dict(layout.mask(flat))
    tx = build(name, mask=mask)
    sharding = NamedSharding(mesh, P("x"))
    got, _, hlo = flat_run(tx, layout, flat, grads, sharding, mesh)
    assert got["float32"].sharding.is_equivalent_to(sharding, 1)
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-7)
    assert not np.allclose(got["float32"], flat["float32"])
    assert not [op for op in COLLECTIVES if op in hlo], name

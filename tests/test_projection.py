"""`project_to_norm` (`_projection`): ``w_new = r * z/||z||``, ``z = w + u``, per leaf or slice."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import make_grads, make_params

import optax_decay as od


def reference(z, r, axis):
    """``r * z / ||z||`` in NumPy float64, the norm over ``axis`` (all axes for None)."""
    z = np.asarray(z, np.float64)
    norm = np.sqrt(np.sum(z**2, axis=axis, keepdims=True))
    return np.where(norm > 0, np.asarray(r) * z / np.where(norm > 0, norm, 1.0), z)


@pytest.mark.x64
@pytest.mark.parametrize("axis", [None, 0, -1, (0, 1)])
def test_projection_formula_with_init_radius(axis):
    """Every step lands on the sphere of the initial norms: the formula, step by step."""
    params = {"w": make_params()["k"], "v": make_params()["k"][0]}  # (2, 2, 3) and (2, 3)
    if axis == (0, 1):
        params = {"w": params["w"]}
    tx = optax.chain(optax.sgd(0.3, momentum=0.5), od.project_to_norm(axis=axis))
    state = tx.init(params)
    r0 = {
        k: np.sqrt(np.sum(np.asarray(w) ** 2, axis=axis, keepdims=True)) for k, w in params.items()
    }
    sgd = optax.sgd(0.3, momentum=0.5)
    sgd_state, w = sgd.init(params), params
    for g in make_grads(params, 4):
        step, sgd_state = sgd.update(g, sgd_state, w)
        want = {k: reference(w[k] + step[k], r0[k], axis) for k in w}
        u, state = tx.update(g, state, w)
        w = optax.apply_updates(w, u)
        chex.assert_trees_all_close(w, want, rtol=1e-14, atol=1e-15)
    # The state: one norm per slice, nothing params-sized.
    (radius,) = [s.radius for s in state if isinstance(s, od.ProjectToNormState)]
    chex.assert_trees_all_equal_shapes(radius, r0)


@pytest.mark.x64
def test_projection_with_a_given_radius_pytree_and_a_mask():
    params = make_params()  # w (3, 4), b (4,), k (2, 2, 3)
    radius = {"w": np.array([[1.0, 2.0, 3.0, 4.0]]), "b": 0.5, "k": 2.0}
    tx = od.project_to_norm(radius, axis=0, mask={"w": True, "b": False, "k": True})
    assert tx.init(params) == optax.MaskedState(inner_state=optax.EmptyState())
    (g,) = make_grads(params, 1)
    u, _ = tx.update(g, tx.init(params), params)
    new = optax.apply_updates(params, u)
    np.testing.assert_allclose(new["w"], reference(params["w"] + g["w"], radius["w"], 0), 1e-14)
    np.testing.assert_allclose(new["k"], reference(params["k"] + g["k"], 2.0, 0), 1e-14)
    np.testing.assert_array_equal(new["b"], params["b"] + g["b"])  # masked out: the step only
    np.testing.assert_allclose(np.linalg.norm(new["w"], axis=0), radius["w"][0], 1e-14)


@pytest.mark.parametrize("dtype, rtol", [(jnp.float32, 2e-6), (jnp.bfloat16, 2**-7)])
def test_norm_stays_on_the_sphere_for_1000_steps(dtype, rtol):
    """Adam steps on an embedding (rows normalized, axis=-1) and a kernel (whole leaf): after
    every one of 1,000 steps the norms equal the radius to the dtype's round-off; a zero row
    (no gradient) stays zero and finite."""
    key = jax.random.key(0)
    emb = jax.random.normal(key, (64, 16)).at[3].set(0.0)
    params = {"emb": emb.astype(dtype), "kernel": jax.random.normal(key, (16, 8)).astype(dtype)}
    emb_tx = optax.chain(optax.adam(1e-2), od.project_to_norm(1.0, axis=-1))
    tx = optax.multi_transform(
        {"emb": emb_tx, "kernel": optax.chain(optax.adam(1e-2), od.project_to_norm())},
        {"emb": "emb", "kernel": "kernel"},
    )
    kernel_norm = jnp.linalg.norm(params["kernel"].astype(jnp.float32))

    @jax.jit
    def steps(params, state, key):
        def body(carry, key):
            p, s = carry
            g = jax.tree.map(lambda x: jax.random.normal(key, x.shape, dtype), p)
            g["emb"] = g["emb"].at[3].set(0)
            u, s = tx.update(g, s, p)
            p = optax.apply_updates(p, u)
            norms = {k: jnp.linalg.norm(v.astype(jnp.float32), axis=-1) for k, v in p.items()}
            norms["kernel"] = jnp.linalg.norm(p["kernel"].astype(jnp.float32))
            return (p, s), norms

        return jax.lax.scan(body, (params, state), jax.random.split(key, 1000))

    (final, _), norms = steps(params, tx.init(params), jax.random.key(1))
    rows = np.asarray(norms["emb"])
    assert rows.shape == (1000, 64)
    np.testing.assert_allclose(np.delete(rows, 3, axis=1), 1.0, rtol=rtol)
    np.testing.assert_array_equal(rows[:, 3], 0.0)
    np.testing.assert_allclose(norms["kernel"], kernel_norm, rtol=rtol)
    chex.assert_tree_all_finite(final)
    assert final["emb"].dtype == dtype
    # The weights moved: the check is not of a frozen tree.
    assert float(jnp.max(jnp.abs(final["kernel"] - params["kernel"]).astype(jnp.float32))) > 0.1


def test_projection_under_jit_and_inject_hyperparams():
    params = make_params(jnp.float32)
    (g,) = make_grads(params, 1)
    tx = optax.inject_hyperparams(od.project_to_norm)(radius=3.0)
    u, state = jax.jit(tx.update)(g, tx.init(params), params)
    new = optax.apply_updates(params, u)
    for leaf in jax.tree.leaves(new):
        np.testing.assert_allclose(jnp.linalg.norm(leaf), 3.0, rtol=1e-6)
    assert float(state.hyperparams["radius"]) == 3.0


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"radius": "unit"}, ValueError, r'`radius` must be "init"'),
        ({"radius": -1.0}, ValueError, r"numbers > 0"),
        ({"radius": float("nan")}, ValueError, r"numbers > 0"),
        ({"radius": {"w": 1.0}}, ValueError, r"a tree of structure"),
        (
            {"radius": {"w": np.ones(3), "b": 1.0, "k": 1.0}},
            ValueError,
            r"\['w'\] has shape \(3,\)",
        ),
        ({"axis": 2}, ValueError, r"`axis`=2 does not fit param leaf \['b'\]"),
        ({"axis": (0, 0)}, ValueError, r"`axis`=\(0, 0\) does not fit"),
        (
            {"mask": {"w": 2.0, "b": False, "k": True}},
            ValueError,
            r"`project_to_norm` acts on each leaf as a whole \(a norm\).*got 2.0 at \['w'\]",
        ),
    ],
)
def test_bad_input(kwargs, error, match):
    params = make_params(jnp.float32)
    with pytest.raises(error, match=match):
        tx = od.project_to_norm(**kwargs)
        tx.update(params, tx.init(params), params)


def test_update_needs_params():
    params = make_params(jnp.float32)
    tx = od.project_to_norm()
    with pytest.raises(ValueError, match="needs the current `params`"):
        tx.update(params, tx.init(params))


@functools.partial(pytest.mark.parametrize, "axis")([None, 0])
def test_zero_norm_slice_is_left_as_it_is(axis):
    w = jnp.zeros((3, 2))
    tx = od.project_to_norm(1.0, axis=axis)
    u, _ = tx.update(jnp.zeros_like(w), tx.init(w), w)
    np.testing.assert_array_equal(w + u, 0.0)


@pytest.mark.slow  # as tests/test_sharding.py
@pytest.mark.x64
@pytest.mark.parametrize(
    "name", ["project_to_norm", "project_to_norm(axis=0)", "prox_group_lasso(axis=0)"]
)
def test_sharded_norms_equal_the_single_device_run(name):
    """FSDP over 8 host devices (the first axis sharded): the same params as one device.

    A norm over a sharded axis is a sum over devices, so the step all-reduces the norms
    (one per leaf or slice, never params-sized) and gathers nothing.
    """
    from helpers import make_problem, run
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    assert jax.device_count() == 8
    params, grads = make_problem(4, shapes={"w": (16, 4), "k": (8, 2, 3)})
    transforms = {
        "project_to_norm": od.project_to_norm(),
        "project_to_norm(axis=0)": od.project_to_norm(axis=0),
        "prox_group_lasso(axis=0)": od.prox_group_lasso(0.05, axis=0),
    }
    tx = optax.chain(optax.adam(0.05), transforms[name])
    sharding = NamedSharding(jax.make_mesh((8,), ("fsdp",)), P("fsdp"))
    sp = jax.device_put(params, sharding)

    @jax.jit
    def step(params, state, g):
        u, state = tx.update(g, state, params)
        return optax.apply_updates(params, u), state

    state = tx.init(sp)
    hlo = step.lower(sp, state, sp).compile().as_text()
    assert "all-reduce(" in hlo
    assert not [op for op in ("all-gather", "all-to-all", "reduce-scatter") if op in hlo]
    for g in grads:
        sp, state = step(sp, state, jax.device_put(g, sharding))
    chex.assert_trees_all_close(sp, run(tx, params, grads)[-1], rtol=1e-12, atol=1e-15)
    for p in jax.tree.leaves(sp):
        assert p.sharding.is_equivalent_to(sharding, p.ndim)


def test_a_flat_layouts_multiplier_mask_is_rejected():
    """``layout.mask`` of a layout with multipliers (segments per buffer) is no per-leaf bool."""
    params = make_params(jnp.float32)
    layout = od.flat_layout(params, mask={"w": 2.0, "b": False, "k": True})
    flat = layout.ravel(params)
    with pytest.raises(ValueError, match=r"acts on each leaf as a whole.*SegmentMultipliers"):
        od.project_to_norm(mask=layout.mask).init(flat)

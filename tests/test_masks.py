"""The usual mask on plain dicts, Flax Linen params and Flax NNX State; per-element masks."""

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

import optax_decay as od

nnx = pytest.importorskip("flax.nnx")
linen = pytest.importorskip("flax.linen")


def test_plain_dict():
    params = {"dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
              "conv": {"kernel": jnp.ones((3, 3, 2, 4))}, "norm": {"scale": jnp.ones(4)},
              "gain": jnp.ones(()), "skip": None}
    assert od.weight_decay_mask(params) == {
        "dense": {"kernel": True, "bias": False}, "conv": {"kernel": True},
        "norm": {"scale": False}, "gain": False, "skip": None}
    assert od.weight_decay_mask({"bias": jnp.ones((2, 3))}) == {"bias": False}
    assert od.weight_decay_mask({"pos": jnp.ones((2, 3))}, exclude=("pos",)) == {"pos": False}


class LinenNet(linen.Module):
    @linen.compact
    def __call__(self, x):
        x = linen.Dense(8)(x)
        x = linen.LayerNorm()(x)
        return linen.Dense(2)(x)


def test_flax_linen_params():
    params = LinenNet().init(jax.random.key(0), jnp.ones((1, 3)))["params"]
    mask = od.weight_decay_mask(params)
    assert mask == {"Dense_0": {"kernel": True, "bias": False},
                    "LayerNorm_0": {"scale": False, "bias": False},
                    "Dense_1": {"kernel": True, "bias": False}}


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.dense = nnx.Linear(3, 8, rngs=rngs)
        self.norm = nnx.BatchNorm(8, rngs=rngs)
        self.out = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
        return self.out(self.norm(self.dense(x)))


def test_flax_nnx_state_mask():
    model = NnxNet(nnx.Rngs(0))
    mask = od.weight_decay_mask(nnx.state(model, nnx.Param))
    flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(mask)[0]}
    decayed = sorted(k for k, v in flat.items() if v)
    assert len(flat) == 6
    assert decayed == ["['dense']['kernel'].value", "['out']['kernel'].value"]


@pytest.mark.parametrize("make", [od.adamw, od.prox_adam, od.adamp, od.sgdw, od.adam_l2])
def test_nnx_optimizer_decays_only_kernels(make):
    model = NnxNet(nnx.Rngs(0))
    before = nnx.state(model, nnx.Param)
    before = jax.tree.map(jnp.array, before)
    opt = nnx.Optimizer(model, make(1e-2, 0.0 if make is od.adam_l2 else 1e-2,
                                    mask=od.weight_decay_mask), wrt=nnx.Param)
    # A zero loss gradient: only the decay moves the weights.
    grads = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
    opt.update(model, grads)
    after = nnx.state(model, nnx.Param)
    if make is od.adam_l2:
        chex.assert_trees_all_close(after, before)
        return
    assert float(jnp.abs(after["dense"]["kernel"][...]).sum()) < float(
        jnp.abs(before["dense"]["kernel"][...]).sum())
    chex.assert_trees_all_close(after["dense"]["bias"][...], before["dense"]["bias"][...])
    chex.assert_trees_all_close(after["norm"]["scale"][...], before["norm"]["scale"][...])


def test_linen_train_step_with_mask():
    params = LinenNet().init(jax.random.key(0), jnp.ones((1, 3)))["params"]
    tx = od.adamw(1e-2, 1e-1, mask=od.weight_decay_mask)
    state = tx.init(params)
    grads = jax.tree.map(jnp.zeros_like, params)
    u, state = jax.jit(tx.update)(grads, state, params)
    new = optax.apply_updates(params, u)
    chex.assert_trees_all_close(new["Dense_0"]["kernel"], 0.9 * params["Dense_0"]["kernel"])
    chex.assert_trees_all_close(new["LayerNorm_0"], params["LayerNorm_0"])


@pytest.mark.parametrize("make", [od.adamw, od.prox_adam, od.adamp, od.sgdw])
def test_nnx_optimizer_per_element_mask(make):
    # A callable mask of bool arrays: decay only the first row of each kernel.
    def first_rows(state):
        def leaf(path, p):
            on = jnp.zeros(p.shape, bool)
            return on.at[0].set(True) if "kernel" in jax.tree_util.keystr(path) else on

        return jax.tree_util.tree_map_with_path(leaf, state)

    model = NnxNet(nnx.Rngs(0))
    before = jax.tree.map(jnp.array, nnx.state(model, nnx.Param))
    opt = nnx.Optimizer(model, make(1e-2, 1e-1, mask=first_rows), wrt=nnx.Param)
    opt.update(model, jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param)))
    after = nnx.state(model, nnx.Param)
    k0, k1 = before["dense"]["kernel"][...], after["dense"]["kernel"][...]
    assert bool(jnp.all(jnp.abs(k1[0]) < jnp.abs(k0[0])))
    chex.assert_trees_all_close(k1[1:], k0[1:])
    chex.assert_trees_all_close(after["dense"]["bias"][...], before["dense"]["bias"][...])

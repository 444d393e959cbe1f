"""Masks: the usual one on plain dicts, Flax Linen params and Flax NNX State; masked leaves
follow the plain optimizer; per-element masks; masks that would change the maths raise."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import (
    OPTIMIZERS,
    REGISTRY,
    build,
    make_grads,
    make_params,
    make_problem,
    max_rel_diff,
    plain,
    run,
)

import optax_decay as od

nnx = pytest.importorskip("flax.nnx")
linen = pytest.importorskip("flax.linen")

ETA = optax.cosine_decay_schedule(1.0, 10, alpha=0.1)
WBK = {"w": True, "b": False, "k": True}  # what weight_decay_mask gives `make_params()`


def test_plain_dict():
    params = {
        "dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
        "conv": {"kernel": jnp.ones((3, 3, 2, 4))},
        "norm": {"scale": jnp.ones(4)},
        "gain": jnp.ones(()),
        "skip": None,
    }
    assert od.weight_decay_mask(params) == {
        "dense": {"kernel": True, "bias": False},
        "conv": {"kernel": True},
        "norm": {"scale": False},
        "gain": False,
        "skip": None,
    }
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
    assert mask == {
        "Dense_0": {"kernel": True, "bias": False},
        "LayerNorm_0": {"scale": False, "bias": False},
        "Dense_1": {"kernel": True, "bias": False},
    }


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
    opt = nnx.Optimizer(
        model,
        make(1e-2, 0.0 if make is od.adam_l2 else 1e-2, mask=od.weight_decay_mask),
        wrt=nnx.Param,
    )
    # A zero loss gradient: only the decay moves the weights.
    grads = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
    opt.update(model, grads)
    after = nnx.state(model, nnx.Param)
    if make is od.adam_l2:
        chex.assert_trees_all_close(after, before)
        return
    assert float(jnp.abs(after["dense"]["kernel"][...]).sum()) < float(
        jnp.abs(before["dense"]["kernel"][...]).sum()
    )
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


@pytest.mark.x64
@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize(
    "mask",
    [WBK, od.weight_decay_mask, lambda p: WBK],
    ids=["tree", "helper", "callable"],
)
def test_masked_out_leaves_follow_the_plain_optimizer(name, mask):
    params, grads = make_problem(10)
    got = run(build(name, 0.05, 0.3, mask=mask, schedule=ETA), params, grads, jit=False)[-1]
    undecayed = run(plain(name, lambda t: 0.05 * ETA(t)), params, grads, jit=False)[-1]
    decayed = run(build(name, 0.05, 0.3, schedule=ETA), params, grads, jit=False)[-1]
    chex.assert_trees_all_close(got["b"], undecayed["b"], rtol=1e-12, atol=1e-14)
    chex.assert_trees_all_close(got["w"], decayed["w"], rtol=1e-12, atol=1e-14)
    assert max_rel_diff(got["w"], undecayed["w"]) > 1e-4


@pytest.mark.x64
def test_prefix_mask():
    """A bool decides for its whole subtree; an array does not broadcast so."""
    params = {"dense": make_params(), "norm": make_params(seed=2)}
    grads = make_grads(params, 5)
    got = run(od.adamw(0.05, 0.3, mask={"dense": True, "norm": False}), params, grads)[-1]
    adam = run(optax.adam(0.05), params, grads)[-1]
    chex.assert_trees_all_close(got["norm"], adam["norm"], rtol=1e-12, atol=1e-14)
    assert max_rel_diff(got["dense"], adam["dense"]) > 1e-4
    tx = od.adamw(0.1, 0.1, mask={"dense": True, "norm": np.ones(4, bool)})
    with pytest.raises(ValueError, match="Only Python bools are broadcast"):
        tx.update(params, tx.init(params), params)


# ---- Masks that would silently change the maths ---------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_inject_hyperparams_without_static_mask_raises(name):
    """Optax evaluates a callable hyperparameter on the step count: no leaf would be decayed."""
    params = make_params(jnp.float32)
    tx = optax.inject_hyperparams(REGISTRY[name].make)(0.1, 0.01, mask=od.weight_decay_mask)
    with pytest.raises(TypeError, match='static_args="mask"'):
        tx.init(params)


@pytest.mark.x64
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_inject_hyperparams_with_static_mask_decays(name):
    params, grads = make_problem(3)
    injected = optax.inject_hyperparams(REGISTRY[name].make, static_args="mask")(
        learning_rate=0.1, weight_decay=0.01, mask=od.weight_decay_mask
    )
    got = run(injected, params, grads)[-1]
    want = run(build(name, 0.1, 0.01, mask=od.weight_decay_mask), params, grads)[-1]
    chex.assert_trees_all_close(got, want, rtol=1e-12)
    assert not jnp.allclose(got["w"], run(build(name, 0.1, 0.0), params, grads)[-1]["w"])


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize(
    "mask",
    [False, np.False_, jnp.asarray(False), jnp.asarray(True), lambda p: False],
    ids=["False", "np.False_", "0-d False", "0-d True", "callable->False"],
)
def test_whole_tree_scalar_mask_raises(name, mask):
    params = make_params(jnp.float32)
    tx = build(name, 0.1, 0.01, mask=mask)
    with pytest.raises(ValueError, match='static_args="mask"'):
        tx.update(params, tx.init(params), params)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_callable_mask_returning_none_raises(name):
    params = make_params(jnp.float32)

    def forgot_return(p):
        jax.tree.map(lambda x: x.ndim > 1, p)

    tx = build(name, 0.1, 0.01, mask=forgot_return)
    with pytest.raises(TypeError, match="returned None"):
        tx.update(params, tx.init(params), params)


@pytest.mark.x64
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_value_dependent_mask_is_evaluated_on_the_params(name):
    """`x > 0` on the params, in every optimizer: equal to that array mask given directly.

    Evaluated on the updates instead (as `optax.masked` does), it would decay the
    elements whose update is positive, a different set.
    """
    params, grads = make_problem(3)
    positive = lambda t: jax.tree.map(lambda x: x > 0, t)
    tx = build(name, 0.1, 0.05, mask=positive)
    state, w = tx.init(params), params
    for g in grads:
        # The same step with the array mask computed from the current params.
        ref = build(name, 0.1, 0.05, mask=positive(w))
        want, _ = ref.update(g, state, w)
        u, state = tx.update(g, state, w)
        chex.assert_trees_all_close(u, want, rtol=1e-12, atol=1e-15)
        w = optax.apply_updates(w, u)
    # And it is not the update-evaluated mask.
    on_updates = build(name, 0.1, 0.05, mask=positive(jax.tree.map(jnp.negative, grads[0])))
    u0, _ = tx.update(grads[0], tx.init(params), params)
    u1, _ = on_updates.update(grads[0], on_updates.init(params), params)
    assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, u0, u1)))


def test_weight_decay_mask_rejects_a_step_count():
    for count in [jnp.asarray(0, jnp.int32), 3, np.int64(7)]:
        with pytest.raises(TypeError, match='static_args="mask"'):
            od.weight_decay_mask(count)


def test_exclude_as_one_string_is_one_name():
    params = {
        "embed": {"embedding": jnp.ones((10, 4))},
        "dense": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones(4)},
        "sembedding": jnp.ones((2, 2)),
    }
    assert od.weight_decay_mask(params, exclude="embedding") == {
        "embed": {"embedding": False},
        "dense": {"kernel": True, "bias": False},
        "sembedding": True,
    }
    # By default the embedding table is decayed; the docs show how to exclude it.
    assert od.weight_decay_mask(params)["embed"]["embedding"] is True
    assert od.weight_decay_mask(params, exclude=("bias", "scale", "embedding")) == {
        "embed": {"embedding": False},
        "dense": {"kernel": True, "bias": False},
        "sembedding": True,
    }
    assert 'exclude=("bias", "scale", "embedding")' in od.weight_decay_mask.__doc__


def test_layout_mask_rejects_a_step_count():
    """`layout.mask` is a callable mask the library ships: the same trap, the same message."""
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    layout = od.flat_layout(params, mask=od.weight_decay_mask)
    flat = layout.ravel(params)
    tx = optax.inject_hyperparams(od.adamw)(learning_rate=0.1, weight_decay=0.01, mask=layout.mask)
    with pytest.raises(TypeError, match='`layout.mask` was called on .*static_args="mask"'):
        tx.init(flat)
    tx = optax.inject_hyperparams(od.adamw, static_args="mask")(
        learning_rate=0.1, weight_decay=0.01, mask=layout.mask
    )
    u, _ = tx.update(layout.ravel(jax.tree.map(jnp.zeros_like, params)), tx.init(flat), flat)
    new = layout.unravel(optax.apply_updates(flat, u))
    chex.assert_trees_all_close(new, {"w": 0.99 * params["w"], "b": params["b"]})


WRONG_SHAPE = (
    r"`mask` leaf \['w'\] is a bool array of shape \(5,\), but the param leaf there has shape"
)
BAD_MASKS = {  # id -> (mask, error, message); an array stands for the mask of "w"
    "missing-key": ({"w": True, "b": False}, ValueError, "`mask` does not match the structure"),
    "extra-key": ({**WBK, "x": True}, ValueError, "`mask` does not match"),
    "wrong-type": ([True, False], ValueError, "`mask` does not match the structure of the params"),
    "negative-multiplier": ({**WBK, "w": -0.5}, ValueError, r"\['w'\] is -0.5: .* >= 0"),
    "nan-multiplier": ({**WBK, "w": float("nan")}, ValueError, "must be finite and >= 0"),
    "string-leaf": ({**WBK, "w": "yes"}, TypeError, "`mask` leaves must be Python bools"),
    "np-array-wrong-shape": (np.ones((5,), bool), ValueError, WRONG_SHAPE),
    "jnp-array-wrong-shape": (jnp.ones((5,), bool), ValueError, WRONG_SHAPE),
    "float-array": (
        np.ones((3, 4), np.float32),
        TypeError,
        "must be Python bools .* or boolean arrays",
    ),
    "int-array": (jnp.ones((3, 4), jnp.int32), TypeError, r"astype\(bool\)"),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("case", sorted(BAD_MASKS))
def test_bad_mask(name, case):
    """Each with its message and the public error type itself, not a subclass."""
    mask, error, match = BAD_MASKS[case]
    params = make_params(jnp.float32)
    tx = build(name, 1e-3, 1e-3, mask=mask if isinstance(mask, dict | list) else {**WBK, "w": mask})
    with pytest.raises(error, match=match) as info:
        tx.update(params, tx.init(params), params)
    assert type(info.value) is error


# ---- Per-leaf multipliers of lambda


# Each decay rule once (the transforms, cautious, corrected, AdamP) and both SGD forms.
RULES = ["add_l2_to_grad", "decoupled_decay", "prox_l2", "adaptive_decay", "adamw_cautious"]
RULES += ["adamw_corrected", "adamw_coupled", "sgd_l2_momentum", "sgdw_nesterov"]


@pytest.mark.x64
@pytest.mark.parametrize("name", RULES)
def test_multiplier_m_decays_its_leaf_as_m_times_lambda(name):
    """Every rule is elementwise, so each leaf follows the run whose lambda it was given."""
    params, grads = make_problem(4)
    lam = REGISTRY[name].lam
    got = run(build(name, mask={"w": 2.5, "b": 0, "k": 1}), params, grads)[-1]
    scaled = run(build(name, weight_decay=2.5 * lam, mask=WBK), params, grads)[-1]
    base = run(build(name, mask=WBK), params, grads)[-1]
    chex.assert_trees_all_close(got, {**base, "w": scaled["w"]}, rtol=1e-12, atol=1e-14)
    assert max_rel_diff(got["w"], base["w"]) > 1e-6


@pytest.mark.x64
def test_multipliers_under_jit_and_inject_hyperparams():
    params, grads = make_problem(3)
    mults = od.weight_decay_multipliers([("w", 3.0), ("k", 1.0)])
    injected = optax.inject_hyperparams(od.adamw, static_args="mask")(0.1, 0.05, mask=mults)
    got = run(injected, params, grads)[-1]
    chex.assert_trees_all_close(got, run(od.adamw(0.1, 0.05, mask=mults), params, grads)[-1])
    want = run(od.adamw(0.1, 0.15, mask=WBK), params, grads)[-1]["w"]
    chex.assert_trees_all_close(got["w"], want, rtol=1e-12)


def test_multiplier_that_makes_the_decay_factor_negative_raises():
    params = make_params(jnp.float32)
    with pytest.raises(ValueError, match=r"1 - 6\*eta_t\*lambda = 1 - 1\*1.2"):
        od.adamw(0.1, 0.2, mask={**WBK, "w": 6.0}).init(params)
    od.prox_adam(0.1, 0.2, mask={**WBK, "w": 6.0}).init(params)  # the prox is stable


def test_weight_decay_multipliers_first_rule_wins_on_dicts_linen_and_nnx():
    rules = [(".*out/kernel", 10.0), (".*kernel", 1.0), (".*norm/.*", 0.5)]
    tree = {"layers": [{"attn": {"kernel": jnp.ones((2, 2))}}], "out": {"kernel": jnp.ones(2)}}
    assert od.weight_decay_multipliers([("layers/0/attn/kernel", 2.0)], default=1.0)(tree) == {
        "layers": [{"attn": {"kernel": 2.0}}],
        "out": {"kernel": 1.0},
    }
    linen_params = LinenNet().init(jax.random.key(0), jnp.ones((1, 3)))["params"]
    assert od.weight_decay_multipliers([(".*Dense_1/kernel", 10.0), (".*kernel", 1)])(linen_params)[
        "Dense_1"
    ] == {"kernel": 10.0, "bias": 0.0}
    state = nnx.state(NnxNet(nnx.Rngs(0)), nnx.Param)
    got = od.weight_decay_multipliers(rules)(state)
    flat = {"/".join(str(getattr(k, "key", k)) for k in p): v for p, v in nnx.to_flat_state(got)}
    assert flat == {
        "dense/kernel": 1.0,
        "dense/bias": 0.0,
        "norm/scale": 0.5,
        "norm/bias": 0.5,
        "out/kernel": 10.0,
        "out/bias": 0.0,
    }


@pytest.mark.parametrize(
    ("rules", "kwargs", "error", "match"),
    [
        ([("w", -1.0)], {}, ValueError, "must be finite and >= 0"),
        (["w"], {}, TypeError, r"\(regex, multiplier\) pairs"),
        ([("w(", 1.0)], {}, Exception, "missing"),
        ([], dict(default=float("inf")), ValueError, "`default`"),
    ],
)
def test_weight_decay_multipliers_bad_rules(rules, kwargs, error, match):
    with pytest.raises(error, match=match):
        od.weight_decay_multipliers(rules, **kwargs)


def test_weight_decay_multipliers_rejects_a_step_count():
    with pytest.raises(TypeError, match='static_args="mask"'):
        od.weight_decay_multipliers([("w", 2.0)])(jnp.asarray(3))

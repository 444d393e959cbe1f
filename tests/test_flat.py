"""Flat buffers (`flat_layout`) and per-element masks: the same numbers as the tree path.

Every optimizer and transform of the package runs on the flat buffers with
`mask=layout.mask` and must give, after unravelling, the params and moments of
the tree path with the per-leaf mask. The math is elementwise and the same in
both, but not always bit-identical: XLA compiles the two programs differently,
and scalars such as Adam's bias correction may round differently (1-3 ulp in
`mhat/D` seen on CPU; the SGD family is bit-identical); `adamp`/`adaptive_decay`
also give masked-out elements the plain Adam step through the decayed formula
with `k = 0`, a different rounding of the same number. Hence relative
tolerances of a few ulp (rtol 1e-6 in float32, 1e-12 in float64, no atol), on
weights kept away from 0.
"""

import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import OPTIMIZERS, build, make_grads
from helpers import run as run_steps

import optax_decay as od

ETA = optax.cosine_decay_schedule(1.0, 6, alpha=0.1)
STEPS = 4


# name -> factory(mask): the transforms, each in a small chain.
CHAINS = {
    "add_l2_to_grad": lambda mask, **kw: optax.chain(
        od.add_l2_to_grad(0.3, mask, **kw), optax.trace(0.9), optax.scale(-0.1)
    ),
    "decoupled_decay": lambda mask, **kw: optax.chain(
        od.scale_by_adam(),
        optax.scale_by_learning_rate(lambda t: 0.05 * ETA(t)),
        od.decoupled_decay(0.2, schedule=ETA, mask=mask, **kw),
    ),
    "prox_l2": lambda mask, **kw: optax.chain(
        optax.sgd(0.1, momentum=0.5), od.prox_l2(0.5, schedule=ETA, mask=mask, **kw)
    ),
    "adaptive_decay": lambda mask, **kw: od.adaptive_decay(
        0.05, 0.3, schedule=ETA, mask=mask, eps=1e-3, **kw
    ),
    "master_weights": lambda mask, **kw: od.master_weights(od.adamw(0.05, 0.2, mask=mask, **kw)),
}


def optimizer(name, mask, **kwargs):
    if name in CHAINS:
        return CHAINS[name](mask, **kwargs)
    return build(name, schedule=ETA, mask=mask, **kwargs)


# Few distinct shapes: eager JAX compiles each operation once per shape and dtype.
SHAPES = {
    "dense": {"kernel": (4, 3), "bias": (3,)},
    "layers": [{"kernel": (4, 3), "bias": (3,)}, {"kernel": (4, 3)}],
    "norm": {"scale": (3,)},
    "gain": (),
}


def model_params(dtype, seed=0, low=None):
    """The tree of SHAPES; with `low`, the biases and the last kernel in that dtype.

    Entries are +-[0.5, 1.5], away from 0, where the few ulp that the tree and the flat
    programs may differ by (see above) stay small relative errors too.
    """
    rng = np.random.default_rng(seed)

    def leaf(path, shape):
        name = jax.tree_util.keystr(path)
        d = low if low is not None and ("bias" in name or "[1]['kernel']" in name) else dtype
        w = rng.uniform(0.5, 1.5, size=shape) * rng.choice([-1.0, 1.0], size=shape)
        return jnp.asarray(w, d)

    return jax.tree_util.tree_map_with_path(leaf, SHAPES, is_leaf=lambda x: isinstance(x, tuple))


# Params after each step and the final state. Eager: compiling each optimizer twice (tree
# and flat) would take most of this file's time; `test_jit_donated_flat_step` runs the flat
# path under `jax.jit`.
run = functools.partial(run_steps, jit=False, return_state=True)


def assert_trees_close(got, want, rtol):
    chex.assert_trees_all_equal_shapes_and_dtypes(got, want)
    chex.assert_trees_all_close(got, want, rtol=rtol, atol=0)


def leaves_equal(a, b):
    chex.assert_trees_all_equal_shapes_and_dtypes(a, b)
    chex.assert_trees_all_equal(a, b)


DTYPES = pytest.mark.parametrize(  # and with `pad_to_multiple_of`
    "dt, rtol, pad",
    [
        pytest.param(jnp.float32, 1e-6, 1, id="float32"),
        pytest.param(jnp.float64, 1e-12, 1, marks=pytest.mark.x64, id="float64"),
        pytest.param(jnp.float32, 1e-6, 16, id="float32-padded"),
    ],
)


def mixed_tree():
    """float32 and bfloat16, scalars, a 0-size leaf, nested dicts and lists, a None."""
    rng = np.random.default_rng(3)
    f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
    h = lambda *s: jnp.asarray(rng.normal(size=s), jnp.bfloat16)
    return {
        "a": {"kernel": f(3, 4), "bias": h(4), "scale": f(4)},
        "layers": [{"kernel": h(2, 3)}, {"kernel": f(4, 2), "bias": f(2)}],
        "t": (f(), h(1, 1, 2)),
        "empty": f(0, 3),
        "skip": None,
    }


def test_round_trip_mixed_tree():
    params = mixed_tree()
    layout = od.flat_layout(params, mask=od.weight_decay_mask)
    flat = layout.ravel(params)
    assert sorted(flat) == ["bfloat16", "float32"]
    assert flat["float32"].dtype == jnp.float32 and flat["bfloat16"].dtype == jnp.bfloat16
    n = {k: sum(x.size for x in jax.tree.leaves(params) if x.dtype.name == k) for k in flat}
    assert {k: v.shape for k, v in flat.items()} == {k: (v,) for k, v in n.items()}
    assert layout.sizes == n and layout.size == sum(n.values())
    back = layout.unravel(flat)
    assert back["skip"] is None
    leaves_equal(back, params)
    leaves_equal(jax.jit(lambda p: layout.unravel(layout.ravel(p)))(params), params)


@pytest.mark.x64
def test_round_trip_float64_and_no_mask():
    rng = np.random.default_rng(0)
    params = {
        "w": jnp.asarray(rng.normal(size=(3, 2))),
        "v": [jnp.asarray(1.5)],
        "s": jnp.ones(2, jnp.float32),
    }
    assert params["w"].dtype == jnp.float64
    layout = od.flat_layout(params)
    assert layout.mask is None
    flat = layout.ravel(params)
    assert flat["float64"].dtype == jnp.float64 and flat["float64"].shape == (7,)
    leaves_equal(layout.unravel(flat), params)
    leaves_equal(jax.jit(layout.unravel)(flat), params)


def test_empty_tree():
    layout = od.flat_layout({})
    assert layout.ravel({}) == {} and layout.unravel({}) == {} and layout.size == 0
    assert od.flat_layout({"a": None}, mask=od.weight_decay_mask).ravel({"a": None}) == {}


def test_decayed_leaves_come_first():
    params = mixed_tree()
    mask = od.weight_decay_mask(params)
    layout = od.flat_layout(params, mask=mask)
    flat = layout.ravel(params)
    leaves, on = jax.tree.leaves(params), jax.tree.leaves(mask)  # both skip the None
    for name, buf in flat.items():
        mine = [
            (np.asarray(p).ravel(), m)
            for p, m in zip(leaves, on, strict=True)
            if p.dtype.name == name
        ]
        want = np.concatenate([x for x, m in mine if m] + [x for x, m in mine if not m])
        np.testing.assert_array_equal(np.asarray(buf), want)
        assert layout.num_decayed[name] == sum(x.size for x, m in mine if m)
    # The per-element mask is the ravel of the per-leaf mask broadcast to the elements.
    per_element = jax.tree.map(lambda p, m: jnp.full(p.shape, m), params, mask)
    leaves_equal(layout.mask(flat), layout.ravel(per_element))
    assert 0 < layout.num_decayed["float32"] < layout.sizes["float32"]


def test_mask_of_a_buffer_past_int32_indices(monkeypatch):
    """From 2**31 elements an int32 iota would wrap; the mask is then built otherwise (the limit
    is lowered here, so that the other construction runs on a small buffer)."""
    from optax_decay import _masks

    params = mixed_tree()
    layout = od.flat_layout(params, mask=od.weight_decay_mask)
    flat = layout.ravel(params)
    want = layout.mask(flat)
    monkeypatch.setattr(_masks, "IOTA_LIMIT", 1)
    assert {v.dtype for v in want.values()} == {jnp.dtype(bool)}
    leaves_equal(layout.mask(flat), want)
    # and the large-buffer form has no int32 index at all
    jaxpr = str(jax.make_jaxpr(layout.mask)(flat))
    assert "iota" not in jaxpr


def test_layout_is_static_and_hashable():
    params = mixed_tree()
    a = od.flat_layout(params, mask=od.weight_decay_mask)
    b = od.flat_layout(jax.tree.map(jnp.zeros_like, params), mask=od.weight_decay_mask)
    assert a == b and hash(a) == hash(b) and a.mask == b.mask
    assert a != od.flat_layout(params)

    @functools.partial(jax.jit, static_argnums=0)
    def bias(layout, flat):
        return layout.unravel(flat)["a"]["bias"]

    np.testing.assert_array_equal(bias(a, a.ravel(params)), params["a"]["bias"])
    np.testing.assert_array_equal(bias(b, a.ravel(params)), params["a"]["bias"])  # cached


def test_gradient_through_unravel():
    params = model_params(jnp.float32)
    layout = od.flat_layout(params, mask=od.weight_decay_mask)
    loss = lambda p: sum(jnp.sum(jnp.sin(x) * (i + 1)) for i, x in enumerate(jax.tree.leaves(p)))
    flat_grads = jax.jit(jax.grad(lambda f: loss(layout.unravel(f))))(layout.ravel(params))
    tree_grads = jax.jit(jax.grad(loss))(params)
    assert_trees_close(layout.unravel(flat_grads), tree_grads, 1e-6)


def test_nnx_state_round_trip_and_grads():
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Sequential(
        nnx.Linear(3, 5, rngs=nnx.Rngs(0)),
        nnx.LayerNorm(5, rngs=nnx.Rngs(1)),
        nnx.Linear(5, 2, rngs=nnx.Rngs(2)),
    )
    graphdef, state = nnx.split(model, nnx.Param)
    layout = od.flat_layout(state, mask=od.weight_decay_mask)
    flat = layout.ravel(state)
    back = layout.unravel(flat)
    assert jax.tree.structure(back) == jax.tree.structure(state)
    leaves_equal(back, state)
    assert layout.num_decayed == {"float32": 3 * 5 + 5 * 2}
    x = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
    loss = lambda s: jnp.sum(nnx.merge(graphdef, s)(x) ** 2)
    g_flat = jax.jit(jax.grad(lambda f: loss(layout.unravel(f))))(flat)
    g_tree = layout.ravel(jax.jit(jax.grad(loss))(state))
    np.testing.assert_allclose(g_flat["float32"], g_tree["float32"], rtol=1e-6, atol=1e-7)


def test_padding_layout():
    """`pad_to_multiple_of`: zeros at the end of each buffer, never decayed, never read."""
    params = mixed_tree()
    plain = od.flat_layout(params, mask=od.weight_decay_mask)
    layout = od.flat_layout(params, mask=od.weight_decay_mask, pad_to_multiple_of=8)
    assert layout != plain
    used = plain.sizes
    assert used == {"bfloat16": 12, "float32": 27}
    assert layout.sizes == {"bfloat16": 16, "float32": 32}
    assert layout.num_padding == {"bfloat16": 4, "float32": 5}
    assert layout.size == 48 and layout.num_decayed == plain.num_decayed
    assert repr(layout) == (
        "FlatLayout(9 leaves; bfloat16: 16 (8 decayed, 4 padding), "
        "float32: 32 (20 decayed, 5 padding))"
    )
    assert od.flat_layout(params, pad_to_multiple_of=np.int64(8)).sizes == layout.sizes
    assert od.flat_layout(params, pad_to_multiple_of=1) == od.flat_layout(params)
    flat = layout.ravel(params)
    want = plain.ravel(params)
    for k, n in used.items():
        assert flat[k].shape == (layout.sizes[k],) and flat[k].dtype == want[k].dtype
        np.testing.assert_array_equal(np.asarray(flat[k][:n]), np.asarray(want[k]))
        np.testing.assert_array_equal(np.asarray(flat[k][n:], np.float32), 0)
    leaves_equal(layout.unravel(flat), params)
    leaves_equal(jax.jit(lambda p: layout.unravel(layout.ravel(p)))(params), params)
    # unravel never reads the padding: what is there does not matter, its gradient is 0
    junk = {k: v.at[used[k] :].set(7) for k, v in flat.items()}
    leaves_equal(layout.unravel(junk), params)
    loss = lambda f: sum(
        jnp.sum(x.astype(jnp.float32) ** 2) for x in jax.tree.leaves(layout.unravel(f))
    )
    grads = jax.grad(loss)(junk)
    for k, n in used.items():
        np.testing.assert_array_equal(np.asarray(grads[k][n:], np.float32), 0)
    # the mask: the decayed prefix, False on the padding
    mask = layout.mask(flat)
    for k, n in used.items():
        np.testing.assert_array_equal(mask[k][:n], plain.mask(want)[k])
        assert not mask[k][n:].any()


def test_padding_without_a_mask():
    """No mask but padding: `layout.mask` decays every param element, not the padding."""
    params = {"w": jnp.ones((3, 3)), "b": jnp.ones(3)}
    layout = od.flat_layout(params, pad_to_multiple_of=8)
    assert layout.sizes == {"float32": 16} and layout.num_padding == {"float32": 4}
    assert layout.mask is not None
    np.testing.assert_array_equal(layout.mask(layout.ravel(params))["float32"], np.arange(16) < 12)
    # nothing to pad: no mask is needed
    assert od.flat_layout(params, pad_to_multiple_of=4).mask is None
    assert od.flat_layout(params, pad_to_multiple_of=4).num_padding == {"float32": 0}


@pytest.mark.parametrize("bad", [0, -8, 8.0, True, "8"])
def test_pad_to_multiple_of_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match=r"`pad_to_multiple_of` must be a positive int.*got"):
        od.flat_layout({"w": jnp.ones(3)}, pad_to_multiple_of=bad)


@DTYPES
@pytest.mark.parametrize("name", [*OPTIMIZERS, *CHAINS])
def test_flat_equals_tree(name, dt, rtol, pad):
    """Every optimizer on the flat buffers: the tree path's params and state at every step.

    Padded, zero params and zero gradients in the padding, masked out of the decay: the
    params, and every per-element state (Adam's moments, momentum traces, master copies),
    stay exactly 0 there.
    """
    if name == "master_weights":
        if dt == jnp.float64:
            pytest.skip("master_weights is for low-precision params: float32 covers it")
        params = model_params(dt, low=jnp.bfloat16)
        assert len({x.dtype for x in jax.tree.leaves(params)}) == 2
    else:
        params = model_params(dt)
    grads = make_grads(params, STEPS)
    layout = od.flat_layout(params, mask=od.weight_decay_mask, pad_to_multiple_of=pad)
    assert all(n > 0 for n in layout.num_padding.values()) == (pad > 1)
    tree_out, tree_state = run(optimizer(name, od.weight_decay_mask), params, grads)
    flat_out, flat_state = run(
        optimizer(name, layout.mask), layout.ravel(params), [layout.ravel(g) for g in grads]
    )
    for want, got in zip(tree_out, flat_out, strict=True):
        assert_trees_close(layout.unravel(got), want, rtol)
    assert not np.allclose(tree_out[-1]["dense"]["kernel"], params["dense"]["kernel"])
    if pad > 1:
        checked = 0
        for path, x in jax.tree_util.tree_flatten_with_path([*flat_out, flat_state])[0]:
            k = path[-1].key if isinstance(path[-1], jax.tree_util.DictKey) else None
            if k in layout.sizes and jnp.shape(x) == (layout.sizes[k],):
                start = layout.sizes[k] - layout.num_padding[k]
                np.testing.assert_array_equal(np.asarray(x[start:], np.float32), 0)
                checked += 1
        assert checked >= STEPS * len(layout.sizes)  # the params after each step, at least
    else:  # Per-element masks in the tree path: the per-leaf mask as bool arrays, the same run.
        elementwise, _ = run(optimizer(name, array_mask(params)), params, grads)
        assert_trees_close(elementwise[-1], tree_out[-1], rtol)
    # The state: the same moments, momentum traces, master copies and counts, unravelled.
    params_leaves = jax.tree.leaves(params)
    for field in ("mu", "nu", "trace", "master"):
        tree_fields = optax.tree.get_all_with_path(tree_state, field)
        flat_fields = optax.tree.get_all_with_path(flat_state, field)
        for (_, want), (_, got) in zip(tree_fields, flat_fields, strict=True):
            if field == "master":  # a float32 copy of the bfloat16 buffer; empty elsewhere
                assert got["bfloat16"].dtype == jnp.float32
                assert all(v is None or v.size == 0 for k, v in got.items() if k != "bfloat16")
                # (`ravel` would refuse float32 copies for the bfloat16 buffer: unravel the copy)
                copies = layout.unravel({**flat_out[-1], "bfloat16": got["bfloat16"]})
                want = jax.tree.leaves(want, is_leaf=lambda x: x is None)
                for c, w, p in zip(jax.tree.leaves(copies), want, params_leaves, strict=True):
                    if p.dtype == jnp.bfloat16:
                        assert c.dtype == w.dtype == jnp.float32
                        np.testing.assert_allclose(c, w, rtol=rtol, atol=0)
                continue
            assert_trees_close(layout.unravel(got), want, rtol)
    tree_counts = optax.tree.get_all_with_path(tree_state, "count")
    flat_counts = optax.tree.get_all_with_path(flat_state, "count")
    for (_, want), (_, got) in zip(tree_counts, flat_counts, strict=True):
        assert int(want) == int(got) == STEPS


def array_mask(params, rng=None):
    """Per-element bool arrays: the per-leaf mask broadcast, or random with `rng`."""
    mask = od.weight_decay_mask(params)
    if rng is None:
        return jax.tree.map(lambda p, m: np.full(p.shape, m), params, mask)
    return jax.tree.map(lambda p: rng.random(p.shape) < 0.5, params)


@pytest.mark.x64
@pytest.mark.parametrize("name", [*OPTIMIZERS, *CHAINS])
def test_random_element_mask(name):
    """Per element: the run with mask=True where the mask is True, mask=False elsewhere."""
    params = model_params(jnp.float64)
    grads = make_grads(params, STEPS)
    m = array_mask(params, np.random.default_rng(7))
    got, _ = run(optimizer(name, m), params, grads)  # a tree of NumPy bool arrays
    on, _ = run(optimizer(name, True), params, grads)
    off, _ = run(optimizer(name, jax.tree.map(lambda _: False, params)), params, grads)
    want = jax.tree.map(np.where, m, on[-1], off[-1])
    assert_trees_close(got[-1], jax.tree.map(jnp.asarray, want), 1e-12)
    # Decayed and undecayed runs differ on every leaf: the test can fail.
    differ = jax.tree.map(lambda a, b: bool(np.any(a != b)), on[-1], off[-1])
    assert all(jax.tree.leaves(differ))


# Multipliers of lambda by path (SHAPES): three segments and undecayed leaves.
MULTIPLIERS = od.weight_decay_multipliers(
    [(r"layers/0/kernel", 2.5), (r"gain", 0.5), (r".*kernel", 1.0)], default=0.0
)


def test_multiplier_layout_groups_leaves_into_segments():
    params = model_params(jnp.float32)
    layout = od.flat_layout(params, mask=MULTIPLIERS, pad_to_multiple_of=8)
    assert layout.has_multipliers
    assert not od.flat_layout(params, mask=od.weight_decay_mask).has_multipliers
    # Tree order: dense (kernel 1), gain (0.5), layers/0 (kernel 2.5), layers/1 (kernel 1).
    assert (
        repr(layout)
        == "FlatLayout(7 leaves; float32: 48 (24 x1 + 1 x0.5 + 12 x2.5 decayed, 2 padding))"
    )
    flat = layout.ravel(params)
    (seg,) = layout.mask(flat).values()
    assert (seg.size, seg.ends, seg.values) == (48, (24, 25, 37), (1.0, 0.5, 2.5))
    # The element multipliers put back on the tree are the multipliers of each leaf.
    elements = seg.select(flat["float32"], lambda v: jnp.full(48, v), jnp.zeros(48))
    want = jax.tree.map(lambda p, m: np.full(p.shape, float(m)), params, MULTIPLIERS(params))
    leaves_equal(layout.unravel({"float32": elements}), jax.tree.map(jnp.asarray, want))
    np.testing.assert_array_equal(elements[37:], 0.0)  # the rest and the padding: 0


@pytest.mark.x64
@pytest.mark.parametrize("kind", ["multipliers", "center"])
@pytest.mark.parametrize("name", [*OPTIMIZERS, *CHAINS])
def test_flat_multipliers_and_center_equal_tree(name, kind):
    """Multipliers (a constant per segment of the buffer) and ``center="init"`` (a flat copy
    of the params in the state) on flat buffers: the tree path's params at every step."""
    low = jnp.float32 if name == "master_weights" else None
    params = model_params(jnp.float64, low=low)
    grads = make_grads(params, STEPS)
    if kind == "multipliers":
        mask, kwargs = MULTIPLIERS, {}
        layout = od.flat_layout(params, mask=mask, pad_to_multiple_of=16)
        assert layout.has_multipliers
    else:
        mask, kwargs = od.weight_decay_mask, {"center": "init"}
        layout = od.flat_layout(params, mask=mask, pad_to_multiple_of=16)
        params = jax.tree.map(lambda w: 1.5 * w, params)  # start away from the center
        grads = make_grads(params, STEPS)
    tree_out, _ = run(optimizer(name, mask, **kwargs), params, grads)
    flat_out, _ = run(
        optimizer(name, layout.mask, **kwargs),
        layout.ravel(params),
        [layout.ravel(g) for g in grads],
    )
    for want, got in zip(tree_out, flat_out, strict=True):
        assert_trees_close(layout.unravel(got), want, 1e-12)
    # The option changes the run (the comparison can fail): the plain bool-mask run differs.
    plain, _ = run(optimizer(name, od.weight_decay_mask), params, grads)
    assert not np.allclose(plain[-1]["layers"][0]["kernel"], tree_out[-1]["layers"][0]["kernel"])


def test_flat_multiplier_that_makes_the_decay_factor_negative_raises():
    params = model_params(jnp.float32)
    layout = od.flat_layout(params, mask=MULTIPLIERS)
    tx = od.adamw(0.1, 0.5, mask=layout.mask)  # 1 - 2.5*0.5 < 0 on layers/0/kernel
    with pytest.raises(ValueError, match=r"2.5\*eta_t\*lambda"):
        tx.init(layout.ravel(params))


def test_flat_layout_errors():
    params = model_params(jnp.float32)
    layout = od.flat_layout(params, mask=od.weight_decay_mask)
    with pytest.raises(ValueError, match="structure the layout") as err:
        layout.ravel({"dense": params["dense"]})
    assert "tree:" in str(err.value) and "layout:" in str(err.value)
    bad = jax.tree.map(lambda x: x, params)
    bad["dense"]["bias"] = jnp.ones(5)
    with pytest.raises(ValueError, match=r"\['dense'\]\['bias'\] has shape \(5,\)"):
        layout.ravel(bad)
    mixed = jax.tree.map(lambda x: x, params)
    mixed["gain"] = mixed["gain"].astype(jnp.bfloat16)
    with pytest.raises(ValueError, match="casts nothing"):
        layout.ravel(mixed)
    with pytest.raises(ValueError, match="keys"):
        layout.unravel({"bfloat16": jnp.ones(layout.size)})
    with pytest.raises(ValueError, match="sizes"):
        layout.mask({"float32": jnp.ones(3)})
    with pytest.raises(TypeError, match="per-leaf mask of Python bools"):
        od.flat_layout(params, mask=array_mask(params))
    with pytest.raises(TypeError, match="not an array"):
        od.flat_layout({"a": 1.0})


def test_ravel_rejects_leaves_of_another_dtype():
    """float32 gradients of bfloat16 params: no buffer labelled bfloat16 holding float32."""
    params = model_params(jnp.float32, low=jnp.bfloat16)
    layout = od.flat_layout(params, mask=od.weight_decay_mask)
    grads = jax.tree.map(lambda p: jnp.ones(p.shape, jnp.float32), params)
    msg = (
        r"leaf \['layers'\]\[1\]\['kernel'\] has dtype float32; the layout's bfloat16 buffer needs "
        r"bfloat16 there.*jax.tree.map\(lambda g, p: g.astype\(p.dtype\), grads, params\)"
    )
    with pytest.raises(ValueError, match=msg):
        layout.ravel(grads)
    with pytest.raises(ValueError, match=msg):
        jax.jit(layout.ravel)(grads)
    flat = layout.ravel(jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params))
    assert sorted(flat) == ["bfloat16", "float32"]
    assert all(k == v.dtype.name for k, v in flat.items())


@pytest.mark.parametrize("name", ["sgdw_nesterov", "adamp"])
def test_jit_donated_flat_step(name):
    params = model_params(jnp.float32)
    grads = make_grads(params, STEPS)
    layout = od.flat_layout(params, mask=od.weight_decay_mask)
    tx = optimizer(name, layout.mask)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(flat, state, g):
        u, state = tx.update(layout.ravel(g), state, flat)
        return optax.apply_updates(flat, u), state

    # Under jit, layout.mask builds its masks from tracers (an iota compare), as would
    # any callable mask; sgdw goes through `masked`, adamp through `adaptive_decay`.
    flat = layout.ravel(params)
    state = tx.init(flat)
    for g in grads:
        old = flat
        flat, state = step(flat, state, g)
        assert old["float32"].is_deleted()  # donated: updated in place
    want, _ = run(optimizer(name, od.weight_decay_mask), params, grads)
    assert_trees_close(layout.unravel(flat), want[-1], 1e-6)


def test_gradient_through_unravel_is_one_concatenation():
    """Autodiff of unravel must not pad each leaf to the buffer size (O(leaves x size))."""
    params = {f"w{i}": jnp.full((3, 2), float(i)) for i in range(5)}
    layout = od.flat_layout(params)
    flat = layout.ravel(params)

    def loss(f):
        return sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(layout.unravel(f)))

    jaxpr = str(jax.make_jaxpr(jax.grad(loss))(flat))
    assert "concatenate" in jaxpr and " pad[" not in jaxpr
    np.testing.assert_array_equal(jax.grad(loss)(flat)["float32"], 2 * flat["float32"])
    # forward mode works too (a split, not a custom_vjp)
    _, tangent = jax.jvp(loss, (flat,), (jax.tree.map(jnp.ones_like, flat),))
    np.testing.assert_allclose(tangent, 2 * jnp.sum(flat["float32"]))


@pytest.mark.parametrize("mask", ["bools", "multipliers"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_training_loop_carries_no_hoisted_mask_arrays(name, mask):
    """``layout.mask`` in a ``lax.fori_loop`` adds no loop-carried arrays.

    With a constant step, anything computed from the mask and scalars alone is loop
    invariant; XLA hoists it out of the loop and reads it back as one more array per
    element and step (adamp once read two, and the mask: +45% step time on CPU). The while loop
    must carry exactly the float arrays of the params, the state and the gradients.
    """
    n = 1009  # a size no other array has
    params = {"kernel": jnp.linspace(-1.0, 1.0, 1000).reshape(100, 10), "bias": jnp.ones(9)}
    rules = [("kernel", 2.0), ("bias", 0.5)]
    masks = {"bools": od.weight_decay_mask, "multipliers": od.weight_decay_multipliers(rules)}
    layout = od.flat_layout(params, mask=masks[mask])
    tx = build(name, mask=layout.mask)
    flat = layout.ravel(params)
    state = tx.init(flat)
    grads = jax.tree.map(lambda x: 0.01 * x, flat)

    def train(flat, state, grads):
        def body(_, carry):
            g, p = jax.lax.optimization_barrier((grads, carry[0]))
            u, s = tx.update(g, carry[1], p)
            return optax.apply_updates(p, u), s

        return jax.lax.fori_loop(0, 5, body, (flat, state))

    hlo = jax.jit(train).lower(flat, state, grads).compile().as_text()
    (loop,) = [line for line in hlo.splitlines() if " while(" in line]
    # float arrays only: the mask itself (pred, 1 byte per element) may be hoisted
    carried = len(re.findall(rf"f\d+\[{n}\]", loop.split(" while(")[0]))
    expected = sum(x.shape == (n,) for x in jax.tree.leaves((flat, state, grads)))
    assert carried == expected, loop[:400]

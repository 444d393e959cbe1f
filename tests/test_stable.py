"""`adams` (`_stable`): Adam with stable weight decay, checked against its docstring's formula.

The reference below is a float64 NumPy transcription of the docstring,

    w <- (1 - s_t*lambda_t*m / sqrt(vbar_t)) * w - s_t * mhat_t / D_t,
    vbar_t = mean of vhat_t over every element of every leaf (decayed or not),

with no decay while vbar_t = 0, written without the package's code.
"""

import math
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import make_grads, make_params, make_problem, run
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import optax_decay as od
from optax_decay import adams

pytestmark = pytest.mark.x64

ETA = optax.cosine_decay_schedule(1.0, 8, alpha=0.2)
# In float64 at any count dtype (Optax's linear schedules round through float32).
ALPHA = lambda t: 0.05 / (1 + 0.2 * jnp.asarray(t, jnp.float64))
LAM = lambda t: 0.3 / (1 + jnp.asarray(t, jnp.float64))


def value(x, t):
    return 1.0 if x is None else float(x(t)) if callable(x) else float(x)


def reference(
    params, grads, alpha, lam, eta=None, mult=None, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0
):
    """The docstring's update in float64 NumPy; ``mult`` maps a leaf to its ``m`` (number or array)."""
    w = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v = {k: np.zeros_like(x) for k, x in w.items()}
    n = sum(x.size for x in w.values())
    out = []
    for t, g in enumerate(grads):
        s = value(alpha, t) * value(eta, t)
        lam_t = value(lam, t)
        vhat = {}
        for k in w:
            gk = np.asarray(g[k], np.float64)
            m[k] = b1 * m[k] + (1 - b1) * gk
            v[k] = b2 * v[k] + (1 - b2) * gk**2
            vhat[k] = v[k] / (1 - b2 ** (t + 1))
        vbar = sum(x.sum() for x in vhat.values()) / n
        for k in w:
            mhat = m[k] / (1 - b1 ** (t + 1))
            d = np.sqrt(vhat[k] + eps_root) + eps
            mk = 1.0 if mult is None else np.asarray(mult[k], np.float64)
            decay = s * lam_t * mk / np.sqrt(vbar) if vbar > 0 else 0.0
            w[k] = (1 - decay) * w[k] - s * mhat / d
        out.append({k: x.copy() for k, x in w.items()})
    return out


def assert_close(got, want, rtol=1e-12, atol=1e-14):
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k]), want[k], rtol=rtol, atol=atol, err_msg=k)


ELEMENT_MASK = {
    "w": np.arange(12).reshape(3, 4) % 3 != 0,
    "b": np.array([True, False, False, True]),
    "k": np.ones((2, 2, 3), bool),
}
CASES = {
    "constants": (dict(), dict()),
    "schedules": (dict(schedule=ETA), dict(eta=ETA)),
    "alpha_lambda_schedules": (dict(schedule=ETA), dict(eta=ETA)),
    "adam_args": (
        dict(b1=0.5, b2=0.9, eps=1e-3, eps_root=1e-4),
        dict(b1=0.5, b2=0.9, eps=1e-3, eps_root=1e-4),
    ),
    "bool_mask": (
        dict(mask={"w": True, "b": False, "k": True}),
        dict(mult={"w": 1.0, "b": 0.0, "k": 1.0}),
    ),
    "callable_mask": (dict(mask=od.weight_decay_mask), dict(mult={"w": 1.0, "b": 0.0, "k": 1.0})),
    "multipliers": (
        dict(schedule=ETA, mask={"w": 2.5, "b": 0.0, "k": 0.5}),
        dict(eta=ETA, mult={"w": 2.5, "b": 0.0, "k": 0.5}),
    ),
    "element_mask": (
        dict(mask={k: jnp.asarray(v) for k, v in ELEMENT_MASK.items()}),
        dict(mult=ELEMENT_MASK),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_matches_the_docstring_formula(case):
    params, grads = make_problem(6)
    kwargs, ref_kwargs = CASES[case]
    alpha, lam = (ALPHA, LAM) if case == "alpha_lambda_schedules" else (0.05, 0.3)
    got = run(adams(alpha, lam, **kwargs), params, grads)
    want = reference(params, grads, alpha, lam, **ref_kwargs)
    for g, w in zip(got, want, strict=True):
        assert_close(g, w)
    # The decay is visible: without it the run is another one.
    plain = reference(params, grads, alpha, 0.0, **ref_kwargs)[-1]
    assert not all(np.allclose(got[-1][k], plain[k], rtol=1e-6) for k in plain)


def test_vbar_counts_the_undecayed_leaves_too():
    """The mask chooses where the decay applies, not the elements of the mean."""
    params, grads = make_problem(4)
    everywhere = run(adams(0.05, 0.3), params, grads)[-1]
    masked = run(adams(0.05, 0.3, mask={"w": True, "b": False, "k": False}), params, grads)[-1]
    np.testing.assert_array_equal(masked["w"], everywhere["w"])  # same vbar, same decay of w
    plain = run(od.adamw(0.05, 0.0), params, grads)[-1]
    np.testing.assert_allclose(masked["b"], plain["b"], rtol=1e-13)  # plain Adam
    # The mean over the decayed leaf alone is another vbar, so another w.
    alone = run(adams(0.05, 0.3), {"w": params["w"]}, [{"w": g["w"]} for g in grads])[-1]
    assert not np.allclose(alone["w"], everywhere["w"], rtol=1e-9)


def test_none_param_leaves_are_left_out():
    params, grads = make_problem(3)
    with_none = {**params, "skip": None}
    got = run(adams(0.05, 0.3), with_none, [{**g, "skip": None} for g in grads])[-1]
    assert got["skip"] is None
    assert_close(got, reference(params, grads, 0.05, 0.3)[-1])


def test_zero_gradients_no_decay_no_nan():
    """vbar_t = 0 (no nonzero gradient yet): the decay term is 0, not inf or NaN."""
    params = make_params()
    zeros = jax.tree.map(jnp.zeros_like, params)
    tx = adams(0.1, 0.5)
    state = tx.init(params)
    u, state = jax.jit(tx.update)(zeros, state, params)
    chex.assert_trees_all_equal(u, zeros)
    # ... and the gradient of a step through the decay is finite there too.
    grad = jax.grad(
        lambda p: sum(jnp.sum(x) for x in jax.tree.leaves(tx.update(zeros, tx.init(p), p)[0]))
    )
    chex.assert_tree_all_finite(grad(params))
    # The first nonzero gradient switches the decay on.
    g = make_grads(params, 1)[0]
    u, _ = tx.update(g, state, params)
    want = reference(params, [zeros, g], 0.1, 0.5)[-1]
    assert_close(optax.apply_updates(params, u), want)


def test_a_factor_below_zero_is_applied_as_written():
    """Not clipped: gradients of RMS 1e-3 with s*lambda = 5e-3 give a factor 1 - 5 = -4."""
    params = make_params()
    g = jax.tree.map(lambda p: 1e-3 * jnp.sign(p), params)
    grads = [g, jax.tree.map(jnp.negative, g), g]
    got = run(adams(0.1, 0.05, eps=0.0), params, grads)
    want = reference(params, grads, 0.1, 0.05, eps=0.0)
    for g, w in zip(got, want, strict=True):
        assert_close(g, w, rtol=1e-11)
    # The first step: vhat = 1e-6, factor -4, Adam's step s*sign(g) = 0.1*sign(w).
    np.testing.assert_allclose(
        got[0]["w"], -4 * params["w"] - 0.1 * np.sign(params["w"]), rtol=1e-12
    )


@pytest.mark.parametrize("c", [0.5, 3.0])
def test_equals_coupled_adamw_when_every_gradient_has_magnitude_c(c):
    """|g| = c everywhere: v_t = (1 - b2^(t+1)) c^2, so vhat_t = c^2 and sqrt(vbar_t) = c.

    The bias correction cancels the (1 - b2^(t+1)) exactly, which is why the two agree at
    every step and not only for large t; AdamS is then adamw(coupled=True) with lambda/c.
    """
    params = make_params()
    rng = np.random.default_rng(5)
    grads = [
        jax.tree.map(lambda p: jnp.asarray(c * rng.choice([-1.0, 1.0], size=p.shape)), params)
        for _ in range(6)
    ]
    lam = 0.4
    stable, state = run(adams(0.05, lam, schedule=ETA), params, grads, return_state=True)
    coupled = run(od.adamw(0.05, lam / c, coupled=True, schedule=ETA), params, grads)
    for a, b in zip(stable, coupled, strict=True):
        chex.assert_trees_all_close(a, b, rtol=1e-13, atol=0)
    vhat = jax.tree.map(lambda v: v / (1 - 0.999**6), state.nu)
    chex.assert_trees_all_close(
        vhat, jax.tree.map(lambda v: jnp.full_like(v, c**2), vhat), rtol=1e-13
    )
    # The test can fail: with magnitudes that vary, the two differ.
    grads[2] = jax.tree.map(lambda g: 2 * g, grads[2])
    stable = run(adams(0.05, lam, schedule=ETA), params, grads)[-1]
    coupled = run(od.adamw(0.05, lam / c, coupled=True, schedule=ETA), params, grads)[-1]
    assert not np.allclose(stable["w"], coupled["w"], rtol=1e-9)


def first_factor(tx, params, g):
    """(w_1 + s*sign(g)) / w_0 at t = 0 with eps = 0: the decay factor of the first step."""
    u, _ = tx.update(g, tx.init(params), params)
    return (params["w"] + u["w"] + 0.05 * jnp.sign(g["w"])) / params["w"]


@pytest.mark.parametrize("k", [10.0, 0.1])
def test_not_scale_free_loss_times_k_divides_the_decay_by_k(k):
    """Gradients times k: Adam's step is unchanged (eps = 0), vbar grows by k^2, so the
    decay rate of adams is divided by k; adamw's decay does not depend on k."""
    params, grads = make_problem(6)
    scaled = [jax.tree.map(lambda g: k * g, g) for g in grads]
    lam = 0.3
    # One step: the rate s*lambda/sqrt(vbar) itself is divided by k.
    rate = 1 - first_factor(adams(0.05, lam, eps=0.0), params, grads[0])
    rate_k = 1 - first_factor(adams(0.05, lam, eps=0.0), params, scaled[0])
    np.testing.assert_allclose(rate_k, rate / k, rtol=1e-12)
    # A run: adams(lambda) on k*g is adams(lambda/k) on g, not adams(lambda) on g.
    got = run(adams(0.05, lam, eps=0.0, schedule=ETA), params, scaled)[-1]
    chex.assert_trees_all_close(
        got, run(adams(0.05, lam / k, eps=0.0, schedule=ETA), params, grads)[-1], rtol=1e-12
    )
    assert not np.allclose(got["w"], run(adams(0.05, lam, eps=0.0), params, grads)[-1]["w"])
    # AdamW: the same run whatever k.
    adamw = od.adamw(0.05, lam, coupled=True, eps=0.0, schedule=ETA)
    chex.assert_trees_all_close(
        run(adamw, params, scaled)[-1], run(adamw, params, grads)[-1], rtol=1e-12
    )


MIXED = {"dense": {"kernel": (4, 3), "bias": (3,)}, "layers": [{"kernel": (2, 5)}], "gain": ()}


def mixed_params():
    rng = np.random.default_rng(0)
    return jax.tree.map(
        lambda s: jnp.asarray(rng.uniform(0.5, 1.5, size=s) * rng.choice([-1, 1], size=s)),
        MIXED,
        is_leaf=lambda x: isinstance(x, tuple),
    )


@pytest.mark.parametrize(
    "mask",
    [None, od.weight_decay_mask, od.weight_decay_multipliers([(".*kernel", 2.0), ("gain", 0.5)])],
    ids=["none", "bools", "multipliers"],
)
def test_tree_and_flat_buffer_give_the_same_params(mask):
    """The mean runs over elements, not leaves: one buffer or many leaves, the same result."""
    params = mixed_params()
    grads = make_grads(params, 5)
    want = run(adams(0.05, 0.3, schedule=ETA, mask=mask), params, grads)[-1]
    layout = od.flat_layout(params, mask=mask)
    tx = adams(0.05, 0.3, schedule=ETA, mask=layout.mask)
    flat = run(tx, layout.ravel(params), [layout.ravel(g) for g in grads])[-1]
    chex.assert_trees_all_close(layout.unravel(flat), want, rtol=1e-12, atol=0)
    # The decay acted: lambda = 0 is another run.
    assert not np.allclose(
        want["dense"]["kernel"], run(adams(0.05, 0.0), params, grads)[-1]["dense"]["kernel"]
    )


def test_padding_counts_in_the_mean_and_the_docstring_undoes_it():
    """p padding zeros scale vbar by N/(N + p); lambda*sqrt(N/(N + p)) gives the tree's run."""
    params = mixed_params()
    grads = make_grads(params, 4)
    want = run(adams(0.05, 0.3), params, grads)[-1]
    layout = od.flat_layout(params, pad_to_multiple_of=8)
    (n,), (pad,) = layout.sizes.values(), layout.num_padding.values()
    assert pad > 0
    flat_grads = [layout.ravel(g) for g in grads]

    def flat_run(lam):
        return layout.unravel(
            run(adams(0.05, lam, mask=layout.mask), layout.ravel(params), flat_grads)[-1]
        )

    chex.assert_trees_all_close(flat_run(0.3 * math.sqrt((n - pad) / n)), want, rtol=1e-12, atol=0)
    assert not np.allclose(flat_run(0.3)["dense"]["kernel"], want["dense"]["kernel"], rtol=1e-9)


SHARDED = {"w": (16, 4), "b": (8,), "k": (8, 2, 3)}


@pytest.mark.slow  # as tests/test_sharding.py
def test_sharded_run_equals_single_device_and_all_reduces_scalars_only():
    """FSDP over 8 host devices (conftest's jax_num_cpu_devices): the same params.

    vbar is a global mean, so, unlike the elementwise optimizers of test_sharding.py, the
    sharded step is not free of collectives: it all-reduces the sums.
    """
    assert jax.device_count() == 8
    params, grads = make_problem(5, shapes=SHARDED)
    tx = adams(0.05, 0.3, schedule=ETA, mask={"w": True, "b": False, "k": 0.5})
    sharding = NamedSharding(jax.make_mesh((8,), ("fsdp",)), P("fsdp"))
    sp = jax.device_put(params, sharding)
    state = tx.init(sp)

    def step(params, state, g):
        u, state = tx.update(g, state, params)
        return optax.apply_updates(params, u), state

    step = jax.jit(step)
    hlo = step.lower(sp, state, sp).compile().as_text()
    # The sums are all-reduced (XLA combines the leaves' scalars into one all-reduce on
    # CPU); no array is: the params and moments stay sharded, nothing is gathered.
    reduced = re.findall(r"= (\(?[^=]*?\)?) all-reduce\(", hlo)
    assert reduced, "vbar needs an all-reduce"
    assert all(re.fullmatch(r"\(?(f\d+\[\](, )?)+\)?", r) for r in reduced), reduced
    assert not [op for op in ("all-gather", "all-to-all", "reduce-scatter") if op in hlo]
    for g in grads:
        sp, state = step(sp, state, jax.device_put(g, sharding))
    chex.assert_trees_all_close(sp, run(tx, params, grads)[-1], rtol=1e-12, atol=0)
    for p in jax.tree.leaves(sp):
        assert p.sharding.is_equivalent_to(sharding, p.ndim)


EXPLICIT = jax.sharding.AxisType.Explicit
set_mesh = getattr(jax, "set_mesh", None) or jax.sharding.use_mesh


@pytest.mark.slow  # as tests/test_sharding.py
def test_explicit_mesh_flat_buffer_with_element_mask():
    """A flat buffer on an Explicit-axes mesh, with `layout.mask`: the unsharded run."""
    params = make_params(shapes=SHARDED)
    grads = make_grads(params, 4)
    layout = od.flat_layout(params, mask=od.weight_decay_mask)
    flat = layout.ravel(params)
    flat_grads = [layout.ravel(g) for g in grads]
    want = run(adams(0.05, 0.3, mask=layout.mask), flat, flat_grads)[-1]
    mesh = jax.make_mesh((8,), ("x",), axis_types=(EXPLICIT,))
    sharding = NamedSharding(mesh, P("x"))
    with set_mesh(mesh):
        tx = adams(0.05, 0.3, mask=layout.mask)
        got = jax.device_put(flat, sharding)
        state = tx.init(got)
        update = jax.jit(tx.update)
        for g in flat_grads:
            u, state = update(jax.device_put(g, sharding), state, got)
            got = optax.apply_updates(got, u)
    chex.assert_trees_all_close(got, want, rtol=1e-12, atol=0)
    assert got["float64"].sharding.is_equivalent_to(sharding, 1)


def test_jit_equals_eager_and_compiles_once():
    params, grads = make_problem(4)
    tx = adams(ALPHA, LAM, schedule=ETA, mask=od.weight_decay_mask)
    chex.assert_trees_all_close(
        run(tx, params, grads, jit=False)[-1], run(tx, params, grads)[-1], rtol=1e-14
    )
    traces = []

    def update(g, s, p):
        traces.append(1)
        return tx.update(g, s, p)

    update = jax.jit(update)
    state = tx.init(params)
    for g in grads:
        _, state = update(g, state, params)
    assert len(traces) == 1


def test_inject_hyperparams():
    """learning_rate and weight_decay injected (and changed mid-run), the mask static."""
    params, grads = make_problem(6)
    tx = optax.inject_hyperparams(adams, static_args="mask")(
        learning_rate=0.05, weight_decay=0.3, mask=od.weight_decay_mask
    )
    state = tx.init(params)
    update = jax.jit(tx.update)
    w = params
    for t, g in enumerate(grads):
        if t == 3:
            state.hyperparams["weight_decay"] = jnp.asarray(0.1)
        u, state = update(g, state, w)
        w = optax.apply_updates(w, u)
    lam = lambda t: 0.3 if t < 3 else 0.1
    want = reference(params, grads, 0.05, lam, mult={"w": 1.0, "b": 0.0, "k": 1.0})[-1]
    assert_close(w, want)
    # A schedule equal to a constant gives the constant's run.
    chex.assert_trees_all_close(
        run(adams(lambda t: 0.05, lambda t: 0.3), params, grads)[-1],
        run(adams(0.05, 0.3), params, grads)[-1],
        rtol=1e-14,
    )


def test_update_none_and_state_is_adam_state():
    params = make_params()
    tx = adams(0.05, 0.3)
    state = tx.init(params)
    assert isinstance(state, optax.ScaleByAdamState)
    assert tx.update(None, state) == (None, state)


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        (dict(weight_decay=-0.1), "`weight_decay`"),
        (dict(weight_decay=float("nan")), "`weight_decay`"),
        (dict(weight_decay=lambda t: 0.1 - 0.01 * t), "`weight_decay`"),
        (dict(learning_rate=-1e-3), "`learning_rate`"),
        (dict(schedule=lambda t: 1.0 - t / 10), "`schedule`"),
        (dict(b1=1.0), "`b1`"),
        (dict(b2=-0.1), "`b2`"),
        (dict(eps=-1e-8), "`eps`"),
        (dict(eps_root=-1.0), "`eps_root`"),
    ],
)
def test_bad_hyperparameters_raise_naming_the_argument(kwargs, arg):
    kwargs = {"learning_rate": 1e-3, "weight_decay": 1e-2, **kwargs}
    with pytest.raises(ValueError, match=arg):
        adams(**kwargs)


def test_bad_inputs_raise():
    params = make_params()
    g = make_grads(params, 1)[0]
    tx = adams(1e-3, 1e-2)
    with pytest.raises(ValueError, match=r"adams\.update` needs the current `params`"):
        tx.update(g, tx.init(params))
    with pytest.raises(ValueError, match="different tree"):
        tx.update(g, tx.init(params), {"w": params["w"]})
    with pytest.raises(TypeError, match="floating-point"):
        adams(1e-3, 1e-2).init({"i": jnp.arange(3)})
    with pytest.raises(ValueError, match="finite and >= 0"):
        bad = adams(1e-3, 1e-2, mask={"w": -1.0, "b": True, "k": True})
        bad.update(g, bad.init(params), params)
    with pytest.raises(ValueError, match="shape"):
        bad = adams(1e-3, 1e-2, mask={"w": jnp.ones(3, bool), "b": True, "k": True})
        bad.update(g, bad.init(params), params)

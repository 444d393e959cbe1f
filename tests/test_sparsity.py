"""`prox_l1`, `prox_group_lasso` (`_sparsity`) and the `penalty="l1"` optimizers.

The references are float64 NumPy transcriptions of the docstrings' formulas.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import make_grads, make_params, make_problem, ravel, reference

import optax_decay as od
from optax_decay import prox_group_lasso, prox_l1

ETA = lambda t: 1.0 / (1.0 + 0.5 * t)  # float64 arithmetic, positive for every t
LAM = lambda t: 0.4 + 0.1 * t


def soft(z, r):
    """sign(z)*max(|z| - r, 0), elementwise, float64."""
    return np.sign(z) * np.maximum(np.abs(z) - r, 0.0)


def as_np(tree):
    return {k: np.asarray(v, np.float64) for k, v in tree.items()}


def step(tx, params, grads, jit=True):
    """The params after each step of ``tx`` on the gradient stream."""
    update = jax.jit(tx.update) if jit else tx.update
    state, w, out = tx.init(params), params, []
    for g in grads:
        u, state = update(g, state, w)
        w = optax.apply_updates(w, u)
        out.append(w)
    return out


# ---- prox_l1: soft thresholding, the docstring's formula


@pytest.mark.x64
@pytest.mark.parametrize("kind", ["bool", "array", "multiplier"])
@pytest.mark.parametrize("centered", [False, True], ids=["c=0", "center"])
def test_prox_l1_matches_soft_threshold(kind, centered):
    """w_new = c + sign(z - c)*max(|z - c| - eta_t*lambda_t*m, 0), z = w + u, m the mask's factor.

    Run alone, ``u`` is the gradient. The gradients are large enough that both branches
    (thresholded to c, shrunk) occur at every step.
    """
    params = make_params()
    grads = make_grads(params, 4, scale=0.5)
    c = make_params(seed=5) if centered else None
    masks = {
        "bool": ({"w": True, "b": False, "k": True}, {"w": 1.0, "b": 0.0, "k": 1.0}),
        "array": (
            {k: np.arange(p.size).reshape(p.shape) % 3 != 0 for k, p in params.items()},
            None,
        ),
        "multiplier": ({"w": 2.5, "b": False, "k": 0.5}, {"w": 2.5, "b": 0.0, "k": 0.5}),
    }
    mask, factor = masks[kind]
    if factor is None:
        factor = {k: np.asarray(m, np.float64) for k, m in mask.items()}
    tx = prox_l1(LAM, schedule=ETA, mask=mask, center=c)
    got = step(tx, params, grads)
    w = as_np(params)
    cen = as_np(c) if centered else {k: 0.0 for k in w}
    thresholded = 0
    for t, g in enumerate(grads):
        rate = ETA(t) * LAM(t)
        for k in w:
            z = w[k] + np.asarray(g[k]) - cen[k]
            w[k] = cen[k] + np.where(factor[k] > 0, soft(z, rate * factor[k]), z)
            thresholded += int(np.sum((factor[k] > 0) & (np.abs(z) <= rate * factor[k])))
        chex.assert_trees_all_close(got[t], w, rtol=1e-14, atol=1e-14)
    assert thresholded > 5


@pytest.mark.x64
def test_prox_l1_multiplier_is_lambda_times_the_multiplier():
    """A mask leaf 2.5 gives that leaf exactly what 2.5*lambda gives it."""
    params, grads = make_problem(3)
    a = step(prox_l1(0.3, mask={"w": 2.5, "b": False, "k": False}), params, grads)
    b = step(prox_l1(2.5 * 0.3, mask={"w": True, "b": False, "k": False}), params, grads)
    for x, y in zip(a, b, strict=True):
        chex.assert_trees_all_close(x, y, rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
def test_prox_l1_thresholded_coordinates_are_exactly_zero(dtype, jit):
    """The update is -w where |z| <= rate, so optax.apply_updates gives w + (-w) = 0 exactly.

    The params are large and the steps nearly cancel them, so that recomputing
    ``w + (w_new - w)`` with ``w_new = 0`` written as ``sign(z)*max(...)`` - ``w`` would
    still be exact, but ``(w + u) - w`` style round-off elsewhere would not be: this checks
    the zeros bit for bit, in float32 and float64.
    """
    with jax.enable_x64(dtype == jnp.float64):
        rng = np.random.default_rng(0)
        w = jnp.asarray(rng.normal(size=1000) * 10.0 ** rng.integers(-3, 4, size=1000), dtype)
        # z = w + u lands in [-0.2, 0.2] for the first half, far outside for the rest.
        target = np.where(np.arange(1000) < 500, rng.uniform(-0.2, 0.2, 1000), 5.0)
        g = jnp.asarray(target - np.asarray(w, np.float64), dtype)
        tx = prox_l1(0.25)
        update = jax.jit(tx.update) if jit else tx.update
        u, _ = update(g, tx.init(w), w)
        new = np.asarray(optax.apply_updates(w, u))
        assert new.dtype == np.dtype(dtype)
        z = np.asarray(w) + np.asarray(g)  # in the dtype, as the transform computes it
        zero = np.abs(z) <= np.asarray(0.25, dtype)
        assert zero.sum() >= 499
        assert np.all(new[zero] == 0.0)
        assert np.all(new[~zero] != 0.0)
        np.testing.assert_allclose(new[~zero], soft(z[~zero], 0.25), rtol=1e-6)


@pytest.mark.x64
def test_prox_l1_center_threshold_is_c_up_to_the_rounding_of_w_minus_c():
    """What the docstring guarantees with a center: c exactly when w - c is exact (here,
    c/2 <= w <= 2c, Sterbenz), else within the rounding of w - c."""
    w = jnp.array([1.5, 1.9, 1e8 + 0.3, -3e7])
    c = jnp.array([1.0, 1.2, 0.1, 0.7])
    g = c - w + jnp.array([0.01, -0.02, 0.0, 0.05])  # z - c = small: thresholded
    tx = prox_l1(0.1, center=c)
    u, _ = tx.update(g, tx.init(w), w)
    new = np.asarray(optax.apply_updates(w, u))
    assert np.all(new[:2] == np.asarray(c[:2]))
    eps = np.finfo(np.float64).eps
    bound = 2 * eps * np.maximum(np.abs(np.asarray(w)), np.abs(np.asarray(c)))
    assert np.all(np.abs(new - np.asarray(c)) <= bound)


@pytest.mark.x64
@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_prox_l1_sgd_converges_to_the_soft_threshold_of_a(alpha):
    """f(w) = (w - a)^2/2 with optax.sgd(alpha), alpha <= 1, then prox_l1(lambda).

    One step: z = w - alpha*(w - a) = (1 - alpha)*w + alpha*a, w+ = S_lambda(z), S_r the
    soft threshold at r. A fixed point w* > 0 solves w* = (1 - alpha)*w* + alpha*a - lambda,
    i.e. w* = a - lambda/alpha (so a > lambda/alpha), symmetrically for w* < 0, and w* = 0
    holds iff |alpha*a| <= lambda. So w* = S_{lambda/alpha}(a): the minimizer of
    (w - a)^2/2 + (lambda/alpha)*|w| (lambda is not multiplied by alpha). The map is a
    contraction with factor 1 - alpha (S is 1-Lipschitz), so the error falls as
    (1 - alpha)^t; alpha = 1 reaches w* in one step.
    """
    lam = 0.1
    a = jnp.array([1.0, -0.5, 0.15, -0.19, 0.0, 0.3, 0.2, -0.2, 0.21])
    tx = optax.chain(optax.sgd(alpha), prox_l1(lam))
    w = jnp.array([2.0, 3.0, -1.0, 0.5, 1.0, -4.0, 0.0, 1.0, 0.0])
    state = tx.init(w)
    update = jax.jit(tx.update)
    for _ in range(200):
        u, state = update(w - a, state, w)
        w = optax.apply_updates(w, u)
    want = soft(np.asarray(a), lam / alpha)
    np.testing.assert_allclose(np.asarray(w), want, rtol=1e-10, atol=0)
    assert np.all(np.asarray(w)[want == 0] == 0.0)  # exact zeros, not tiny values


@pytest.mark.x64
def test_elastic_net_is_a_chain_of_prox_l1_and_prox_l2():
    """chain(step, prox_l1(l1), prox_l2(l2)) is the prox of l1*|w|_1 + (l2/2)*|w|^2:
    sign(z)*max(|z| - eta*l1, 0)/(1 + eta*l2), z = w - alpha*g."""
    params, grads = make_problem(4)
    alpha, l1, l2, eta = 0.3, 0.2, 0.7, 0.5
    tx = optax.chain(optax.sgd(alpha), prox_l1(l1, schedule=eta), od.prox_l2(l2, schedule=eta))
    got = step(tx, params, grads)
    w = as_np(params)
    for t, g in enumerate(grads):
        for k in w:
            w[k] = soft(w[k] - alpha * np.asarray(g[k]), eta * l1) / (1 + eta * l2)
        chex.assert_trees_all_close(got[t], w, rtol=1e-14, atol=1e-15)


# ---- prox_group_lasso


def block_soft(z, r, axis):
    """z * max(0, 1 - r/||z||) per group, the norm over ``axis``, float64 NumPy."""
    norm = np.sqrt(np.sum(z * z, axis=axis, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(norm > 0, np.maximum(0.0, 1.0 - r / norm), 0.0)
    return z * factor


@pytest.mark.x64
@pytest.mark.parametrize("axis", [None, 0, -1, (0, 1)], ids=str)
def test_group_lasso_matches_block_soft_threshold(axis):
    """Every leaf a rank >= 2 array; multipliers and a schedule; groups thresholded to 0 occur."""
    shapes = {"w": (3, 4), "k": (2, 2, 3), "v": (5, 2)}
    params = make_params(shapes=shapes)
    grads = make_grads(params, 4, scale=0.3)
    # "v" small: its groups are thresholded to 0 whatever the axis.
    params["v"] = 0.05 * params["v"]
    grads = [{**g, "v": 0.05 * g["v"]} for g in grads]
    mask = {"w": 2.5, "k": 0.5, "v": True}
    tx = prox_group_lasso(LAM, schedule=ETA, mask=mask, axis=axis)
    got = step(tx, params, grads)
    w, zeros = as_np(params), 0
    for t, g in enumerate(grads):
        for k in w:
            new = block_soft(w[k] + np.asarray(g[k]), ETA(t) * LAM(t) * float(mask[k]), axis)
            zeros += int(np.sum(new == 0))
            w[k] = new
        chex.assert_trees_all_close(got[t], w, rtol=1e-13, atol=1e-14)
    assert zeros > 0


@pytest.mark.x64
def test_group_lasso_axis_0_of_a_dense_kernel_is_one_group_per_output_unit():
    """(in, out) = (3, 4), axis=0: the norm of each column; columns shrink by
    max(0, 1 - rate/||column||), exactly that factor; a column inside the threshold is 0."""
    w = jnp.array(
        [[3.0, 0.1, 1.0, -2.0], [4.0, 0.2, 0.0, 2.0], [0.0, -0.2, 0.0, 1.0]]
    )  # column norms 5, 0.3, 1, 3
    tx = prox_group_lasso(0.5, axis=0)
    u, _ = tx.update(jnp.zeros_like(w), tx.init(w), w)
    new = np.asarray(optax.apply_updates(w, u))
    factor = np.array([1 - 0.5 / 5, 0.0, 1 - 0.5 / 1, 1 - 0.5 / 3])
    np.testing.assert_allclose(new, np.asarray(w) * factor, rtol=1e-15, atol=0)
    assert np.all(new[:, 1] == 0.0)
    # axis=1: one group per input row (norms sqrt(14.01), sqrt(20.04), sqrt(1.04))
    tx = prox_group_lasso(1.1, axis=1)
    u, _ = tx.update(jnp.zeros_like(w), tx.init(w), w)
    rows = np.linalg.norm(np.asarray(w), axis=1, keepdims=True)
    np.testing.assert_allclose(
        optax.apply_updates(w, u), np.asarray(w) * np.maximum(0, 1 - 1.1 / rows), rtol=1e-15
    )


@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_group_lasso_zero_group_stays_zero_and_finite(lam):
    w = {"a": jnp.zeros((3, 2)), "b": jnp.ones((3, 2))}
    for axis in [None, 0]:
        tx = prox_group_lasso(lam, axis=axis)
        u, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, w), tx.init(w), w)
        new = optax.apply_updates(w, u)
        chex.assert_tree_all_finite(new)
        assert np.all(np.asarray(new["a"]) == 0.0)


def test_group_lasso_array_mask_norm_is_over_the_whole_group():
    """As documented: the norm includes masked-out elements, which are left unchanged."""
    w = jnp.array([3.0, 4.0, 0.0, 12.0])  # norm 13
    mask = jnp.array([True, True, True, False])
    tx = prox_group_lasso(6.5, mask=mask)
    u, _ = tx.update(jnp.zeros_like(w), tx.init(w), w)
    np.testing.assert_allclose(optax.apply_updates(w, u), [1.5, 2.0, 0.0, 12.0], rtol=1e-6)


# ---- AdamL1: adamp / adaptive_decay with penalty="l1"


def adam_l1_reference(params, grads, alpha, lam, eta, factor, center=None, b1=0.9, b2=0.999):
    """ProxGen's AdamL1 from the docstring: y = w - s*mhat/D, w+ = S_{s*lambda*m/D}(y)."""
    w = as_np(params)
    c = as_np(center) if center is not None else {k: 0.0 for k in w}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v = {k: np.zeros_like(x) for k, x in w.items()}
    out = []
    for t, g in enumerate(grads):
        s = alpha * eta(t)
        for k in w:
            gk = np.asarray(g[k], np.float64)
            m[k] = b1 * m[k] + (1 - b1) * gk
            v[k] = b2 * v[k] + (1 - b2) * gk**2
            mhat, vhat = m[k] / (1 - b1 ** (t + 1)), v[k] / (1 - b2 ** (t + 1))
            d = np.sqrt(vhat) + 1e-8
            y = w[k] - s * mhat / d - c[k]
            w[k] = c[k] + np.where(factor[k] > 0, soft(y, s * LAM(t) * lam * factor[k] / d), y)
        out.append({k: x.copy() for k, x in w.items()})
    return out


@pytest.mark.x64
@pytest.mark.parametrize("kind", ["bool", "array", "multiplier"])
@pytest.mark.parametrize("centered", [False, True], ids=["c=0", "center"])
def test_adamp_l1_matches_adam_l1_formula(kind, centered):
    params = make_params()
    grads = make_grads(params, 5)
    c = make_params(seed=5) if centered else None
    arrays = {k: np.arange(p.size).reshape(p.shape) % 3 != 0 for k, p in params.items()}
    mask, factor = {
        "bool": ({"w": True, "b": False, "k": True}, {"w": 1.0, "b": 0.0, "k": 1.0}),
        "array": (arrays, {k: a.astype(np.float64) for k, a in arrays.items()}),
        "multiplier": ({"w": 2.5, "b": False, "k": 0.5}, {"w": 2.5, "b": 0.0, "k": 0.5}),
    }[kind]
    alpha, lam = 0.05, 2.0
    tx = od.adamp(alpha, lambda t: lam * LAM(t), schedule=ETA, mask=mask, center=c, penalty="l1")
    got = step(tx, params, grads)
    want = adam_l1_reference(params, grads, alpha, lam, ETA, factor, c)
    for t in range(len(grads)):
        chex.assert_trees_all_close(got[t], want[t], rtol=1e-12, atol=1e-14)
    # Both branches occur: thresholded coordinates (exactly c) and shrunk ones.
    last, cen = as_np(got[-1]), as_np(c) if centered else {k: 0.0 for k in factor}
    hit = sum(int(np.sum((last[k] == cen[k]) & (factor[k] > 0))) for k in last)
    decayed = sum(int(np.sum(np.broadcast_to(factor[k] > 0, last[k].shape))) for k in last)
    assert 0 < hit < decayed


@pytest.mark.x64
def test_adaptive_decay_l1_equals_adamp_l1():
    params, grads = make_problem(3)
    a = step(od.adaptive_decay(0.05, 0.4, schedule=0.5, penalty="l1"), params, grads)
    b = step(od.adamp(0.05, 0.4, schedule=0.5, penalty="l1"), params, grads)
    chex.assert_trees_all_equal(a, b)


@pytest.mark.x64
def test_adam_l1_on_a_linear_loss():
    """f(w) = g.w with a constant g: m_t = (1 - b1^t) g, so mhat_t = g at every step, and
    likewise vhat_t = g^2, D = |g| + eps. Then y = w - s*g/D and the threshold is
    s*lambda/D. If |g| < lambda, 0 is the fixed point (from 0, |y| = s|g|/D <= s*lambda/D)
    and it is reached in finitely many steps: while w > 0, with y > 0, each step lowers w
    by s*(g + lambda)/D > 0, and the threshold never pushes past 0. If |g| > lambda there
    is no fixed point: away from 0, w moves by -s*sign(g)*(|g| - lambda)/D per step, Adam's
    speed s*|g|/D times (|g| - lambda)/|g|.
    """
    lam, alpha, eps = 0.1, 0.01, 1e-8
    g = jnp.array([0.05, -0.02, 0.09, 0.3, -0.5, 0.5])
    w = jnp.array([1.0, -2.0, 0.5, 3.0, 1.0, -1.0])
    tx = od.adamp(alpha, lam, eps=eps, penalty="l1")
    state, update, prev = tx.init(w), jax.jit(tx.update), w
    for _ in range(3000):
        prev = w
        u, state = update(g, state, w)
        w = optax.apply_updates(w, u)
    w, prev, gn = np.asarray(w), np.asarray(prev), np.asarray(g)
    assert np.all(w[:3] == 0.0)
    speed = -alpha * np.sign(gn[3:]) * (np.abs(gn[3:]) - lam) / (np.abs(gn[3:]) + eps)
    np.testing.assert_allclose(w[3:] - prev[3:], speed, rtol=1e-10)
    assert np.all(np.sign(w[3:]) == -np.sign(gn[3:]))


@pytest.mark.x64
def test_prox_adam_l1_is_adam_then_prox_l1():
    """prox_adam(penalty="l1"): y = w - s*mhat/D, w+ = S_{eta_t*lambda}(y)."""
    params, grads = make_problem(5)
    alpha, lam = 0.05, 0.3
    mask = {"w": True, "b": False, "k": 2.0}
    got = step(od.prox_adam(alpha, lam, schedule=ETA, mask=mask, penalty="l1"), params, grads)
    factor = {"w": 1.0, "b": 0.0, "k": 2.0}
    w = as_np(params)
    m = {k: 0.0 for k in w}
    v = {k: 0.0 for k in w}
    for t, g in enumerate(grads):
        for k in w:
            gk = np.asarray(g[k])
            m[k] = 0.9 * m[k] + 0.1 * gk
            v[k] = 0.999 * v[k] + 0.001 * gk**2
            d = np.sqrt(v[k] / (1 - 0.999 ** (t + 1))) + 1e-8
            y = w[k] - alpha * ETA(t) * (m[k] / (1 - 0.9 ** (t + 1))) / d
            w[k] = soft(y, ETA(t) * lam * factor[k])
        chex.assert_trees_all_close(got[t], w, rtol=1e-12, atol=1e-14)
    assert any(np.any(np.asarray(got[-1][k]) == 0) for k in ("w", "k"))


@pytest.mark.x64
@pytest.mark.parametrize("name", ["adamp", "prox_adam", "adaptive_decay"])
def test_default_penalty_is_l2(name):
    """The default is penalty="l2", bit for bit, and it is still the L2 formula (the
    helpers' reference of adamp and prox_adam)."""
    make = getattr(od, name)
    params, grads = make_problem(3)
    a = step(make(0.05, 0.3), params, grads)
    b = step(make(0.05, 0.3, penalty="l2"), params, grads)
    chex.assert_trees_all_equal(a, b)
    want = reference("prox_adam" if name == "prox_adam" else "adamp", params, grads, 0.05, 0.3)
    chex.assert_trees_all_close(a, want, rtol=1e-12, atol=1e-14)


# ---- Bad input


@pytest.mark.parametrize("make", [prox_l1, prox_group_lasso], ids=["prox_l1", "group_lasso"])
def test_negative_weight_decay_raises(make):
    with pytest.raises(ValueError, match="`weight_decay` must be a finite number >= 0"):
        make(-0.1)
    with pytest.raises(ValueError, match="`weight_decay`.*schedule"):
        make(lambda t: 0.1 - 0.01 * t)


@pytest.mark.parametrize("name", ["adamp", "prox_adam", "adaptive_decay"])
@pytest.mark.parametrize("penalty", ["L1", "l0", None, 1])
def test_bad_penalty_raises_naming_the_allowed_values(name, penalty):
    with pytest.raises(ValueError, match=rf"`penalty` of `{name}` must be one of \('l2', 'l1'\)"):
        getattr(od, name)(0.1, 0.1, penalty=penalty)


def test_group_lasso_axis_out_of_range_names_the_leaf():
    params = {"dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)}}
    tx = prox_group_lasso(0.1, axis=1)
    with pytest.raises(ValueError, match=r"`axis`=1 .* leaf \['dense'\]\['bias'\] of shape \(4,\)"):
        tx.init(params)
    with pytest.raises(ValueError, match=r"leaf \['dense'\]\['bias'\]"):
        tx.update(params, optax.EmptyState(), params)
    with pytest.raises(ValueError, match="appears twice"):
        prox_group_lasso(0.1, axis=(0, -2)).init(params["dense"]["kernel"])
    # Masked out, the bias is not a group: no error.
    tx = prox_group_lasso(0.1, axis=1, mask=od.weight_decay_mask)
    u, _ = tx.update(params, tx.init(params), params)
    assert np.all(np.asarray(u["dense"]["bias"]) == 1.0)


@pytest.mark.parametrize("axis", ["0", 1.0, True, (), (0, "1"), jnp.asarray(0)], ids=repr)
def test_group_lasso_bad_axis_type_raises(axis):
    with pytest.raises(TypeError, match="`axis` of `prox_group_lasso` must be None"):
        prox_group_lasso(0.1, axis=axis)


# ---- jit and inject_hyperparams


@pytest.mark.x64
@pytest.mark.parametrize(
    "make",
    [
        prox_l1,
        functools.partial(prox_group_lasso, axis=(0,)),
        functools.partial(od.adamp, 0.05, penalty="l1"),
        functools.partial(od.prox_adam, 0.05, penalty="l1"),
        functools.partial(od.adaptive_decay, 0.05, penalty="l1"),
    ],
    ids=["prox_l1", "group_lasso", "adamp_l1", "prox_adam_l1", "adaptive_decay_l1"],
)
def test_inject_hyperparams_and_jit_match_the_plain_transform(make):
    params = make_params(shapes={"w": (3, 4), "k": (2, 2, 3)})
    grads = make_grads(params, 4, scale=0.5)
    mask = lambda p: {"w": True, "k": 2.0}
    plain = step(make(weight_decay=1.0, mask=mask), params, grads, jit=False)
    injected = optax.inject_hyperparams(make, static_args="mask")(weight_decay=1.0, mask=mask)
    got = step(injected, params, grads, jit=True)
    chex.assert_trees_all_close(got, plain, rtol=1e-14, atol=1e-15)
    zeros = sum(int(np.sum(np.asarray(x) == 0)) for x in jax.tree.leaves(got[-1]))
    assert zeros > 0  # the thresholds are hit


def test_group_lasso_int_axis_under_inject_hyperparams_needs_static_args():
    w = jnp.ones((3, 4))
    with pytest.raises(TypeError, match='static_args=\\("axis",\\)'):
        optax.inject_hyperparams(prox_group_lasso)(0.1, axis=0).init(w)
    tx = optax.inject_hyperparams(prox_group_lasso, static_args="axis")(0.1, axis=0)
    u, _ = jax.jit(tx.update)(jnp.zeros_like(w), tx.init(w), w)
    np.testing.assert_allclose(w + u, 1 - 0.1 / np.sqrt(3), rtol=1e-6)


@pytest.mark.x64
def test_prox_l1_raveled_reference_under_jit_and_schedule():
    """A schedule of the step count in the state: eta_t from t = 0, under jit."""
    params, grads = make_problem(6)
    got = step(prox_l1(0.3, schedule=ETA), params, grads, jit=True)
    w = ravel(params)
    for t, g in enumerate(grads):
        w = soft(w + ravel(g), ETA(t) * 0.3)
        np.testing.assert_allclose(ravel(got[t]), w, rtol=1e-14, atol=1e-15)

"""`_decoupled`: ``u <- u - eta_t*lambda*w`` after the step (`decoupled_decay`), its
cautious form (`cautious_decay`), and the ``center`` that every decay transform takes."""

import chex
import jax
import jax.numpy as jnp
import optax
import pytest
from helpers import build, make_grads, make_params, make_problem, max_rel_diff, run

import optax_decay as od


@pytest.mark.x64
def test_decoupled_decay_subtracts_eta_lambda_w_from_the_decayed_leaves():
    params = make_params()
    eta = lambda t: 1.0 / (1.0 + t)
    tx = od.decoupled_decay(0.2, schedule=eta, mask=od.weight_decay_mask)
    state, w = tx.init(params), params
    for t, g in enumerate(make_grads(params, 3)):
        u, state = tx.update(g, state, w)
        chex.assert_trees_all_close(
            u, {k: g[k] - (k != "b") * eta(t) * 0.2 * w[k] for k in g}, rtol=1e-14, atol=1e-15
        )
        w = optax.apply_updates(w, u)


def test_constant_decay_keeps_no_counter():
    params = make_params(jnp.float32)
    for tx in [od.decoupled_decay(1e-3), od.prox_l2(1e-3), od.add_l2_to_grad(1e-3)]:
        assert tx.init(params) == optax.EmptyState()


# ---- Cautious decay: u <- u - eta_t*lambda * 1[u*w <= 0] * w


@pytest.mark.x64
def test_cautious_decay_formula_with_ties_mask_and_schedule():
    params = make_params()
    grads = make_grads(params, 3)
    grads[1] = {k: g.at[..., 0].set(0.0) for k, g in grads[1].items()}  # ties u = 0: decayed
    eta = lambda t: 1.0 / (1.0 + t)
    tx = od.cautious_decay(0.2, schedule=eta, mask=od.weight_decay_mask)
    state, w = tx.init(params), params
    for t, g in enumerate(grads):
        u, state = tx.update(g, state, w)
        want = {k: g[k] - (k != "b") * eta(t) * 0.2 * (g[k] * w[k] <= 0) * w[k] for k in g}
        chex.assert_trees_all_close(u, want, rtol=1e-14, atol=1e-15)
        w = optax.apply_updates(w, u)


def test_cautious_decay_equals_decoupled_decay_where_every_step_moves_toward_zero():
    params = make_params(jnp.float32)
    (g,) = make_grads(params, 1)
    toward = jax.tree.map(lambda g, w: -jnp.sign(w) * jnp.abs(g), g, params)  # u*w <= 0
    away = jax.tree.map(lambda u: -u, toward)
    for u_in, equal in [(toward, True), (away, False)]:
        got, _ = od.cautious_decay(0.3).update(u_in, optax.EmptyState(), params)
        want, _ = od.decoupled_decay(0.3).update(u_in, optax.EmptyState(), params)
        assert all(jax.tree.leaves(jax.tree.map(jnp.array_equal, got, want))) == equal
    chex.assert_trees_all_equal(od.cautious_decay(0.3).update(away, (), params)[0], away)


@pytest.mark.x64
def test_cautious_sgd_converges_to_the_minimizer_and_sgdw_to_the_l2_point():
    """f(w) = |w - a|^2/2, SGD with step alpha and decay rate r = lambda (paper form).

    SGDW: w <- w - alpha*(w - a) - r*w has the fixed point w* = alpha*a/(alpha + r), the
    minimizer of f + (r/(2 alpha))|w|^2. Cautious: between 0 and a the step moves w away
    from 0 (toward a), so nothing is decayed there and e = a - w shrinks by (1 - alpha) per
    step; above |a| the decay helps the step. So w -> a, the unregularized minimizer.
    """
    a = jnp.array([1.5, -0.7, 3.0, -2.0])
    w0 = jnp.array([4.0, 0.3, -1.0, -5.0])
    alpha, lam = 0.3, 0.1
    for cautious, want in [(False, alpha * a / (alpha + lam)), (True, a)]:
        tx, w = od.sgdw(alpha, lam, cautious=cautious), w0
        state = tx.init(w)
        for _ in range(600):
            u, state = tx.update(w - a, state, w)
            w = w + u
        chex.assert_trees_all_close(w, want, rtol=1e-9, atol=1e-12)


# ---- Decay toward a center: w - c in place of w


def _registry_runs(name, params, grads, **kw):
    return run(build(name, **kw), params, grads)


# One entry per decay rule (each transform, cautious, AdamP) and one whole optimizer.
CENTERED = ["add_l2_to_grad", "decoupled_decay", "prox_l2", "adaptive_decay", "adamw_cautious"]
CENTERED += ["sgd_l2_momentum", "adamw"]


@pytest.mark.parametrize("name", CENTERED)
def test_center_zero_is_bit_identical(name):
    params, grads = make_problem(3, jnp.float32)
    want = _registry_runs(name, params, grads)
    zeros = jax.tree.map(jnp.zeros_like, params)
    for center in [0.0, zeros]:
        chex.assert_trees_all_equal(_registry_runs(name, params, grads, center=center), want)


def _closed_loop(tx, w, a, steps=15):
    """Params after each step of ``tx`` on f(w) = sum h*(w - a)^2/2, h = 1, 2, 3, ... ."""
    h = jax.tree.map(lambda x: 1.0 + jnp.arange(x.size).reshape(x.shape) % 3, w)

    @jax.jit
    def step(w, state):
        u, state = tx.update(jax.tree.map(lambda h, w, a: h * (w - a), h, w, a), state, w)
        return optax.apply_updates(w, u), state

    state, out = tx.init(w), []
    for _ in range(steps):
        w, state = step(w, state)
        out.append(w)
    return out


@pytest.mark.x64
@pytest.mark.parametrize("name", CENTERED)
@pytest.mark.parametrize("center", ["init", "tree"])
def test_shifting_weights_center_and_minimizer_shifts_the_trajectory(name, center):
    """With w0, c and the minimizer a all moved by v, every update is unchanged.

    The gradient h*(w - a) and the decay term w - c depend on differences only, and Adam's
    moments on the gradients only, so by induction u_t is the same and w_t moves by v.
    """
    w0 = make_params(seed=0)
    a, c = make_params(seed=1), make_params(seed=2)
    v = jax.tree.map(lambda x: 3.0 + x, make_params(seed=3))
    shift = lambda tree: jax.tree.map(jnp.add, tree, v)
    ctr = (lambda tree: "init") if center == "init" else (lambda tree: tree)
    base = _closed_loop(build(name, center=ctr(c)), w0, a)
    moved = _closed_loop(build(name, center=ctr(shift(c))), shift(w0), shift(a))
    chex.assert_trees_all_close(moved, [shift(w) for w in base], rtol=1e-11, atol=1e-11)
    if center == "tree":  # and the center matters
        assert max_rel_diff(_closed_loop(build(name), w0, a)[-1], base[-1]) > 1e-6


@pytest.mark.x64
def test_l2_toward_a_center_converges_to_the_regularized_minimizer():
    """argmin sum h*(w - a)^2/2 + (lambda/2)|w - c|^2 = (h*a + lambda*c)/(h + lambda).

    SGDW with rate r: w* = (alpha*h*a + r*c)/(alpha*h + r), the same point with lambda = r/alpha.
    """
    w0, a, c = make_params(seed=0), make_params(seed=1), make_params(seed=2)
    h = jax.tree.map(lambda x: 1.0 + jnp.arange(x.size).reshape(x.shape) % 3, w0)
    argmin = lambda lam: jax.tree.map(lambda h, a, c: (h * a + lam * c) / (h + lam), h, a, c)
    alpha, lam = 0.1, 0.5
    for tx in [od.sgd_l2(alpha, lam, center=c), od.sgdw(alpha, alpha * lam, center=c)]:
        w = _closed_loop(tx, w0, a, steps=800)[-1]
        chex.assert_trees_all_close(w, argmin(lam), rtol=1e-10, atol=1e-12)


def test_center_init_keeps_one_copy_of_the_decayed_params():
    params = make_params(jnp.float32)
    mask = {"w": True, "b": False, "k": True}
    state = od.decoupled_decay(0.1, mask=mask, center="init").init(params)
    (inner,) = [s for s in jax.tree.leaves(state, is_leaf=lambda s: hasattr(s, "center"))]
    assert inner.schedule_count is None
    stored = [x for x in jax.tree.leaves(inner.center)]
    assert sum(x.size for x in stored) == params["w"].size + params["k"].size
    chex.assert_trees_all_equal(stored, [params["k"], params["w"]])
    state = od.adamp(0.1, 0.1, center="init").init(params)
    chex.assert_trees_all_equal(state.center, params)


@pytest.mark.parametrize(
    ("center", "error", "match"),
    [
        ("zero", ValueError, "`center` must be None"),
        (lambda p: p, TypeError, "`center` must be None"),
        ({"w": 0.0}, ValueError, "`center` must be None"),
        ({"w": jnp.zeros(4), "b": 0.0, "k": 0.0}, ValueError, r"leaf \['w'\] has shape \(4,\)"),
    ],
)
@pytest.mark.parametrize("make", [od.decoupled_decay, od.cautious_decay, od.prox_l2])
def test_bad_center_is_rejected_with_the_fix(make, center, error, match):
    params = make_params(jnp.float32)
    with pytest.raises(error, match=match):
        tx = make(0.1, center=center)
        tx.update(params, tx.init(params), params)

"""Peers of `_sparsity` and of AdamL1: jaxopt's proximal operators, step by step in float64.

jaxopt (PyPI ``jaxopt``, 0.8.5, installed with ``--no-deps``; it imports with jax 0.10 and
warns on import that it is no longer maintained) writes each operator as
``prox(x, hyperparams, scaling) = argmin_y 0.5*||y - x||^2 + scaling*hyperparams*g(y)``:

* ``prox_lasso``, ``g = ||.||_1``: our ``prox_l1`` at ``z = w + u`` with
  ``hyperparams = lambda`` (times a mask's multiplier, per leaf) and ``scaling = eta_t``.
  jaxopt has no center: ours thresholds around ``c``, i.e. ``c + prox_lasso(z - c)``.
* ``prox_elastic_net``, ``g = ||.||_1 + (hyperparams[1]/2)*||.||^2`` times
  ``hyperparams[0]``: our chain ``prox_l1(l1), prox_l2(l2)``, the prox of
  ``l1*||w||_1 + (l2/2)*||w||^2``, is ``hyperparams = (l1, l2/l1)``, ``scaling = eta_t``.
* ``prox_group_lasso``, ``g = ||.||_2`` over the *whole* pytree it is given: our
  ``prox_group_lasso`` with ``axis=None`` is it applied to each leaf alone, and with
  ``axis`` it is ``jax.vmap``-ed over the groups (the axes not in ``axis``), as jaxopt's
  docstring suggests; ``hyperparam = lambda``, ``scaling = eta_t``.

ProxGen's AdamL1 (Yun et al. 2021) is not on PyPI: it is written here from its formula,
the soft threshold of ``w - s*mhat/D`` at ``s*lambda/D`` (``s = alpha*eta_t``), with
jaxopt's ``prox_lasso`` as the threshold (coordinate-wise ``hyperparams = lambda/D``,
``scaling = s``), and the update is checked to satisfy the optimality condition of the
subproblem it solves. Each comparison has a negative control.
"""

import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import make_grads, make_params

import optax_decay as od
from optax_decay import prox_group_lasso, prox_l1

with warnings.catch_warnings():  # "JAXopt is no longer maintained", at import
    warnings.simplefilter("ignore", DeprecationWarning)
    jaxopt = pytest.importorskip("jaxopt")
from jaxopt import prox as jprox  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.x64]

ETA = lambda t: 1.0 / (1.0 + 0.3 * t)
ALPHA = 0.4


def ours(tx, params, grads):
    """The params after each step of sgd(ALPHA) followed by ``tx``."""
    tx = optax.chain(optax.sgd(ALPHA), tx)
    state, w, out = tx.init(params), params, []
    for g in grads:
        u, state = jax.jit(tx.update)(g, state, w)
        w = optax.apply_updates(w, u)
        out.append(w)
    return out


def peer(prox_step, params, grads):
    """The same steps with the peer's prox: ``w <- prox_step(w - ALPHA*g, t)``."""
    w, out = params, []
    for t, g in enumerate(grads):
        w = prox_step(jax.tree.map(lambda a, b: a - ALPHA * b, w, g), t)
        out.append(w)
    return out


def assert_same(a, b):
    chex.assert_trees_all_close(a, b, rtol=1e-13, atol=1e-15)


def assert_differs(a, b):
    with pytest.raises(AssertionError):
        assert_same(a, b)


def problem(steps=6, seed=0):
    params = make_params(seed=seed)
    return params, make_grads(params, steps, scale=2.0)


def test_prox_l1_equals_jaxopt_prox_lasso():
    params, grads = problem()
    lam, mult = 0.3, {"w": 2.5, "b": 1.0, "k": 0.5}
    got = ours(prox_l1(lam, schedule=ETA, mask=mult), params, grads)
    # hyperparams: lambda times the leaf's multiplier; scaling: eta_t.
    hyper = {k: lam * m for k, m in mult.items()}
    want = peer(lambda z, t: jprox.prox_lasso(z, hyper, ETA(t)), params, grads)
    assert_same(got, want)
    assert sum(int(jnp.sum(x == 0)) for x in jax.tree.leaves(got[-1])) > 0
    # Negative control: the coupled convention (scaling alpha*eta_t) is detected.
    coupled = peer(lambda z, t: jprox.prox_lasso(z, hyper, ALPHA * ETA(t)), params, grads)
    assert_differs(got, coupled)


def test_prox_l1_center_equals_jaxopt_prox_lasso_shifted():
    params, grads = problem()
    c = make_params(seed=3)
    got = ours(prox_l1(0.3, schedule=ETA, center=c), params, grads)
    shifted = lambda z, t: jax.tree.map(
        lambda a, b: a + b, c, jprox.prox_lasso(jax.tree.map(jnp.subtract, z, c), 0.3, ETA(t))
    )
    assert_same(got, peer(shifted, params, grads))
    # Negative control: thresholding around 0 instead.
    assert_differs(got, peer(lambda z, t: jprox.prox_lasso(z, 0.3, ETA(t)), params, grads))


def test_elastic_net_chain_equals_jaxopt_prox_elastic_net():
    params, grads = problem()
    l1, l2 = 0.3, 0.8
    got = ours(optax.chain(prox_l1(l1, schedule=ETA), od.prox_l2(l2, schedule=ETA)), params, grads)
    # hyperparams = (l1, l2/l1): scaling*l1*(|y|_1 + (l2/l1)/2*|y|^2) = scaling*(l1|y|_1 + l2/2|y|^2).
    want = peer(lambda z, t: jprox.prox_elastic_net(z, (l1, l2 / l1), ETA(t)), params, grads)
    assert_same(got, want)
    # Negative control: the other order, prox_l2 then prox_l1, is not the elastic net's prox.
    swapped = ours(
        optax.chain(od.prox_l2(l2, schedule=ETA), prox_l1(l1, schedule=ETA)), params, grads
    )
    assert_differs(swapped, want)


def _groups_prox(x, hyper, scaling, axis):
    """jaxopt's prox_group_lasso on each group: the norm over ``axis``, vmapped over the rest."""
    if axis is None:
        return jprox.prox_group_lasso(x, hyper, scaling)
    axes = tuple(a % x.ndim for a in ((axis,) if isinstance(axis, int) else axis))
    rest = tuple(a for a in range(x.ndim) if a not in axes)
    moved = jnp.transpose(x, rest + axes)
    flat = moved.reshape(-1, int(np.prod([x.shape[a] for a in axes])))
    out = jax.vmap(lambda row: jprox.prox_group_lasso(row, hyper, scaling))(flat)
    return jnp.transpose(out.reshape(moved.shape), np.argsort(rest + axes))


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2)], ids=str)
def test_group_lasso_equals_jaxopt_prox_group_lasso(axis):
    params = make_params(shapes={"w": (3, 4, 2), "k": (2, 5, 3), "s": (2, 3, 2)})
    grads = make_grads(params, 6, scale=0.5)
    # "s" small: its groups are thresholded to 0 whatever the axis.
    params["s"] = 0.05 * params["s"]
    grads = [{**g, "s": 0.05 * g["s"]} for g in grads]
    lam = 0.9
    got = ours(prox_group_lasso(lam, schedule=ETA, axis=axis), params, grads)
    want = peer(
        lambda z, t: {k: _groups_prox(v, lam, ETA(t), axis) for k, v in z.items()}, params, grads
    )
    assert_same(got, want)
    assert sum(int(jnp.sum(x == 0)) for x in jax.tree.leaves(got[-1])) > 0
    # Negative control: one group per leaf where `axis` asks for several, or jaxopt's
    # whole-pytree norm where ours has one per leaf.
    if axis is None:
        whole = peer(lambda z, t: jprox.prox_group_lasso(z, lam, ETA(t)), params, grads)
    else:
        whole = peer(
            lambda z, t: {k: _groups_prox(v, lam, ETA(t), None) for k, v in z.items()},
            params,
            grads,
        )
    assert_differs(got, whole)


# ---- ProxGen's AdamL1, from its formula


def adam_l1_steps(params, grads, alpha, lam, eta, b1=0.9, b2=0.999, eps=1e-8):
    """AdamL1 in float64: Adam's bias-corrected moments, then
    w+ = argmin_y <y - w, mhat> + lam*|y|_1 + |y - w|_D^2/(2s), s = alpha*eta_t,
    = prox_lasso(w - s*mhat/D, hyperparams=lam/D, scaling=s) (coordinate-wise)."""
    w = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v = {k: np.zeros_like(x) for k, x in w.items()}
    out, subproblems = [], []
    for t, g in enumerate(grads):
        s = alpha * eta(t)
        new, sub = {}, {}
        for k in w:
            gk = np.asarray(g[k], np.float64)
            m[k] = b1 * m[k] + (1 - b1) * gk
            v[k] = b2 * v[k] + (1 - b2) * gk**2
            mhat = m[k] / (1 - b1 ** (t + 1))
            d = np.sqrt(v[k] / (1 - b2 ** (t + 1))) + eps
            new[k] = np.asarray(jprox.prox_lasso(w[k] - s * mhat / d, lam / d, s))
            sub[k] = (w[k], mhat, d, s)
        w = new
        out.append(new)
        subproblems.append(sub)
    return out, subproblems


def adam_run(tx, params, grads):
    state, w, out = tx.init(params), params, []
    for g in grads:
        u, state = jax.jit(tx.update)(g, state, w)
        w = optax.apply_updates(w, u)
        out.append(w)
    return out


def test_adamp_l1_equals_proxgen_adam_l1():
    params = make_params()
    grads = make_grads(params, 8)
    alpha, lam = 0.05, 1.5
    got = adam_run(od.adamp(alpha, lam, schedule=ETA, penalty="l1"), params, grads)
    want, subproblems = adam_l1_steps(params, grads, alpha, lam, ETA)
    chex.assert_trees_all_close(got, want, rtol=1e-12, atol=1e-14)
    assert sum(int(jnp.sum(x == 0)) for x in jax.tree.leaves(got[-1])) > 0
    # The update solves the subproblem: 0 in mhat + lam*d|y| + D*(y - w)/s, i.e.
    # mhat + lam*sign(y) + D*(y - w)/s = 0 where y != 0, |mhat - D*w/s| <= lam where y = 0.
    for y_tree, sub in zip(got, subproblems, strict=True):
        for k, (w0, mhat, d, s) in sub.items():
            y = np.asarray(y_tree[k])
            r = mhat + d * (y - w0) / s
            np.testing.assert_allclose(r[y != 0], -lam * np.sign(y[y != 0]), rtol=1e-8, atol=1e-8)
            assert np.all(np.abs(r[y == 0]) <= lam * (1 + 1e-12))
    # Negative control: the L2 penalty's AdamP differs.
    l2 = adam_run(od.adamp(alpha, lam, schedule=ETA), params, grads)
    with pytest.raises(AssertionError):
        chex.assert_trees_all_close(l2, want, rtol=1e-12, atol=1e-14)

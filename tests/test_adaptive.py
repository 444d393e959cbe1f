"""`scale_by_adam` and `adaptive_decay` (`_adaptive`): Adam's moments, and AdamP's decay."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import (
    ADAM_FAMILY,
    adam_moments,
    build,
    make_grads,
    make_params,
    make_problem,
    ravel,
)

import optax_decay as od


def test_scale_by_adam_equals_optax_bitwise():
    params, grads = make_problem(5, jnp.float32)
    for kw in [{}, dict(b1=0.5, b2=0.9, eps=1e-3, eps_root=1e-6)]:
        ours, ref = od.scale_by_adam(**kw), optax.scale_by_adam(**kw)
        s1, s2 = ours.init(params), ref.init(params)
        for g in grads:
            u1, s1 = jax.jit(ours.update)(g, s1)
            u2, s2 = jax.jit(ref.update)(g, s2)
            chex.assert_trees_all_equal(u1, u2)
        chex.assert_trees_all_equal(s1, s2)


@pytest.mark.parametrize("name", ADAM_FAMILY)
def test_mu_dtype(name):
    params = make_params(jnp.bfloat16)
    tx = build(name, 1e-2, 1e-3, mu_dtype=jnp.float32)
    state = tx.init(params)
    _, state = tx.update(make_grads(params, 1)[0], state, params)
    mu = optax.tree_utils.tree_get(state, "mu")
    nu = optax.tree_utils.tree_get(state, "nu")
    assert {x.dtype for x in jax.tree.leaves(mu)} == {jnp.dtype(jnp.float32)}
    assert {x.dtype for x in jax.tree.leaves(nu)} == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.x64
def test_adamp_nearly_zeroes_coordinates_without_gradient():
    """At vhat = 0, D = eps: the factor is 1/(1 + alpha*lambda/eps), ~1/101 at the defaults.

    The formula, stated in the docstring with its remedy (mask embeddings out, or raise eps).
    """
    alpha, lam, eps = 1e-3, 1e-3, 1e-8
    w = jnp.array([1.0, 1.0])
    g = jnp.array([0.5, 0.0])  # the second coordinate gets no gradient
    tx = od.adamp(alpha, lam, eps=eps)
    u, _ = tx.update(g, tx.init(w), w)
    new = np.asarray(w + u)
    np.testing.assert_allclose(new[1], 1.0 / (1.0 + alpha * lam / eps), rtol=1e-12)
    assert new[1] < 0.01
    # The remedies: masked out, or a larger eps, it keeps its value.
    for tx in [od.adamp(alpha, lam, mask=jnp.array([True, False])), od.adamp(alpha, lam, eps=1e-3)]:
        u, _ = tx.update(g, tx.init(w), w)
        assert float(w[1] + u[1]) > 0.99
    for doc in [od.adamp.__doc__, od.adaptive_decay.__doc__]:
        assert "embedding" in doc and "eps" in doc


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("lr, lam", [(1e-3, 1e30), (1.0, 1e39), (1e30, 1e30)])
def test_adamp_huge_lambda_goes_to_zero_not_nan(lr, lam):
    # lambda*alpha overflows float32 in the last two: the weights still go to 0.
    params = make_params(jnp.float32)
    tx = od.adamp(lr, lam)
    u, _ = tx.update(make_grads(params, 1)[0], tx.init(params), params)
    new = optax.apply_updates(params, u)
    chex.assert_tree_all_finite(new)
    chex.assert_trees_all_close(new, jax.tree.map(jnp.zeros_like, new), atol=1e-6)


@pytest.mark.x64
def test_adaptive_decay_toward_a_center_minimizes_the_shifted_objective():
    """argmin_y <y - w, mhat> + (lambda/2)|y - c|^2 + (1/(2s))|y - w|_D^2, s = alpha*eta_t.

    Setting the gradient mhat + lambda*(y - c) + D*(y - w)/s to zero gives
    y = c + (w - c - s*mhat/D) / (1 + s*lambda/D).
    """
    params, grads = make_problem(4)
    c = make_params(seed=7)
    alpha, lam, eta = 0.05, 0.3, 0.5
    tx = od.adaptive_decay(alpha, lam, schedule=eta, center=c)
    state, w = tx.init(params), params
    for t, g in enumerate(grads):
        u, state = tx.update(g, state, w)
        new = optax.apply_updates(w, u)
        mhat, d = adam_moments(grads[: t + 1])
        s = alpha * eta
        want = ravel(c) + (ravel(w) - ravel(c) - s * mhat / d) / (1 + s * lam / d)
        np.testing.assert_allclose(ravel(new), want, rtol=1e-12, atol=1e-14)
        w = new

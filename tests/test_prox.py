"""`prox_l2` (`_prox`): ``w_new = (w + u) / (1 + eta_t*lambda)``, stable for any lambda."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import make_grads, make_params, make_problem

import optax_decay as od


@pytest.mark.x64
def test_prox_l2_divides_the_decayed_elements_by_one_plus_eta_lambda():
    params = make_params()
    mask = jax.tree.map(lambda p: np.arange(p.size).reshape(p.shape) % 2 == 0, params)
    eta = lambda t: 1.0 / (1.0 + t)
    tx = od.prox_l2(0.7, schedule=eta, mask=mask)
    state, w = tx.init(params), params
    for t, g in enumerate(make_grads(params, 3)):
        u, state = tx.update(g, state, w)
        new = optax.apply_updates(w, u)
        want = {k: (w[k] + g[k]) / np.where(mask[k], 1 + eta(t) * 0.7, 1.0) for k in g}
        chex.assert_trees_all_close(new, want, rtol=1e-14, atol=1e-15)
        w = new


@pytest.mark.parametrize("lam", [1e3, 1e12, 1e30, float(np.finfo(np.float32).max)])
def test_prox_adam_huge_lambda_stays_finite(lam):
    params, (g,) = make_problem(1, jnp.float32)
    tx = od.prox_adam(1e-3, lam)
    u, _ = tx.update(g, tx.init(params), params)
    new = optax.apply_updates(params, u)
    chex.assert_tree_all_finite(new)
    # |(w - alpha*mhat/D) / (1 + lambda)| <= (|w| + alpha) / (1 + lambda)
    for w, x in zip(jax.tree.leaves(params), jax.tree.leaves(new), strict=True):
        assert float(jnp.max(jnp.abs(x))) <= (float(jnp.max(jnp.abs(w))) + 1e-3) / (1 + lam) * 1.001


@pytest.mark.x64
def test_prox_l2_toward_a_center():
    """w_new = c + (w + u - c)/(1 + eta_t*lambda): the prox of (eta_t*lambda/2)|y - c|^2."""
    params, c = make_params(), make_params(seed=5)
    tx = od.prox_l2(0.7, schedule=0.5, center=c)
    state, w = tx.init(params), params
    for g in make_grads(params, 3):
        u, state = tx.update(g, state, w)
        new = optax.apply_updates(w, u)
        want = {k: c[k] + (w[k] + g[k] - c[k]) / (1 + 0.5 * 0.7) for k in g}
        chex.assert_trees_all_close(new, want, rtol=1e-14, atol=1e-14)
        w = new

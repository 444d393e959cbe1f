"""`decoupled_decay` (`_decoupled`): ``u <- u - eta_t*lambda*w``, after the step."""

import chex
import jax.numpy as jnp
import optax
import pytest
from helpers import make_grads, make_params

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

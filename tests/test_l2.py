"""`add_l2_to_grad` (`_l2`): the gradient of ``(lambda/2)*||w||^2`` added to the updates."""

import chex
import optax
import pytest
from helpers import make_grads, make_params

import optax_decay as od


@pytest.mark.x64
def test_add_l2_to_grad_adds_lambda_w_to_the_decayed_leaves():
    params = make_params()
    lam = lambda t: 0.3 / (1.0 + t)
    tx = od.add_l2_to_grad(lam, mask={"w": True, "b": False, "k": True})
    state, w = tx.init(params), params
    for t, g in enumerate(make_grads(params, 3)):
        u, state = tx.update(g, state, w)
        chex.assert_trees_all_close(
            u, {k: g[k] + (k != "b") * lam(t) * w[k] for k in g}, rtol=1e-14, atol=1e-15
        )
        w = optax.apply_updates(w, u)

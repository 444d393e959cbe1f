"""Memory: with donated params and state the compiled update works in place."""

import jax
import jax.numpy as jnp
import optax
import pytest
from helpers import ALL


def compiled_memory(name, donate):
    params = {"w": jnp.ones((256, 256)), "b": jnp.ones((1024,))}
    tx = ALL[name](1e-3, 1e-4)
    state = tx.init(params)

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    lowered = jax.jit(step, donate_argnums=donate).lower(params, state, params)
    return lowered.compile().memory_analysis(), params


@pytest.mark.parametrize("name", sorted(ALL))
def test_donated_update_is_in_place(name):
    mem, params = compiled_memory(name, donate=(0, 1))
    if mem is None:
        pytest.skip("this backend reports no memory analysis")
    param_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
    # Every output buffer (params and state) reuses a donated input, up to the scalar counts.
    assert mem.alias_size_in_bytes >= mem.output_size_in_bytes - 64
    # No param-sized temporaries: no copy of v, D or the update is kept.
    assert mem.temp_size_in_bytes < 0.01 * param_bytes


def test_without_donation_nothing_is_aliased():
    # The check above can fail: without donation the outputs are fresh buffers.
    mem, _ = compiled_memory("adamp", donate=())
    if mem is None:
        pytest.skip("this backend reports no memory analysis")
    assert mem.alias_size_in_bytes == 0 and mem.output_size_in_bytes > 0

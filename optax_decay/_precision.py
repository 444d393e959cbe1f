"""Low-precision params: a warning when decay is lost, and float32 master weights.

With bfloat16 params, ``w * (1 - eta*lambda)`` rounds back to ``w`` whenever
``eta*lambda`` is below about half the dtype's resolution (``2**-8`` for
bfloat16): the decay is silently lost, step after step. The remedy chosen here
is float32 master weights: :func:`master_weights` keeps a float32 copy of the
params, runs the whole optimizer on it (so the moments are float32 too) and
hands back the update that moves the low-precision params to the rounded
master copy. It is deterministic, unlike stochastic rounding, at the price of
4 bytes per parameter.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_decay._checks import is_none, leaf_dtype, require_params


class DecayPrecisionWarning(UserWarning):
    """The decay per step at ``t = 0`` is below the resolution of the params' dtype."""


DECAY_PRECISION_MSG = (
    "`{name}`: the decay eta_t*lambda = {rate:.3g} per step (at t = 0) is below the "
    "resolution of {dtype} params (eps/2 = {limit:.3g}), so `w*(1 - eta_t*lambda)` rounds "
    "back to `w` and the decay is lost. {fix}"
)
FIX_LOW = (
    "Wrap the optimizer in `optax_decay.master_weights(...)` to keep float32 master "
    "weights, or keep the params in float32."
)
FIX_WIDE = (
    "Check the convention of `weight_decay` (the paper form is not multiplied by the "
    "learning rate; see `optax_decay.coupled_to_paper`), or use wider params."
)


def warn_if_decay_lost(name: str, rate: float | None, params: Any) -> None:
    """Warns if a decay rate ``rate`` (known at ``t = 0``) rounds away in a params dtype.

    Called by ``init``, which sees the dtypes of the (decayed) params even under
    ``jit``; once per dtype and call, so every optimizer that loses its decay says so.
    """
    if rate is None or rate <= 0:
        return
    dtypes = {
        np.dtype(leaf_dtype(leaf)).name
        for leaf in jax.tree.leaves(params)
        if hasattr(leaf, "dtype") or isinstance(leaf, float)
    }
    for dtype in sorted(dtypes):
        if not jnp.issubdtype(dtype, jnp.floating):
            continue
        limit = float(jnp.finfo(dtype).eps) / 2
        if rate < limit:
            warnings.warn(
                DECAY_PRECISION_MSG.format(
                    name=name,
                    rate=rate,
                    dtype=dtype,
                    limit=limit,
                    fix=FIX_LOW if jnp.finfo(dtype).bits < 32 else FIX_WIDE,
                ),
                DecayPrecisionWarning,
                stacklevel=2,
            )


class MasterWeightsState(NamedTuple):
    """State of :func:`master_weights`."""

    # Params-shaped: the `dtype` copy of each low-precision leaf, and an empty array of the
    # leaf's rank (shape (0, ..., 0)) for the leaves optimized as they are.
    master: optax.Params
    inner_state: optax.OptState  # the wrapped optimizer's state, built on the working params.


def _is_low(x: Any, dtype: Any) -> bool:
    x_dtype = leaf_dtype(x)
    return jnp.issubdtype(x_dtype, jnp.floating) and jnp.finfo(x_dtype).bits < jnp.finfo(dtype).bits


def master_weights(
    inner: optax.GradientTransformation, dtype: Any = jnp.float32
) -> optax.GradientTransformationExtraArgs:
    r"""Runs ``inner`` on a float32 master copy of low-precision params.

    .. math::

      \bar w_{t+1} = \bar w_t + \mathrm{inner}(g_t, \bar w_t), \qquad
      u_t = \mathrm{round}(\bar w_{t+1}) - w_t

    where ``\bar w`` is the master copy in ``dtype`` and ``round`` casts to the
    params' dtype, so that ``w_t + u_t`` is the rounded master copy. Leaves
    already at ``dtype`` or wider are optimized as they are. Small decays
    (``eta_t*lambda`` far below bfloat16's ``2**-8``) then accumulate in the
    master copy instead of rounding away; the inner optimizer's moments are
    float32 as well. Costs one ``dtype`` copy of the low-precision params;
    leaves at ``dtype`` or wider get the inner update unchanged and no copy.

    ``MasterWeightsState.master`` is a tree with the params' structure, so
    ``optax.tree.map_params`` maps sharding specs over it: a low-precision
    leaf holds its master copy, every other leaf an empty array of its rank
    (shape ``(0, ..., 0)``), which any spec of that rank can shard.

    The master copy is the source of truth: params changed outside the
    optimizer (e.g. reloaded) must be restored together with this state.

    Args:
      inner: the optimizer, e.g. ``optax_decay.adamw(...)``.
      dtype: the master dtype, float32 by default.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax, optax_decay
      >>> w = jnp.ones(3, jnp.bfloat16)
      >>> zero = jnp.zeros(3, jnp.bfloat16)
      >>> for tx in [optax_decay.sgdw(0.0, 1e-3), optax_decay.master_weights(optax_decay.sgdw(0.0, 1e-3))]:
      ...     p, state = w, tx.init(w)
      ...     for _ in range(100):
      ...         u, state = tx.update(zero, state, p)
      ...         p = optax.apply_updates(p, u)
      ...     print(p[0])
      1
      0.90625
    """
    inner = optax.with_extra_args_support(inner)

    def working(master, params):
        return jax.tree.map(lambda m, p: m if _is_low(p, dtype) else p, master, params)

    def init_fn(params):
        master = jax.tree.map(
            lambda p: (
                jnp.asarray(p, dtype)
                if _is_low(p, dtype)
                else jnp.zeros((0,) * np.ndim(p), leaf_dtype(p))
            ),
            params,
        )
        return MasterWeightsState(master=master, inner_state=inner.init(working(master, params)))

    def update_fn(updates, state, params=None, **extra_args):
        if updates is None:
            return None, state
        require_params("master_weights", updates, params)
        low = jax.tree.map(lambda p: _is_low(p, dtype), params)
        grads = jax.tree.map(
            lambda on, g: g if g is None or not on else g.astype(dtype),
            low,
            updates,
            is_leaf=is_none,
        )
        u, inner_state = inner.update(
            grads, state.inner_state, working(state.master, params), **extra_args
        )
        master = jax.tree.map(
            lambda on, m, d: (m + d).astype(dtype) if on and d is not None else m,
            low,
            state.master,
            u,
            is_leaf=is_none,
        )
        # In the params' dtype: w + (round(m) - w) == round(m) when the two are close.
        updates = jax.tree.map(
            lambda on, m, d, p: m.astype(leaf_dtype(p)) - p if on and d is not None else d,
            low,
            master,
            u,
            params,
            is_leaf=is_none,
        )
        return updates, MasterWeightsState(master=master, inner_state=inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)

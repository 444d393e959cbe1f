"""Decoupled weight decay, applied after the learning-rate step."""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optax_decay._checks import (
    check_decay_factor,
    check_nonnegative,
    concrete_product,
    require_params,
)
from optax_decay._convert import evaluate
from optax_decay._masks import MaskOrFn, masked
from optax_decay._precision import warn_if_decay_lost


class DecoupledDecayState(NamedTuple):
    """State of :func:`decoupled_decay` and :func:`prox_l2`."""

    count: chex.Array  # shape=(), dtype=jnp.int32: updates applied so far, t.


def decoupled_decay(
    weight_decay: float,
    schedule: optax.ScalarOrSchedule | None = None,
    mask: MaskOrFn = None,
) -> optax.GradientTransformation:
    r"""Decoupled weight decay: shrinks the weights by ``1 - eta_t*lambda`` per step.

    .. math::

      u \leftarrow u - \eta_t \lambda w, \qquad
      w_{t+1} = w_t + u = (1 - \eta_t \lambda) w_t + u_{\text{step}}

    Place it *after* the learning-rate step, so that ``u`` is already the
    parameter change ``-alpha(t)*eta_t*direction``; the decay is then neither
    preconditioned nor multiplied by the learning rate. This is the paper's
    convention: ``lambda`` is multiplied by the schedule multiplier ``eta_t``
    only. For the PyTorch/``optax.adamw`` convention pass the whole step size
    as ``schedule`` (``alpha(t)*eta_t``), as ``adamw(..., coupled=True)`` does.

    Args:
      weight_decay: ``lambda >= 0``. A constant factor ``1 - eta*lambda <= 0``
        is rejected, since it would flip the weights' signs.
      schedule: ``eta_t``, a float or a callable of the step count ``t``
        (``t = 0`` at the first update); ``None`` means 1.
      mask: a pytree of bools (``True``: decay the leaf) or of bool arrays
        shaped like the params (``True``: decay the element, e.g.
        ``FlatLayout.mask``), or a callable ``params -> pytree``.

    Returns:
      An :class:`optax.GradientTransformation` whose state counts the steps;
      ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax, optax_decay
      >>> tx = optax.chain(optax.sgd(0.1), optax_decay.decoupled_decay(0.5))
      >>> w = jnp.array([2.0]); g = jnp.array([1.0])
      >>> u, _ = tx.update(g, tx.init(w), w)
      >>> w + u  # (1 - 0.5) * 2 - 0.1 * 1
      Array([0.9], dtype=float32)

    References:
      Loshchilov & Hutter, *Decoupled Weight Decay Regularization*, 2019,
      https://arxiv.org/abs/1711.05101

    See also: :func:`prox_l2` (the exact proximal version), :func:`adamw`, :func:`sgdw`.
    """
    check_nonnegative("weight_decay", weight_decay)
    check_nonnegative("schedule", schedule)
    check_decay_factor("decoupled_decay", weight_decay, schedule)

    return scheduled_decay(
        "decoupled_decay", weight_decay, schedule, mask, lambda u, w, rate: u - rate * w
    )


def scheduled_decay(name, weight_decay, schedule, mask, leaf) -> optax.GradientTransformation:
    """Maps ``leaf(u, w, rate)`` over the tree, ``rate = eta_t*lambda`` in each leaf's dtype.

    The shared body of :func:`decoupled_decay` and :func:`prox_l2`: a step
    counter for ``eta_t``, the ``params`` check and the mask.
    """

    def init_fn(params):
        del params
        return DecoupledDecayState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        require_params(name, updates, params)
        eta = evaluate(schedule, state.count)

        def per_leaf(u, w):
            if u is None:
                return None
            warn_if_decay_lost(name, concrete_product(eta, weight_decay), w.dtype)
            # Cast before multiplying: a float32 schedule must not round eta*lambda.
            return leaf(u, w, jnp.asarray(eta, u.dtype) * jnp.asarray(weight_decay, u.dtype))

        updates = jax.tree.map(per_leaf, updates, params, is_leaf=lambda x: x is None)
        return updates, DecoupledDecayState(count=optax.safe_increment(state.count))

    return masked(optax.GradientTransformation(init_fn, update_fn), mask)

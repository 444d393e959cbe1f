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
    is_none,
    require_params,
    value_at_zero,
)
from optax_decay._convert import evaluate
from optax_decay._masks import MaskOrFn, masked
from optax_decay._precision import warn_if_decay_lost


class DecoupledDecayState(NamedTuple):
    """State of :func:`decoupled_decay`, :func:`prox_l2` and :func:`add_l2_to_grad`.

    Kept only when ``weight_decay`` or ``schedule`` is a schedule (a callable of
    ``t``); with constants the state is :class:`optax.EmptyState`. The field is
    not called ``count``, so that ``optax.tree.get(state, "count")`` finds the
    one counter of Adam in a chain, as it does for :func:`optax.adamw`.
    """

    schedule_count: chex.Array  # shape=(), dtype=jnp.int32: updates applied so far, t.


def decoupled_decay(
    weight_decay: optax.ScalarOrSchedule,
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
      weight_decay: ``lambda >= 0``, a float or a schedule ``lambda(t)``. A
        factor ``1 - eta_t*lambda <= 0`` is rejected, since it would flip the
        weights' signs (schedules are checked on steps up to ``10**7``).
      schedule: ``eta_t >= 0``, a float or a callable of the step count ``t``
        (``t = 0`` at the first update); ``None`` means 1.
      mask: a pytree of bools (``True``: decay the leaf) or of bool arrays
        shaped like the params (``True``: decay the element, e.g.
        ``FlatLayout.mask``), or a callable ``params -> pytree``.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` whose state counts the
      steps when a schedule needs them; ``update`` needs ``params``.

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
    return decoupled("decoupled_decay", weight_decay, schedule, mask)


def decoupled(name, weight_decay, schedule, mask, check_params=True, rate="eta_t*lambda"):
    """:func:`decoupled_decay` with its errors naming ``name`` (the optimizer that uses it).

    ``rate`` names ``schedule*weight_decay`` in the error message
    (``alpha(t)*eta_t*lambda`` for the coupled form).
    """
    check_nonnegative("weight_decay", weight_decay)
    check_nonnegative("schedule", schedule)
    check_decay_factor(name, weight_decay, schedule, rate)
    return scheduled_decay(
        name, weight_decay, schedule, mask, lambda u, w, rate: u - rate * w, check_params
    )


def scheduled_decay(
    name, weight_decay, schedule, mask, leaf, check_params=True, warn=True
) -> optax.GradientTransformationExtraArgs:
    """Maps ``leaf(u, w, rate)`` over the tree, ``rate = eta_t*lambda_t`` in each leaf's dtype.

    The shared body of :func:`add_l2_to_grad`, :func:`decoupled_decay` and
    :func:`prox_l2`: a step counter when a schedule needs one, the ``params``
    check (``check_params=False`` where the optimizer around it has checked
    them), the precision warning at ``init`` and the mask. ``update(None, ...)``
    returns ``None`` and the state unchanged, as :func:`optax.add_decayed_weights`.
    """
    needs_count = callable(weight_decay) or callable(schedule)
    eta0, lam0 = value_at_zero(schedule), value_at_zero(weight_decay)
    rate0 = None if not warn or eta0 is None or lam0 is None else eta0 * lam0

    def init_fn(params):
        warn_if_decay_lost(name, rate0, params)
        if needs_count:
            return DecoupledDecayState(schedule_count=jnp.zeros([], jnp.int32))
        return optax.EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if updates is None:
            return None, state
        if check_params:
            require_params(name, updates, params)
        count = state.schedule_count if needs_count else None
        eta, lam = evaluate(schedule, count), evaluate(weight_decay, count)

        def per_leaf(u, w):
            if u is None:
                return None
            u, w = jnp.asarray(u), jnp.asarray(w)
            # Cast before multiplying: a float32 schedule must not round eta*lambda.
            return leaf(u, w, jnp.asarray(eta, u.dtype) * jnp.asarray(lam, u.dtype))

        updates = jax.tree.map(per_leaf, updates, params, is_leaf=is_none)
        if needs_count:
            state = DecoupledDecayState(schedule_count=optax.safe_increment(count))
        return updates, state

    return masked(optax.GradientTransformationExtraArgs(init_fn, update_fn), mask)

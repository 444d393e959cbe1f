"""L2 regularization added to the gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from optax_decay._checks import check_nonnegative, require_params
from optax_decay._masks import MaskOrFn, masked


def add_l2_to_grad(weight_decay: float, mask: MaskOrFn = None) -> optax.GradientTransformation:
    r"""Adds the gradient of ``(lambda/2)*||w||^2`` to the updates.

    .. math::

      u \leftarrow u + \lambda w

    Place it *before* the preconditioner (``scale_by_adam``) and the step, so
    that the penalty is preconditioned and scaled like the loss gradient: this
    is SGD or Adam on ``f(w) + (lambda/2)*||w||^2`` ("Adam+L2"). ``lambda`` is
    not multiplied by the learning rate or the schedule here; the step that
    follows multiplies the whole update by ``alpha(t) * eta_t``.

    Args:
      weight_decay: ``lambda >= 0``.
      mask: a pytree of bools (``True``: decay the leaf) or of bool arrays
        shaped like the params (``True``: decay the element, e.g.
        ``FlatLayout.mask``), or a callable ``params -> pytree``.

    Returns:
      A stateless :class:`optax.GradientTransformation`; ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax, optax_decay
      >>> tx = optax.chain(optax_decay.add_l2_to_grad(0.1), optax.sgd(1.0))
      >>> w = jnp.array([1.0]); g = jnp.array([0.5])
      >>> u, _ = tx.update(g, tx.init(w), w)
      >>> u  # -(0.5 + 0.1 * 1.0)
      Array([-0.6], dtype=float32)

    References:
      Loshchilov & Hutter, *Decoupled Weight Decay Regularization*, 2019,
      https://arxiv.org/abs/1711.05101

    See also: :func:`decoupled_decay`, :func:`prox_l2`, :func:`adam_l2`, :func:`sgd_l2`.
    """
    check_nonnegative("weight_decay", weight_decay)

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        require_params("add_l2_to_grad", updates, params)
        updates = jax.tree.map(
            lambda u, w: None if u is None else u + jnp.asarray(weight_decay, u.dtype) * w,
            updates,
            params,
            is_leaf=lambda x: x is None,
        )
        return updates, state

    return masked(optax.GradientTransformation(init_fn, update_fn), mask)

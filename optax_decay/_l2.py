"""L2 regularization added to the gradient."""

from __future__ import annotations

import optax

from optax_decay._checks import check_nonnegative
from optax_decay._decoupled import CenterOrInit, scheduled_decay
from optax_decay._masks import MaskOrFn


def add_l2_to_grad(
    weight_decay: optax.ScalarOrSchedule, mask: MaskOrFn = None, center: CenterOrInit = None
) -> optax.GradientTransformationExtraArgs:
    r"""Adds the gradient of ``(lambda/2)*||w - c||^2`` to the updates (``c = 0`` by default).

    .. math::

      u \leftarrow u + \lambda (w - c)

    Place it *before* the preconditioner (``scale_by_adam``) and the step, so
    that the penalty is preconditioned and scaled like the loss gradient: this
    is SGD or Adam on ``f(w) + (lambda/2)*||w||^2`` ("Adam+L2"). ``lambda`` is
    not multiplied by the learning rate or the schedule here; the step that
    follows multiplies the whole update by ``alpha(t) * eta_t``.

    Args:
      weight_decay: ``lambda >= 0``, a float or a schedule ``lambda(t)``.
      mask: a pytree of bools (``True``: decay the leaf) or of bool arrays
        shaped like the params (``True``: decay the element, e.g.
        ``FlatLayout.mask``), or a callable ``params -> pytree``.
      center: ``c``: ``None`` (0), ``"init"`` or a pytree, as in
        :func:`decoupled_decay`. Toward pre-trained weights this is L2-SP
        (Li et al., 2018, https://arxiv.org/abs/1802.01483).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`, stateless unless
      ``weight_decay`` is a schedule (then it counts the steps); ``update``
      needs ``params``.

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
    return l2("add_l2_to_grad", weight_decay, mask, center=center)


def _l2_leaf(u, w, lam):
    return u + lam * w


def l2(name, weight_decay, mask, check_params=True, center=None):
    """:func:`add_l2_to_grad` with its errors naming ``name`` (the optimizer that uses it)."""
    check_nonnegative("weight_decay", weight_decay)
    return scheduled_decay(
        name, weight_decay, None, mask, _l2_leaf, check_params, warn=False, center=center
    )

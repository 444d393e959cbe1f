"""The proximal step of the L2 penalty."""

from __future__ import annotations

import optax

from optax_decay._checks import check_nonnegative
from optax_decay._decoupled import CenterOrInit, scheduled_decay
from optax_decay._masks import MaskOrFn


def prox_l2(
    weight_decay: optax.ScalarOrSchedule,
    schedule: optax.ScalarOrSchedule | None = None,
    mask: MaskOrFn = None,
    center: CenterOrInit = None,
) -> optax.GradientTransformation:
    r"""Proximal step of ``(eta_t*lambda/2)*||w - c||^2`` after the learning-rate step.

    .. math::

      w_{t+1} = \mathrm{prox}_{\eta_t \lambda \|\cdot\|^2/2}(w_t + u)
              = \frac{w_t + u}{1 + \eta_t \lambda},
      \qquad u \leftarrow k\,u - (1 - k)\,w_t, \quad k = \frac{1}{1 + \eta_t\lambda}

    With a ``center`` ``c``: ``w_{t+1} = c + (w_t + u - c)/(1 + eta_t*lambda)``.

    Chained after ``scale_by_adam`` and the step ``-alpha(t)*eta_t``, this is
    ProxAdam (Zhuang et al.). To first order in ``eta_t*lambda`` it equals
    :func:`decoupled_decay`; unlike it, it is stable for any ``lambda >= 0``:
    as ``eta_t*lambda`` grows the weights go to 0, never past it. ``lambda``
    is multiplied by ``eta_t`` only (paper convention).

    Args:
      weight_decay: ``lambda >= 0``, a float or a schedule ``lambda(t)``.
      schedule: ``eta_t >= 0``, a float or a callable of the step count ``t``
        (``t = 0`` at the first update); ``None`` means 1.
      mask: a pytree of bools (``True``: decay the leaf) or of bool arrays
        shaped like the params (``True``: decay the element, e.g.
        ``FlatLayout.mask``), or a callable ``params -> pytree``.
      center: ``c``: ``None`` (0), ``"init"`` or a pytree, as in
        :func:`decoupled_decay`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` whose state counts the
      steps when a schedule needs them; ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax, optax_decay
      >>> tx = optax.chain(optax.sgd(0.5), optax_decay.prox_l2(1.0))
      >>> w = jnp.array([3.0]); g = jnp.array([2.0])
      >>> u, _ = tx.update(g, tx.init(w), w)
      >>> w + u  # (3 - 0.5 * 2) / (1 + 1)
      Array([1.], dtype=float32)

    References:
      Zhuang et al., *Understanding AdamW through Proximal Methods and
      Scale-Freeness*, TMLR 2022, https://arxiv.org/abs/2202.00089

    See also: :func:`decoupled_decay`, :func:`prox_adam`.
    """
    return prox("prox_l2", weight_decay, schedule, mask, center=center)


def prox(name, weight_decay, schedule, mask, check_params=True, center=None):
    """:func:`prox_l2` with its errors naming ``name`` (the optimizer that uses it)."""
    check_nonnegative("weight_decay", weight_decay)
    check_nonnegative("schedule", schedule)

    def leaf(u, w, rate):
        # keep = 1/(1 + eta*lambda) and 1 - keep stay in [0, 1] however large lambda is.
        keep = 1 / (1 + rate)
        return keep * u - (1 - keep) * w

    return scheduled_decay(name, weight_decay, schedule, mask, leaf, check_params, center=center)

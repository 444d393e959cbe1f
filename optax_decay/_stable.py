"""Stable weight decay (AdamS): the decay divided by the root mean of Adam's second moment."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_decay._adaptive import _adam_init, _adam_moments, _check_adam_args
from optax_decay._checks import check_nonnegative, is_none, require_params
from optax_decay._convert import evaluate, step_size
from optax_decay._masks import (
    MaskOrFn,
    SegmentMultipliers,
    is_array_mask,
    is_multiplier,
    resolve_mask,
)


def adams(
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: optax.ScalarOrSchedule,
    *,
    schedule: optax.ScalarOrSchedule | None = None,
    mask: MaskOrFn = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype=None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdamS: Adam with stable weight decay, the decay rate divided by the RMS of ``vhat``.

    .. math::

      w_{t+1} = \left(1 - \frac{s_t \lambda_t m}{\sqrt{\bar v_t}}\right) w_t
                - s_t \frac{\hat m_t}{D_t}, \qquad
      \bar v_t = \frac{1}{N} \sum_{\text{leaves}} \sum_{\text{elements}} \hat v_t,

    elementwise, with ``w_t`` the params (the update returned is
    ``w_{t+1} - w_t``), ``s_t = alpha(t)*eta_t`` the step size, ``lambda_t`` the
    weight decay, ``m`` the mask's value at the element (1 decayed, 0 not, or a
    leaf's multiplier), ``mhat_t``, ``vhat_t`` and
    ``D_t = sqrt(vhat_t + eps_root) + eps`` the moments of :func:`scale_by_adam`
    (bias corrections ``1 - b1^{t+1}`` and ``1 - b2^{t+1}``, ``t = 0`` at the
    first update), and ``N`` the number of elements of all the params' leaves. When
    ``vbar_t = 0`` (no gradient has been nonzero yet) the decay term is 0:
    there is no decay, and no NaN.

    ``lambda`` is multiplied by the step size ``s_t`` (learning rate times
    schedule), as in the paper's code (the PyTorch convention of
    :func:`adamw` with ``coupled=True``), and divided by the one scalar
    ``sqrt(vbar_t)``: every element is decayed at the same rate, unlike
    :func:`adamp`, whose rate is per element. ``eps`` and ``eps_root`` enter
    ``D_t`` only, not ``sqrt(vbar_t)``, as in the paper's code.

    *Which elements the mean takes.* ``vbar_t`` is the mean over every element
    of every leaf, decayed or not: the mask chooses where the decay is
    applied, not what ``vbar_t`` measures. This is what the paper's code does
    (it averages over all parameters with a gradient, in every parameter
    group, whatever that group's ``weight_decay``), and it keeps the decay of
    one leaf independent of which other leaves are masked. ``None`` leaves of
    the params are left out, as parameters without a gradient are there. The
    mean is the same however the params are split into leaves (a tree and its
    :func:`flat_layout` buffers give the same result), except for padding: the
    ``p`` zeros of ``flat_layout(..., pad_to_multiple_of=n)`` are elements,
    so they scale ``vbar_t`` by ``N/(N + p)``; pass
    ``weight_decay * sqrt(N/(N + p))`` to undo it exactly.

    *One global reduction.* ``vbar_t`` is one scalar reduced over the whole
    tree each step, so on sharded params the update needs a collective (an
    all-reduce of the sums): unlike the package's elementwise optimizers, its
    sharded step is not purely local.

    *A factor <= 0 is not rejected, nor clipped.* The factor
    ``1 - s_t*lambda_t*m/sqrt(vbar_t)`` depends on the gradients, so it cannot
    be checked when the optimizer is built, and it is applied as written: it
    is <= 0 (the weights flip sign or vanish) whenever the RMS of the
    gradients, ``sqrt(vbar_t)``, falls to ``s_t*lambda_t*m`` or below. The
    decay grows without bound as the gradients vanish, e.g. near an
    interpolating minimum; keep ``s_t*lambda_t*m`` well below the gradients'
    RMS (``alpha = 1e-3`` and ``lambda = 5e-4`` give ``s*lambda = 5e-7``).
    Only what is static is checked: ``lambda``, ``alpha`` and ``eta_t`` must be
    finite and >= 0 (schedules on steps up to ``10**7``), ``b1``, ``b2`` in [0, 1).

    Not scale-free: multiplying the loss by ``k`` multiplies ``sqrt(vbar_t)``
    by ``k`` and so divides the decay rate by ``k`` (Adam's step itself is
    unchanged, up to ``eps``), whereas the decay of :func:`adamw` does not
    depend on ``k``. If every gradient element has the same magnitude ``c``
    at every step, then ``vhat_t = c^2`` exactly (``v_t = (1 - b2^{t+1})c^2``
    cancels the bias correction) and AdamS is ``adamw(..., coupled=True)``
    with ``weight_decay = lambda/c``.

    Args:
      learning_rate: ``alpha``, a float or a schedule ``alpha(t)``.
      weight_decay: ``lambda >= 0``, a float or a schedule ``lambda(t)``,
        multiplied by the step size ``alpha(t)*eta_t`` and divided by
        ``sqrt(vbar_t)``.
      schedule: ``eta_t``, a float or a callable of ``t``; ``None`` means 1.
      mask: which leaves or elements are decayed: a pytree of bools
        (``True``: decay the leaf), of numbers ``m >= 0`` (the leaf is decayed
        with ``m*lambda``), of bool arrays with the shapes of the params
        (``True``: decay the element, e.g. ``FlatLayout.mask``), or a callable
        ``params -> pytree``; see :mod:`optax_decay._masks`. Masked-out leaves
        and elements take the plain Adam step and still count in ``vbar_t``.
      b1, b2, eps, eps_root, mu_dtype: as in :func:`scale_by_adam`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` whose state is an
      :class:`optax.ScaleByAdamState`; ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_decay import adams
      >>> tx = adams(0.1, 2.0, eps=0.0)
      >>> w = jnp.array([2.0, -1.0]); g = jnp.array([1.0, 7.0])
      >>> u, _ = tx.update(g, tx.init(w), w)
      >>> w + u  # vbar = (1 + 49)/2 = 25: (1 - 0.1 * 2 / 5) * w - 0.1 * sign(g)
      Array([ 1.82, -1.06], dtype=float32)

    References:
      Xie, Xu, Zhang, Sato & Sugiyama, *On the Overlooked Pitfalls of Weight
      Decay and How to Mitigate Them: A Gradient-Norm Perspective*, NeurIPS
      2023, https://arxiv.org/abs/2011.11152

    See also: :func:`adamw` (``coupled=True``: the same decay without the
    division by ``sqrt(vbar_t)``), :func:`adamp` (a per-element adaptive decay).
    """
    _check_adam_args(b1, b2, eps, eps_root)
    check_nonnegative("weight_decay", weight_decay)
    step = step_size(learning_rate, schedule)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if updates is None:
            return None, state
        require_params("adams", updates, params)
        decay_on = (
            jax.tree.map(lambda _: True, params) if mask is None else resolve_mask(mask, params)
        )
        lam = evaluate(weight_decay, state.count)
        s = evaluate(step, state.count)
        _, mu_hat, denom, state = _adam_moments(updates, state, b1, b2, eps, eps_root, mu_dtype)
        inv_rms = _inverse_rms(state.nu, b2, state.count)
        # The decay rate s*lambda/sqrt(vbar), one scalar, in the widest dtype of the sums.
        rate = jnp.asarray(s, inv_rms.dtype) * jnp.asarray(lam, inv_rms.dtype) * inv_rms

        def leaf(m, d, w, on):
            if m is None:
                return None
            w = jnp.asarray(w)
            adam = -jnp.asarray(s, d.dtype) * (m / d)
            if is_multiplier(on):  # a per-leaf multiplier of lambda (a Python float)
                return adam - (rate * on).astype(w.dtype) * w
            k = rate.astype(w.dtype)
            if isinstance(on, SegmentMultipliers):  # a flat buffer: a multiplier per segment
                return on.select(w, lambda v: adam - (rate * v).astype(w.dtype) * w, adam)
            if is_array_mask(on):
                # On a mesh with Explicit axes the sharding is part of the type: an array
                # mask typed there takes its leaf's, as jnp.where requires.
                target = jax.typeof(w).sharding
                if target.mesh.explicit_axes and jax.typeof(on).sharding.mesh.explicit_axes:
                    on = jax.sharding.reshard(on, target)
                return jnp.where(on, adam - k * w, adam)  # per-element values, not scalars
            return adam - k * w if on else adam

        updates = jax.tree.map(leaf, mu_hat, denom, params, decay_on, is_leaf=is_none)
        return updates, state

    return optax.GradientTransformationExtraArgs(_adam_init(mu_dtype), update_fn)


def _inverse_rms(nu: Any, b2: Any, count: Any) -> jax.Array:
    """``1/sqrt(vbar)``, ``vbar`` the mean of ``nu/(1 - b2^count)`` over all elements; 0 at 0.

    Each leaf is summed in its dtype promoted to at least float32 (bfloat16 moments
    would lose the small terms), the sums added in the widest of those dtypes, and
    the bias correction applied once, to the scalar.
    """
    leaves = jax.tree.leaves(nu)  # None leaves (no update) are not leaves
    size = sum(int(v.size) for v in leaves)
    if size == 0:
        return jnp.zeros([], jnp.result_type(float))
    wide = jnp.result_type(*(jnp.promote_types(v.dtype, jnp.float32) for v in leaves))
    total = sum(jnp.sum(v, dtype=wide) for v in leaves)
    vbar = total / (size * (1 - jnp.asarray(b2, wide) ** count).astype(wide))
    positive = vbar > 0
    # 0 means no decay; the inner where keeps 1/sqrt(0) = inf out of the unselected branch.
    return jnp.where(positive, 1 / jnp.sqrt(jnp.where(positive, vbar, 1)), 0).astype(wide)

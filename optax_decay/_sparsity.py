"""Proximal steps of the sparsity penalties: L1 (soft thresholding) and group lasso."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_decay._checks import check_nonnegative, is_none
from optax_decay._decoupled import CenterOrInit, scheduled_decay
from optax_decay._masks import MaskOrFn, resolve_mask

PENALTIES = ("l2", "l1")

PENALTY_MSG = (
    '`penalty` of `{name}` must be one of {allowed}, got {value!r}: "l2" is '
    '(lambda/2)*||w||^2 (weight decay), "l1" is lambda*||w||_1 (soft thresholding, '
    "exact zeros)."
)

AXIS_TYPE_MSG = (
    "`axis` of `prox_group_lasso` must be None (one group per leaf), an int or a tuple of "
    "ints (the axes a group's norm is taken over), got {value!r}. Under "
    "`optax.inject_hyperparams` an int `axis` is turned into an array: pass "
    '`static_args=("axis",)` (with "mask" if the mask is a callable).'
)

AXIS_RANGE_MSG = (
    "`axis`={axis!r} of `prox_group_lasso` does not fit the params leaf {path} of shape "
    "{shape}: {why}. Each axis must lie in [-{ndim}, {ndim}) and appear once. Pass an "
    "`axis` valid for every decayed leaf, or mask this leaf out (e.g. "
    "`mask=optax_decay.weight_decay_mask`, which skips biases and scalars)."
)


def check_penalty(name: str, penalty: Any) -> None:
    """Raises unless ``penalty`` is ``"l2"`` or ``"l1"``."""
    if not (isinstance(penalty, str) and penalty in PENALTIES):
        raise ValueError(PENALTY_MSG.format(name=name, allowed=PENALTIES, value=penalty))


def prox_l1(
    weight_decay: optax.ScalarOrSchedule,
    schedule: optax.ScalarOrSchedule | None = None,
    mask: MaskOrFn = None,
    center: CenterOrInit = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Proximal step of ``eta_t*lambda*||w - c||_1`` after the learning-rate step: soft thresholding.

    .. math::

      z = w_t + u, \qquad
      w_{t+1} = \mathrm{prox}_{\eta_t\lambda\|\cdot\|_1}(z)
              = \operatorname{sign}(z)\,\max(|z| - \eta_t\lambda,\ 0),
      \qquad u \leftarrow w_{t+1} - w_t

    elementwise, where ``w_t`` are the params, ``u`` the parameter change so
    far in the chain (e.g. ``-alpha(t)*eta_t*g`` after ``optax.sgd``),
    ``eta_t`` the schedule multiplier and ``lambda`` the weight decay. With a
    ``center`` ``c`` the thresholding is around ``c``:
    ``w_{t+1} = c + sign(z - c)*max(|z - c| - eta_t*lambda, 0)``.

    Coordinates with ``|z - c| <= eta_t*lambda`` become exactly ``c``: this is
    the proximal step of the lasso penalty, which makes weights sparse. The
    update there is ``-(w_t - c)``, so with no center ``optax.apply_updates``
    gives ``w_t + (-w_t) = 0`` exactly, in every float dtype. With a center it
    gives ``c`` up to the rounding of ``w_t - c`` (exactly ``c`` when that
    difference is exact, e.g. for ``c/2 <= w_t <= 2c``). Elsewhere the update
    is ``u - sign(z)*eta_t*lambda``, so ``w_t + u`` is not recomputed. Unlike
    :func:`decoupled_decay` it is stable for any ``lambda >= 0``: a weight
    reaches ``c`` and stops there, it is never flipped past it. ``lambda`` is
    multiplied by ``eta_t`` only (paper convention); for the coupled form pass
    the whole step size ``alpha(t)*eta_t`` as ``schedule``. The threshold is
    absolute, not relative to ``w``, so no precision warning is given.

    Chained after another proximal step it composes penalties: ``optax.chain(step,
    prox_l1(l1), prox_l2(l2))`` is the proximal step of the elastic net
    ``l1*||w||_1 + (l2/2)*||w||^2``, ``sign(z)*max(|z| - eta_t*l1, 0)/(1 + eta_t*l2)``.

    Args:
      weight_decay: ``lambda >= 0``, a float or a schedule ``lambda(t)``.
      schedule: ``eta_t >= 0``, a float or a callable of the step count ``t``
        (``t = 0`` at the first update); ``None`` means 1.
      mask: leaves to threshold, per leaf (bools, or numbers >= 0 that
        multiply ``lambda``) or per element (bool arrays shaped like the
        params, ``True``: threshold the element), or a callable ``params ->
        pytree``; see :mod:`optax_decay._masks`.
      center: ``c``: ``None`` (0), ``"init"`` or a pytree, as in
        :func:`decoupled_decay`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` whose state counts the
      steps when a schedule needs them; ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from optax_decay import prox_l1
      >>> tx = optax.chain(optax.sgd(0.5), prox_l1(0.25))
      >>> w = jnp.array([3.0, 0.2]); g = jnp.array([2.0, 0.1])
      >>> u, _ = tx.update(g, tx.init(w), w)
      >>> optax.apply_updates(w, u)  # z = [2, 0.15]: [2 - 0.25, 0]
      Array([1.75, 0.  ], dtype=float32)

    References:
      Tibshirani, *Regression Shrinkage and Selection via the Lasso*, 1996;
      Parikh & Boyd, *Proximal Algorithms*, 2014, Sec. 6.5.2,
      https://web.stanford.edu/~boyd/papers/prox_algs.html;
      Yun et al., *Adaptive Proximal Gradient Methods for Structured Neural
      Networks*, NeurIPS 2021, https://arxiv.org/abs/2112.09331

    See also: :func:`prox_l2`, :func:`prox_group_lasso`, :func:`prox_adam`
    (``penalty="l1"``), :func:`adamp` (``penalty="l1"``).
    """
    return soft_threshold("prox_l1", weight_decay, schedule, mask, center=center)


def _soft_threshold_leaf(u, w, rate):
    z = w + u
    # -w where thresholded: w + (-w) is exactly 0 in IEEE arithmetic. Elsewhere the
    # change u - sign(z)*rate, not w_new - w, which would round twice.
    return jnp.where(jnp.abs(z) <= rate, -w, u - jnp.sign(z) * rate)


def soft_threshold(name, weight_decay, schedule, mask, check_params=True, center=None):
    """:func:`prox_l1` with its errors naming ``name`` (the optimizer that uses it)."""
    check_nonnegative("weight_decay", weight_decay)
    check_nonnegative("schedule", schedule)
    return scheduled_decay(
        name,
        weight_decay,
        schedule,
        mask,
        _soft_threshold_leaf,
        check_params,
        warn=False,
        center=center,
    )


def prox_group_lasso(
    weight_decay: optax.ScalarOrSchedule,
    schedule: optax.ScalarOrSchedule | None = None,
    mask: MaskOrFn = None,
    axis: int | tuple[int, ...] | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Proximal step of the group lasso ``eta_t*lambda*sum_g ||w_g||_2``: block soft thresholding.

    .. math::

      z = w_t + u, \qquad
      w_{t+1,g} = \mathrm{prox}_{\eta_t\lambda\|\cdot\|_2}(z_g)
                = z_g \max\!\left(0,\ 1 - \frac{\eta_t\lambda}{\|z_g\|_2}\right),
      \qquad u \leftarrow w_{t+1} - w_t

    for each group ``g``, where ``w_t`` are the params, ``u`` the parameter
    change so far in the chain, ``eta_t`` the schedule multiplier, ``lambda``
    the weight decay and ``||z_g||_2`` the Euclidean norm of the group. A group
    whose norm is at most ``eta_t*lambda`` becomes exactly 0 (its update is
    ``-w_t``), the others shrink toward 0 along their own direction. A zero
    group stays zero, with no NaN (the factor is not formed at ``||z_g|| = 0``).
    ``lambda`` is multiplied by ``eta_t`` only (paper convention).

    Groups. With ``axis=None`` a group is a whole params leaf. With ``axis``
    (an int or a tuple of ints) the norm is taken over those axes, so a group
    is one index of the remaining axes: for a Dense kernel of shape ``(in,
    out)``, ``axis=0`` gives one group per output unit (a column, pruning
    units), ``axis=1`` one per input feature (a row). An axis out of range of
    a decayed leaf raises, naming the leaf; mask out the leaves it does not fit.

    Flat buffers (:func:`flat_layout`): a buffer is one 1-D leaf holding every
    leaf of its dtype, so with ``axis=None`` (or ``axis=0``) the group is the
    *whole buffer*, not a layer, and the per-layer groups of the tree are lost.
    Nothing in a buffer records where its layers are, so this cannot be
    detected: use the params tree for group lasso. Likewise with a per-element
    (bool array) mask, such as ``layout.mask``, the group norm is taken over
    the whole group, masked-out elements included, and only the masked-in
    elements are changed (by the same factor).

    Args:
      weight_decay: ``lambda >= 0``, a float or a schedule ``lambda(t)``.
      schedule: ``eta_t >= 0``, a float or a callable of the step count ``t``
        (``t = 0`` at the first update); ``None`` means 1.
      mask: leaves to threshold, per leaf (bools, or numbers >= 0 that
        multiply ``lambda``) or per element (bool arrays, see above), or a
        callable ``params -> pytree``; see :mod:`optax_decay._masks`.
      axis: ``None`` (a group per leaf), or the axis or axes each group's norm
        is taken over (negative axes count from the end). Under
        :func:`optax.inject_hyperparams` pass an int ``axis`` in ``static_args``.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` whose state counts the
      steps when a schedule needs them; ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from optax_decay import prox_group_lasso
      >>> tx = optax.chain(optax.sgd(1.0), prox_group_lasso(1.0, axis=0))
      >>> w = jnp.array([[3.0, 0.3], [4.0, 0.4]]); g = jnp.zeros((2, 2))
      >>> u, _ = tx.update(g, tx.init(w), w)
      >>> optax.apply_updates(w, u)  # column norms 5 and 0.5: factors 1 - 1/5 and 0
      Array([[2.4, 0. ],
             [3.2, 0. ]], dtype=float32)

    References:
      Yuan & Lin, *Model Selection and Estimation in Regression with Grouped
      Variables*, JRSS B 2006; Parikh & Boyd, *Proximal Algorithms*, 2014,
      Sec. 6.5.4, https://web.stanford.edu/~boyd/papers/prox_algs.html;
      Yun et al., *Adaptive Proximal Gradient Methods for Structured Neural
      Networks*, NeurIPS 2021, https://arxiv.org/abs/2112.09331

    See also: :func:`prox_l1`, :func:`prox_l2`.
    """
    axes = _check_axis(axis)
    check_nonnegative("weight_decay", weight_decay)
    check_nonnegative("schedule", schedule)

    def leaf(u, w, rate):
        z = w + u
        acc = jnp.promote_types(z.dtype, jnp.float32)  # the norm in float32 at least
        norm = jnp.sqrt(jnp.sum(jnp.square(z.astype(acc)), axis=axes, keepdims=True))
        rate = rate.astype(acc)
        kept = norm > rate  # False for a zero group, whatever the rate: no 0/0
        scale = (rate / jnp.where(kept, norm, 1)).astype(z.dtype)
        # u - scale*(w + u), written without z: z is then only read by the norm, which
        # XLA fuses with its computation instead of writing z out (one pass less).
        return jnp.where(kept, (1 - scale) * u - scale * w, -w)

    inner = scheduled_decay("prox_group_lasso", weight_decay, schedule, mask, leaf, warn=False)

    def check(params):
        _check_axis_fits(axis, axes, params, mask)

    def init_fn(params):
        check(params)
        return inner.init(params)

    def update_fn(updates, state, params=None, **extra_args):
        if updates is not None and params is not None:
            check(params)
        return inner.update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _check_axis(axis: Any) -> tuple[int, ...] | None:
    """``axis`` as a tuple of ints (None stays None); raises on anything else."""
    if axis is None:
        return None
    items = axis if isinstance(axis, (tuple, list)) else (axis,)
    ok = len(items) > 0 and all(
        isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_)) for a in items
    )
    if not ok:
        raise TypeError(AXIS_TYPE_MSG.format(value=axis))
    return tuple(int(a) for a in items)


def _check_axis_fits(axis: Any, axes: tuple[int, ...] | None, params: Any, mask: Any) -> None:
    """Raises, naming the leaf, if ``axes`` does not fit a decayed params leaf."""
    if axes is None:
        return
    on = jax.tree.map(lambda _: True, params, is_leaf=is_none)
    if mask is not None:
        on = resolve_mask(mask, params)

    def fits(path, w, m):
        if w is None or m is False:  # resolve_mask gives False for a multiplier 0
            return
        ndim = np.ndim(w)
        normal = [a + ndim if a < 0 else a for a in axes]
        why = None
        if any(not 0 <= a < ndim for a in normal):
            why = f"an axis is out of range for rank {ndim}"
        elif len(set(normal)) != len(normal):
            why = f"an axis appears twice (as {tuple(normal)})"
        if why is not None:
            where = jax.tree_util.keystr(path) or "(root)"
            raise ValueError(
                AXIS_RANGE_MSG.format(axis=axis, path=where, shape=np.shape(w), why=why, ndim=ndim)
            )

    jax.tree_util.tree_map_with_path(fits, params, on, is_leaf=is_none)

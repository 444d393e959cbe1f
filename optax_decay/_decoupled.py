"""Decoupled weight decay, applied after the learning-rate step."""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optax_decay._checks import (
    check_decay_factor,
    check_nonnegative,
    require_params,
    value_at_zero,
)
from optax_decay._convert import evaluate
from optax_decay._masks import MaskOrFn, SegmentMultipliers, is_multiplier, masked
from optax_decay._precision import warn_if_decay_lost


class DecoupledDecayState(NamedTuple):
    """State of :func:`decoupled_decay`, :func:`cautious_decay`, :func:`prox_l2` and
    :func:`add_l2_to_grad`.

    Kept only when ``weight_decay`` or ``schedule`` is a schedule (a callable of
    ``t``), or when ``center="init"``; otherwise the state is
    :class:`optax.EmptyState`. The field is not called ``count``, so that
    ``optax.tree.get(state, "count")`` finds the one counter of Adam in a chain,
    as it does for :func:`optax.adamw`.
    """

    schedule_count: chex.Array | None  # shape=(), int32: updates applied so far, t; or None.
    center: Any = None  # center="init": the (decayed) params seen by `init`; else None.


def decoupled_decay(
    weight_decay: optax.ScalarOrSchedule,
    schedule: optax.ScalarOrSchedule | None = None,
    mask: MaskOrFn = None,
    center: CenterOrInit = None,
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
      center: the point ``c`` the weights decay toward (``w`` becomes ``w - c``
        in the decay term): ``None`` (0); ``"init"``, the params seen by
        ``init``, kept in the state (one copy of the decayed leaves: 4 more
        bytes per float32 parameter); or a pytree used as given (e.g.
        pre-trained weights), with the params' structure or a prefix of it,
        each leaf of its param's shape or a scalar.

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

    See also: :func:`prox_l2` (the exact proximal version), :func:`cautious_decay`,
    :func:`adamw`, :func:`sgdw`.
    """
    return decoupled("decoupled_decay", weight_decay, schedule, mask, center=center)


def cautious_decay(
    weight_decay: optax.ScalarOrSchedule,
    schedule: optax.ScalarOrSchedule | None = None,
    mask: MaskOrFn = None,
    center: CenterOrInit = None,
) -> optax.GradientTransformation:
    r"""Cautious weight decay: decoupled decay only where the step does not move ``w`` away from 0.

    .. math::

      u \leftarrow u - \eta_t \lambda \, \mathbb{1}[u \cdot w \le 0] \, w

    elementwise. This is Algorithm 1 of Chen et al., ``x <- x - eta*(d + lambda
    * 1[d*x >= 0] * x)`` for the optimizer's direction ``d``, written in
    Optax's sign convention, where the parameter change so far is ``u =
    -alpha(t)*eta_t*d``: a coordinate is decayed when the step already moves it
    toward zero, or leaves it (``u = 0`` is decayed), and left alone when the
    step moves it away from zero. The decay then never fights the optimizer,
    and the loss is not changed into a regularized one. With ``center``, ``w``
    is ``w - c`` in both the indicator and the decay. The paper form, as in
    :func:`decoupled_decay`: the rate is ``eta_t*lambda``; pass the whole step
    size as ``schedule`` for the PyTorch form (``adamw(..., cautious=True,
    coupled=True)`` does).

    Place it after the learning-rate step, like :func:`decoupled_decay`.

    Args:
      weight_decay: ``lambda >= 0``, a float or a schedule ``lambda(t)``; a
        factor ``1 - eta_t*lambda <= 0`` is rejected.
      schedule: ``eta_t >= 0``, a float or a callable of ``t``; ``None`` means 1.
      mask: leaves to decay, per leaf (bools, or numbers >= 0 that multiply lambda) or per element
        (bool arrays), or a
        callable ``params -> pytree``.
      center: ``None``, ``"init"`` or a pytree, as in :func:`decoupled_decay`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax, optax_decay
      >>> tx = optax.chain(optax.sgd(0.1), optax_decay.cautious_decay(0.5))
      >>> w = jnp.array([2.0, 2.0]); g = jnp.array([1.0, -1.0])
      >>> u, _ = tx.update(g, tx.init(w), w)
      >>> w + u  # decayed where the step moves w toward 0: [(1 - 0.5)*2 - 0.1, 2 + 0.1]
      Array([0.9, 2.1], dtype=float32)

    References:
      Chen et al., *Cautious Weight Decay*, 2025, https://arxiv.org/abs/2510.12402

    See also: :func:`decoupled_decay`, :func:`adamw`, :func:`sgdw`.
    """
    return decoupled("cautious_decay", weight_decay, schedule, mask, center=center, cautious=True)


def _decoupled_leaf(u, w, rate):
    return u - rate * w


def _cautious_leaf(u, w, rate):
    # Not decayed where the step moves w away from 0: u and w of the same strict sign.
    # Compared by sign, not by u*w > 0, which underflows to 0 for tiny u and w.
    away = jnp.where(w > 0, u > 0, u < 0)
    return jnp.where(away, u, u - rate * w)


def decoupled(
    name,
    weight_decay,
    schedule,
    mask,
    check_params=True,
    rate="eta_t*lambda",
    center=None,
    cautious=False,
):
    """:func:`decoupled_decay` (or, ``cautious=True``, :func:`cautious_decay`) with its
    errors naming ``name`` (the optimizer that uses it).

    ``rate`` names ``schedule*weight_decay`` in the error message
    (``alpha(t)*eta_t*lambda`` for the coupled form).
    """
    check_nonnegative("weight_decay", weight_decay)
    check_nonnegative("schedule", schedule)
    check_decay_factor(name, weight_decay, schedule, rate)
    leaf = _cautious_leaf if cautious else _decoupled_leaf

    def check_multiplier(m):  # a mask's multipliers scale lambda: check the largest factor
        if m > 1.0:
            scaled = (lambda t: m * weight_decay(t)) if callable(weight_decay) else m * weight_decay
            check_decay_factor(name, scaled, schedule, f"{m:g}*{rate}")

    return scheduled_decay(
        name,
        weight_decay,
        schedule,
        mask,
        leaf,
        check_params,
        center=center,
        check_multiplier=check_multiplier,
    )


CENTER_MSG = (
    '`center` must be None (decay toward 0), "init" (toward the params seen by `init`) '
    "or a pytree of arrays with the params' structure (or a prefix of it, e.g. a number), "
    "got {what}."
)

CENTER_SHAPE_MSG = (
    "`center` leaf {path} has shape {center_shape}, but the param leaf there has shape "
    "{param_shape}. A center leaf must have exactly its param's shape, or be a scalar: "
    "it is not broadcast, since a wrong shape would silently decay toward the wrong point."
)

CenterOrInit = Any  # None | "init" | a pytree (or a prefix of one) of arrays or numbers


def check_center(center: Any) -> None:
    """Raises unless ``center`` is None, ``"init"`` or a pytree (checked on the params later)."""
    if isinstance(center, str) and center != "init":
        raise ValueError(CENTER_MSG.format(what=repr(center)))
    if callable(center):
        raise TypeError(CENTER_MSG.format(what=f"the callable {center!r}"))


def _stop(x: Any) -> bool:
    """None, or a leaf that :func:`optax.masked` hides from the transform it wraps."""
    return x is None or isinstance(x, optax.MaskedNode)


def center_tree(center: Any, params: Any) -> Any:
    """``center`` broadcast to the params' structure, with each leaf's shape checked."""
    stop = _stop
    try:
        tree = jax.tree.broadcast(center, params, is_leaf=stop)
    except (ValueError, TypeError, KeyError) as err:
        what = f"a tree of structure {jax.tree.structure(center)} for params of structure "
        raise ValueError(
            CENTER_MSG.format(what=what + str(jax.tree.structure(params, is_leaf=stop)))
        ) from err

    def check(path, c, w):
        if stop(w):
            return w
        c_shape, w_shape = jnp.shape(c), jnp.shape(w)
        if c_shape not in ((), w_shape):
            raise ValueError(
                CENTER_SHAPE_MSG.format(
                    path=jax.tree_util.keystr(path) or "(root)",
                    center_shape=c_shape,
                    param_shape=w_shape,
                )
            )
        return c

    return jax.tree_util.tree_map_with_path(check, tree, params, is_leaf=stop)


def initial_center(center: Any, params: Any) -> Any:
    """What a state keeps for ``center``: a copy of ``params`` for ``"init"``, else None.

    A copy (``jnp.array`` copies), so that donating the params does not free it. A
    pytree center is checked against the params here, at ``init``.
    """
    if isinstance(center, str):  # "init"
        return jax.tree.map(jnp.array, params)
    if center is not None:
        center_tree(center, params)
    return None


def current_center(center: Any, stored: Any, params: Any) -> Any:
    """``c`` with the params' structure: None leaves without a center, ``stored`` for "init"."""
    if center is None:
        return jax.tree.map(lambda _: None, params, is_leaf=_stop)
    return stored if isinstance(center, str) else center_tree(center, params)


def scaled(rate: jax.Array, multiplier: float) -> jax.Array:
    """``rate*multiplier`` as the tree path computes it (a ``True`` leaf is not multiplied)."""
    return rate if multiplier == 1.0 else rate * jnp.asarray(multiplier, rate.dtype)


def scheduled_decay(
    name,
    weight_decay,
    schedule,
    mask,
    leaf,
    check_params=True,
    warn=True,
    center=None,
    check_multiplier=None,
) -> optax.GradientTransformationExtraArgs:
    """Maps ``leaf(u, w, rate)`` over the tree, ``rate = eta_t*lambda_t`` in each leaf's dtype.

    The shared body of :func:`add_l2_to_grad`, :func:`decoupled_decay` and
    :func:`prox_l2`: a step counter when a schedule needs one, the ``params``
    check (``check_params=False`` where the optimizer around it has checked
    them), the precision warning at ``init``, the ``center`` (``w - c`` is
    passed to ``leaf`` as ``w``) and the mask. ``update(None, ...)`` returns
    ``None`` and the state unchanged, as :func:`optax.add_decayed_weights`.
    """
    check_center(center)
    needs_count = callable(weight_decay) or callable(schedule)
    eta0, lam0 = value_at_zero(schedule), value_at_zero(weight_decay)
    rate0 = None if not warn or eta0 is None or lam0 is None else eta0 * lam0

    def init_fn(params):
        warn_if_decay_lost(name, rate0, params)
        count = jnp.zeros([], jnp.int32) if needs_count else None
        stored = initial_center(center, params)
        if needs_count or stored is not None:
            return DecoupledDecayState(count, stored)
        return optax.EmptyState()

    def update_fn(updates, state, params=None, decay_multipliers=None, **extra_args):
        del extra_args
        if updates is None:
            return None, state
        if check_params:
            require_params(name, updates, params)
        count = state.schedule_count if needs_count else None
        eta, lam = evaluate(schedule, count), evaluate(weight_decay, count)

        def per_leaf(u, w, c=None, m=None):
            if _stop(u):
                return u
            u, w = jnp.asarray(u), jnp.asarray(w)
            if c is not None:
                w = w - jnp.asarray(c, w.dtype)
            # Cast before multiplying: a float32 schedule must not round eta*lambda.
            rate = jnp.asarray(eta, u.dtype) * jnp.asarray(lam, u.dtype)
            if is_multiplier(m):  # a per-leaf multiplier of lambda (a Python float)
                rate = rate * jnp.asarray(m, u.dtype)
            if isinstance(m, SegmentMultipliers):  # a flat buffer: one multiplier per segment
                return m.select(u, lambda v: leaf(u, w, scaled(rate, v)), u)
            return leaf(u, w, rate)

        c = current_center(center, getattr(state, "center", None), params)
        m = decay_multipliers  # the resolved mask, passed by `masked` when it has multipliers
        m = jax.tree.map(lambda _: None, params, is_leaf=_stop) if m is None else m
        updates = jax.tree.map(per_leaf, updates, params, c, m, is_leaf=_stop)
        if needs_count:
            state = state._replace(schedule_count=optax.safe_increment(count))
        return updates, state

    return masked(optax.GradientTransformationExtraArgs(init_fn, update_fn), mask, check_multiplier)

r"""Constrained parameter regularization (CPR): a bound on each leaf's norm, kept by a multiplier.

Franke, Hefenbrock, Koehler & Hutter replace the one weight decay ``lambda``
of AdamW by a constraint per parameter leaf ``j``: its regularization value
``R(w_j)`` (here the squared L2 norm, ``||w_j||^2``, the sum of the squared
elements) must stay below a bound ``kappa_j``. Each leaf carries a Lagrange
multiplier ``lambda_j >= 0`` that grows while the leaf is above its bound and
shrinks, down to 0, while it is below; the leaf is then decayed by
``2*lambda_j*w_j``, the multiplier times the gradient of ``R``.

What the reference does
-----------------------
The reference is ``AdamCPR`` of ``pytorch-cpr`` 0.3.1 (the authors' package),
read in its ``_single_tensor_adamcpr`` (the default on CPU) and
``_multi_tensor_adamcpr`` (``foreach=True``, the default on GPU) for the
``reg_function="l2"`` regularizer. Per parameter tensor and per step, with
the step number ``T = t + 1`` (1 at the first update):

1. The Adam step comes first and is applied to the parameter:
   ``z = w - lr * mhat/(sqrt(vhat) + eps)`` (plain Adam, no weight decay).
2. Then, if the tensor is regularized (its parameter group has
   ``regularize=True``; a plain list of tensors has ``False``, so nothing is
   regularized; an ``nn.Module`` is split by ``group_parameters_for_cpr_optimizer``,
   which leaves out biases, norm layers and embeddings) and ``T > k`` (``k``
   the warm-start length, 0 for the other initialisations), the multiplier is
   updated from the norm of ``z``, *after* the Adam step, and used at once:
   ``lambda <- max(0, lambda + (mu/n)*(||z||^2 - kappa))`` with ``mu`` the
   argument ``kappa_update`` (1.0 by default) divided by the tensor's number
   of elements ``n``, then ``w_new = z - 2*lambda*z``. The correction is not
   multiplied by the learning rate (``reg_by_lr=False``, the default, the
   paper's Algorithm 1); with ``reg_by_lr=True`` it is ``2*lr*lambda*z``. A
   learning-rate scheduler changes ``lr`` only, so by default it does not
   scale the correction.
3. The bound ``kappa`` (``kappa_init_method``, ``kappa_init_param``):

   * ``"uniform"``: ``kappa = kappa_init_param`` for every tensor.
   * ``"dependent"``: ``kappa = kappa_init_param * ||w_0||^2``, the factor
     times the squared norm of the initial parameters (taken when the
     optimizer first sees the tensor, before any update).
   * ``"warm_start"``: ``k = kappa_init_param`` steps of plain Adam; at
     ``T = k`` the bound is set to ``||z||^2``, the squared norm after ``k``
     updates, and the constraint acts from ``T = k + 1`` on.
   * ``"inflection_point"`` (``kappa_init_param`` unused; the paper's
     Kappa-IP): until its bound is found a tensor is not constrained. After
     every step (after the correction) the norm ``r = ||w_new||`` (the norm,
     not its square) is averaged: ``e <- r`` while ``T < S`` and
     ``e <- d*e + (1 - d)*r`` from ``T = S`` on, with ``S = reg_step_size``
     (200) and ``d = reg_ema_decay`` (0.99). Every ``S`` steps (``T`` a
     multiple of ``S`` and ``T > S``) the relative growth of that average,
     ``g = (e - e_prev)/e``, is compared with the previous one: when
     ``T > 3S`` and ``g_prev > g > 0.01`` (the growth has started to slow
     down but is still over 1%), the bound is set to ``||w_new||^2``. Then
     ``e_prev <- e``, and ``g_prev <- g`` when ``T > 2S``.

The state is one multiplier and one bound per tensor (float32 tensors in the
reference whatever the parameters' dtype; a float64 peer comparison promotes
them), plus three scalars per tensor for the inflection point.

Differences, all deliberate:

* The reference's CPU path (``_single_tensor_adamcpr``) never finds the
  inflection point: it tests ``kappa == 1000`` where the unset bound is its
  sentinel ``1e6``, so the bound stays ``1e6`` for ever. This module follows
  the ``foreach=True`` path, which does what the paper describes.
* The reference marks an unset bound with the value ``1e6`` and constrains
  the tensor with it meanwhile (active only if ``||w||^2 > 1e6``); here an
  unset bound is ``+inf`` and the tensor is not constrained until it is set.
* ``schedule`` ``eta_t`` multiplies the correction: ``2*eta_t*lambda_j*z``
  (this package's paper form). With ``schedule=None`` and a learning-rate
  schedule this is the reference with a scheduler and ``reg_by_lr=False``;
  ``coupled=True`` multiplies by the whole step size ``alpha(t)*eta_t``, the
  reference's ``reg_by_lr=True``.
* ``mask=None`` constrains every leaf (this package's convention); pass
  ``mask=optax_decay.weight_decay_mask`` for the reference's grouping of a
  module (matrices and kernels in, biases and norm scales out).
* The multiplier and bound are kept in the params' real dtype, at least
  float32, and only the squared L2 norm is implemented (the reference also
  has ``"l1"``, ``"std"`` and ``"huber"``).

Names: ``kappa_init_method`` and ``kappa_init_param`` are the reference's;
its ``kappa_update`` (the paper's ``mu``) is ``lagmul_rate`` here, the rate of
the Lagrange multiplier, and ``reg_step_size``, ``reg_ema_decay`` are
``inflection_interval``, ``inflection_ema_decay``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_decay._adaptive import scale_by_adam
from optax_decay._alias import _checked, _step
from optax_decay._checks import check_nonnegative, concrete_float, require_params
from optax_decay._convert import evaluate, step_size
from optax_decay._decoupled import _stop
from optax_decay._masks import MaskOrFn, masked_per_leaf

KAPPA_INIT_METHODS = ("uniform", "dependent", "warm_start", "inflection_point")

# The inflection point is taken only while the norm still grows by more than this
# fraction per interval (the reference's threshold).
INFLECTION_MIN_GROWTH = 0.01

METHOD_MSG = (
    "`kappa_init_method` must be one of {methods}, got {value!r}: how the bound kappa on "
    "each leaf's squared norm is set. 'uniform' (kappa = kappa_init_param) and 'dependent' "
    "(kappa = kappa_init_param * ||w_0||^2) need a `kappa_init_param`; 'warm_start' needs "
    "the number of steps; 'inflection_point' needs none."
)

PARAM_MISSING_MSG = (
    "`kappa_init_method={method!r}` needs `kappa_init_param`: {what}. E.g. "
    "`kappa_init_param={example}`."
)

PARAM_UNUSED_MSG = (
    "`kappa_init_method='inflection_point'` finds the bound itself and takes no "
    "`kappa_init_param` (got {value!r}); drop it, or choose another `kappa_init_method`."
)

PARAM_NEGATIVE_MSG = (
    "`kappa_init_param` must be a finite number >= 0 for `kappa_init_method={method!r}`, got "
    "{value!r}: a squared norm is never negative, so a negative bound would grow the "
    "multiplier for ever and drive the leaf to 0."
)

WARM_START_MSG = (
    "`kappa_init_param` is the number of warm-start steps for `kappa_init_method='warm_start'` "
    "and must be an integer >= 1, got {value!r}: the bound is the squared norm after that "
    "many updates."
)

INTERVAL_MSG = (
    "`inflection_interval` must be an integer >= 1, got {value!r}: the number of steps "
    "between two samples of the norm's growth (the reference's default is 200)."
)

EMA_DECAY_MSG = (
    "`inflection_ema_decay` must lie in [0, 1), got {value!r}: the decay of the moving "
    "average of the norm (the reference's default is 0.99)."
)


class CPRState(NamedTuple):
    """State of :func:`cpr`: one multiplier and one bound per constrained leaf.

    Every per-leaf field is a pytree with the params' structure, each leaf a
    scalar in the param's real dtype (at least float32); leaves left out by the
    mask hold :class:`optax.MaskedNode` (inside the :func:`optax.masked` state).
    Nothing has the params' shapes. The counter is not called ``count``, so that
    ``optax.tree.get(state, "count")`` finds Adam's in :func:`adamcpr`.
    """

    step_count: chex.Array  # shape=(), int32: updates applied so far, t.
    lagmul: optax.Updates  # per leaf: shape=(), the multiplier lambda_j >= 0.
    kappa: optax.Updates  # per leaf: shape=(), the bound kappa_j; +inf while not set.
    # kappa_init_method="inflection_point" only, else None; per leaf, shape=():
    norm_ema: Any = None  # e_j, the moving average of ||w_j||.
    prev_norm_ema: Any = None  # e_j at the previous sample.
    prev_growth: Any = None  # g_j at the previous sample.


def _map_unzip(fn: Any, n: int, params: Any, *trees: Any) -> tuple[Any, ...]:
    """``fn(w, *xs)`` on each leaf ``w`` of ``params``, its ``n`` outputs as ``n`` trees.

    The outputs are picked by mapping over ``params`` (each leaf of which holds one
    output tuple), not by treating every tuple as a leaf, which a params tree with
    tuple nodes would confuse.
    """
    out = jax.tree.map(lambda w, *xs: w if _stop(w) else fn(w, *xs), params, *trees, is_leaf=_stop)
    return tuple(
        jax.tree.map(lambda w, o, i=i: w if _stop(w) else o[i], params, out, is_leaf=_stop)
        for i in range(n)
    )


def _state_dtype(w: Any) -> Any:
    """The real dtype of a leaf's norm, multiplier and bound: the param's, at least float32."""
    real = jnp.finfo(jnp.asarray(w).dtype).dtype
    return jnp.promote_types(real, jnp.float32)


def _sq_norm(w: Any, dtype: Any) -> jax.Array:
    """``||w||^2``, the sum of the squared magnitudes, accumulated in ``dtype``."""
    return jnp.sum(jnp.square(jnp.abs(jnp.asarray(w)).astype(dtype)))


def _check_args(method, kappa_init_param, lagmul_rate, interval, ema_decay) -> None:
    if not isinstance(method, str) or method not in KAPPA_INIT_METHODS:
        raise ValueError(METHOD_MSG.format(methods=KAPPA_INIT_METHODS, value=method))
    if method == "inflection_point":
        if kappa_init_param is not None:
            raise ValueError(PARAM_UNUSED_MSG.format(value=kappa_init_param))
    elif kappa_init_param is None:
        what, example = {
            "uniform": ("the bound kappa on each leaf's squared norm", "1.0"),
            "dependent": ("the factor of the initial squared norm", "1.0"),
            "warm_start": ("the number of steps before the bound is taken", "1000"),
        }[method]
        raise ValueError(PARAM_MISSING_MSG.format(method=method, what=what, example=example))
    elif callable(kappa_init_param):
        raise TypeError(PARAM_NEGATIVE_MSG.format(method=method, value=kappa_init_param))
    else:
        v = concrete_float(kappa_init_param)
        if method == "warm_start":
            if v is not None and not (np.isfinite(v) and v >= 1 and v == int(v)):
                raise ValueError(WARM_START_MSG.format(value=kappa_init_param))
        elif v is not None and not (np.isfinite(v) and v >= 0):
            raise ValueError(PARAM_NEGATIVE_MSG.format(method=method, value=kappa_init_param))
    check_nonnegative("lagmul_rate", lagmul_rate)
    s = concrete_float(interval)
    if s is not None and not (s >= 1 and s == int(s)):
        raise ValueError(INTERVAL_MSG.format(value=interval))
    d = concrete_float(ema_decay)
    if d is not None and not 0.0 <= d < 1.0:
        raise ValueError(EMA_DECAY_MSG.format(value=ema_decay))


def cpr(
    kappa_init_method: str,
    kappa_init_param: float | None = None,
    *,
    lagmul_rate: optax.ScalarOrSchedule = 1.0,
    schedule: optax.ScalarOrSchedule | None = None,
    mask: MaskOrFn = None,
    inflection_interval: int = 200,
    inflection_ema_decay: float = 0.99,
) -> optax.GradientTransformationExtraArgs:
    r"""Constrained parameter regularization: keeps each leaf's squared norm under a bound.

    Per leaf ``j`` with ``n_j`` elements, after the learning-rate step (so that
    ``u_j`` is already the parameter change):

    .. math::

      z_j = w_j + u_j, \qquad
      \lambda_j \leftarrow \max\Bigl(0,\ \lambda_j
          + \frac{\mu_t}{n_j}\bigl(\|z_j\|^2 - \kappa_j\bigr)\Bigr)
          \ \text{ if } a_{j,t}, \qquad
      u_j \leftarrow u_j - 2\,\eta_t\,\lambda_j\, z_j

    so ``w_{t+1} = (1 - 2*eta_t*lambda_j) z_j``: the multiplier ``lambda_j``
    (0 at ``init``) is updated from the norm *after* the step and used at
    once. ``||z||^2`` is the sum of the squared elements, ``mu_t`` is
    ``lagmul_rate``, ``eta_t`` is ``schedule`` and ``t`` the number of updates
    already applied. The constraint is active, ``a_{j,t}``, once the bound
    ``kappa_j`` is set and ``t + 1 > k``; ``kappa_j`` is set by
    ``kappa_init_method``:

    * ``"uniform"``: ``kappa_j = c`` (``c = kappa_init_param``), ``k = 0``;
    * ``"dependent"``: ``kappa_j = c*||w_{j,0}||^2``, the params seen by
      ``init``, ``k = 0``;
    * ``"warm_start"``: ``k = c`` updates unconstrained, then ``kappa_j =
      ||z_j||^2`` at ``t + 1 = k`` (the norm after ``k`` updates);
    * ``"inflection_point"``: ``k = 0`` and ``kappa_j`` unset (``+inf``) until
      found, from ``r = ||w_{j,t+1}||`` and ``T = t + 1``, interval ``S`` and
      decay ``d``: ``e_j <- r`` for ``T < S``, ``e_j <- d*e_j + (1 - d)*r``
      for ``T >= S``; when ``T > S`` and ``S`` divides ``T``, ``g = (e_j -
      e_j')/e_j`` with ``e_j'`` the previous sample; if ``T > 3S`` and
      ``g' > g > 0.01`` (``g'`` the previous ``g``), ``kappa_j = r^2``; then
      ``e_j' <- e_j`` and, when ``T > 2S``, ``g' <- g``. This is the step at
      which the growth of the norm starts to slow down.

    The correction is multiplied by ``eta_t`` only, not by the learning rate
    (the paper's form and pytorch-cpr's default); pass the whole step size
    ``alpha(t)*eta_t`` as ``schedule`` to multiply it by the learning rate,
    as ``adamcpr(..., coupled=True)`` does. The module docstring
    (:mod:`optax_decay._cpr`) states pytorch-cpr's update and the
    differences. A multiplier above ``1/(2*eta_t)`` flips the leaf's sign, as in
    the reference: keep ``lagmul_rate`` moderate. On flat buffers
    (:func:`flat_layout`) a leaf is a whole buffer, so one constraint covers all
    params of a dtype and a per-element ``layout.mask`` is rejected: use the tree
    path for per-leaf constraints (a buffer is a plain array, this cannot be
    checked here).

    Args:
      kappa_init_method: ``"uniform"``, ``"dependent"``, ``"warm_start"`` or
        ``"inflection_point"``.
      kappa_init_param: ``c``: the bound (``"uniform"``, ``>= 0``), the factor
        of the initial squared norm (``"dependent"``, ``>= 0``) or the number
        of warm-start updates (``"warm_start"``, an integer ``>= 1``); must be
        ``None`` for ``"inflection_point"``.
      lagmul_rate: ``mu >= 0``, the rate of the multipliers (pytorch-cpr's
        ``kappa_update``), divided by each leaf's number of elements; a float
        or a schedule.
      schedule: ``eta_t >= 0``, a float or a callable of ``t``; ``None`` means 1.
      mask: the leaves to constrain, a pytree of Python bools (or a prefix of
        one) or a callable ``params -> pytree``; ``None`` constrains every
        leaf. Per-element (array) masks and multipliers are rejected.
      inflection_interval: ``S``, the steps between two samples of the norm's
        growth (``"inflection_point"``; pytorch-cpr's ``reg_step_size``).
      inflection_ema_decay: ``d`` in ``[0, 1)``, the decay of the norm's moving
        average (``"inflection_point"``; pytorch-cpr's ``reg_ema_decay``).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with a :class:`CPRState`
      (inside :func:`optax.masked`'s state when ``mask`` is given); ``update``
      needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from optax_decay import cpr
      >>> tx = optax.chain(optax.sgd(0.5), cpr("uniform", 1.0, lagmul_rate=0.1))
      >>> w = jnp.array([3.0]); g = jnp.array([2.0])
      >>> u, _ = tx.update(g, tx.init(w), w)
      >>> w + u  # z = 2, lambda = 0.1*(4 - 1) = 0.3, (1 - 2*0.3)*2
      Array([0.8], dtype=float32)

    References:
      Franke, Hefenbrock, Koehler & Hutter, *Improving Deep Learning
      Optimization through Constrained Parameter Regularization*, NeurIPS
      2024, https://arxiv.org/abs/2311.09058

    See also: :func:`adamcpr`, :func:`decoupled_decay`.
    """
    return _cpr(
        "cpr",
        kappa_init_method,
        kappa_init_param,
        lagmul_rate,
        schedule,
        mask,
        inflection_interval,
        inflection_ema_decay,
    )


def _cpr(name, method, kappa_init_param, lagmul_rate, schedule, mask, interval, ema_decay):
    """:func:`cpr` with its errors naming ``name`` (the optimizer that uses it)."""
    _check_args(method, kappa_init_param, lagmul_rate, interval, ema_decay)
    check_nonnegative("schedule", schedule)
    inflection = method == "inflection_point"

    def per_leaf(fn, *trees):
        return jax.tree.map(lambda w, *xs: w if _stop(w) else fn(w, *xs), *trees, is_leaf=_stop)

    def init_fn(params):
        def bound(w):
            dt = _state_dtype(w)
            if method == "uniform":
                return jnp.asarray(kappa_init_param, dt)
            if method == "dependent":
                return jnp.asarray(kappa_init_param, dt) * _sq_norm(w, dt)
            return jnp.full([], jnp.inf, dt)  # set later

        zeros = per_leaf(lambda w: jnp.zeros([], _state_dtype(w)), params)
        return CPRState(
            step_count=jnp.zeros([], jnp.int32),
            lagmul=zeros,
            kappa=per_leaf(bound, params),
            norm_ema=zeros if inflection else None,
            prev_norm_ema=zeros if inflection else None,
            prev_growth=zeros if inflection else None,
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if updates is None:
            return None, state
        require_params(name, updates, params)
        count = state.step_count
        T = count + 1  # the reference's step number, 1 at the first update
        eta, mu = evaluate(schedule, count), evaluate(lagmul_rate, count)
        warm = kappa_init_param if method == "warm_start" else 0

        def leaf(w, u, lam, kap):
            dt = lam.dtype
            z = jnp.asarray(w) + jnp.asarray(u)
            r2 = _sq_norm(z, dt)
            is_set = jnp.isfinite(kap)
            active = is_set & (T > jnp.asarray(warm))
            rate = jnp.asarray(mu, dt) / jnp.asarray(jnp.size(w), dt)
            lam = jnp.where(
                active, jnp.maximum(lam + rate * (r2 - jnp.where(is_set, kap, 0)), 0), lam
            )
            if method == "warm_start":
                kap = jnp.where(~is_set & (T == jnp.asarray(warm)), r2, kap)
            u_dt = jnp.asarray(u).dtype
            factor = (2 * jnp.asarray(eta, dt) * lam).astype(u_dt)
            # u - factor*(w + u), written without z: z is then only read by the norm, which
            # XLA fuses with its computation instead of writing z out (one pass less).
            return (1 - factor) * u - factor * jnp.asarray(w), lam, kap

        new_updates, lagmul, kappa = _map_unzip(leaf, 3, params, updates, state.lagmul, state.kappa)
        state = state._replace(step_count=optax.safe_increment(count), lagmul=lagmul, kappa=kappa)
        if inflection:
            state = _find_inflection(state, params, new_updates, T, interval, ema_decay)
        return new_updates, state

    inner = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return masked_per_leaf(name, inner, mask, "a bound on its squared norm")


def _find_inflection(state, params, updates, T, interval, ema_decay):
    """One step of the inflection-point search, on the params after the whole update."""
    S = jnp.asarray(interval)
    sample = (T > S) & (T % S == 0)

    def leaf(w, u, kap, e, e_prev, g_prev):
        dt = kap.dtype
        r2 = _sq_norm(jnp.asarray(w) + jnp.asarray(u), dt)
        r = jnp.sqrt(r2)
        d = jnp.asarray(ema_decay, dt)
        e_new = jnp.where(T >= S, d * e + (1 - d) * r, r)
        g = (e_new - e_prev) / e_new
        found = sample & (T > 3 * S) & (g_prev > g) & (g > INFLECTION_MIN_GROWTH)
        unset = ~jnp.isfinite(kap)
        keep = lambda new, old: jnp.where(unset, new, old)  # frozen once the bound is set
        return (
            keep(jnp.where(found, r2, kap), kap),
            keep(e_new, e),
            keep(jnp.where(sample, e_new, e_prev), e_prev),
            keep(jnp.where(sample & (T > 2 * S), g, g_prev), g_prev),
        )

    trees = (updates, state.kappa, state.norm_ema, state.prev_norm_ema, state.prev_growth)
    kappa, norm_ema, prev_norm_ema, prev_growth = _map_unzip(leaf, 4, params, *trees)
    return state._replace(
        kappa=kappa, norm_ema=norm_ema, prev_norm_ema=prev_norm_ema, prev_growth=prev_growth
    )


def adamcpr(
    learning_rate: optax.ScalarOrSchedule,
    kappa_init_method: str = "inflection_point",
    kappa_init_param: float | None = None,
    *,
    lagmul_rate: optax.ScalarOrSchedule = 1.0,
    coupled: bool = False,
    inflection_interval: int = 200,
    inflection_ema_decay: float = 0.99,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype=None,
    schedule: optax.ScalarOrSchedule | None = None,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdamCPR: Adam with constrained parameter regularization instead of weight decay.

    .. math::

      z_j = w_j - \alpha(t)\eta_t \hat m_{j,t} / D_{j,t}, \qquad
      \lambda_j \leftarrow \max\Bigl(0,\ \lambda_j
          + \frac{\mu_t}{n_j}\bigl(\|z_j\|^2 - \kappa_j\bigr)\Bigr)
          \ \text{ if } a_{j,t}, \qquad
      w_{j,t+1} = (1 - 2\,\gamma_t\,\lambda_j)\, z_j

    per leaf ``j`` with ``n_j`` elements: the Adam step of :func:`scale_by_adam`
    (``D_t = sqrt(vhat_t + eps_root) + eps``) with step size
    ``alpha(t)*eta_t``, then :func:`cpr`, whose docstring defines the
    multiplier ``lambda_j``, the bound ``kappa_j`` and when the constraint is
    active (``a_{j,t}``). ``gamma_t = eta_t`` (paper form, the default), or
    ``alpha(t)*eta_t`` with ``coupled=True``. This is pytorch-cpr's
    ``AdamCPR(lr=alpha, kappa_init_method=..., kappa_init_param=...,
    kappa_update=mu, reg_by_lr=coupled)`` on the tensors its parameter groups
    regularize (here: ``mask``). For ``"inflection_point"`` it matches the
    reference's ``foreach=True`` path; its default CPU path never sets the
    bound (see :mod:`optax_decay._cpr`).

    Args:
      learning_rate: ``alpha``, a float or a schedule.
      kappa_init_method: ``"uniform"``, ``"dependent"``, ``"warm_start"`` or
        ``"inflection_point"`` (the default, which needs no parameter).
      kappa_init_param: the bound, the factor or the warm-start length, as in
        :func:`cpr`.
      lagmul_rate: ``mu >= 0``, the multipliers' rate (pytorch-cpr's
        ``kappa_update``, default 1), divided by each leaf's size.
      coupled: multiply the correction by the learning rate (pytorch-cpr's
        ``reg_by_lr=True``).
      inflection_interval, inflection_ema_decay: ``S`` and ``d`` of
        ``"inflection_point"``, as in :func:`cpr`.
      b1, b2, eps, eps_root, mu_dtype: as in :func:`scale_by_adam`.
      schedule: ``eta_t``, a float or a callable of ``t``; ``None`` means 1.
      mask: the leaves to constrain, Python bools per leaf or a callable, e.g.
        ``optax_decay.weight_decay_mask`` (biases and norm scales left out, as
        pytorch-cpr does for a module); ``None`` constrains every leaf.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_decay import adamcpr
      >>> tx = adamcpr(0.5, "uniform", 1.0, lagmul_rate=0.1)
      >>> w = jnp.array([2.5]); g = jnp.array([1.0])
      >>> u, _ = tx.update(g, tx.init(w), w)
      >>> w + u  # z = 2.5 - 0.5 = 2, lambda = 0.1*(4 - 1) = 0.3, (1 - 2*0.3)*2
      Array([0.8], dtype=float32)

    References:
      Franke, Hefenbrock, Koehler & Hutter, *Improving Deep Learning
      Optimization through Constrained Parameter Regularization*, NeurIPS
      2024, https://arxiv.org/abs/2311.09058; pytorch-cpr,
      https://github.com/automl/CPR

    See also: :func:`cpr`, :func:`adamw`.
    """
    correction = step_size(learning_rate, schedule) if coupled else schedule
    return _checked(
        "adamcpr",
        optax.chain(
            scale_by_adam(b1, b2, eps, eps_root, mu_dtype),
            _step(learning_rate, schedule),
            _cpr(
                "adamcpr",
                kappa_init_method,
                kappa_init_param,
                lagmul_rate,
                correction,
                mask,
                inflection_interval,
                inflection_ema_decay,
            ),
        ),
    )

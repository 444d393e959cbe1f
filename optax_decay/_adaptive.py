"""Adam's direction, and the adaptive decay of AdamP that shares its moments."""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optax_decay._checks import (
    check_beta,
    check_float_params,
    check_nonnegative,
    is_none,
    require_params,
)
from optax_decay._convert import evaluate, step_size
from optax_decay._decoupled import (
    CenterOrInit,
    check_center,
    current_center,
    initial_center,
    scaled,
)
from optax_decay._masks import (
    MaskOrFn,
    SegmentMultipliers,
    is_array_mask,
    is_multiplier,
    resolve_mask,
)
from optax_decay._sparsity import check_penalty


class AdaptiveDecayState(NamedTuple):
    """State of :func:`adaptive_decay` and :func:`adamp` with ``center="init"``.

    The fields of :class:`optax.ScaleByAdamState` and the params seen by
    ``init``. Without ``center="init"`` the state is a plain
    :class:`optax.ScaleByAdamState`.
    """

    count: chex.Array  # shape=(), int32
    mu: optax.Updates
    nu: optax.Updates
    center: optax.Params


def _adam_moments(updates, state, b1, b2, eps, eps_root, mu_dtype):
    """One Adam moment update: returns ``m_t``, ``mhat_t``, ``D_t`` and the new state.

    The single place where ``D_t = sqrt(vhat_t + eps_root) + eps`` is formed,
    so that ``scale_by_adam`` and ``adaptive_decay`` use the same ``vhat``.
    ``m_t`` is returned before the bias correction (and before the cast to
    ``mu_dtype``) so that a caller can fold ``1/(1 - b1^t)`` into a scalar.
    """
    mu = optax.tree.update_moment(updates, state.mu, b1, 1)
    nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
    count_inc = optax.safe_increment(state.count)
    mu_hat = optax.tree.bias_correction(mu, b1, count_inc)
    nu_hat = optax.tree.bias_correction(nu, b2, count_inc)
    denom = jax.tree.map(
        lambda v: None if v is None else jnp.sqrt(v + eps_root) + eps, nu_hat, is_leaf=is_none
    )
    new_state = optax.ScaleByAdamState(
        count=count_inc, mu=optax.tree.cast(mu, mu_dtype), nu=optax.tree.cast_like(nu, state.nu)
    )
    return mu, mu_hat, denom, new_state


def _check_adam_args(b1, b2, eps, eps_root):
    check_beta("b1", b1)
    check_beta("b2", b2)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)


def _adam_init(mu_dtype):
    def init_fn(params):
        check_float_params(params)
        return optax.ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params, dtype=mu_dtype),
            nu=optax.tree.zeros_like(params),
        )

    return init_fn


def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype=None,
) -> optax.GradientTransformation:
    r"""Adam's preconditioned direction ``mhat_t / D_t``, the same as :func:`optax.scale_by_adam`.

    .. math::

      m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
      v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \\
      \hat m_t = \frac{m_t}{1-\beta_1^{t+1}}, \quad
      \hat v_t = \frac{v_t}{1-\beta_2^{t+1}}, \quad
      D_t = \sqrt{\hat v_t + \epsilon_{root}} + \epsilon, \quad
      u \leftarrow \hat m_t / D_t

    with ``t`` the number of updates already applied (the bias correction of
    the first update uses exponent 1). The state is
    :class:`optax.ScaleByAdamState`, so checkpoints are interchangeable with
    Optax's. It is written here, rather than re-exported, so that
    :func:`adaptive_decay` computes ``D_t`` with exactly the same operations.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: ``epsilon >= 0`` added outside the square root.
      eps_root: ``epsilon_root >= 0`` added inside the square root.
      mu_dtype: dtype of the first moment; ``None`` keeps the params' dtype.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp, optax_decay
      >>> tx = optax_decay.scale_by_adam()
      >>> g = jnp.array([0.5, -2.0])
      >>> u, _ = tx.update(g, tx.init(g))
      >>> u  # first step: mhat/D = g/(|g| + eps)
      Array([ 1., -1.], dtype=float32)

    References:
      Kingma & Ba, *Adam: A Method for Stochastic Optimization*, 2015,
      https://arxiv.org/abs/1412.6980
    """
    _check_adam_args(b1, b2, eps, eps_root)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        if updates is None:
            return None, state
        _, mu_hat, denom, state = _adam_moments(updates, state, b1, b2, eps, eps_root, mu_dtype)
        updates = jax.tree.map(
            lambda m, d: None if m is None else m / d, mu_hat, denom, is_leaf=is_none
        )
        return updates, state

    return optax.GradientTransformationExtraArgs(_adam_init(mu_dtype), update_fn)


def adaptive_decay(
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
    center: CenterOrInit = None,
    penalty: str = "l2",
) -> optax.GradientTransformation:
    r"""The Adam step with the preconditioned, adaptive decay of "AdamP".

    .. math::

      w_{t+1} = (I + \eta_t \lambda \alpha D_t^{-1})^{-1}
                \left[w_t - \eta_t \alpha D_t^{-1} \hat m_t\right]
              = \frac{w_t - \eta_t\alpha \hat m_t / D_t}{1 + \eta_t\alpha\lambda / D_t}

    with ``D_t = sqrt(vhat_t + eps_root) + eps`` elementwise, the ``mhat``,
    ``vhat`` of :func:`scale_by_adam` and the step size ``alpha(t)*eta_t``.
    It is the minimizer of

    .. math::

      \langle y - w_t, \hat m_t\rangle + \frac{\lambda}{2}\|y\|^2
      + \frac{1}{2\eta_t\alpha}\|y - w_t\|^2_{D_t},

    the proximal step of the *unpreconditioned* penalty in Adam's metric, so
    each coordinate is decayed by ``1/(1 + eta_t*alpha*lambda/D_t)``: strongly
    where gradients are small. Unlike AdamW it is not scale-free. The
    returned update is ``w_{t+1} - w_t``.

    With ``penalty="l1"`` the penalty is ``lambda*||y||_1``: this is AdamL1 of
    ProxGen (Yun et al. 2021),

    .. math::

      y_t = w_t - \eta_t\alpha \hat m_t / D_t, \qquad
      w_{t+1} = \operatorname{sign}(y_t)\,
                \max\!\left(|y_t| - \eta_t\alpha\lambda / D_t,\ 0\right),

    the minimizer of

    .. math::

      \langle y - w_t, \hat m_t\rangle + \lambda\|y\|_1
      + \frac{1}{2\eta_t\alpha}\|y - w_t\|^2_{D_t}.

    Derivation: the objective is a sum over coordinates ``i`` of
    ``(y_i - w_i)*mhat_i + lambda*|y_i| + (D_i/(2s))*(y_i - w_i)^2`` with
    ``s = eta_t*alpha``. Completing the square, this is
    ``(D_i/(2s))*(y_i - (w_i - s*mhat_i/D_i))^2 + lambda*|y_i|`` up to a
    constant, i.e. ``(D_i/s)`` times ``(1/2)*(y_i - y_{t,i})^2 +
    (s*lambda/D_i)*|y_i|``, whose minimizer is the soft threshold of
    ``y_{t,i}`` at ``s*lambda/D_i`` (0 is optimal iff ``|y_{t,i}| <=
    s*lambda/D_i``, by the subgradient condition). The threshold, like the L2
    decay, is largest where ``D_t`` is small. Thresholded coordinates become
    exactly 0 (the update is ``-w_t``); with a ``center`` the thresholding is
    around ``c`` (``w_t - c`` for ``w_t``, then ``c`` added back: ``c`` up to
    the rounding of ``w_t - c``).

    The decay needs ``D_t``, so this one transformation holds the Adam moments
    (an :class:`optax.ScaleByAdamState`, no second copy of ``v``) and replaces
    ``scale_by_adam`` *and* the learning-rate step in a chain. ``D_t`` is
    formed by the same code as in :func:`scale_by_adam`, from the same ``vhat``.

    Args:
      learning_rate: ``alpha``, a float or a schedule ``alpha(t)``.
      weight_decay: ``lambda >= 0``, a float or a schedule ``lambda(t)``,
        multiplied by ``eta_t * alpha / D_t``.
      schedule: ``eta_t``, a float or a callable of ``t``; ``None`` means 1.
      mask: a pytree of bools (``True``: decay the leaf), of bool arrays with
        the shapes of the params (``True``: decay the element), or a callable
        ``params -> pytree``; masked-out leaves and elements take the plain
        Adam step.
      b1, b2, eps, eps_root, mu_dtype: as in :func:`scale_by_adam`.
      center: ``c``, the point the weights decay toward: ``None`` (0),
        ``"init"`` or a pytree, as in :func:`decoupled_decay`. The penalty is
        then ``(lambda/2)||y - c||^2`` and its minimizer
        ``w_{t+1} = c + (w_t - c - s*mhat/D_t)/(1 + s*lambda/D_t)`` with
        ``s = eta_t*alpha``: the formula above with ``w_t - c`` for ``w_t``
        (for ``penalty="l1"``, ``lambda*||y - c||_1``, likewise).
      penalty: ``"l2"`` (the default, ``(lambda/2)||y||^2``) or ``"l1"``
        (``lambda*||y||_1``, AdamL1).

    A coordinate whose gradients have been zero (``vhat_t = 0``, so
    ``D_t = eps``) is decayed by ``1/(1 + eta_t*alpha*lambda/eps)``: with the
    default ``eps=1e-8``, ``alpha=1e-3`` and ``lambda=1e-3``, about ``1/101`` in
    one step. This is the formula, not a bug, but it zeroes unused embedding
    rows and dead units almost at once. Mask such leaves out (e.g.
    ``exclude=("bias", "scale", "embedding")`` in :func:`weight_decay_mask`) or
    use a larger ``eps``.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax_decay
      >>> tx = optax_decay.adaptive_decay(0.1, 1.0, eps=0.0)
      >>> w = jnp.array([2.0]); g = jnp.array([0.5])
      >>> u, _ = tx.update(g, tx.init(w), w)
      >>> w + u  # D = 0.5: (2 - 0.1 * 1) / (1 + 0.1 * 1 / 0.5)
      Array([1.5833], dtype=float32)
      >>> tx = optax_decay.adaptive_decay(0.1, 1.0, eps=0.0, penalty="l1")
      >>> u, _ = tx.update(g, tx.init(w), w)
      >>> w + u  # y = 2 - 0.1 * 1 = 1.9, threshold 0.1 * 1 / 0.5 = 0.2
      Array([1.7], dtype=float32)

    References:
      Schaipp, *Decay No More*, ICLR Blogposts 2023,
      https://iclr-blogposts.github.io/2023/blog/2023/adamw/;
      Yun et al., *Adaptive Proximal Gradient Methods for Structured Neural
      Networks*, NeurIPS 2021, https://arxiv.org/abs/2112.09331

    See also: :func:`adamp`, :func:`prox_l2`, :func:`prox_l1`.
    """
    return adaptive(
        "adaptive_decay",
        learning_rate,
        weight_decay,
        schedule,
        mask,
        b1,
        b2,
        eps,
        eps_root,
        mu_dtype,
        center,
        penalty,
    )


def adaptive(
    name,
    learning_rate,
    weight_decay,
    schedule,
    mask,
    b1,
    b2,
    eps,
    eps_root,
    mu_dtype,
    center=None,
    penalty="l2",
):
    """:func:`adaptive_decay` with its errors naming ``name`` (``adamp`` uses it)."""
    _check_adam_args(b1, b2, eps, eps_root)
    check_penalty(name, penalty)
    check_nonnegative("weight_decay", weight_decay)
    check_center(center)
    step = step_size(learning_rate, schedule)
    adam_init = _adam_init(mu_dtype)

    def init_fn(params):
        state, stored = adam_init(params), initial_center(center, params)
        return state if stored is None else AdaptiveDecayState(*state, center=stored)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if updates is None:
            return None, state
        require_params(name, updates, params)
        decay_on = (
            jax.tree.map(lambda _: True, params) if mask is None else resolve_mask(mask, params)
        )
        lam = evaluate(weight_decay, state.count)
        s = evaluate(step, state.count)
        stored = getattr(state, "center", None)
        c_tree = current_center(center, stored, params)
        mu, mu_hat, denom, new = _adam_moments(updates, state, b1, b2, eps, eps_root, mu_dtype)
        state = new if stored is None else AdaptiveDecayState(*new, center=stored)
        # s * mhat = (s / (1 - b1^t)) * m: the bias correction as a scalar factor. An
        # elementwise `m / (1 - b1^t)` stays a vector divide in XLA, a third one per
        # element where Adam (and optax.adamw) needs two: 1.14x optax.adamw on CPU.
        bias1 = 1 - b1**state.count  # as in optax.tree.bias_correction

        def leaf(m_raw, m, d, w, on, c):
            if m is None:
                return None
            w = jnp.asarray(w)
            if c is not None:  # the decay pulls toward c: w - c in place of w
                w = w - jnp.asarray(c, w.dtype)
            s_ = jnp.asarray(s, d.dtype)
            per_element = is_array_mask(on)
            if not per_element and not on:
                return -s_ * (m / d)
            # w_new - w = -(s*mhat + k*w) / (D + k), k = s*lambda: one division, like Adam's.
            # Numerator and denominator times keep = 1/(1 + k), with drop = k*keep
            # (not 1 - keep, which cancels for small k), so u -> -w, not NaN, as k -> inf.
            k = s_ * jnp.asarray(lam, d.dtype)
            if is_multiplier(on):  # a per-leaf multiplier of lambda (a Python float)
                k = k * jnp.asarray(on, d.dtype)
            if isinstance(on, SegmentMultipliers):  # a flat buffer: a multiplier per segment
                return on.select(d, lambda v: decayed(m_raw, d, w, scaled(k, v)), -s_ * (m / d))
            return decayed(m_raw, d, w, k, on if per_element else None)

        def decayed(m_raw, d, w, k, on=None):
            if penalty == "l1":
                return soft_thresholded(m_raw, d, w, k, on)
            s_ = jnp.asarray(s, d.dtype)
            keep = 1 / (1 + k)
            drop = jnp.where(jnp.isinf(k), jnp.ones_like(k), k * keep)
            s_m = keep * s_ / bias1.astype(d.dtype)
            if on is not None:
                # The plain Adam step where the mask is False. Select between per-element
                # values, not scalars: under a fixed mask and a constant step, a
                # where(on, scalar, scalar) is loop invariant, and XLA hoists it out of a
                # training loop (lax.fori_loop, lax.scan) as a materialized array per
                # selected scalar, read back at every element and step (+45% on CPU).
                plain = s_ / bias1.astype(d.dtype)
                # On a mesh with Explicit axes the sharding is part of the type: an array
                # mask typed there takes its leaf's, as jnp.where requires.
                target = jax.typeof(w).sharding
                if target.mesh.explicit_axes and jax.typeof(on).sharding.mesh.explicit_axes:
                    on = jax.sharding.reshard(on, target)
                num = jnp.where(on, s_m * m_raw + drop * w, plain * m_raw)
                return -num / jnp.where(on, keep * d + drop, d)
            return -(s_m * m_raw + drop * w) / (keep * d + drop)

        def soft_thresholded(m_raw, d, w, k, on=None):
            # y = w - s*mhat/D, thresholded at k/D = s*lambda/D. Where |y| <= k/D the change
            # is -w, so that w + (-w) is exactly 0; elsewhere -(s*mhat + sign(y)*k)/D. The
            # test is made on y*D (D > 0), so that one division remains, as in Adam: with
            # two, XLA kept two params-sized temporaries on the CPU.
            s_m = jnp.asarray(s, d.dtype) / bias1.astype(d.dtype)
            y_d = w * d - s_m * m_raw
            u = jnp.where(jnp.abs(y_d) <= k, -w, -(s_m * m_raw + jnp.sign(y_d) * k) / d)
            if on is None:
                return u
            step = s_m * m_raw / d
            target = jax.typeof(w).sharding  # as in `decayed`: an array mask takes w's sharding
            if target.mesh.explicit_axes and jax.typeof(on).sharding.mesh.explicit_axes:
                on = jax.sharding.reshard(on, target)
            return jnp.where(on, u, -step)

        updates = jax.tree.map(leaf, mu, mu_hat, denom, params, decay_on, c_tree, is_leaf=is_none)
        return updates, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)

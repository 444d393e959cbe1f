"""The optimizers of the source texts, each a thin chain of this package's transforms.

Every optimizer takes the learning rate ``alpha`` (``learning_rate``, a float or
an Optax schedule), the weight decay ``lambda`` and, keyword-only, the schedule
multiplier ``eta_t`` (``schedule``) and a ``mask``. The parameter change of one
step is ``alpha(t) * eta_t`` times the direction, with ``t = 0`` at the first
update. Updates are added to the params, as in Optax.
"""

from __future__ import annotations

import optax

from optax_decay._adaptive import adaptive, scale_by_adam
from optax_decay._checks import SCHEDULE_STEPS, check_momentum, require_params, sample
from optax_decay._convert import evaluate, step_size
from optax_decay._decoupled import CenterOrInit, decoupled
from optax_decay._l2 import l2
from optax_decay._masks import MaskOrFn
from optax_decay._prox import prox
from optax_decay._sparsity import check_penalty, soft_threshold


def _step(learning_rate, schedule) -> optax.GradientTransformation:
    """``u <- -alpha(t) * eta_t * u``."""
    return optax.scale_by_learning_rate(step_size(learning_rate, schedule))


def _checked(name: str, tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """``tx`` with its inputs checked once per update: ``params`` given, matching the gradients.

    The transforms inside ``tx`` are built with ``check_params=False``, so the
    check runs here only, and its errors name the optimizer. A wrapper rather
    than a chain element, so that the state is the chain's own. Extra
    arguments (``value=loss``, ...) are passed on; ``update(None, ...)``
    returns ``None`` and the state unchanged.
    """
    tx = optax.with_extra_args_support(tx)

    def update_fn(updates, state, params=None, **extra_args):
        if updates is None:
            return None, state
        require_params(name, updates, params)
        return tx.update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(tx.init, update_fn)


def _momentum(momentum, nesterov) -> optax.GradientTransformation:
    check_momentum(momentum, nesterov)
    return optax.identity() if momentum is None else optax.trace(momentum, nesterov)


def sgd_l2(
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: optax.ScalarOrSchedule,
    *,
    momentum: float | None = None,
    nesterov: bool = False,
    schedule: optax.ScalarOrSchedule | None = None,
    mask: MaskOrFn = None,
    center: CenterOrInit = None,
) -> optax.GradientTransformation:
    r"""SGD (with optional heavy-ball momentum) on ``f(w) + (lambda/2)*||w||^2``.

    .. math::

      g_t = \nabla f(w_t) + \lambda w_t, \quad
      d_t = \mu d_{t-1} + g_t \ (\text{or } d_t = g_t), \quad
      w_{t+1} = w_t - \alpha(t)\eta_t d_t

    This is ``torch.optim.SGD(weight_decay=lambda, momentum=mu)``. Without
    momentum it equals :func:`sgdw` with ``weight_decay = alpha*lambda``.

    Args:
      learning_rate: ``alpha``, a float or a schedule.
      weight_decay: ``lambda >= 0`` of the penalty (not multiplied by ``alpha``
        in the penalty; the step multiplies the whole gradient by it).
      momentum: ``mu`` in ``[0, 1)``, or ``None`` for plain SGD.
      nesterov: use Nesterov momentum (``d_t = g_t + mu*(mu d_{t-1} + g_t)``).
      schedule: ``eta_t``, a float or a callable of ``t``; ``None`` means 1.
      mask: leaves to regularize, per leaf (bools, or numbers >= 0 that multiply lambda) or per element
        (bool arrays);
        see :mod:`optax_decay._masks`.
      center: the point the weights decay toward: ``None`` (0), ``"init"`` (the
        params seen by ``init``, kept in the state) or a pytree; see
        :func:`decoupled_decay`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax_decay
      >>> tx = optax_decay.sgd_l2(0.1, 0.5)
      >>> w = jnp.array([2.0]); g = jnp.array([1.0])
      >>> u, _ = tx.update(g, tx.init(w), w)
      >>> w + u  # 2 - 0.1 * (1 + 0.5 * 2)
      Array([1.8], dtype=float32)
    """
    return _checked(
        "sgd_l2",
        optax.chain(
            l2("sgd_l2", weight_decay, mask, check_params=False, center=center),
            _momentum(momentum, nesterov),
            _step(learning_rate, schedule),
        ),
    )


def sgdw(
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: optax.ScalarOrSchedule,
    *,
    cautious: bool = False,
    momentum: float | None = None,
    nesterov: bool = False,
    schedule: optax.ScalarOrSchedule | None = None,
    mask: MaskOrFn = None,
    center: CenterOrInit = None,
) -> optax.GradientTransformation:
    r"""SGD with decoupled weight decay (SGDW, paper convention).

    .. math::

      w_{t+1} = (1 - \eta_t\lambda) w_t - \alpha(t)\eta_t d_t

    with ``d_t`` the gradient or its momentum trace as in :func:`sgd_l2`.
    ``lambda`` is multiplied by ``eta_t`` only, not by ``alpha``. With
    ``cautious=True`` the decay is :func:`cautious_decay`: the term
    ``eta_t*lambda*w_t`` is kept only where ``d_t * w_t >= 0``.

    Args:
      learning_rate: ``alpha``, a float or a schedule.
      weight_decay: ``lambda >= 0``, a float or a schedule ``lambda(t)``; a
        factor ``1 - eta_t*lambda <= 0`` at any checked step is rejected.
      cautious: decay only where the step moves the weight toward 0 or leaves
        it (:func:`cautious_decay`, Chen et al. 2025).
      momentum: ``mu`` in ``[0, 1)``, or ``None`` for plain SGD.
      nesterov: use Nesterov momentum (needs ``momentum``).
      schedule: ``eta_t``, a float or a callable of ``t``; ``None`` means 1.
      mask: leaves to decay, per leaf (bools, or numbers >= 0 that multiply lambda) or per element
        (bool arrays);
        see :mod:`optax_decay._masks`.
      center: the point the weights decay toward: ``None`` (0), ``"init"`` (the
        params seen by ``init``, kept in the state) or a pytree; see
        :func:`decoupled_decay`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax_decay
      >>> tx = optax_decay.sgdw(0.1, 0.5)
      >>> w = jnp.array([2.0]); g = jnp.array([1.0])
      >>> u, _ = tx.update(g, tx.init(w), w)
      >>> w + u  # (1 - 0.5) * 2 - 0.1 * 1
      Array([0.9], dtype=float32)

    References:
      Loshchilov & Hutter, *Decoupled Weight Decay Regularization*, 2019,
      https://arxiv.org/abs/1711.05101
    """
    return _checked(
        "sgdw",
        optax.chain(
            _momentum(momentum, nesterov),
            _step(learning_rate, schedule),
            decoupled(
                "sgdw",
                weight_decay,
                schedule,
                mask,
                check_params=False,
                center=center,
                cautious=cautious,
            ),
        ),
    )


def adam_l2(
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: optax.ScalarOrSchedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype=None,
    schedule: optax.ScalarOrSchedule | None = None,
    mask: MaskOrFn = None,
    center: CenterOrInit = None,
) -> optax.GradientTransformation:
    r"""Adam on ``f(w) + (lambda/2)*||w||^2`` ("Adam+L2").

    .. math::

      g_t = \nabla f(w_t) + \lambda w_t, \quad
      w_{t+1} = w_t - \alpha(t)\eta_t \hat m_t / D_t

    where ``mhat``, ``D_t = sqrt(vhat_t + eps_root) + eps`` are Adam's moments
    of ``g_t``: the penalty is preconditioned with the loss. This is
    ``torch.optim.Adam(weight_decay=lambda)``.

    Args:
      learning_rate: ``alpha``, a float or a schedule.
      weight_decay: ``lambda >= 0`` of the penalty.
      b1, b2, eps, eps_root, mu_dtype: as in :func:`scale_by_adam`.
      schedule: ``eta_t``, a float or a callable of ``t``; ``None`` means 1.
      mask: leaves to regularize, per leaf (bools, or numbers >= 0 that multiply lambda) or per element
        (bool arrays);
        see :mod:`optax_decay._masks`.
      center: the point the weights decay toward: ``None`` (0), ``"init"`` (the
        params seen by ``init``, kept in the state) or a pytree; see
        :func:`decoupled_decay`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax_decay
      >>> tx = optax_decay.adam_l2(0.1, 0.5)
      >>> w = jnp.array([2.0]); g = jnp.array([-0.5])
      >>> u, _ = tx.update(g, tx.init(w), w)
      >>> w + u  # g + lambda*w = 0.5 > 0: the penalty turns Adam's first step (size alpha)
      Array([1.9], dtype=float32)
    """
    return _checked(
        "adam_l2",
        optax.chain(
            l2("adam_l2", weight_decay, mask, check_params=False, center=center),
            scale_by_adam(b1, b2, eps, eps_root, mu_dtype),
            _step(learning_rate, schedule),
        ),
    )


def adamw(
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: optax.ScalarOrSchedule,
    *,
    coupled: bool = False,
    cautious: bool = False,
    corrected: bool = False,
    peak_learning_rate: float | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype=None,
    schedule: optax.ScalarOrSchedule | None = None,
    mask: MaskOrFn = None,
    center: CenterOrInit = None,
) -> optax.GradientTransformation:
    r"""AdamW: Adam with decoupled weight decay.

    .. math::

      \text{paper } (\texttt{coupled=False}):\quad
      w_{t+1} = (1 - \eta_t\lambda) w_t - \alpha(t)\eta_t \hat m_t / D_t \\
      \text{PyTorch } (\texttt{coupled=True}):\quad
      w_{t+1} = (1 - \alpha(t)\eta_t\lambda) w_t - \alpha(t)\eta_t \hat m_t / D_t

    with ``D_t = sqrt(vhat_t + eps_root) + eps``. The default is the paper's
    convention, where ``weight_decay`` is *not* multiplied by the learning
    rate; ``coupled=True`` is the convention of ``torch.optim.AdamW`` and
    :func:`optax.adamw`, and equals them update for update. With a constant
    ``alpha`` the two are related by ``lambda_paper = alpha * lambda_coupled``
    (:func:`coupled_to_paper`).

    ``cautious=True`` keeps the decay only where the Adam step moves the weight
    toward 0 or leaves it, ``1[u*w <= 0]`` (:func:`cautious_decay`).

    ``corrected=True`` is AdamC (Defazio 2025): the decay rate is multiplied by
    ``gamma_t/gamma_max``, the step size ``gamma_t = alpha(t)*eta_t`` over its
    peak, so it falls with the schedule twice. With a constant ``alpha`` and a
    schedule peaking at 1, the factor is ``1 - lambda*eta_t^2`` (paper form)
    or ``1 - alpha*lambda*eta_t^2`` (coupled; timm's ``adamc``). Defazio
    applies it to the layers followed by a normalization: pass a ``mask`` that
    leaves out the output layer.

    Args:
      learning_rate: ``alpha``, a float or a schedule.
      weight_decay: ``lambda >= 0``, a float or a schedule ``lambda(t)``; a
        factor ``<= 0`` at any checked step is rejected.
      coupled: multiply ``weight_decay`` by the learning rate (PyTorch form).
      cautious: cautious weight decay (Chen et al. 2025).
      corrected: corrected weight decay, AdamC (Defazio 2025).
      peak_learning_rate: ``gamma_max`` of ``corrected=True``, the largest
        step size ``alpha(t)*eta_t``. Defaults to ``learning_rate`` when that
        is a number (the schedule ``eta_t`` is assumed to peak at 1, as timm
        does); required when ``learning_rate`` is a schedule. A step size
        above it at any checked step is rejected.
      b1, b2, eps, eps_root, mu_dtype: as in :func:`scale_by_adam`.
      schedule: ``eta_t``, a float or a callable of ``t``; ``None`` means 1.
      mask: leaves to decay, per leaf (bools, or numbers >= 0 that multiply lambda) or per element
        (bool arrays);
        see :mod:`optax_decay._masks`.
      center: the point the weights decay toward: ``None`` (0), ``"init"`` (the
        params seen by ``init``, kept in the state) or a pytree; see
        :func:`decoupled_decay`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax_decay
      >>> tx = optax_decay.adamw(0.1, 0.5)
      >>> w = jnp.array([2.0]); g = jnp.array([1.0])
      >>> u, _ = tx.update(g, tx.init(w), w)
      >>> w + u  # (1 - 0.5) * 2 - 0.1 * 1 (first Adam direction is sign(g))
      Array([0.9], dtype=float32)

    References:
      Loshchilov & Hutter, *Decoupled Weight Decay Regularization*, 2019,
      https://arxiv.org/abs/1711.05101;
      Chen et al., *Cautious Weight Decay*, 2025, https://arxiv.org/abs/2510.12402;
      Defazio, *Why Gradients Rapidly Increase Near the End of Training*, 2025,
      https://arxiv.org/abs/2506.02285
    """
    decay_schedule = step_size(learning_rate, schedule) if coupled else schedule
    rate = "alpha(t)*eta_t*lambda" if coupled else "eta_t*lambda"
    if corrected:
        decay_schedule = _corrected(decay_schedule, learning_rate, schedule, peak_learning_rate)
        rate += "*gamma_t/gamma_max"
    elif peak_learning_rate is not None:
        raise TypeError(PEAK_UNUSED_MSG)
    return _checked(
        "adamw",
        optax.chain(
            scale_by_adam(b1, b2, eps, eps_root, mu_dtype),
            _step(learning_rate, schedule),
            decoupled(
                "adamw",
                weight_decay,
                decay_schedule,
                mask,
                False,
                rate,
                center=center,
                cautious=cautious,
            ),
        ),
    )


PEAK_UNUSED_MSG = (
    "`peak_learning_rate` is the gamma_max of corrected weight decay and is used only with "
    "`corrected=True`; pass `corrected=True`, or drop `peak_learning_rate`."
)

PEAK_NEEDED_MSG = (
    "`adamw(..., corrected=True)` multiplies the decay by gamma_t/gamma_max, the step size "
    "alpha(t)*eta_t over its peak, and cannot know the peak of a `learning_rate` schedule: "
    "pass `peak_learning_rate=` (e.g. the peak of a warmup-cosine schedule)."
)

PEAK_EXCEEDED_MSG = (
    "`adamw(..., corrected=True)`: the step size alpha(t)*eta_t reaches {gamma:.6g} at step "
    "t = {t}, above gamma_max = {peak:.6g} ({source}), so the corrected decay "
    "lambda*gamma_t/gamma_max would exceed the plain one. Pass "
    "`peak_learning_rate={gamma:.6g}` (the peak step size)."
)


def _corrected(decay_schedule, learning_rate, schedule, peak):
    """``decay_schedule(t) * gamma_t / gamma_max``, ``gamma_t = alpha(t)*eta_t``: AdamC."""
    gamma = step_size(learning_rate, schedule)
    source = "`peak_learning_rate`"
    if peak is None:
        if callable(learning_rate):
            raise ValueError(PEAK_NEEDED_MSG)
        peak, source = learning_rate, "`learning_rate`, assuming eta_t peaks at 1"
    values = sample(gamma)
    peak_value = sample(peak)
    if peak_value is not None and not peak_value[0] > 0:
        raise ValueError(f"`peak_learning_rate` must be > 0, got {peak!r}.")
    if values is not None and peak_value is not None:
        if (values > peak_value[0] * (1 + 1e-6)).any():
            i = int(values.argmax())
            raise ValueError(
                PEAK_EXCEEDED_MSG.format(
                    gamma=values[i], t=SCHEDULE_STEPS[i], peak=peak_value[0], source=source
                )
            )
    if not callable(gamma) and not callable(decay_schedule):
        return evaluate(decay_schedule, None) * gamma / peak

    def corrected(count):
        return evaluate(decay_schedule, count) * evaluate(gamma, count) / peak

    return corrected


def prox_adam(
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: optax.ScalarOrSchedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype=None,
    schedule: optax.ScalarOrSchedule | None = None,
    mask: MaskOrFn = None,
    center: CenterOrInit = None,
    penalty: str = "l2",
) -> optax.GradientTransformation:
    r"""ProxAdam: the Adam step followed by the proximal step of the L2 (or L1) penalty.

    .. math::

      y_t = w_t - \alpha(t)\eta_t \hat m_t / D_t, \qquad
      \text{l2}:\ w_{t+1} = \frac{y_t}{1 + \eta_t\lambda}, \qquad
      \text{l1}:\ w_{t+1} = \operatorname{sign}(y_t)\max(|y_t| - \eta_t\lambda,\ 0)

    with ``mhat_t``, ``D_t = sqrt(vhat_t + eps_root) + eps`` of
    :func:`scale_by_adam`, ``alpha(t)`` the learning rate, ``eta_t`` the
    schedule multiplier and ``lambda`` the weight decay. The L2 form
    (``penalty="l2"``, the default) is the minimizer of ``<y - w_t, mhat_t> +
    (lambda/(2 alpha))||y||_{D_t}^2 + (1/(2 eta_t alpha))||y - w_t||_{D_t}^2``.
    It equals :func:`adamw` to first order in ``eta_t*lambda``, is scale-free
    like it, and is stable for any ``lambda``. The L1 form (``penalty="l1"``)
    is the Adam step followed by :func:`prox_l1`, the soft threshold at
    ``eta_t*lambda`` (not preconditioned: for the threshold ``eta_t*alpha*lambda/D_t``
    use ``adamp(..., penalty="l1")``); thresholded coordinates become exactly 0
    (``c`` with a ``center``, up to the rounding of ``w_t - c``).
    ``weight_decay`` is in the paper convention.

    Args:
      learning_rate: ``alpha``, a float or a schedule.
      weight_decay: ``lambda >= 0``.
      b1, b2, eps, eps_root, mu_dtype: as in :func:`scale_by_adam`.
      schedule: ``eta_t``, a float or a callable of ``t``; ``None`` means 1.
      mask: leaves to decay, per leaf (bools, or numbers >= 0 that multiply lambda) or per element
        (bool arrays);
        see :mod:`optax_decay._masks`.
      center: the point the weights decay toward: ``None`` (0), ``"init"`` (the
        params seen by ``init``, kept in the state) or a pytree; see
        :func:`decoupled_decay`.

      penalty: ``"l2"`` (``(lambda/2)||w||^2``, the default) or ``"l1"``
        (``lambda*||w||_1``).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax_decay
      >>> w = jnp.array([2.0, 0.05]); g = jnp.array([1.0, -1.0])
      >>> tx = optax_decay.prox_adam(0.1, 1.0, eps=0.0)
      >>> u, _ = tx.update(g, tx.init(w), w)
      >>> w + u  # y = w - 0.1 * sign(g) = [1.9, 0.15], divided by 1 + 1
      Array([0.95 , 0.075], dtype=float32)
      >>> tx = optax_decay.prox_adam(0.1, 1.0, eps=0.0, penalty="l1")
      >>> u, _ = tx.update(g, tx.init(w), w)
      >>> w + u  # y thresholded at 1
      Array([0.9, 0. ], dtype=float32)

    References:
      Zhuang et al., *Understanding AdamW through Proximal Methods and
      Scale-Freeness*, TMLR 2022, https://arxiv.org/abs/2202.00089;
      Yun et al., *Adaptive Proximal Gradient Methods for Structured Neural
      Networks*, NeurIPS 2021, https://arxiv.org/abs/2112.09331

    See also: :func:`prox_l2`, :func:`prox_l1`, :func:`adamp`.
    """
    check_penalty("prox_adam", penalty)
    decay = prox if penalty == "l2" else soft_threshold
    return _checked(
        "prox_adam",
        optax.chain(
            scale_by_adam(b1, b2, eps, eps_root, mu_dtype),
            _step(learning_rate, schedule),
            decay("prox_adam", weight_decay, schedule, mask, check_params=False, center=center),
        ),
    )


def adamp(
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: optax.ScalarOrSchedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype=None,
    schedule: optax.ScalarOrSchedule | None = None,
    mask: MaskOrFn = None,
    center: CenterOrInit = None,
    penalty: str = "l2",
) -> optax.GradientTransformation:
    r"""AdamP of the "Decay No More" blog post: Adam with adaptive, preconditioned decay.

    .. math::

      y_t = w_t - \alpha(t)\eta_t \hat m_t / D_t, \qquad
      \text{l2}:\ w_{t+1} = \frac{y_t}{1 + \alpha(t)\eta_t\lambda / D_t}, \qquad
      \text{l1}:\ w_{t+1} = \operatorname{sign}(y_t)
                 \max(|y_t| - \alpha(t)\eta_t\lambda / D_t,\ 0)

    with ``mhat_t``, ``D_t = sqrt(vhat_t + eps_root) + eps`` of
    :func:`scale_by_adam`, ``alpha(t)`` the learning rate, ``eta_t`` the
    schedule multiplier and ``lambda`` the weight decay: the proximal step of
    ``(lambda/2)||w||^2`` (``penalty="l2"``, the default) or of
    ``lambda*||w||_1`` (``penalty="l1"``, ProxGen's AdamL1, Yun et al. 2021)
    in Adam's metric ``D_t``, derived in :func:`adaptive_decay`. With ``"l1"``
    the coordinates with ``|y_t| <= alpha(t)*eta_t*lambda/D_t`` become exactly 0.

    Not to be confused with the AdamP of Heo et al. (*AdamP: Slowing Down the
    Slowdown for Momentum Optimizers on Scale-invariant Weights*, ICLR 2021),
    a different method that projects out the radial component of the update;
    this is the proximal step of ``(lambda/2)||w||^2`` in Adam's metric. It is
    not scale-free: multiplying the loss by ``c`` acts like dividing
    ``lambda`` by ``c``. It is :func:`adaptive_decay` itself, which holds the
    Adam moments because the decay needs ``D_t``.

    Coordinates that get no gradient are decayed hardest: at ``vhat_t = 0``,
    ``D_t = eps`` and the factor is ``1/(1 + alpha*eta_t*lambda/eps)``, about
    ``1/101`` per step with ``alpha = lambda = 1e-3`` and ``eps = 1e-8``. Unused
    embedding rows and dead units are zeroed almost at once. Mask them out
    (``exclude=("bias", "scale", "embedding")`` in :func:`weight_decay_mask`)
    or raise ``eps``.

    Args:
      learning_rate: ``alpha``, a float or a schedule.
      weight_decay: ``lambda >= 0``, effectively multiplied by ``alpha*eta_t/D_t``.
      b1, b2, eps, eps_root, mu_dtype: as in :func:`scale_by_adam`.
      schedule: ``eta_t``, a float or a callable of ``t``; ``None`` means 1.
      mask: leaves to decay, per leaf (bools, or numbers >= 0 that multiply lambda) or per element
        (bool arrays);
        see :mod:`optax_decay._masks`.
      center: the point the weights decay toward: ``None`` (0), ``"init"`` (the
        params seen by ``init``, kept in the state) or a pytree; see
        :func:`decoupled_decay`.

      penalty: ``"l2"`` (``(lambda/2)||w||^2``, the default) or ``"l1"``
        (``lambda*||w||_1``, AdamL1).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax_decay
      >>> w = jnp.array([2.0, 0.05]); g = jnp.array([0.5, -0.5])
      >>> tx = optax_decay.adamp(0.1, 1.0, eps=0.0, penalty="l1")
      >>> u, _ = tx.update(g, tx.init(w), w)
      >>> w + u  # D = 0.5: y = w - 0.1 * sign(g) = [1.9, 0.15], threshold 0.1 * 1 / 0.5
      Array([1.7, 0. ], dtype=float32)

    References:
      Schaipp, *Decay No More*, ICLR Blogposts 2023,
      https://iclr-blogposts.github.io/2023/blog/2023/adamw/;
      Yun et al., *Adaptive Proximal Gradient Methods for Structured Neural
      Networks*, NeurIPS 2021, https://arxiv.org/abs/2112.09331

    See also: :func:`adaptive_decay`, :func:`prox_adam`, :func:`prox_l1`.
    """
    return adaptive(
        "adamp",
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

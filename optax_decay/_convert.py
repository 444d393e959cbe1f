r"""Conventions and conversions between the ways weight decay is written.

Notation, used by every docstring of the package:

* ``alpha`` is the learning rate (``learning_rate``), a float or an Optax
  schedule ``alpha(t)``;
* ``eta_t`` is the schedule multiplier (``schedule``), a float or a callable
  of the step count, 1 by default. The step size is ``alpha(t) * eta_t``;
* ``lambda`` is the weight decay (``weight_decay``);
* ``t`` counts the updates already applied: the first update uses ``t = 0``,
  the counter of :func:`optax.scale_by_schedule`.

The *paper* convention (Loshchilov & Hutter) decays by ``1 - eta_t*lambda``;
the *coupled* convention of ``torch.optim.AdamW`` and :func:`optax.adamw`
decays by ``1 - eta_t*alpha*lambda``, so ``lambda_paper = alpha * lambda_coupled``.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import optax

from optax_decay._checks import check_nonnegative


def evaluate(value: Any, count: Any) -> Any:
    """Evaluates a float-or-schedule at step ``count``; ``None`` (no schedule) is 1."""
    if value is None:
        return 1.0
    return value(count) if callable(value) else value


def step_size(learning_rate: optax.ScalarOrSchedule, schedule: optax.ScalarOrSchedule | None):
    r"""The step size ``alpha(t) * eta_t``, as a number or as a schedule of ``t``.

    It is a plain number when both factors are numbers, so that checks on
    concrete values still see it; otherwise a callable of the step count.
    """
    check_nonnegative("learning_rate", learning_rate)
    check_nonnegative("schedule", schedule)
    if not callable(learning_rate) and not callable(schedule):
        return learning_rate if schedule is None else learning_rate * schedule

    def product(count):
        # Multiply in the widest enabled float: Optax schedules are float32 at an int32 count.
        wide = jnp.result_type(float)
        alpha = jnp.asarray(evaluate(learning_rate, count), wide)
        return alpha * jnp.asarray(evaluate(schedule, count), wide)

    return product


def coupled_to_paper(weight_decay: float, learning_rate: float) -> float:
    r"""PyTorch/``optax.adamw`` weight decay to the paper's: ``alpha * lambda_coupled``.

    Example:
      >>> coupled_to_paper(0.01, 1e-3)  # torch.optim.AdamW's default
      1e-05
    """
    check_nonnegative("weight_decay", weight_decay)
    check_nonnegative("learning_rate", learning_rate)
    return learning_rate * weight_decay


def paper_to_coupled(weight_decay: float, learning_rate: float) -> float:
    r"""The paper's weight decay to PyTorch's: ``lambda_paper / alpha``.

    Example:
      >>> paper_to_coupled(1e-5, 1e-3)
      0.01
    """
    check_nonnegative("weight_decay", weight_decay)
    if not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be > 0 to divide by it, got {learning_rate!r}.")
    return weight_decay / learning_rate


def timescale_from_weight_decay(weight_decay: float, schedule: float = 1.0) -> float:
    r"""EMA timescale of decoupled decay in iterations: ``tau_iter = 1 / (eta * lambda_paper)``.

    With a constant factor ``1 - eta*lambda`` per step, the weights are an
    exponential moving average of the updates with this timescale.

    Example:
      >>> timescale_from_weight_decay(1e-4)
      10000.0
    """
    check_nonnegative("schedule", schedule)
    rate = schedule * weight_decay
    if not rate > 0:
        raise ValueError(
            f"`weight_decay` * `schedule` must be > 0 for a finite timescale, got {rate!r}."
        )
    return 1.0 / rate


def weight_decay_from_timescale(timescale: float, schedule: float = 1.0) -> float:
    r"""Paper weight decay for an EMA timescale: ``lambda_paper = 1 / (eta * tau_iter)``.

    Example:
      >>> weight_decay_from_timescale(10_000.0)
      0.0001
    """
    if not (timescale > 0 and schedule > 0):
        raise ValueError(
            f"`timescale` and `schedule` must be > 0, got timescale={timescale!r}, "
            f"schedule={schedule!r}."
        )
    return 1.0 / (schedule * timescale)


def timescale_to_epochs(timescale: float, batch_size: int, num_examples: int) -> float:
    r"""The decay's EMA timescale in epochs: ``tau_epoch = tau_iter * B / N``.

    ``B`` examples per update, ``N`` per epoch. Wang & Aitchison (*How to set
    AdamW's weight decay as you scale model and dataset size*, 2024,
    https://arxiv.org/abs/2405.13698) find the best ``tau_epoch`` stable across
    model and dataset sizes.

    Example:
      >>> timescale_to_epochs(10_000.0, batch_size=128, num_examples=50_000)
      25.6
    """
    _check_positive(timescale=timescale, batch_size=batch_size, num_examples=num_examples)
    return timescale * batch_size / num_examples


def timescale_from_epochs(timescale: float, batch_size: int, num_examples: int) -> float:
    r"""The decay's EMA timescale in iterations from one in epochs: ``tau_iter = tau_epoch * N / B``.

    The inverse of :func:`timescale_to_epochs`; pass the result to
    :func:`weight_decay_from_timescale`.

    Example:
      >>> timescale_from_epochs(25.6, batch_size=128, num_examples=50_000)
      10000.0
    """
    _check_positive(timescale=timescale, batch_size=batch_size, num_examples=num_examples)
    return timescale * num_examples / batch_size


def equilibrium_angular_update(
    weight_decay: float, schedule: float = 1.0, momentum: float = 0.0
) -> float:
    r"""Expected angular update per step of a scale-invariant weight at the decay's equilibrium.

    .. math::

      \widehat{\angle}(w_t, w_{t+1}) = \sqrt{\frac{2\,\eta\lambda\,(1 - \mu)}{1 + \mu}}

    where ``eta*lambda`` is the paper-form decay per step (the weights shrink
    by ``1 - eta*lambda``) and ``mu`` the momentum of the update: Adam's ``b1``
    for :func:`adamw`, or the heavy-ball ``momentum`` of :func:`sgdw`.

    Derivation (Kosson, Messmer & Jaggi's rotational equilibrium, in this
    package's conventions). A weight followed by a normalization has a gradient
    orthogonal to it. Take updates ``u_t = -s*m_t`` with ``m_t = mu*m_{t-1} +
    (1 - mu)*g_t`` and ``g_t`` random, orthogonal to ``w_t``, of mean square norm
    ``G``. Then ``E||m||^2 = G*(1 - mu)/(1 + mu)`` and, since ``w_t`` holds the
    past updates, ``E<w_t, u_t> = s^2*E||m||^2*mu/(1 - mu)`` (to first order in
    ``eta*lambda``). In equilibrium the norm stops changing:
    ``2*eta*lambda*||w||^2 = ||u||^2 + 2<w, u> = s^2*G``, so ``||w||^2 =
    s^2*G/(2*eta*lambda)``, and the angular update ``||u||/||w||`` is the formula
    above. It holds for the sum-form momentum of :func:`optax.trace` (``m`` times
    ``1/(1 - mu)``: ``s`` cancels) and for Adam, whose ``mhat/D`` is such an
    average of normalized gradients. It does not depend on ``s`` or ``G``.

    Conversions: for the coupled form (``optax.adamw``, ``torch.optim.AdamW``)
    pass ``weight_decay=alpha*lambda_coupled`` (:func:`coupled_to_paper`), which
    gives Kosson et al.'s ``sqrt(2*alpha*lambda*(1 - b1)/(1 + b1))``. For SGD with
    the L2 penalty inside a sum-form momentum (``sgd_l2``, ``torch.optim.SGD``) the
    weights shrink by ``alpha*lambda/(1 - mu)`` per step: pass that, which gives
    their ``sqrt(2*alpha*lambda/(1 + mu))``.

    Args:
      weight_decay: ``lambda``, paper form, ``> 0``.
      schedule: ``eta``, the schedule multiplier at the step of interest (``> 0``).
      momentum: ``mu`` in ``[0, 1)``: Adam's ``b1``, SGD's momentum, 0 for none.

    Returns:
      The angle in radians between ``w_t`` and ``w_{t+1}``, in expectation at
      equilibrium (first order in ``eta*lambda``).

    Example:
      >>> round(equilibrium_angular_update(1e-4, momentum=0.9), 6)  # sqrt(2e-4 * 0.1/1.9)
      0.003244

    References:
      Kosson, Messmer & Jaggi, *Rotational Equilibrium: How Weight Decay
      Balances Learning Across Neural Networks*, ICML 2024,
      https://arxiv.org/abs/2305.17212
    """
    _check_positive(weight_decay=weight_decay, schedule=schedule)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(
            f"`momentum` must lie in [0, 1) (Adam's b1, or SGD's momentum), got {momentum!r}."
        )
    return math.sqrt(2.0 * schedule * weight_decay * (1.0 - momentum) / (1.0 + momentum))


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}.")


def normalized_weight_decay(
    normalized: float, batch_size: int, num_examples: int, num_epochs: float
) -> float:
    r"""Loshchilov & Hutter's normalized weight decay: ``lambda = lambda_norm * sqrt(b / (B*T))``.

    Args:
      normalized: ``lambda_norm``, the value that transfers between budgets.
      batch_size: ``b``, examples per update.
      num_examples: ``B``, examples per epoch.
      num_epochs: ``T``, the total number of epochs.

    Returns:
      The paper-convention ``lambda`` for this budget.

    Example:
      >>> normalized_weight_decay(0.05, batch_size=128, num_examples=50_000, num_epochs=200)
      0.00017888543819998318
    """
    check_nonnegative("normalized", normalized)
    _check_positive(batch_size=batch_size, num_examples=num_examples, num_epochs=num_epochs)
    return normalized * math.sqrt(batch_size / (num_examples * num_epochs))

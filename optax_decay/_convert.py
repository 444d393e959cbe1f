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

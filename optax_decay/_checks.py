"""Argument checks shared by every transformation, with their error messages.

A check only looks at concrete values: under `optax.inject_hyperparams` or
`jax.jit` a hyperparameter may be a tracer, and tracers pass unchecked so that
traced hyperparameters keep working.
"""

from __future__ import annotations

import math
from typing import Any

import jax

NO_PARAMS_MSG = (
    "`{name}.update` needs the current `params`: weight decay is a function of "
    "the weights. Call `tx.update(grads, opt_state, params)`."
)

NEGATIVE_MSG = (
    "`{arg}` must be a finite number >= 0, got {value!r}. Weight decay pulls "
    "weights toward zero only with a non-negative coefficient and step; pass "
    "abs({arg}) or fix its sign."
)

DECAY_FACTOR_MSG = (
    "`weight_decay` is too large for `{name}`: the decay factor "
    "1 - eta_t*lambda = 1 - {eta!r}*{lam!r} = {factor!r} is <= 0 and would "
    "flip or zero the weights every step. Pass `weight_decay` < {limit!r}. "
    "For `adamw` this is the paper convention, where `weight_decay` is not "
    "multiplied by the learning rate: convert a PyTorch-style value with "
    "`optax_decay.coupled_to_paper(weight_decay, learning_rate)`, use "
    "`adamw(..., coupled=True)`, or use `prox_adam`, which is stable for any "
    "weight_decay."
)

BETA_MSG = "`{arg}` must lie in [0, 1), got {value!r}; Adam's defaults are b1=0.9, b2=0.999."


def concrete_float(value: Any) -> float | None:
  """Returns `value` as a Python float, or None if it is traced or a schedule."""
  if value is None or callable(value) or isinstance(value, jax.core.Tracer):
    return None
  try:
    return float(value)
  except (TypeError, ValueError, jax.errors.ConcretizationTypeError):
    return None


def check_nonnegative(arg: str, value: Any) -> None:
  """Raises if a concrete hyperparameter is negative, NaN or infinite."""
  v = concrete_float(value)
  if v is not None and not (math.isfinite(v) and v >= 0):
    raise ValueError(NEGATIVE_MSG.format(arg=arg, value=value))


def check_beta(arg: str, value: Any) -> None:
  v = concrete_float(value)
  if v is not None and not 0.0 <= v < 1.0:
    raise ValueError(BETA_MSG.format(arg=arg, value=value))


def check_decay_factor(name: str, weight_decay: Any, schedule: Any) -> None:
  """Raises if a constant decay factor `1 - eta*lambda` is <= 0."""
  lam = concrete_float(weight_decay)
  eta = 1.0 if schedule is None else concrete_float(schedule)
  if lam is None or eta is None or lam == 0.0:
    return
  factor = 1.0 - eta * lam
  if factor <= 0.0:
    raise ValueError(
        DECAY_FACTOR_MSG.format(
            name=name, eta=eta, lam=lam, factor=factor, limit=1.0 / eta
        )
    )


def require_params(name: str, params: Any) -> None:
  if params is None:
    raise ValueError(NO_PARAMS_MSG.format(name=name))

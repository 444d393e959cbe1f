"""Argument checks shared by every transformation, with their error messages.

A check only looks at concrete values: under `optax.inject_hyperparams` or
`jax.jit` a hyperparameter may be a tracer, and tracers pass unchecked so that
traced hyperparameters keep working.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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

PARAMS_STRUCTURE_MSG = (
    "`params` and the updates passed to `{name}.update` have different tree "
    "structures:\n  updates: {updates}\n  params:  {params}\nPass the params the "
    "gradients were taken with: `tx.update(grads, opt_state, params)`."
)

PARAMS_DTYPE_MSG = (
    "`params` leaf {path} has dtype {dtype}; weight decay and Adam need floating-point "
    "(or complex) params. Cast it to a float dtype, or keep it out of the optimizer "
    "(`nnx.Optimizer(..., wrt=nnx.Param)`, `optax.multi_transform` or `optax.masked`)."
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


def concrete_product(a: Any, b: Any) -> float | None:
    """``a*b`` as a Python float when both are concrete, else None."""
    a, b = concrete_float(a), concrete_float(b)
    return None if a is None or b is None else a * b


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
            DECAY_FACTOR_MSG.format(name=name, eta=eta, lam=lam, factor=factor, limit=1.0 / eta)
        )


def is_none(x: Any) -> bool:
    """``is_leaf`` for ``jax.tree`` functions: keeps ``None`` leaves (masked-out updates)."""
    return x is None


def check_float_params(params: Any) -> None:
    """Raises if a params leaf is not floating point (integer, bool)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        dtype = leaf.dtype if hasattr(leaf, "dtype") else np.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                PARAMS_DTYPE_MSG.format(path=jax.tree_util.keystr(path) or "(root)", dtype=dtype)
            )


def require_params(name: str, updates: Any, params: Any) -> None:
    """Raises unless ``params`` is given, matches ``updates`` and is floating point."""
    if params is None:
        raise ValueError(NO_PARAMS_MSG.format(name=name))
    u = jax.tree.structure(updates, is_leaf=is_none)
    p = jax.tree.structure(params, is_leaf=is_none)
    if u != p:
        raise ValueError(PARAMS_STRUCTURE_MSG.format(name=name, updates=u, params=p))
    check_float_params(params)

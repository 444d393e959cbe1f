"""Argument checks shared by every transformation, with their error messages.

A check only looks at concrete values: under `optax.inject_hyperparams` or
`jax.jit` a hyperparameter may be a tracer, and tracers pass unchecked so that
traced hyperparameters keep working.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

NO_PARAMS_MSG = (
    "`{name}.update` needs the current `params`: weight decay is a function of "
    "the weights. Call `tx.update(grads, opt_state, params)`."
)

NEGATIVE_MSG = "`{arg}` must be a finite number >= 0, got {value}{where}. {advice}"

# What to do about a negative or non-finite value, argument by argument.
ADVICE = {
    "weight_decay": (
        "A negative weight decay pushes the weights away from zero; pass abs(weight_decay), "
        "or 0 to switch the decay off."
    ),
    "learning_rate": (
        "A negative learning rate climbs the loss and turns decoupled decay into growth; "
        "pass a positive value (a schedule must stay >= 0 at every step)."
    ),
    "schedule": (
        "`schedule` is the multiplier eta_t of the step and of the decay; a negative value "
        "reverses both. Clip it, e.g. `lambda t: jnp.maximum(f(t), 0.0)`."
    ),
    "eps": "`eps` keeps D_t = sqrt(vhat + eps_root) + eps away from 0; Adam's default is 1e-8.",
    "eps_root": "`eps_root` is added under the square root of D_t; the default is 0.",
}
GENERIC_ADVICE = "Pass a finite value >= 0."

DECAY_FACTOR_MSG = (
    "`weight_decay` is too large for `{name}`: the decay factor "
    "1 - {rate} = 1 - {eta:.6g}*{lam:.6g} = {factor:.6g} is <= 0{where} and would "
    "flip or zero the weights every step. Keep {rate} < 1 at every step. "
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


MOMENTUM_MSG = (
    "`momentum` must be a number in [0, 1), got {value!r}: a heavy-ball trace with "
    "momentum >= 1 never forgets a gradient and diverges, and one < 0 oscillates. The "
    "usual value is 0.9; pass None for plain SGD."
)

NESTEROV_MSG = (
    "`nesterov=True` needs a `momentum` (e.g. momentum=0.9): without one the update "
    "would silently be plain SGD."
)

# The steps at which a callable schedule is checked at construction: every step up to
# 1024 (warmup peaks), then a log-spaced grid up to 10**7 (long decays, sign changes).
SCHEDULE_STEPS = np.unique(
    np.concatenate([np.arange(1025), np.geomspace(1024, 1e7, 256).round()]).astype(np.int32)
)


def concrete_float(value: Any) -> float | None:
    """Returns `value` as a Python float, or None if it is traced or a schedule."""
    if value is None or callable(value) or isinstance(value, jax.core.Tracer):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError):
        return None


def sample(value: Any) -> np.ndarray | None:
    """A float-or-schedule at every step of ``SCHEDULE_STEPS``, as float64; None if unknown.

    A constant gives a constant array. A callable is evaluated on concrete step
    counts (vectorized with ``jax.vmap``, else one step at a time); a schedule
    that cannot be evaluated outside a trace returns None and goes unchecked.
    """
    if value is None:
        return None
    if not callable(value):
        v = concrete_float(value)
        return None if v is None else np.full(SCHEDULE_STEPS.shape, v)
    try:
        out = jax.vmap(value)(jnp.asarray(SCHEDULE_STEPS))
        return np.asarray(out, np.float64).reshape(SCHEDULE_STEPS.shape)
    except Exception:  # noqa: BLE001 - not vectorizable: try step by step
        pass
    try:
        return np.array([float(value(jnp.asarray(t))) for t in SCHEDULE_STEPS])
    except Exception:  # noqa: BLE001 - traced or otherwise not concrete: cannot check
        return None


def check_nonnegative(arg: str, value: Any) -> None:
    """Raises if a concrete hyperparameter, or a schedule at any checked step, is < 0 or not finite."""
    values = sample(value)
    if values is None:
        return
    bad = np.flatnonzero(~(np.isfinite(values) & (values >= 0)))
    if bad.size:
        i = bad[0]
        if callable(value):
            shown, where = (
                "a schedule",
                f" whose value at t = {SCHEDULE_STEPS[i]} is {values[i]:.6g}",
            )
        else:
            shown, where = repr(value), ""
        raise ValueError(
            NEGATIVE_MSG.format(
                arg=arg, value=shown, where=where, advice=ADVICE.get(arg, GENERIC_ADVICE)
            )
        )


def check_beta(arg: str, value: Any) -> None:
    v = concrete_float(value)
    if v is not None and not 0.0 <= v < 1.0:
        raise ValueError(BETA_MSG.format(arg=arg, value=value))


def check_momentum(momentum: Any, nesterov: bool) -> None:
    """``momentum`` in [0, 1) (or None), and ``nesterov`` only with a momentum."""
    if momentum is None:
        if nesterov:
            raise ValueError(NESTEROV_MSG)
        return
    v = concrete_float(momentum)
    if v is not None and not 0.0 <= v < 1.0:
        raise ValueError(MOMENTUM_MSG.format(value=momentum))


def check_decay_factor(
    name: str, weight_decay: Any, schedule: Any, rate: str = "eta_t*lambda"
) -> None:
    """Raises if the decay factor ``1 - schedule*weight_decay`` is <= 0 at any checked step.

    Both factors may be constants or schedules; each schedule is sampled on
    ``SCHEDULE_STEPS``, so a warmup peak or a late sign change is seen.
    ``rate`` names the product in the message.
    """
    lam = sample(weight_decay)
    eta = np.ones(SCHEDULE_STEPS.shape) if schedule is None else sample(schedule)
    if lam is None or eta is None:
        return
    factor = 1.0 - eta * lam
    bad = np.flatnonzero(factor <= 0.0)
    if bad.size:
        i = bad[np.argmin(factor[bad])]
        constant = not callable(weight_decay) and not callable(schedule)
        where = "" if constant else f" at step t = {SCHEDULE_STEPS[i]}"
        raise ValueError(
            DECAY_FACTOR_MSG.format(
                name=name,
                rate=rate,
                eta=eta[i],
                lam=lam[i],
                factor=factor[i],
                where=where,
            )
        )


def value_at_zero(value: Any) -> float | None:
    """A float-or-schedule at ``t = 0`` as a Python float (None: 1), or None if traced."""
    if value is None:
        return 1.0
    if callable(value):
        try:
            return float(value(jnp.zeros([], jnp.int32)))
        except Exception:  # noqa: BLE001 - not concrete
            return None
    return concrete_float(value)


def is_none(x: Any) -> bool:
    """``is_leaf`` for ``jax.tree`` functions: keeps ``None`` leaves (masked-out updates)."""
    return x is None


def leaf_dtype(leaf: Any) -> Any:
    """The dtype of an array leaf, or the one NumPy gives a Python scalar."""
    return leaf.dtype if hasattr(leaf, "dtype") else np.result_type(leaf)


def check_float_params(params: Any) -> None:
    """Raises if a params leaf is not floating point (integer, bool)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        dtype = leaf_dtype(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                PARAMS_DTYPE_MSG.format(path=jax.tree_util.keystr(path) or "(root)", dtype=dtype)
            )


def require_params(name: str, updates: Any, params: Any) -> None:
    """Raises unless ``params`` is given, matches ``updates`` and is floating point."""
    if params is None:
        raise ValueError(NO_PARAMS_MSG.format(name=name))
    u: Any = jax.tree.structure(updates, is_leaf=is_none)
    p: Any = jax.tree.structure(params, is_leaf=is_none)
    if u != p:
        raise ValueError(PARAMS_STRUCTURE_MSG.format(name=name, updates=u, params=p))
    check_float_params(params)

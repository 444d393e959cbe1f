"""The examples' optimizers: one registry that knows what each method's ``weight_decay`` means.

Every script builds its optimizer with :func:`make`. The package's methods write the decay
``lambda`` in four conventions (README, "Methods"), with ``alpha`` the learning rate,
``eta_t`` the schedule and ``D_t`` Adam's denominator:

- ``paper``: the weights shrink by ``eta_t*lambda`` per step (``sgdw``, ``adamw``, ``prox_adam``);
- ``coupled``: by ``eta_t*alpha*lambda``, PyTorch's and ``optax.adamw``'s form (``adamw_coupled``);
- ``l2``: the penalty ``(lambda/2)*||w||^2`` joins the loss (``sgd_l2``, ``adam_l2``). Through
  SGD with momentum ``mu`` it shrinks the weights by ``eta_t*alpha*lambda/(1 - mu)`` per step;
  through Adam it is divided by ``D_t``, and has no per-step equivalent;
- ``adaptive``: by ``eta_t*alpha*lambda/D_t``, per coordinate (``adamp``): no equivalent either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import optax

import optax_decay

MOMENTUM = 0.9  # heavy-ball momentum of the SGD methods, in every example
WD_MASK = optax_decay.weight_decay_mask

PAPER, COUPLED, L2, ADAPTIVE = "paper", "coupled", "l2", "adaptive"


@dataclass(frozen=True)
class Method:
    factory: Callable[..., optax.GradientTransformation]  # the package's optimizer
    convention: str  # of its weight_decay: PAPER, COUPLED, L2 or ADAPTIVE
    family: str  # "sgd" (heavy-ball momentum) or "adam" (Adam's moments)
    fixed: Mapping[str, Any] = field(default_factory=dict)  # keyword arguments it always gets


def adam_group_lasso(
    learning_rate, weight_decay, *, schedule=None, mask=None, axis=(0,), b1=0.9, b2=0.999, eps=1e-8
) -> optax.GradientTransformation:
    """Adam's step ``-alpha*eta_t*mhat/D``, then ``optax_decay.prox_group_lasso(lambda, schedule,
    mask, axis)``: a group whose norm is at most ``eta_t*lambda`` becomes exactly 0 (paper form).
    ``axis=(0,)`` on ``(in, out)`` kernels: one group per output unit (a tuple, which
    ``inject_hyperparams`` leaves static). Mask out a classifier head (its columns are the
    classes), e.g. ``weight_decay_mask(..., exclude=(..., "head"))``."""
    return optax.chain(  # adamw with lambda = 0 is Adam's step, -alpha*eta_t*mhat/D, exactly
        optax_decay.adamw(learning_rate, 0.0, schedule=schedule, b1=b1, b2=b2, eps=eps),
        optax_decay.prox_group_lasso(weight_decay, schedule, mask, axis=axis),
    )


def adamcpr_warm_start(learning_rate, weight_decay, *, schedule=None, mask=None, lagmul_rate=1.0):
    """``optax_decay.adamcpr(..., kappa_init_method="warm_start")`` whose ``kappa_init_param``, the
    warm-start length ``k`` (updates of plain Adam, then the bound is the squared norm reached),
    is the ``weight_decay`` slot: a float that a grid can inject. ``k`` must be a whole number;
    below 1 counts as 1 (the 0 that ``inject_hyperparams`` is built with)."""
    k = jnp.maximum(weight_decay, 1.0)
    return optax_decay.adamcpr(
        learning_rate, "warm_start", k, lagmul_rate=lagmul_rate, schedule=schedule, mask=mask
    )


def adamw_projected(
    learning_rate, weight_decay, *, radius_scale=1.0, axis=None, schedule=None, mask=None
) -> optax.GradientTransformation:
    """``adamw`` (paper form), then every ``mask``-ed leaf (or slice, ``axis``) back onto the sphere
    of ``radius_scale`` times its norm at init: ``project_to_norm("init")``, then the weights times
    ``radius_scale`` (a float in the update, so that a grid can inject it)."""

    def rescale(updates, state, params=None):
        new = jax.tree.map(lambda u, w: radius_scale * (w + u) - w, updates, params)
        return new, state

    scale = optax.GradientTransformationExtraArgs(lambda _: optax.EmptyState(), rescale)
    return optax.chain(
        optax_decay.adamw(learning_rate, weight_decay, schedule=schedule, mask=mask),
        optax_decay.project_to_norm("init", axis=axis, mask=mask),
        scale if mask is None else optax.masked(scale, mask),
    )


METHODS: dict[str, Method] = {
    "sgd_l2": Method(optax_decay.sgd_l2, L2, "sgd", {"momentum": MOMENTUM}),
    "sgdw": Method(optax_decay.sgdw, PAPER, "sgd", {"momentum": MOMENTUM}),
    "adam_l2": Method(optax_decay.adam_l2, L2, "adam"),
    "adamw": Method(optax_decay.adamw, PAPER, "adam"),
    "adamw_coupled": Method(optax_decay.adamw, COUPLED, "adam", {"coupled": True}),
    "prox_adam": Method(optax_decay.prox_adam, PAPER, "adam"),
    "adamp": Method(optax_decay.adamp, ADAPTIVE, "adam"),
    "adams": Method(optax_decay.adams, ADAPTIVE, "adam"),  # lambda*alpha*eta_t/sqrt(mean vhat)
    # weight_decay: the warm-start length k in updates, no decay rate (no per-step equivalent)
    "adamcpr_ws": Method(adamcpr_warm_start, ADAPTIVE, "adam"),
    "adamw_projected": Method(adamw_projected, PAPER, "adam"),  # radius_scale: an option
    "prox_adam_l1": Method(optax_decay.prox_adam, PAPER, "adam", {"penalty": "l1"}),
    "adamp_l1": Method(optax_decay.adamp, ADAPTIVE, "adam", {"penalty": "l1"}),
    "adam_group_lasso": Method(adam_group_lasso, PAPER, "adam"),
}

# The demo's and train.py's defaults on digits; OWN_DECAYS: where lambda is not a per-step rate.
SGD_LR, ADAM_LR = 0.05, 3e-3
OWN_DECAYS = {"sgd_l2": 5e-3, "adam_l2": 1e-3, "adamp": 1e-2}


def schedule(steps: int) -> optax.Schedule:
    """``eta_t`` of every example: a cosine from 1 at ``t = 0`` to 0 at ``t = steps``."""
    return optax.cosine_decay_schedule(1.0, steps)


def make(name: str, learning_rate, weight_decay, *, mask=WD_MASK, inject=False, **options):
    """``METHODS[name]`` with its fixed arguments, ``mask`` and ``options`` (``schedule``...);
    ``inject=True``: in :func:`optax.inject_hyperparams`, the numbers in the optimizer state."""
    if name not in METHODS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(METHODS)}")
    kwargs = {"mask": mask, **METHODS[name].fixed, **options}
    factory = METHODS[name].factory
    if inject:
        static = ("mask", *(k for k, v in kwargs.items() if isinstance(v, (bool, str))))
        factory = optax.inject_hyperparams(factory, static_args=static)
    return factory(learning_rate=learning_rate, weight_decay=weight_decay, **kwargs)


def _momentum(method: Method) -> float:
    return method.fixed.get("momentum") or 0.0


def to_paper(name: str, weight_decay: float, learning_rate: float) -> float | None:
    """The paper-form decay per step that ``name``'s ``weight_decay`` amounts to.

    ``None`` for ``adam_l2`` and ``adamp``, whose decay goes through Adam's denominator.
    ``sgd_l2``'s penalty step is multiplied by ``1/(1 - MOMENTUM)`` by the momentum trace.
    """
    method = METHODS[name]
    if method.convention == PAPER:
        return weight_decay
    if method.convention == COUPLED:
        return optax_decay.coupled_to_paper(weight_decay, learning_rate)
    if method.convention == L2 and method.family == "sgd":
        return optax_decay.coupled_to_paper(weight_decay, learning_rate) / (1 - _momentum(method))
    return None


def from_paper(name: str, paper: float, learning_rate: float) -> float | None:
    """The paper-form decay per step ``paper`` in ``name``'s own convention (inverse of
    :func:`to_paper`); ``None`` for ``adam_l2`` and ``adamp``."""
    method = METHODS[name]
    if method.convention == PAPER:
        return paper
    if method.convention == COUPLED:
        return optax_decay.paper_to_coupled(paper, learning_rate)
    if method.convention == L2 and method.family == "sgd":
        return optax_decay.paper_to_coupled(paper * (1 - _momentum(method)), learning_rate)
    return None


def default_hparams(name: str, paper: float, *, sgd_lr=SGD_LR, adam_lr=ADAM_LR, own=OWN_DECAYS):
    """``(learning_rate, weight_decay)`` of ``name`` for a run meant to decay like ``paper``:
    ``sgd_lr`` or ``adam_lr`` by family, and ``own[name]`` (a decay in the method's own
    convention), else :func:`from_paper` of ``paper``, else ``paper`` itself."""
    lr = sgd_lr if METHODS[name].family == "sgd" else adam_lr
    if name in own:
        return lr, own[name]
    converted = from_paper(name, paper, lr)
    return lr, paper if converted is None else converted

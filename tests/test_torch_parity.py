"""Step-by-step parity with ``torch.optim`` on CPU in float64.

The same random gradients are fed to a ``torch.optim`` optimizer (by setting ``p.grad``) and
to the matching ``optax_decay`` optimizer, and the params are compared after every step with
float64 round-off tolerances; the conventions checked (the sections below) are the ones the
docstrings promise. Negative controls check that the comparison tells them apart.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import chex  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import optax_decay as od  # noqa: E402

SHAPES = {"a": (3, 4), "b": (4,), "c": (2, 2, 3)}
NUM_STEPS = 20
RTOL = 1e-12
ATOL = 1e-14

pytestmark = pytest.mark.x64
LINEAR = optax.linear_schedule(0.1, 0.01, NUM_STEPS)
ADAM = dict(b1=0.8, b2=0.95, eps=1e-3)  # and for torch:
TORCH_ADAM = dict(betas=(0.8, 0.95), eps=1e-3)


def _run_parity(tx, make_torch, *, seed=0, grad_scale=1.0, per_step=None):
    """Runs ``tx`` and ``make_torch(params) -> (optimizer, scheduler or None)`` side by side
    on gradients of std ``grad_scale``, comparing after each step; ``per_step(opt, t)`` sets
    per-group ``lr``/``weight_decay`` before torch's step ``t`` (``t = 0`` first)."""
    rng = np.random.default_rng(seed)
    init = {k: rng.standard_normal(s) for k, s in SHAPES.items()}

    params = {k: jnp.asarray(v) for k, v in init.items()}
    assert all(p.dtype == jnp.float64 for p in params.values()), "x64 is not enabled"
    tparams = {k: torch.nn.Parameter(torch.tensor(v, dtype=torch.float64)) for k, v in init.items()}
    opt, sched = make_torch(list(tparams.values()))

    state = tx.init(params)
    for t in range(NUM_STEPS):
        grads = {k: grad_scale * rng.standard_normal(s) for k, s in SHAPES.items()}

        if per_step is not None:
            per_step(opt, t)
        for k, p in tparams.items():
            p.grad = torch.tensor(grads[k], dtype=torch.float64)
        opt.step()
        if sched is not None:
            sched.step()

        # eager: 20 small steps run faster than compiling each optimizer
        updates, state = tx.update({k: jnp.asarray(g) for k, g in grads.items()}, state, params)
        params = optax.apply_updates(params, updates)

        expected = {k: p.detach().numpy().copy() for k, p in tparams.items()}
        try:
            chex.assert_trees_all_close(params, expected, rtol=RTOL, atol=ATOL)
        except AssertionError as err:
            raise AssertionError(f"params differ from torch after step t={t}:\n{err}") from None

    # The run must have gone somewhere, or the comparison proves nothing.
    moved = max(float(np.max(np.abs(params[k] - init[k]))) for k in SHAPES)
    assert moved > 1e-3, moved


def _torch(cls, **kwargs):
    return lambda ps: (cls(ps, **kwargs), None)


def _torch_lambda_lr(cls, eta, **kwargs):
    return lambda ps: (opt := cls(ps, **kwargs), torch.optim.lr_scheduler.LambdaLR(opt, eta))


def _at_count(schedule, t):
    """An Optax schedule's value at step ``t`` as the optimizer sees it: on an int32 count,
    which JAX divides in float32 even with x64 (relative error ~1e-8). Torch gets exactly
    that value, so that the test compares the optimizers, not the schedule's arithmetic."""
    return float(schedule(jnp.asarray(t, jnp.int32)))


def _set_groups(**fns):
    """``per_step`` that sets each param-group key ``k`` to ``fns[k](t)``."""

    def per_step(opt, t):
        for group in opt.param_groups:
            for key, fn in fns.items():
                group[key] = float(fn(t))

    return per_step


# Schedules ``eta_t`` as pairs: (JAX callable of the step count, Python callable).
# Each one changes between t = 0 and t = 1 or later, so an off-by-one in the
# step count shows.
SCHEDULES = {
    "inverse": (lambda t: 1.0 / (1.0 + 0.3 * t), lambda t: 1.0 / (1.0 + 0.3 * t)),
    "cosine": (
        lambda t: 0.5 * (1.0 + jnp.cos(jnp.pi * t / NUM_STEPS)),
        lambda t: 0.5 * (1.0 + math.cos(math.pi * t / NUM_STEPS)),
    ),
    "piecewise": (
        lambda t: jnp.where(t < 7, 1.0, jnp.where(t < 14, 0.3, 0.05)),
        lambda t: 1.0 if t < 7 else (0.3 if t < 14 else 0.05),
    ),
}

ADAM_SETTINGS = [
    pytest.param(dict(lr=1e-2, wd=0.1, betas=(0.9, 0.999), eps=1e-8), id="defaults"),
    pytest.param(dict(lr=0.1, wd=0.5, betas=(0.8, 0.95), eps=1e-3), id="b0.8-0.95-eps1e-3"),
    pytest.param(dict(lr=3e-2, wd=2.0, betas=(0.5, 0.7), eps=0.3), id="b0.5-0.7-eps0.3"),
    pytest.param(dict(lr=5e-2, wd=0.05, betas=(0.0, 0.99), eps=0.0), id="b0-0.99-eps0"),
]


# ---- 1. torch.optim.AdamW == adamw(coupled=True); torch.optim.Adam(weight_decay) == adam_l2.


@pytest.mark.parametrize("hp", ADAM_SETTINGS)
@pytest.mark.parametrize(
    "ours, theirs",
    [
        (functools.partial(od.adamw, coupled=True), torch.optim.AdamW),
        (od.adam_l2, torch.optim.Adam),
    ],
    ids=["adamw_coupled-AdamW", "adam_l2-Adam"],
)
def test_adam_family_matches_torch(ours, theirs, hp):
    tx = ours(hp["lr"], hp["wd"], b1=hp["betas"][0], b2=hp["betas"][1], eps=hp["eps"])
    make = _torch(theirs, lr=hp["lr"], betas=hp["betas"], eps=hp["eps"], weight_decay=hp["wd"])
    _run_parity(tx, make, grad_scale=0.5)


def test_adamw_coupled_matches_torch_adamw_foreach():
    """Torch's multi-tensor implementation is the same optimizer."""
    tx = od.adamw(0.1, 0.5, coupled=True, **ADAM)
    make = _torch(torch.optim.AdamW, lr=0.1, weight_decay=0.5, foreach=True, **TORCH_ADAM)
    _run_parity(tx, make, seed=3)


# ---- 2. The paper form: adamw(lr, wd_paper) == torch AdamW(weight_decay=wd_paper/lr).


@pytest.mark.parametrize(
    "lr, wd_paper, betas, eps",
    [
        (1e-2, 1e-3, (0.9, 0.999), 1e-8),
        (0.1, 0.05, (0.8, 0.95), 1e-3),
        (3e-2, 0.2, (0.5, 0.7), 0.3),
    ],
)
def test_adamw_paper_matches_torch_adamw_rescaled(lr, wd_paper, betas, eps):
    tx = od.adamw(lr, wd_paper, b1=betas[0], b2=betas[1], eps=eps)
    wd_torch = od.paper_to_coupled(wd_paper, lr)
    assert wd_torch == pytest.approx(wd_paper / lr, rel=1e-15)
    make = _torch(torch.optim.AdamW, lr=lr, betas=betas, eps=eps, weight_decay=wd_torch)
    _run_parity(tx, make, seed=1)


def test_adamw_paper_with_lr_schedule_matches_torch_with_rescaled_decay():
    """Paper form, ``alpha(t)`` schedule: the decay stays ``lambda``, not ``alpha(t)*lambda``.

    In torch that is AdamW with ``lr = alpha(t)`` and ``weight_decay = lambda / alpha(t)``
    set per step.
    """
    alpha, wd_paper = LINEAR, 0.02
    tx = od.adamw(alpha, wd_paper, **ADAM)
    make = _torch(torch.optim.AdamW, lr=0.1, weight_decay=0.0, **TORCH_ADAM)
    per_step = _set_groups(
        lr=lambda t: _at_count(alpha, t), weight_decay=lambda t: wd_paper / _at_count(alpha, t)
    )
    _run_parity(tx, make, seed=2, per_step=per_step)


# ---- 3. torch.optim.SGD(momentum, nesterov, weight_decay) == sgd_l2.


@pytest.mark.parametrize(
    "lr, wd, momentum, nesterov",
    [
        pytest.param(0.1, 0.5, None, False, id="plain-None"),
        pytest.param(0.05, 0.1, 0.0, False, id="momentum0.0"),
        pytest.param(0.05, 0.1, 0.9, False, id="heavy-ball"),
        pytest.param(0.02, 1e-2, 0.9, True, id="nesterov"),
        pytest.param(0.1, 0.3, 0.5, True, id="nesterov-0.5"),
        pytest.param(0.1, 0.0, 0.7, False, id="no-decay"),
    ],
)
def test_sgd_l2_matches_torch_sgd(lr, wd, momentum, nesterov):
    tx = od.sgd_l2(lr, wd, momentum=momentum, nesterov=nesterov)
    make = _torch(
        torch.optim.SGD, lr=lr, momentum=momentum or 0.0, nesterov=nesterov, weight_decay=wd
    )
    _run_parity(tx, make, seed=4)


# ---- 4. Schedules: eta_t at t = 0 for the first update, like torch's LambdaLR (which
# multiplies ``lr`` by ``lambda(0)`` for the first step).


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_adamw_coupled_schedule_matches_torch_lambda_lr(name):
    """torch's AdamW at step t uses ``lr*eta_t`` for both the step and the decay."""
    eta_jax, eta_py = SCHEDULES[name]
    lr, wd = 0.1, 0.5
    tx = od.adamw(lr, wd, coupled=True, schedule=eta_jax, **ADAM)
    make = _torch_lambda_lr(torch.optim.AdamW, eta_py, lr=lr, weight_decay=wd, **TORCH_ADAM)
    _run_parity(tx, make, seed=5)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_adamw_paper_schedule_matches_torch_lambda_lr(name):
    """Paper form: decay ``eta_t*lambda`` = torch's ``(lr*eta_t) * (lambda/lr)``."""
    eta_jax, eta_py = SCHEDULES[name]
    lr, wd_paper = 0.05, 0.04
    tx = od.adamw(lr, wd_paper, schedule=eta_jax)
    make = _torch_lambda_lr(torch.optim.AdamW, eta_py, lr=lr, weight_decay=wd_paper / lr)
    _run_parity(tx, make, seed=6, grad_scale=0.5)


@pytest.mark.parametrize(
    "alpha",
    [
        pytest.param(lambda t: 0.2 / (1.0 + 0.1 * t), id="float64-callable"),
        pytest.param(
            optax.warmup_cosine_decay_schedule(0.0, 0.2, 5, NUM_STEPS, end_value=0.02),
            id="optax",
        ),
    ],
)
def test_adamw_coupled_lr_schedule_and_eta_match_torch(alpha):
    """A ``learning_rate`` schedule times ``eta_t``: torch gets ``lr = alpha(t)*eta_t``."""
    eta_jax, _ = SCHEDULES["inverse"]
    wd = 0.3
    tx = od.adamw(alpha, wd, coupled=True, b1=0.9, b2=0.99, eps=1e-6, schedule=eta_jax)
    make = _torch(torch.optim.AdamW, lr=0.2, betas=(0.9, 0.99), eps=1e-6, weight_decay=wd)
    # Each factor as the optimizer sees it, multiplied in float64 as the package does.
    per_step = _set_groups(lr=lambda t: _at_count(alpha, t) * _at_count(eta_jax, t))
    _run_parity(tx, make, seed=7, per_step=per_step)


@pytest.mark.parametrize(
    "tx, make",
    [
        pytest.param(
            od.adam_l2(LINEAR, 0.2, **ADAM),
            _torch(torch.optim.Adam, lr=0.1, weight_decay=0.2, **TORCH_ADAM),
            id="adam_l2",
        ),
        pytest.param(
            od.sgd_l2(LINEAR, 0.3, momentum=0.9, nesterov=True),
            _torch(torch.optim.SGD, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.3),
            id="sgd_l2-nesterov",
        ),
    ],
)
def test_l2_optimizers_with_optax_lr_schedule_match_torch(tx, make):
    """An Optax ``learning_rate`` schedule for the L2 forms: torch's ``lr = alpha(t)``."""
    _run_parity(tx, make, seed=10, per_step=_set_groups(lr=lambda t: _at_count(LINEAR, t)))


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_adam_l2_schedule_matches_torch_lambda_lr(name):
    eta_jax, eta_py = SCHEDULES[name]
    tx = od.adam_l2(0.05, 0.2, schedule=eta_jax, **ADAM)
    make = _torch_lambda_lr(torch.optim.Adam, eta_py, lr=0.05, weight_decay=0.2, **TORCH_ADAM)
    _run_parity(tx, make, seed=8)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_sgd_l2_schedule_matches_torch_lambda_lr(name, nesterov):
    eta_jax, eta_py = SCHEDULES[name]
    tx = od.sgd_l2(0.05, 0.3, momentum=0.9, nesterov=nesterov, schedule=eta_jax)
    make = _torch_lambda_lr(
        torch.optim.SGD, eta_py, lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=0.3
    )
    _run_parity(tx, make, seed=9)


# ---- Negative controls: the comparison tells the conventions apart.


PIECEWISE_JAX, PIECEWISE_PY = SCHEDULES["piecewise"]
CONTROLS = {  # name -> (tx, torch optimizer) that must not match
    "paper-adamw-vs-torch-adamw-same-wd": (
        od.adamw(1e-2, 0.1),
        _torch(torch.optim.AdamW, lr=1e-2, weight_decay=0.1),
    ),
    "coupled-adamw-vs-torch-adam-l2": (
        od.adamw(1e-2, 0.1, coupled=True),
        _torch(torch.optim.Adam, lr=1e-2, weight_decay=0.1),
    ),
    "adam-l2-vs-torch-adamw": (
        od.adam_l2(1e-2, 0.1),
        _torch(torch.optim.AdamW, lr=1e-2, weight_decay=0.1),
    ),
    "nesterov-vs-heavy-ball": (
        od.sgd_l2(0.05, 0.1, momentum=0.9, nesterov=True),
        _torch(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=0.1),
    ),
    "eps-inside-the-sqrt-vs-torch-eps": (  # with grad_scale 0.5
        od.adamw(1e-2, 0.1, coupled=True, eps=0.0, eps_root=1e-2),
        _torch(torch.optim.AdamW, lr=1e-2, eps=0.1, weight_decay=0.1),
    ),
    "schedule-off-by-one-vs-lambda-lr": (  # eta_{t+1} at the first update instead of eta_0
        od.adamw(0.1, 0.5, coupled=True, schedule=lambda t: PIECEWISE_JAX(t + 1)),
        _torch_lambda_lr(torch.optim.AdamW, PIECEWISE_PY, lr=0.1, weight_decay=0.5),
    ),
}


@pytest.mark.parametrize("name", sorted(CONTROLS))
def test_control_the_comparison_tells_conventions_apart(name):
    with pytest.raises(AssertionError, match="differ from torch"):
        _run_parity(*CONTROLS[name], grad_scale=0.5 if name.startswith("eps") else 1.0)

"""Step-by-step float64 parity of two ``adamw``/``sgdw`` options with PyPI peers.

The same random normal gradients (no zero coordinate) are set as ``p.grad`` of a torch
optimizer and fed to the ``optax_decay`` one; the params are compared after each of 20
steps. Negative controls show each comparison tells the option from plain decay.

Cautious decay (Chen et al. 2025) vs ``heavyball`` 3.2.1. ``optax_decay``, with ``u`` the
step's parameter change (``-lr*d``): ``u <- u - rate * 1[u*w <= 0] * w``, ``rate = lr*wd``
(``coupled=True``) or ``eta_t*wd`` (paper form, the only one of ``sgdw``). heavyball
(``utils._compilable_update_``, ``u`` its direction): ``d = wd * (1 - (signbit(p) ^
signbit(u)))``, ``p <- p*(1 - d*lr) - lr*u``; it is coupled, so the paper form is compared
with ``wd_paper = lr*wd``. Tie rule: heavyball decays where ``signbit(p) == signbit(u)``:
at ``u = +0`` only ``p > 0``, at ``u = -0`` only ``p < 0``; the paper and ``optax_decay``
decay at every ``u = 0`` (``test_cautious_tie_rule``). heavyball as plain float64 AdamW /
SGD: ``utils.compile_mode = None`` (no torch.compile), ``storage_dtype="float64"`` (float32
moments otherwise), ``warmup_steps=0``, explicit ``betas`` (default ``(0.9, 0.99)``), and a
dyadic ``lr``: it forms ``lr = base_lr*step/max(step, warmup_steps + 1)`` with ``step`` an
int64 tensor, in torch's default float32 (``lr = 0.1`` drifts by ~5e-8). Its Adam
debiases the betas, ``b_t = 1 - (1 - b)/(1 - b**t)``, so its EMAs are Adam's ``mhat``,
``vhat`` (equal up to round-off), but its denominator is ``max(sqrt(vhat), eps)``, not
``sqrt(vhat + eps_root) + eps``: compared at ``eps = eps_root = 0`` (the ``adam-no-decay``
case checks this part alone). Its SGD momentum ``v <- beta*v + g`` is ``optax.trace``.

Corrected decay, AdamC (Defazio 2025), vs timm 1.0.31 ``adamc``
(``timm/optim/adamw.py::AdamWLegacy(corrected_weight_decay=True)``): ``p <- p*(1 -
wd*lr_t**2/max_lr) - (Adam step)``, ``max_lr`` the lr at construction. Under torch's
``LambdaLR``, ``lr_t = lr*eta_t``: the factor is ``1 - lr*wd*eta_t**2``, i.e.
``adamw(lr, wd, coupled=True, corrected=True, schedule=eta)`` with ``t = 0`` at the first
update (``LambdaLR`` uses ``lambda(0)`` for the first step), or ``adamw(lambda t:
lr*eta(t), ..., peak_learning_rate=lr)``. timm's files are loaded without ``import timm``
(which needs torchvision).
"""

import functools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import chex  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from helpers import timm_optim  # noqa: E402

import optax_decay as od  # noqa: E402

pytestmark = pytest.mark.x64
SHAPES = {"a": (3, 4), "b": (5,), "c": (2, 2, 3)}
NUM_STEPS = 20
RTOL, ATOL = 1e-10, 1e-12
LR, WD = 0.0625, 2.0  # a dyadic lr for heavyball
BETAS = (0.9, 0.99)


def _run(tx, make_torch, seed=0):
    """Feeds the same gradients to ``tx`` and ``make_torch(params) -> (opt, sched or None)``."""
    rng = np.random.default_rng(seed)
    init = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    params = {k: jnp.asarray(v) for k, v in init.items()}
    assert all(p.dtype == jnp.float64 for p in params.values()), "x64 is not enabled"
    tparams = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
    opt, sched = make_torch(list(tparams.values()))
    state = tx.init(params)
    for t in range(NUM_STEPS):
        grads = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
        for k, p in tparams.items():
            p.grad = torch.tensor(grads[k])
        opt.step()
        if sched is not None:
            sched.step()
        updates, state = tx.update({k: jnp.asarray(g) for k, g in grads.items()}, state, params)
        params = optax.apply_updates(params, updates)
        want = {k: p.detach().numpy().copy() for k, p in tparams.items()}
        try:
            chex.assert_trees_all_close(params, want, rtol=RTOL, atol=ATOL)
        except AssertionError as err:
            raise AssertionError(f"params differ from the peer after step t={t}:\n{err}") from None
    assert max(float(np.max(np.abs(params[k] - init[k]))) for k in SHAPES) > 1e-2


# ---- 1. Cautious weight decay vs heavyball.


@pytest.fixture
def hb(monkeypatch):
    heavyball = pytest.importorskip("heavyball")
    monkeypatch.setattr(heavyball.utils, "compile_mode", None)
    return heavyball


def _hb(cls, **kw):
    kw.update(lr=LR, storage_dtype="float64", warmup_steps=0, cautious_weight_decay=True)
    return lambda ps: (cls(ps, **kw), None)


HB_ADAM = dict(betas=BETAS, eps=0.0)
ADAM = dict(b1=BETAS[0], b2=BETAS[1], eps=0.0, eps_root=0.0)
OURS_ADAMW = {  # form -> (optax_decay optimizer, heavyball weight_decay)
    "adam-no-decay": (od.adamw(LR, 0.0, coupled=True, **ADAM), 0.0),
    "coupled": (od.adamw(LR, WD, cautious=True, coupled=True, **ADAM), WD),
    "paper": (od.adamw(LR, LR * WD, cautious=True, **ADAM), WD),
}


@pytest.mark.parametrize("multi_tensor", [True, False])
@pytest.mark.parametrize("form", sorted(OURS_ADAMW))
def test_cautious_adamw_matches_heavyball(hb, form, multi_tensor):
    tx, wd = OURS_ADAMW[form]
    _run(tx, _hb(hb.AdamW, weight_decay=wd, multi_tensor=multi_tensor, **HB_ADAM), seed=1)


@pytest.mark.parametrize("beta", [0.0, 0.9])
def test_cautious_sgdw_matches_heavyball(hb, beta):
    tx = od.sgdw(LR, LR * WD, cautious=True, momentum=beta or None)
    _run(tx, _hb(hb.SGD, beta=beta, weight_decay=WD), seed=2)


@pytest.mark.parametrize("sgd", [False, True], ids=["adamw", "sgdw"])
def test_plain_decay_differs_from_heavyball_cautious(hb, sgd):
    if sgd:
        tx, make = od.sgdw(LR, LR * WD, momentum=0.9), _hb(hb.SGD, beta=0.9, weight_decay=WD)
    else:
        tx, make = od.adamw(LR, WD, coupled=True, **ADAM), _hb(hb.AdamW, weight_decay=WD, **HB_ADAM)
    with pytest.raises(AssertionError, match="differ from the peer"):
        _run(tx, make, seed=3)


def test_cautious_tie_rule(hb):
    """A zero update: optax_decay decays every weight, heavyball (u = +0) only w > 0."""
    w, g = np.array([2.0, -2.0, 2.0, -2.0]), np.array([0.0, 0.0, -0.0, -0.0])
    tx = od.sgdw(LR, LR * WD, cautious=True)
    u, _ = tx.update(jnp.asarray(g), tx.init(jnp.asarray(w)), jnp.asarray(w))
    chex.assert_trees_all_close(w + u, (1 - LR * WD) * w, rtol=1e-15)
    p = torch.nn.Parameter(torch.tensor(w))
    opt, _ = _hb(hb.SGD, beta=0.0, weight_decay=WD)([p])
    p.grad = torch.tensor(g)
    opt.step()  # heavyball's momentum buffer turns -0 into +0: v = 0*0 + (-0) = +0
    chex.assert_trees_all_close(p.detach().numpy(), np.where(w > 0, (1 - LR * WD) * w, w))


# ---- 2. Corrected weight decay (AdamC) vs timm's adamc.


W, T = 3, NUM_STEPS  # warmup to 1 over 3 steps (t = 0, 1, 2), then cosine to 0.1 at t = T-1


def eta(t):
    t = jnp.asarray(t, float)  # float64: an int32 count would be divided in float32
    cosine = 0.1 + 0.45 * (1 + jnp.cos(math.pi * (t - W + 1) / (T - W)))
    return jnp.where(t < W, (t + 1) / W, cosine)


A_LR, A_WD, A_ADAM = 0.1, 0.5, dict(b1=0.9, b2=0.99, eps=1e-6, coupled=True, corrected=True)


def _adamc(ps, foreach=False):
    kw = dict(lr=A_LR, betas=(0.9, 0.99), eps=1e-6, weight_decay=A_WD, foreach=foreach)
    opt = timm_optim("_types", "_helpers", "adamw").AdamWLegacy(
        ps, corrected_weight_decay=True, **kw
    )
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda t: float(eta(t)))


ADAMC = {
    "schedule": od.adamw(A_LR, A_WD, schedule=eta, **A_ADAM),
    "lr-schedule": od.adamw(lambda t: A_LR * eta(t), A_WD, peak_learning_rate=A_LR, **A_ADAM),
}


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("case", sorted(ADAMC))
def test_corrected_adamw_matches_timm_adamc(case, foreach):
    _run(ADAMC[case], functools.partial(_adamc, foreach=foreach), seed=4)


def test_uncorrected_adamw_differs_from_timm_adamc():
    tx = od.adamw(A_LR, A_WD, schedule=eta, **{**A_ADAM, "corrected": False})
    with pytest.raises(AssertionError, match="differ from the peer"):
        _run(tx, _adamc, seed=5)

"""Recipes (docs/recipes.md): the weight decay of five Optax optimizers, rebuilt from Optax's
own direction transforms and this package's decay transforms, and swapped for other rules.

For each of ``optax.lion``, ``optax.contrib.muon``, ``optax.adafactor``, ``optax.adan`` and
``optax.contrib.schedule_free_adamw``: (a) the recipe with :func:`optax_decay.decoupled_decay`
reproduces the Optax optimizer, step by step, in float64; (b) the same recipe with
``cautious_decay``, ``prox_l2`` or ``decoupled_decay(center="init")`` in its place runs and
gives other weights. Adan is also compared with timm's ``Adan`` (the paper's proximal decay).
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import timm_optim

import optax_decay as od

pytestmark = pytest.mark.x64

T = 10  # steps per trajectory
TOL = dict(rtol=1e-12, atol=1e-14)  # float64: the recipes differ from Optax by rounding only


def _params():
    rng = np.random.default_rng(0)
    return {"w": jnp.asarray(rng.normal(size=(5, 4))), "b": jnp.asarray(rng.normal(size=(4,)))}


def _grads(seed=1):
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(rng.normal(size=(T, *v.shape))) for k, v in _params().items()}


def trajectory(tx, params=None, grads=None):
    """The params after each of the ``T`` steps of ``tx`` on the gradient stream (one scan)."""
    params = _params() if params is None else params
    grads = _grads() if grads is None else grads

    def step(carry, g):
        p, s = carry
        u, s = tx.update(g, s, p)
        p = optax.apply_updates(p, u)
        return (p, s), p

    return jax.lax.scan(step, (params, tx.init(params)), grads)[1]


MATRIX = {"w": True, "b": False}  # a mask: decay the matrix only


# muon's default split: 2-D leaves to Muon, the rest to AdamW
is_matrix = lambda params: jax.tree.map(lambda x: x.ndim == 2, params)
not_matrix = lambda params: jax.tree.map(lambda x: x.ndim != 2, params)


# ---- The five optimizers: Optax's, and the recipe with a decay rule `decay` in it. Every
# rule of the package has the signature decay(weight_decay, schedule=None, mask=None, center=).

LION_LR = optax.linear_schedule(0.02, 0.005, T)  # alpha(t)
LION_WD = 1.0
lion_optax = lambda: optax.lion(LION_LR, b1=0.9, b2=0.99, weight_decay=LION_WD, mask=MATRIX)


def lion_recipe(decay):
    # optax.lion: u = -alpha(t) * (sign(...) + lambda*w): coupled, rate alpha(t)*lambda.
    return optax.chain(
        optax.scale_by_lion(b1=0.9, b2=0.99),
        optax.scale_by_learning_rate(LION_LR),
        decay(LION_WD, schedule=LION_LR, mask=MATRIX),
    )


MUON_LR, MUON_WD, MUON_ADAM_LR, MUON_ADAM_WD = 0.05, 0.5, 0.01, 2.0
muon_optax = lambda: optax.contrib.muon(
    MUON_LR, weight_decay=MUON_WD, adam_learning_rate=MUON_ADAM_LR, adam_weight_decay=MUON_ADAM_WD
)


def muon_recipe(decay):
    # Muon's own decay (2-D leaves) is coupled with `learning_rate`, its AdamW's (other
    # leaves) with `adam_learning_rate`: two decays, masked like muon's partition.
    return optax.chain(
        optax.contrib.muon(MUON_LR, adam_learning_rate=MUON_ADAM_LR),  # no decay
        decay(MUON_WD, schedule=MUON_LR, mask=is_matrix),
        decay(MUON_ADAM_WD, schedule=MUON_ADAM_LR, mask=not_matrix),
    )


AF_LR, AF_WD = 0.05, 0.01
AF = dict(min_dim_size_to_factor=2, decay_rate=0.8, momentum=0.9, clipping_threshold=1.0)
adafactor_optax = lambda: optax.adafactor(
    AF_LR, **AF, dtype_momentum=jnp.float64, weight_decay_rate=AF_WD, weight_decay_mask=MATRIX
)


def adafactor_recipe(decay):
    # optax.adafactor adds weight_decay_rate*w after the learning rate, the parameter scale
    # and the momentum, then flips the sign: u = -(step + lambda*w), paper form with eta = 1.
    return optax.chain(
        optax.scale_by_factored_rms(True, AF["decay_rate"], 0, AF["min_dim_size_to_factor"]),
        optax.clip_by_block_rms(AF["clipping_threshold"]),
        optax.scale_by_learning_rate(AF_LR, flip_sign=False),
        optax.scale_by_param_block_rms(),
        optax.ema(AF["momentum"], debias=False, accumulator_dtype=jnp.float64),
        optax.scale(-1.0),
        decay(AF_WD, mask=MATRIX),
    )


ADAN_LR, ADAN_WD = 0.02, 0.5
ADAN = dict(b1=0.98, b2=0.92, b3=0.99, eps=1e-8)
adan_optax = lambda: optax.adan(ADAN_LR, **ADAN, eps_root=1e-8, weight_decay=ADAN_WD, mask=MATRIX)


def adan_recipe(decay):
    # optax.adan: u = -alpha * (direction + lambda*w): coupled, rate alpha*lambda.
    return optax.chain(
        optax.scale_by_adan(**ADAN, eps_root=1e-8),
        optax.scale_by_learning_rate(ADAN_LR),
        decay(ADAN_WD, schedule=ADAN_LR, mask=MATRIX),
    )


SF_LR, SF_WD, SF_WARMUP = 0.05, 0.5, 3
SF_SCHEDULE = optax.warmup_constant_schedule(0.0, SF_LR, SF_WARMUP)  # as schedule_free_adamw
sf_optax = lambda: optax.contrib.schedule_free_adamw(
    SF_LR, warmup_steps=SF_WARMUP, b1=0.9, b2=0.999, weight_decay=SF_WD
)


def sf_recipe(decay):
    # The decay is inside the base optimizer: it moves z, by -gamma_t*lambda*y (y = params).
    base = optax.chain(
        optax.scale_by_rms(decay=0.999, eps=1e-8, eps_in_sqrt=False, bias_correction=True),
        optax.scale_by_learning_rate(SF_SCHEDULE),
        decay(SF_WD, schedule=SF_SCHEDULE),
    )
    return optax.contrib.schedule_free(base, SF_SCHEDULE, b1=0.9, weight_lr_power=2.0)


RECIPES = {
    "lion": (lion_optax, lion_recipe),
    "muon": (muon_optax, muon_recipe),
    "adafactor": (adafactor_optax, adafactor_recipe),
    "adan": (adan_optax, adan_recipe),
    "schedule_free_adamw": (sf_optax, sf_recipe),
}


def require(name):
    module = optax.contrib if name in ("muon", "schedule_free_adamw") else optax  # attr = name
    if not hasattr(module, name):
        pytest.skip(f"{module.__name__}.{name} is not in optax {optax.__version__}")


@functools.cache
def optax_trajectory(name):
    with jax.enable_x64(True):  # also when the cache is filled outside a test
        return trajectory(RECIPES[name][0]())


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_reproduces_optax(name):
    """(a) Optax's direction + ``decoupled_decay`` == the Optax optimizer, all T steps."""
    require(name)
    expected = optax_trajectory(name)
    got = trajectory(RECIPES[name][1](od.decoupled_decay))
    chex.assert_trees_all_close(got, expected, **TOL)


RULES = {
    "cautious": od.cautious_decay,
    "prox": od.prox_l2,
    "center_init": functools.partial(od.decoupled_decay, center="init"),
}


# One swap per optimizer (each compile costs seconds); every recipe takes every rule.
SWAPS = [
    ("lion", "cautious"),
    ("muon", "cautious"),
    ("adafactor", "prox"),
    ("adan", "center_init"),
    ("schedule_free_adamw", "prox"),
]


@pytest.mark.parametrize(("name", "rule"), SWAPS)
def test_recipe_swaps_the_rule(name, rule):
    """(b) The same recipe with another rule of the package in place of the decay."""
    require(name)
    got = trajectory(RECIPES[name][1](RULES[rule]))
    expected = optax_trajectory(name)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(got))
    assert not np.allclose(got["w"], expected["w"], rtol=1e-6)


def test_lion_corrected_rule():
    """AdamC-style corrected decay for Lion: the coupled rate alpha(t)*lambda times
    alpha(t)/alpha_max, i.e. ``decoupled_decay(lambda, schedule=alpha(t)**2/alpha_max)``."""
    peak = 0.02  # LION_LR's largest value (at t = 0)
    corrected = lion_recipe(
        lambda wd, schedule, mask: od.decoupled_decay(
            wd, schedule=lambda t: schedule(t) ** 2 / peak, mask=mask
        )
    )
    got, expected = trajectory(corrected), optax_trajectory("lion")
    chex.assert_trees_all_close(got["b"], expected["b"], **TOL)  # `b` is not decayed
    np.testing.assert_allclose(got["w"][0], expected["w"][0], **TOL)  # alpha(0) is the peak
    assert np.abs(got["w"][-1]).sum() > np.abs(expected["w"][-1]).sum()  # decayed less


def test_schedule_free_decay_cannot_be_appended():
    """Appending the decay after the wrapper is not schedule-free AdamW's decay: it shrinks
    y = b1*x + (1 - b1)*z directly, and the wrapper reads the change back as a shift of x."""
    require("schedule_free_adamw")
    appended = optax.chain(
        optax.contrib.schedule_free_adamw(SF_LR, warmup_steps=SF_WARMUP, b1=0.9, b2=0.999),
        od.decoupled_decay(SF_WD, schedule=SF_SCHEDULE),
    )
    got, expected = trajectory(appended), optax_trajectory("schedule_free_adamw")
    assert not np.allclose(got["w"], expected["w"], rtol=1e-3)


# ---- Adan: optax.adan vs timm's Adan (the paper's algorithm, proximal decay by default).
#
# timm (and the paper, whose betas are 1 - timm's) decays by the prox w/(1 + alpha*lambda)
# after the step; optax.adan by the coupled factor 1 - alpha*lambda (timm's no_prox=True).
# The directions agree in the EMA rates (m, v, n decay by b1, b2, b3 in both), in the bias
# corrections (m/(1 - b1^t), v/(1 - b2^t), n/(1 - b3^t)), in eps (outside the root; optax.adan
# adds eps_root=1e-8 inside it, timm nothing) and on the first step (both take g_prev = g, so
# g - g_prev = 0). They differ in one coefficient: timm uses b2 (0.92) where optax uses
# 1 - b2 (0.08), in m_hat + b2*v_hat and in n = EMA_b3((g + b2*(g - g_prev))**2).


def timm_adan_trajectory(b2, no_prox, foreach=False):
    """timm ``Adan`` in float64 on the same params and gradients: the params after each step."""
    import torch

    params = {k: torch.nn.Parameter(torch.tensor(np.asarray(v))) for k, v in _params().items()}
    betas = (ADAN["b1"], b2, ADAN["b3"])
    opt = timm_optim("_types", "_helpers", "adan").Adan(
        list(params.values()),
        lr=ADAN_LR,
        betas=betas,
        eps=ADAN["eps"],
        weight_decay=ADAN_WD,
        no_prox=no_prox,
        foreach=foreach,
    )
    grads, out = _grads(), {k: [] for k in params}
    for t in range(T):
        for k, p in params.items():
            p.grad = torch.tensor(np.asarray(grads[k][t]))
        opt.step()
        for k, p in params.items():
            out[k].append(p.detach().numpy().copy())
    return {k: np.stack(v) for k, v in out.items()}


def scale_by_adan_paper(b1, b2, b3, eps):
    """Adan's direction as in the paper and timm (betas as timm's, 1 - the paper's):
    ``(m_hat + b2*v_hat) / (sqrt(n_hat) + eps)``, ``n`` the EMA of ``(g + b2*(g - g_prev))**2``.
    ``optax.scale_by_adan`` writes ``1 - b2`` in both places where this has ``b2``."""

    def init(params):
        zeros = optax.tree.zeros_like(params)
        return dict(m=zeros, v=zeros, n=zeros, g=zeros, t=jnp.zeros([], jnp.int32))

    def update(g, state, params=None):
        del params
        first = state["t"] == 0
        diff = jax.tree.map(lambda a, b: jnp.where(first, 0.0, a - b), g, state["g"])
        m = optax.tree.update_moment(g, state["m"], b1, 1)
        v = optax.tree.update_moment(diff, state["v"], b2, 1)
        n = optax.tree.update_moment(optax.tree.add_scale(g, b2, diff), state["n"], b3, 2)
        t = optax.safe_increment(state["t"])
        m_hat, v_hat = optax.tree.bias_correction(m, b1, t), optax.tree.bias_correction(v, b2, t)
        n_hat = optax.tree.bias_correction(n, b3, t)
        u = jax.tree.map(lambda a, b, c: (a + b2 * b) / (jnp.sqrt(c) + eps), m_hat, v_hat, n_hat)
        return u, dict(m=m, v=v, n=n, g=g, t=t)

    return optax.GradientTransformation(init, update)


def adan_prox(direction):
    """``direction``, the step -alpha, then the proximal decay w/(1 + alpha*lambda)."""
    return optax.chain(
        direction,
        optax.scale_by_learning_rate(ADAN_LR),
        od.prox_l2(ADAN_WD, schedule=ADAN_LR),
    )


@functools.cache
def adan_paper_prox_trajectory():
    with jax.enable_x64(True):
        return trajectory(adan_prox(scale_by_adan_paper(**ADAN)))


@pytest.mark.parametrize("foreach", [False, True])
def test_adan_prox_matches_timm(foreach):
    """timm ``Adan(no_prox=False)`` (the paper's default), default betas (0.98, 0.92, 0.99),
    both of timm's kernels: the paper's direction (:func:`scale_by_adan_paper`, since
    ``optax.scale_by_adan`` differs from it, see below), the step ``-alpha``, then
    ``prox_l2(lambda, schedule=alpha)``, all T steps."""
    expected = timm_adan_trajectory(ADAN["b2"], no_prox=False, foreach=foreach)
    chex.assert_trees_all_close(adan_paper_prox_trajectory(), expected, **TOL)


def test_adan_optax_direction_vs_timm():
    """``optax.scale_by_adan`` is timm's direction exactly when its one differing coefficient
    agrees, ``1 - b2 = b2`` (b2 = 0.5), with ``eps_root=0``: then ``prox_l2`` after it gives
    timm's ``no_prox=False`` and ``optax.adan``'s own coupled decay gives timm's
    ``no_prox=True``. At the default b2 = 0.92 the two agree on the first step (g - g_prev = 0)
    and differ from the second on (here by up to 0.6*alpha in a coordinate on step 2)."""
    half = dict(ADAN, b2=0.5)
    prox = trajectory(adan_prox(optax.scale_by_adan(**half, eps_root=0.0)))
    chex.assert_trees_all_close(prox, timm_adan_trajectory(0.5, no_prox=False), **TOL)
    coupled = trajectory(optax.adan(ADAN_LR, **half, eps_root=0.0, weight_decay=ADAN_WD))
    chex.assert_trees_all_close(coupled, timm_adan_trajectory(0.5, no_prox=True), **TOL)

    expected = timm_adan_trajectory(ADAN["b2"], no_prox=False)
    got = trajectory(adan_prox(optax.scale_by_adan(**ADAN, eps_root=0.0)))
    chex.assert_trees_all_close(
        jax.tree.map(lambda x: x[0], got), {k: v[0] for k, v in expected.items()}, **TOL
    )
    assert not np.allclose(got["w"][1], expected["w"][1], rtol=1e-6)

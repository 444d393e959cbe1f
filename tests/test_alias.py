"""The optimizers of `_alias` against their formulas and against each other, in float64.

Every relation listed in the README's "Methods" section is proved here.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import (
    ADAM_FAMILY,
    OPTIMIZERS,
    REGISTRY,
    adam_moments,
    build,
    make_grads,
    make_params,
    make_problem,
    max_rel_diff,
    plain,
    reference,
    run,
)

import optax_decay as od

pytestmark = pytest.mark.x64

ETA = optax.cosine_decay_schedule(1.0, 10, alpha=0.1)
JIT = pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])


# ---- Each optimizer equals its docstring formula, step by step


@JIT
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_matches_reference_with_schedule(name, jit):
    spec, params = REGISTRY[name], make_params()
    grads = make_grads(params, 12)
    got = run(build(name, schedule=ETA), params, grads, jit=jit)
    want = reference(name, params, grads, spec.alpha, spec.lam, eta=lambda t: float(ETA(t)))
    chex.assert_trees_all_close(got, want, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_weight_decay_schedule_matches_reference(name):
    """`weight_decay=lambda(t)`: the reference formula with lambda evaluated at each t."""
    params, alpha, lam = make_params(), REGISTRY[name].alpha, REGISTRY[name].lam
    grads = make_grads(params, 6)
    lam_t = lambda t: lam / (1.0 + 0.5 * t)  # positive for every t
    out = run(build(name, weight_decay=lam_t), params, grads)
    ref = reference(name, params, grads, alpha, lam_t)
    chex.assert_trees_all_close(out, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ADAM_FAMILY)
def test_learning_rate_schedule_and_adam_args(name):
    # float64 arithmetic (optax.linear_schedule would compute in float32).
    alpha_fn = lambda t: 0.1 / (1.0 + 0.3 * t)
    params, grads = make_problem(10)
    kw = dict(b1=0.8, b2=0.95, eps=1e-3, eps_root=1e-4)
    got = run(build(name, alpha_fn, 0.3, schedule=0.5, **kw), params, grads)
    want = reference(name, params, grads, alpha_fn, 0.3, eta=lambda t: 0.5, **kw)
    chex.assert_trees_all_close(got, want, rtol=1e-11, atol=1e-13)


# ---- Equivalences


@JIT
def test_sgd_l2_equals_sgdw_with_alpha_lambda(jit):
    alpha, lam_l2 = 0.1, 0.7
    params, grads = make_problem(15)
    a = run(od.sgd_l2(alpha, lam_l2, schedule=ETA), params, grads, jit=jit)
    b = run(od.sgdw(alpha, alpha * lam_l2, schedule=ETA), params, grads, jit=jit)
    chex.assert_trees_all_close(a, b, rtol=1e-12, atol=1e-14)


def test_sgd_l2_differs_from_sgdw_with_momentum():
    # With momentum the decay enters the trace in one and not the other.
    params, grads = make_problem(10)
    a = run(od.sgd_l2(0.1, 0.7, momentum=0.9), params, grads)[-1]
    b = run(od.sgdw(0.1, 0.07, momentum=0.9), params, grads)[-1]
    assert max_rel_diff(a, b) > 1e-3


@pytest.mark.parametrize("schedule", [None, 0.5, ETA])
def test_adamw_coupled_equals_paper_and_optax(schedule):
    alpha, lam = 0.01, 3.0
    params, grads = make_problem(15)
    coupled = run(od.adamw(alpha, lam, coupled=True, schedule=schedule), params, grads)
    paper = run(od.adamw(alpha, alpha * lam, schedule=schedule), params, grads)
    eta = 1.0 if schedule is None else schedule
    lr = (lambda t: alpha * eta(t)) if callable(eta) else alpha * eta
    ref = run(optax.adamw(lr, weight_decay=lam), params, grads)
    chex.assert_trees_all_close(coupled, paper, rtol=1e-12, atol=1e-14)
    chex.assert_trees_all_close(coupled, ref, rtol=1e-12, atol=1e-14)


def test_adam_l2_differs_from_adamw():
    params, grads = make_problem(30)
    l2 = run(od.adam_l2(0.05, 0.5), params, grads)[-1]
    w = run(od.adamw(0.05, 0.05 * 0.5), params, grads)[-1]
    assert max_rel_diff(l2, w) > 1e-2


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_zero_weight_decay_is_the_plain_optimizer(name):
    """`optax.adam` for the Adam family (with a schedule), `optax.sgd` with its momentum."""
    schedule = ETA if name in ADAM_FAMILY else None
    params, grads = make_problem(15)
    got = run(build(name, 0.05, 0.0, schedule=schedule), params, grads)
    want = run(plain(name, (lambda t: 0.05 * ETA(t)) if schedule else 0.05), params, grads)
    chex.assert_trees_all_close(got, want, rtol=1e-12, atol=1e-14)


# ---- ProxAdam and AdamP return the minimizers of the blog's objectives (P1), (P2)


@pytest.mark.parametrize("name", ["prox_adam", "adamp", "adamw"])
def test_last_step_minimizes_the_blog_objective(name):
    """(P1) ``<y - w, mhat> + lam/(2a) ||y||_D^2 + ||y - w||_D^2 / (2 eta a)`` for ProxAdam,
    (P2), with ``(lam/2) ||y||^2``, for AdamP; AdamW's step, a first-order approximation
    of ProxAdam's, does not minimize (P1): the control that the test can fail."""
    a, lam, eta = 0.1, 0.8, 0.6
    rng = np.random.default_rng(3)
    y = jnp.asarray(rng.normal(size=(7,)))
    grads = [jnp.asarray(rng.normal(size=(7,))) for _ in range(5)]
    tx = build(name, a, lam, schedule=eta)
    state = tx.init(y)
    for g in grads:  # the earlier steps build the state
        u, state = tx.update(g, state, w := y)
        y = w + u
    mhat, D = adam_moments(grads)
    penalty = lam if name == "adamp" else lam * D / a

    def objective(y):
        return (
            jnp.dot(y - w, mhat)
            + jnp.sum(penalty * y**2) / 2
            + jnp.sum(D * (y - w) ** 2) / (2 * eta * a)
        )

    grad = jnp.max(jnp.abs(jax.grad(objective)(y)))
    if name == "adamw":
        assert float(grad) > 1e-3
        return
    assert float(grad) < 1e-12 * float(jnp.max(jnp.abs(mhat)) + 1)
    want = (w - eta * a * mhat / D) / (1 + eta * a * penalty / D)
    chex.assert_trees_all_close(y, want, rtol=1e-13)


def test_prox_minus_adamw_is_second_order_in_the_step():
    params, g = make_problem(1)
    alpha, lam = 0.1, 0.5
    gaps = []
    for eta in [0.04, 0.02, 0.01, 0.005]:
        p = run(od.prox_adam(alpha, lam, schedule=eta), params, g)[-1]
        w = run(od.adamw(alpha, lam, schedule=eta), params, g)[-1]
        gaps.append(max(float(jnp.max(jnp.abs(p[k] - w[k]))) for k in p))
    ratios = np.array(gaps[:-1]) / np.array(gaps[1:])
    np.testing.assert_allclose(ratios, 4.0, rtol=0.03)


# ---- Scale-freeness


def trajectory(tx, c):
    """25 steps of ``tx`` on ``c`` times a logistic regression loss."""
    rng = np.random.default_rng(5)
    X = jnp.asarray(rng.normal(size=(32, 6)))
    y = jnp.asarray(rng.normal(size=(32,)) > 0, jnp.float64)
    params = {"w": jnp.asarray(rng.normal(size=(6,))), "b": jnp.zeros(())}
    loss = lambda p: c * jnp.mean(optax.sigmoid_binary_cross_entropy(X @ p["w"] + p["b"], y))
    state, out = tx.init(params), []
    for _ in range(25):
        u, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, u)
        out.append(params)
    return out


@pytest.mark.parametrize("c", [1e-3, 1e3])
@pytest.mark.parametrize("name", ["adamw", "adamw_coupled", "prox_adam", "adamp", "adam_l2"])
def test_scale_freeness_with_eps_zero(name, c):
    """With eps = 0 the loss times c leaves AdamW and ProxAdam unchanged, not AdamP, Adam+L2."""
    scaled = trajectory(build(name, 0.05, 0.1, eps=0.0), c)
    unscaled = trajectory(build(name, 0.05, 0.1, eps=0.0), 1.0)
    if name in ("adamp", "adam_l2"):
        assert max_rel_diff(scaled[-1], unscaled[-1]) > 1e-3
    else:
        chex.assert_trees_all_close(scaled, unscaled, rtol=1e-9, atol=1e-12)


# ---- Corrected decay (AdamC): the rate times gamma_t / gamma_max, gamma_t = alpha(t)*eta_t


@pytest.mark.parametrize("schedule", [ETA, 0.5], ids=["cosine", "constant"])
@pytest.mark.parametrize("coupled", [False, True])
def test_corrected_decay_factor_is_one_minus_lambda_eta_squared(coupled, schedule):
    """gamma_max defaults to alpha (eta_t peaks at 1): the factor is 1 - lambda*eta_t^2, times
    alpha when coupled (timm's adamc)."""
    alpha, lam = 0.05, (4.0 if coupled else 0.2)
    params, grads = make_problem(12)
    got = run(
        od.adamw(alpha, lam, coupled=coupled, corrected=True, schedule=schedule), params, grads
    )
    eta = lambda t: float(schedule(t)) if callable(schedule) else schedule
    paper_lam = lambda t: lam * eta(t) * (alpha if coupled else 1.0)  # 1 - eta_t*this
    want = reference("adamw", params, grads, alpha, paper_lam, eta=eta)
    chex.assert_trees_all_close(got, want, rtol=1e-11, atol=1e-13)
    plain_run = run(od.adamw(alpha, lam, coupled=coupled, schedule=schedule), params, grads)
    assert max_rel_diff(plain_run[-1], got[-1]) > 1e-6


def test_corrected_decay_with_a_learning_rate_schedule_needs_and_uses_its_peak():
    alpha = lambda t: 0.1 * (t + 1) / (t + 3.0)  # rises toward its supremum 0.1
    params, grads = make_problem(8)
    with pytest.raises(ValueError, match="pass `peak_learning_rate=`"):
        od.adamw(alpha, 0.2, corrected=True)
    got = run(od.adamw(alpha, 0.2, corrected=True, peak_learning_rate=0.1), params, grads)
    want = reference("adamw", params, grads, alpha, lambda t: 0.2 * alpha(t) / 0.1)
    chex.assert_trees_all_close(got, want, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(corrected=True, schedule=lambda t: 1.0 + t / 100), ValueError, r"reaches .* at step"),
        (dict(corrected=True, peak_learning_rate=0.05), ValueError, "above gamma_max = 0.05"),
        (dict(corrected=True, peak_learning_rate=0.0), ValueError, "must be > 0"),
        (dict(peak_learning_rate=0.1), TypeError, "used only with `corrected=True`"),
    ],
)
def test_corrected_decay_rejects_a_wrong_peak(kwargs, error, match):
    with pytest.raises(error, match=match):
        od.adamw(0.1, 0.2, **kwargs)

"""Property-based tests of the core equivalences, over random hyperparameters, shapes and dtypes.

Each example runs the transforms eagerly (no ``jit``): JAX compiles one small
kernel per primitive and leaf shape, cached across examples and optimizers,
so the shapes come from a small pool (0 to 3 dims, an empty leaf included)
and the file stays fast. The float64 properties compare against the NumPy
reference of ``helpers.reference``, which is written from the source texts'
formulas independently of the package.

A ``DecayPrecisionWarning`` is expected (and checked in ``test_precision.py``)
when ``eta*lambda`` falls below the params' resolution, which these ranges
include; it is ignored here.

Set ``OPTAX_DECAY_HYPOTHESIS_EXAMPLES`` to run more examples per test.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import ADAM_FAMILY, OPTIMIZERS, REGISTRY, adam_moments, build, ravel, reference
from helpers import run as run_steps
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import optax_decay as od

pytestmark = pytest.mark.filterwarnings("ignore::optax_decay.DecayPrecisionWarning")

SETTINGS = settings(
    max_examples=int(os.environ.get("OPTAX_DECAY_HYPOTHESIS_EXAMPLES", "30")),
    deadline=None,
    database=None,
)

# Hyperparameters, in the ranges the properties are stated for.
alphas = st.floats(1e-4, 0.5)
lambdas = st.floats(0.0, 2.0)
etas = st.floats(0.0, 1.0, exclude_min=True, allow_subnormal=False)
# (P1), (P2) divide by eta*alpha: keep it away from 0 where the objective is meaningless.
objective_etas = st.floats(1e-4, 1.0)
betas = st.floats(0.0, 0.999, exclude_max=True)
epss = st.floats(1e-8, 1e-2)
eps_roots = st.one_of(st.just(0.0), st.floats(1e-10, 1e-4))
SHAPES = [(), (1,), (3,), (0,), (2, 1), (2, 3), (1, 1, 1), (3, 1, 2), (2, 2, 2)]
shape_lists = st.lists(st.sampled_from(SHAPES), min_size=1, max_size=3)
seeds = st.integers(0, 2**32 - 1)
steps = st.integers(1, 4)
log_scales = st.floats(-3.0, 3.0)  # gradients of size 10**log_scale
decays = st.one_of(st.none(), st.floats(0.5, 1.0))  # eta_t = eta * decay^t, or a constant eta
adam_args = st.fixed_dictionaries({"b1": betas, "b2": betas, "eps": epss, "eps_root": eps_roots})
run_eager = functools.partial(run_steps, jit=False)  # the params after every step


def assume_positive_decay_factor(name, alpha, lam, eta):
    """The constant decay factor ``1 - eta*lambda`` (coupled: times alpha) is > 0, else it raises."""
    kind = REGISTRY[name].kind
    scale = {"coupled": alpha, "corrected": alpha * eta}.get(kind, 1.0)  # corrected: gamma_max 1
    assume(kind in ("l2", "prox", "adaptive") or eta * lam * scale < 1)


def tree(shapes, dtype, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return {f"p{i}": jnp.asarray(scale * rng.normal(size=s), dtype) for i, s in enumerate(shapes)}


@st.composite
def problems(draw):
    """float64 params, 1 to 3 leaves, and 1 to 4 gradients of size ``10**log_scale``."""
    shapes, seed, n, scale = draw(shape_lists), draw(seeds), draw(steps), 10.0 ** draw(log_scales)
    return tree(shapes, jnp.float64, seed), [
        tree(shapes, jnp.float64, seed + 1 + i, scale) for i in range(n)
    ]


def assert_trees_close(got, want, rtol, atol_rel):
    """``|got - want| <= rtol*|want| + atol``, with ``atol`` relative to the largest value."""
    got_leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(got)]
    want_leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(want)]
    biggest = max([1.0] + [float(np.max(np.abs(x), initial=0.0)) for x in want_leaves])
    for x, y in zip(got_leaves, want_leaves, strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol_rel * biggest)


@pytest.mark.x64
@pytest.mark.parametrize("name", [*ADAM_FAMILY, "sgd_l2", "sgdw"])
@SETTINGS
@given(
    alpha=alphas,
    lam=lambdas,
    eta=etas,
    adam=adam_args,
    problem=problems(),
    momentum=st.one_of(st.none(), st.floats(0.0, 0.99)),
    nesterov=st.booleans(),
)
def test_matches_reference(name, alpha, lam, eta, adam, problem, momentum, nesterov):
    assume_positive_decay_factor(name, alpha, lam, eta)
    params, grads = problem
    sgd = dict(momentum=momentum, nesterov=nesterov and momentum is not None)
    kw = adam if name in ADAM_FAMILY else sgd
    got = run_eager(build(name, alpha, lam, schedule=eta, **kw), params, grads)
    want = reference(name, params, grads, alpha, lam, eta=lambda t: eta, **kw)
    assert_trees_close(got, want, rtol=1e-11, atol_rel=1e-13)


@pytest.mark.x64
@SETTINGS
@given(alpha=alphas, lam=lambdas, eta=etas, decay=decays, problem=problems())
def test_sgd_l2_equals_sgdw_with_alpha_lambda(alpha, lam, eta, decay, problem):
    """SGD + L2(lambda') == SGDW(alpha * lambda'), without momentum; also with a schedule
    ``eta_t = eta * decay^t`` (``decay`` not None)."""
    assume(eta * alpha * lam < 1.0)
    schedule = eta if decay is None else (lambda t: eta * decay**t)
    l2 = run_eager(od.sgd_l2(alpha, lam, schedule=schedule), *problem)
    w = run_eager(od.sgdw(alpha, alpha * lam, schedule=schedule), *problem)
    assert_trees_close(l2, w, rtol=1e-12, atol_rel=1e-14)


@pytest.mark.x64
@SETTINGS
@given(alpha=alphas, lam=lambdas, eta=etas, adam=adam_args, problem=problems())
def test_adamw_coupled_equals_paper_and_optax(alpha, lam, eta, adam, problem):
    """adamw(coupled=True, lambda) == adamw(alpha*lambda) == optax.adamw(alpha, lambda)."""
    assume(eta * alpha * lam < 1.0)
    coupled = run_eager(od.adamw(alpha, lam, coupled=True, schedule=eta, **adam), *problem)
    paper = run_eager(od.adamw(alpha, alpha * lam, schedule=eta, **adam), *problem)
    ref = run_eager(optax.adamw(alpha * eta, weight_decay=lam, **adam), *problem)
    assert_trees_close(coupled, paper, rtol=1e-12, atol_rel=1e-14)
    assert_trees_close(coupled, ref, rtol=1e-12, atol_rel=1e-14)


@pytest.mark.x64
@pytest.mark.parametrize("name", ADAM_FAMILY)
@SETTINGS
@given(alpha=alphas, eta=etas, adam=adam_args, problem=problems())
def test_zero_weight_decay_is_optax_adam(name, alpha, eta, adam, problem):
    got = run_eager(build(name, alpha, 0.0, schedule=eta, **adam), *problem)
    want = run_eager(optax.adam(alpha * eta, **adam), *problem)
    assert_trees_close(got, want, rtol=1e-12, atol_rel=1e-14)


@pytest.mark.x64
@pytest.mark.parametrize("name", ["prox_adam", "adamp"])
@SETTINGS
@given(alpha=alphas, lam=lambdas, eta=objective_etas, adam=adam_args, problem=problems())
def test_last_step_minimizes_the_blog_objective(name, alpha, lam, eta, adam, problem):
    r"""The last step's ``y`` zeroes the gradient of (P1) (ProxAdam) or (P2) (AdamP).

    (P1): ``<y - w, mhat> + (lam/(2 alpha))||y||_D^2 + (1/(2 eta alpha))||y - w||_D^2``,
    (P2): ``<y - w, mhat> + (lam/2)||y||^2 + (1/(2 eta alpha))||y - w||_D^2``,
    with ``w`` the params before the step and ``mhat``, ``D`` its Adam moments
    (``||x||_D^2 = sum(D x^2)``). Both are ``<y - w, mhat> + (1/2) sum(P y^2) +
    sum(D (y - w)^2) / (2 eta alpha)`` with ``P = lam D / alpha`` or ``P = lam``, whose
    gradient is ``mhat + P y + D (y - w) / (eta alpha)``.
    """
    params, grads = problem
    trajectory = run_eager(build(name, alpha, lam, schedule=eta, **adam), params, grads)
    w = ravel(([params] + trajectory)[-2])
    y = ravel(trajectory[-1])
    mhat, D = adam_moments(grads, **adam)
    penalty = D * lam / alpha if name == "prox_adam" else lam * np.ones_like(D)
    grad = mhat + penalty * y + D * (y - w) / (eta * alpha)
    # The size of the terms that cancel, per coordinate: rounding of y is relative to it.
    size = np.abs(mhat) + penalty * np.abs(y) + D * (np.abs(y) + np.abs(w)) / (eta * alpha)
    assert np.all(np.abs(grad) <= 1e-12 * size), np.max(np.abs(grad) / size)


@pytest.mark.x64
@pytest.mark.parametrize("name", ["adamw", "adamw_coupled", "prox_adam"])
@SETTINGS
@given(
    alpha=alphas, lam=lambdas, eta=etas, b1=betas, b2=betas, log_c=log_scales, problem=problems()
)
def test_scale_free_with_eps_zero(name, alpha, lam, eta, b1, b2, log_c, problem):
    """Gradients times ``c`` give the same params: ``c`` cancels in ``mhat/D`` when eps = 0."""
    assume_positive_decay_factor(name, alpha, lam, eta)
    params, grads = problem
    tx = build(name, alpha, lam, schedule=eta, b1=b1, b2=b2, eps=0.0)
    scaled = [jax.tree.map(lambda g: 10.0**log_c * g, g) for g in grads]
    got, want = run_eager(tx, params, scaled), run_eager(tx, params, grads)
    assert_trees_close(got, want, rtol=1e-12, atol_rel=1e-14)


# Gradient magnitudes per dtype: float16's range is 6e-8..65504, so Adam's
# (1 - b2) g^2 underflows to 0 below |g| ~ 1e-2 (and eps = 1e-8 is 0 there),
# and g^2 overflows above 255; bfloat16 has float32's range.
GRAD_RANGE = {jnp.float32: (-4.0, 3.0), jnp.bfloat16: (-4.0, 3.0), jnp.float16: (-2.0, 2.0)}
# A smaller pool of shapes: each new (shape, dtype) costs a compile per primitive.
LOW_PRECISION_SHAPES = st.lists(
    st.sampled_from([(), (0,), (3,), (2, 1, 3)]), min_size=1, max_size=3
)


@pytest.mark.parametrize(
    "dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=lambda d: jnp.dtype(d).name
)
@SETTINGS
@given(
    name=st.sampled_from(OPTIMIZERS),
    alpha=alphas,
    lam=lambdas,
    eta=etas,
    b1=betas,
    b2=betas,
    shapes=LOW_PRECISION_SHAPES,
    seed=seeds,
    n=steps,
)
def test_low_precision_keeps_dtype_and_stays_finite(
    dtype, name, alpha, lam, eta, b1, b2, shapes, seed, n
):
    assume_positive_decay_factor(name, alpha, lam, eta)
    lo, hi = GRAD_RANGE[dtype]
    rng = np.random.default_rng(seed)
    params = tree(shapes, dtype, seed)
    # Magnitudes log-uniform in [10**lo, 10**hi], random signs, never 0.
    signed = lambda p: (
        rng.choice([-1.0, 1.0], size=p.shape) * 10.0 ** rng.uniform(lo, hi, size=p.shape)
    )
    grads = [jax.tree.map(lambda p: jnp.asarray(signed(p), dtype), params) for _ in range(n)]
    tx = build(
        name, alpha, lam, schedule=eta, **(dict(b1=b1, b2=b2) if name in ADAM_FAMILY else {})
    )
    state, w = tx.init(params), params
    for g in grads:
        u, state = tx.update(g, state, w)
        w = optax.apply_updates(w, u)
        for leaf_u, leaf_w in zip(jax.tree.leaves(u), jax.tree.leaves(w), strict=True):
            assert leaf_u.dtype == leaf_w.dtype == jnp.dtype(dtype)
            assert bool(jnp.all(jnp.isfinite(leaf_u))), u
            assert bool(jnp.all(jnp.isfinite(leaf_w))), w
    state_dtypes = {x.dtype for x in jax.tree.leaves(state) if jnp.ndim(x) > 0}
    assert state_dtypes <= {jnp.dtype(dtype)}, state_dtypes

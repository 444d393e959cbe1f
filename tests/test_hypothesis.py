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

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import ADAM_FAMILY, ALL, reference
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

# Optimizers whose constant decay factor 1 - eta*lambda must be > 0 (else they raise).
PAPER_DECOUPLED = {"adamw", "sgdw"}


def tree(shapes, dtype, seed, scale=1.0):
    """A dict of normal arrays of the given shapes."""
    rng = np.random.default_rng(seed)
    return {f"p{i}": jnp.asarray(scale * rng.normal(size=s), dtype) for i, s in enumerate(shapes)}


def grad_stream(shapes, dtype, seed, n, scale):
    return [tree(shapes, dtype, seed + 1 + i, scale) for i in range(n)]


def run_eager(tx, params, grads):
    """Params after every step of ``tx`` on the gradient stream, without ``jit``."""
    return run_steps(tx, params, grads, jit=False)


def assert_trees_close(got, want, rtol, atol_rel):
    """``|got - want| <= rtol*|want| + atol``, with ``atol`` relative to the largest value."""
    got_leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(got)]
    want_leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(want)]
    assert len(got_leaves) == len(want_leaves)
    biggest = max([1.0] + [float(np.max(np.abs(x), initial=0.0)) for x in want_leaves])
    for x, y in zip(got_leaves, want_leaves, strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol_rel * biggest)


# --- every optimizer equals the float64 reference ---------------------------------------------

REFERENCE_NAMES = ["adam_l2", "adamw", "adamw_coupled", "prox_adam", "adamp", "sgd_l2", "sgdw"]


@pytest.mark.parametrize("name", REFERENCE_NAMES)
@SETTINGS
@given(alpha=alphas, lam=lambdas, eta=etas, b1=betas, b2=betas, eps=epss, eps_root=eps_roots,
       momentum=st.one_of(st.none(), st.floats(0.0, 0.99)), nesterov=st.booleans(),
       shapes=shape_lists, seed=seeds, n=steps, log_scale=log_scales)
def test_matches_reference(name, alpha, lam, eta, b1, b2, eps, eps_root, momentum, nesterov,
                           shapes, seed, n, log_scale):
    if name in PAPER_DECOUPLED:
        assume(eta * lam < 1.0)
    if name == "adamw_coupled":
        assume(eta * alpha * lam < 1.0)
    with jax.enable_x64(True):
        params = tree(shapes, jnp.float64, seed)
        grads = grad_stream(shapes, jnp.float64, seed, n, 10.0**log_scale)
        if name.startswith("sgd"):
            nesterov = nesterov and momentum is not None
            kw = dict(momentum=momentum, nesterov=nesterov)
            tx = {"sgd_l2": od.sgd_l2, "sgdw": od.sgdw}[name](alpha, lam, schedule=eta, **kw)
        else:
            kw = dict(b1=b1, b2=b2, eps=eps, eps_root=eps_root)
            tx = ADAM_FAMILY[name](alpha, lam, schedule=eta, **kw)
        got = run_eager(tx, params, grads)
        want = reference(name, params, grads, alpha, lam, eta=lambda t: eta, **kw)
        assert_trees_close(got, want, rtol=1e-11, atol_rel=1e-13)


# --- SGD + L2(lambda') == SGDW(alpha * lambda'), without momentum ------------------------------


@SETTINGS
@given(alpha=alphas, lam=lambdas, eta=etas, decay=st.one_of(st.none(), st.floats(0.5, 1.0)),
       shapes=shape_lists, seed=seeds, n=steps, log_scale=log_scales)
def test_sgd_l2_equals_sgdw_with_alpha_lambda(alpha, lam, eta, decay, shapes, seed, n, log_scale):
    """Also with a schedule ``eta_t = eta * decay^t`` (``decay`` not None)."""
    assume(eta * alpha * lam < 1.0)
    schedule = eta if decay is None else (lambda t: eta * decay**t)
    with jax.enable_x64(True):
        params = tree(shapes, jnp.float64, seed)
        grads = grad_stream(shapes, jnp.float64, seed, n, 10.0**log_scale)
        l2 = run_eager(od.sgd_l2(alpha, lam, schedule=schedule), params, grads)
        w = run_eager(od.sgdw(alpha, alpha * lam, schedule=schedule), params, grads)
        assert_trees_close(l2, w, rtol=1e-12, atol_rel=1e-14)


# --- adamw(coupled=True, lambda) == adamw(alpha*lambda) == optax.adamw(alpha, lambda) ----------


@SETTINGS
@given(alpha=alphas, lam=lambdas, eta=etas, b1=betas, b2=betas, eps=epss,
       shapes=shape_lists, seed=seeds, n=steps, log_scale=log_scales)
def test_adamw_coupled_equals_paper_and_optax(alpha, lam, eta, b1, b2, eps, shapes, seed, n,
                                              log_scale):
    assume(eta * alpha * lam < 1.0)
    kw = dict(b1=b1, b2=b2, eps=eps)
    with jax.enable_x64(True):
        params = tree(shapes, jnp.float64, seed)
        grads = grad_stream(shapes, jnp.float64, seed, n, 10.0**log_scale)
        coupled = run_eager(od.adamw(alpha, lam, coupled=True, schedule=eta, **kw), params, grads)
        paper = run_eager(od.adamw(alpha, alpha * lam, schedule=eta, **kw), params, grads)
        ref = run_eager(optax.adamw(alpha * eta, weight_decay=lam, **kw), params, grads)
        assert_trees_close(coupled, paper, rtol=1e-12, atol_rel=1e-14)
        assert_trees_close(coupled, ref, rtol=1e-12, atol_rel=1e-14)


# --- weight_decay = 0 is Adam ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ADAM_FAMILY))
@SETTINGS
@given(alpha=alphas, eta=etas, b1=betas, b2=betas, eps=epss, eps_root=eps_roots,
       shapes=shape_lists, seed=seeds, n=steps, log_scale=log_scales)
def test_zero_weight_decay_is_optax_adam(name, alpha, eta, b1, b2, eps, eps_root, shapes, seed,
                                         n, log_scale):
    kw = dict(b1=b1, b2=b2, eps=eps, eps_root=eps_root)
    with jax.enable_x64(True):
        params = tree(shapes, jnp.float64, seed)
        grads = grad_stream(shapes, jnp.float64, seed, n, 10.0**log_scale)
        got = run_eager(ADAM_FAMILY[name](alpha, 0.0, schedule=eta, **kw), params, grads)
        want = run_eager(optax.adam(alpha * eta, **kw), params, grads)
        assert_trees_close(got, want, rtol=1e-12, atol_rel=1e-14)


# --- ProxAdam and AdamP minimize the blog's (P1) and (P2) ----------------------------------------


def flat(t):
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(t)])


def adam_moments(grads, b1, b2, eps, eps_root):
    """``mhat`` and ``D`` after the whole stream, flattened, in float64 NumPy."""
    m = v = 0.0
    for g in grads:
        gf = flat(g)
        m = b1 * m + (1 - b1) * gf
        v = b2 * v + (1 - b2) * gf**2
    t = len(grads)
    return m / (1 - b1**t), np.sqrt(v / (1 - b2**t) + eps_root) + eps


@pytest.mark.parametrize("name", ["prox_adam", "adamp"])
@SETTINGS
@given(alpha=alphas, lam=lambdas, eta=objective_etas, b1=betas, b2=betas, eps=epss,
       eps_root=eps_roots, shapes=shape_lists, seed=seeds, n=steps, log_scale=log_scales)
def test_last_step_minimizes_the_blog_objective(name, alpha, lam, eta, b1, b2, eps, eps_root,
                                                shapes, seed, n, log_scale):
    r"""The last step's ``y`` zeroes the gradient of (P1) (ProxAdam) or (P2) (AdamP).

    (P1): ``<y - w, mhat> + (lam/(2 alpha))||y||_D^2 + (1/(2 eta alpha))||y - w||_D^2``,
    (P2): ``<y - w, mhat> + (lam/2)||y||^2 + (1/(2 eta alpha))||y - w||_D^2``,
    with ``w`` the params before the step and ``mhat``, ``D`` its Adam moments
    (``||x||_D^2 = sum(D x^2)``). Both are ``<y - w, mhat> + (1/2) sum(P y^2) +
    sum(D (y - w)^2) / (2 eta alpha)`` with ``P = lam D / alpha`` or ``P = lam``, whose
    gradient is ``mhat + P y + D (y - w) / (eta alpha)``.
    """
    kw = dict(b1=b1, b2=b2, eps=eps, eps_root=eps_root)
    with jax.enable_x64(True):
        params = tree(shapes, jnp.float64, seed)
        grads = grad_stream(shapes, jnp.float64, seed, n, 10.0**log_scale)
        tx = {"prox_adam": od.prox_adam, "adamp": od.adamp}[name](alpha, lam, schedule=eta, **kw)
        trajectory = run_eager(tx, params, grads)
    w = flat(([params] + trajectory)[-2])
    y = flat(trajectory[-1])
    mhat, D = adam_moments(grads, **kw)
    penalty = D * lam / alpha if name == "prox_adam" else lam * np.ones_like(D)
    grad = mhat + penalty * y + D * (y - w) / (eta * alpha)
    # The size of the terms that cancel, per coordinate: rounding of y is relative to it.
    size = np.abs(mhat) + penalty * np.abs(y) + D * (np.abs(y) + np.abs(w)) / (eta * alpha)
    assert np.all(np.abs(grad) <= 1e-12 * size), np.max(np.abs(grad) / size)


# --- low-precision dtypes --------------------------------------------------------------------

# Gradient magnitudes per dtype: float16's range is 6e-8..65504, so Adam's
# (1 - b2) g^2 underflows to 0 below |g| ~ 1e-2 (and eps = 1e-8 is 0 there),
# and g^2 overflows above 255; bfloat16 has float32's range.
GRAD_RANGE = {jnp.float32: (-4.0, 3.0), jnp.bfloat16: (-4.0, 3.0), jnp.float16: (-2.0, 2.0)}
# A smaller pool of shapes: each new (shape, dtype) costs a compile per primitive.
LOW_PRECISION_SHAPES = [(), (0,), (3,), (2, 1, 3)]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16],
                         ids=lambda d: jnp.dtype(d).name)
@SETTINGS
@given(name=st.sampled_from(sorted(ALL)), alpha=alphas, lam=lambdas, eta=etas, b1=betas,
       b2=betas, shapes=st.lists(st.sampled_from(LOW_PRECISION_SHAPES), min_size=1, max_size=3),
       seed=seeds, n=steps)
def test_low_precision_keeps_dtype_and_stays_finite(dtype, name, alpha, lam, eta, b1, b2, shapes,
                                                    seed, n):
    if name in ("adamw", "sgdw", "sgdw_nesterov"):
        assume(eta * lam < 1.0)
    if name == "adamw_coupled":
        assume(eta * alpha * lam < 1.0)
    lo, hi = GRAD_RANGE[dtype]
    rng = np.random.default_rng(seed)
    params = tree(shapes, dtype, seed)
    grads = []
    for _ in range(n):
        # Magnitudes log-uniform in [10**lo, 10**hi], random signs, never 0.
        grads.append({k: jnp.asarray(rng.choice([-1.0, 1.0], size=p.shape)
                                     * 10.0 ** rng.uniform(lo, hi, size=p.shape), dtype)
                      for k, p in params.items()})
    kw = {} if name.startswith("sgd") else dict(b1=b1, b2=b2)
    tx = ALL[name](alpha, lam, schedule=eta, **kw)
    state, w = tx.init(params), params
    for g in grads:
        u, state = tx.update(g, state, w)
        w = optax.apply_updates(w, u)
        for leaf_u, leaf_w, leaf_p in zip(jax.tree.leaves(u), jax.tree.leaves(w),
                                          jax.tree.leaves(params), strict=True):
            assert leaf_u.dtype == leaf_p.dtype
            assert leaf_w.dtype == leaf_p.dtype
            assert bool(jnp.all(jnp.isfinite(leaf_u))), u
            assert bool(jnp.all(jnp.isfinite(leaf_w))), w
    state_dtypes = {x.dtype for x in jax.tree.leaves(state) if jnp.ndim(x) > 0}
    assert state_dtypes <= {jnp.dtype(dtype)}, state_dtypes

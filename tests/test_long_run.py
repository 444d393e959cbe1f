r"""10,000 steps on a linear loss: every optimizer ends at its hand-derived fixed point.

The loss is ``f(w) = <g, w>``, so the gradient is the constant ``g`` (mixed
signs, magnitudes from 1e-3 to 1e2) and the only thing that stops the weights
is the decay. The runs are float64 with ``eps = 0`` and a constant schedule
``eta`` unless said otherwise; 10,000 steps run in one ``lax.fori_loop`` under
one ``jit``.

The fixed points, derived by hand. With a constant gradient, Adam's
bias-corrected moments are exact from the first step: ``m_t = (1 - b1^t) g``,
so ``mhat = g`` and ``vhat = g^2``, ``D = |g|`` (``eps = 0``) and
``mhat / D = sign(g)``, whatever ``b1, b2``. Then, with ``s = alpha*eta``:

* AdamW (paper): ``w <- (1 - eta*lam) w - s sign(g)``. A fixed point has
  ``eta*lam w = -alpha*eta sign(g)``: ``w* = -alpha sign(g) / lam``, reached
  geometrically at rate ``1 - eta*lam``. It does not depend on ``|g|``: the
  same ``w*`` with ``g`` times 1e3.
* ProxAdam: ``w <- (w - s sign(g)) / (1 + eta*lam)``. A fixed point has
  ``(1 + eta*lam) w = w - alpha*eta sign(g)``: again ``w* = -alpha sign(g) / lam``,
  now at rate ``1 / (1 + eta*lam)``, a contraction for *every* ``eta*lam``
  (``eta*lam = 1e3`` included, where AdamW's factor ``1 - eta*lam`` is negative).
* AdamP: ``w <- (w - s g/|g|) / (1 + s lam/|g|)``. A fixed point has
  ``(s lam/|g|) w = -s g/|g|``: ``w* = -g / lam``, the minimizer of
  ``f(w) + (lam/2)||w||^2``, at rate ``1 / (1 + s lam/|g|)``: coordinate ``i``
  needs about ``|g_i| / (s lam)`` steps per e-fold (100 for ``|g| = 100``,
  ``s = 0.1``, ``lam = 1``, so 10,000 steps leave ``e^-10``).
* Adam+L2: Adam on ``h = g + lam w``. A fixed point of ``w <- w - s mhat/D``
  needs ``mhat = 0``, i.e. ``h = 0``: ``w* = -g / lam`` again. But here the
  gradient fed to Adam moves with ``w``, so convergence is not automatic.
  Writing ``x = w - w*``, ``h = lam x`` and ``mhat/D`` is invariant to the
  scale of ``h``: ``x`` follows ``x <- x - s * dir(x history)``, independent
  of ``g`` and ``lam``, and with a constant ``s`` it ends in a cycle of
  amplitude ~``s`` around 0 (``test_adam_l2_constant_step_ends_within_alpha``),
  which is more than 1% of ``|w*| = 1e-3`` for the small coordinates. A
  decaying step ``s_t = alpha exp(-t/1000)`` keeps the fixed point (it does not
  depend on ``s``) and shrinks the cycle: Adam+L2 then converges to
  ``-g/lam`` to ~1e-12 (checked in float64 NumPy on 3,000 random coordinates
  with ``|g|`` log-uniform in [1e-3, 1e2] before writing this test).

All fixed points above are independent of ``eta`` as well, since ``eta``
multiplies both the step and the decay.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_decay as od

STEPS = 10_000
G = np.array([1e-3, -3e-3, 2e-2, -0.15, 0.7, -1.0, 4.0, -12.0, 35.0, -100.0])
W0 = np.random.default_rng(0).normal(size=G.shape)

pytestmark = pytest.mark.x64


def run_linear(tx, g, w0=W0, steps=STEPS, target=None, tail=1000):
    """Minimizes ``<g, w>`` with ``tx`` for ``steps`` steps in one jitted ``fori_loop``.

    Returns the final ``w``, whether every iterate was finite and, if
    ``target`` is given, the largest ``|w - target|`` over the last ``tail``
    iterates (per coordinate).
    """
    g = jnp.asarray(g, jnp.float64)
    w0 = jnp.asarray(w0, jnp.float64)
    target = jnp.zeros_like(w0) if target is None else jnp.asarray(target, jnp.float64)
    loss_grad = jax.grad(lambda w: jnp.dot(g, w))

    @jax.jit
    def go(w0):
        def body(t, carry):
            w, state, finite, dev = carry
            u, state = tx.update(loss_grad(w), state, w)
            w = w + u
            dev = jnp.where(t >= steps - tail, jnp.maximum(dev, jnp.abs(w - target)), dev)
            return w, state, finite & jnp.all(jnp.isfinite(w)), dev

        init = (w0, tx.init(w0), jnp.array(True), jnp.zeros_like(w0))
        return jax.lax.fori_loop(0, steps, body, init)

    w, _, finite, dev = go(w0)
    return np.asarray(w), bool(finite), np.asarray(dev)


def assert_at(w, want, rtol=0.01):
    err = np.abs(w - want) / np.abs(want)
    assert err.max() <= rtol, f"relative error per coordinate {err}, w={w}, want={want}"


DECOUPLED = {  # name -> (factory, weight_decay in its own convention)
    "adamw": (od.adamw, 2e-3),
    "prox_adam": (od.prox_adam, 2e-3),
    # lambda_paper = alpha * lambda_coupled = 2e-3: the same fixed point.
    "adamw_coupled": (functools.partial(od.adamw, coupled=True), 2e-3 / 1e-2),
}


@pytest.mark.parametrize("name", sorted(DECOUPLED))
def test_decoupled_fixed_point_is_minus_alpha_sign_g_over_lambda(name):
    """``w* = -alpha sign(g) / lam`` (paper ``lam``), the same for ``g`` and ``1e3 g``."""
    factory, wd = DECOUPLED[name]
    alpha, lam_paper = 1e-2, 2e-3  # rate 1 - 2e-3: 10,000 steps leave e^-20
    want = -alpha * np.sign(G) / lam_paper  # |w*| = 5
    tx = factory(alpha, wd, eps=0.0)
    for g in (G, 1e3 * G):  # (that the whole trajectory is the same: test_alias, test_hypothesis)
        w, finite, _ = run_linear(tx, g)
        assert finite
        assert_at(w, want)


L2_OPTIMUM = {  # name -> (optimizer, lam)
    "adamp": (lambda: od.adamp(0.1, 1.0, eps=0.0), 1.0),
    # s = alpha*eta = 0.1 again: the fixed point depends neither on the betas nor on eta
    "adamp-betas-eta": (lambda: od.adamp(0.2, 1.0, b1=0.5, b2=0.9, eps=0.0, schedule=0.5), 1.0),
    "adamp-huge-1e2": (lambda: od.adamp(0.1, 1e2, eps=0.0), 1e2),
    "adamp-huge-1e3": (lambda: od.adamp(0.1, 1e3, eps=0.0), 1e3),
    # with a decaying step alpha*exp(-t/1000): see the next test
    "adam_l2": (lambda: od.adam_l2(1.0, 1.0, eps=0.0, schedule=lambda t: jnp.exp(-t / 1e3)), 1.0),
}


@pytest.mark.parametrize("name", sorted(L2_OPTIMUM))
def test_l2_fixed_point_is_the_l2_optimum(name):
    """``w* = -g / lam``, the minimizer of ``<g, w> + (lam/2)||w||^2``, finite all along."""
    make, lam = L2_OPTIMUM[name]
    w, finite, _ = run_linear(make(), G)
    assert finite
    assert_at(w, -G / lam)


def test_adam_l2_constant_step_ends_within_alpha():
    """With a constant step Adam+L2 only reaches a neighbourhood of radius ~alpha.

    This is why the Adam+L2 case above decays the step: around ``w*`` the iteration is
    a cycle whose amplitude (~0.6 alpha with the default betas, in float64
    NumPy on 3,000 random coordinates) does not depend on ``g`` or ``lam``.
    """
    alpha, lam = 0.1, 1.0
    want = -G / lam
    _, finite, dev = run_linear(od.adam_l2(alpha, lam, eps=0.0), G, target=want)
    assert finite
    assert dev.max() <= alpha, dev


@pytest.mark.parametrize("lam,eta", [(10.0, 1.0), (1e2, 1.0), (1e3, 1.0), (2e3, 0.5)])
@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_prox_adam_huge_decay_is_stable(lam, eta, scale):
    """``eta*lam`` up to 1e3: finite at every step, fixed point ``-alpha sign(g) / lam``."""
    alpha = 1e-2
    tx = od.prox_adam(alpha, lam, eps=0.0, schedule=eta)
    w, finite, dev = run_linear(tx, scale * G, target=np.zeros_like(G), tail=STEPS)
    assert finite
    assert_at(w, -alpha * np.sign(G) / lam)
    # Never past where it started: |w_t| <= max(|w_0|, alpha/lam) at every step.
    assert np.all(dev <= np.maximum(np.abs(W0), alpha / lam) * (1 + 1e-12))

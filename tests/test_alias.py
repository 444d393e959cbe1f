"""The optimizers against their formulas and against each other (closed forms)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from helpers import (
    ADAM_FAMILY,
    ALL,
    HYPER,
    SGD_FAMILY,
    make_grads,
    make_params,
    max_rel_diff,
    ref_kwargs,
    reference,
    run,
)

import optax_decay as od


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


ETA = optax.cosine_decay_schedule(1.0, 10, alpha=0.1)


class TestFormulasVariants(chex.TestCase):
    """Each optimizer equals its docstring formula, step by step, in float64."""

    def setUp(self):
        super().setUp()
        self.enter_context(jax.enable_x64(True))

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*sorted(ALL))
    def test_matches_reference_with_schedule(self, name):
        alpha, lam = HYPER[name]
        params = make_params()
        grads = make_grads(params, 12)
        tx = ALL[name](alpha, lam, schedule=ETA)
        update = self.variant(tx.update)
        state, got = tx.init(params), []
        w = params
        for g in grads:
            u, state = update(g, state, w)
            w = optax.apply_updates(w, u)
            got.append(w)
        want = reference(params=params, grads=grads, alpha=alpha, lam=lam,
                         eta=lambda t: float(ETA(t)), **ref_kwargs(name))
        chex.assert_trees_all_close(got, want, rtol=1e-11, atol=1e-13)

    @chex.variants(with_jit=True, without_jit=True)
    def test_sgd_l2_equals_sgdw_with_alpha_lambda(self):
        alpha, lam_l2 = 0.1, 0.7
        params = make_params()
        grads = make_grads(params, 15)
        a = od.sgd_l2(alpha, lam_l2, schedule=ETA)
        b = od.sgdw(alpha, alpha * lam_l2, schedule=ETA)
        ua, ub = self.variant(a.update), self.variant(b.update)
        sa, sb, wa, wb = a.init(params), b.init(params), params, params
        for g in grads:
            u, sa = ua(g, sa, wa)
            wa = optax.apply_updates(wa, u)
            u, sb = ub(g, sb, wb)
            wb = optax.apply_updates(wb, u)
            chex.assert_trees_all_close(wa, wb, rtol=1e-12, atol=1e-14)


class TestFormulas:
    @pytest.mark.parametrize("name", sorted(ADAM_FAMILY))
    def test_learning_rate_schedule_and_adam_args(self, name):
        # float64 arithmetic (optax.linear_schedule would compute in float32).
        alpha_fn = lambda t: 0.1 / (1.0 + 0.3 * t)
        params = make_params()
        grads = make_grads(params, 10)
        kw = dict(b1=0.8, b2=0.95, eps=1e-3, eps_root=1e-4)
        got = run(ADAM_FAMILY[name](alpha_fn, 0.3, schedule=0.5, **kw), params, grads)
        want = reference(name, params, grads, alpha_fn, 0.3, eta=lambda t: 0.5, **kw)
        chex.assert_trees_all_close(got, want, rtol=1e-11, atol=1e-13)


class TestEquivalences:
    def test_sgd_l2_differs_from_sgdw_with_momentum(self):
        # With momentum the decay enters the trace in one and not the other.
        params = make_params()
        grads = make_grads(params, 10)
        a = run(od.sgd_l2(0.1, 0.7, momentum=0.9), params, grads)[-1]
        b = run(od.sgdw(0.1, 0.07, momentum=0.9), params, grads)[-1]
        assert max_rel_diff(a, b) > 1e-3

    @pytest.mark.parametrize("schedule", [None, 0.5, ETA])
    def test_adamw_coupled_equals_paper_and_optax(self, schedule):
        alpha, lam = 0.01, 3.0
        params = make_params()
        grads = make_grads(params, 15)
        coupled = run(od.adamw(alpha, lam, coupled=True, schedule=schedule), params, grads)
        paper = run(od.adamw(alpha, alpha * lam, schedule=schedule), params, grads)
        eta = 1.0 if schedule is None else schedule
        lr = (lambda t: alpha * eta(t)) if callable(eta) else alpha * eta
        ref = run(optax.adamw(lr, weight_decay=lam), params, grads)
        chex.assert_trees_all_close(coupled, paper, rtol=1e-12, atol=1e-14)
        chex.assert_trees_all_close(coupled, ref, rtol=1e-12, atol=1e-14)

    def test_adam_l2_differs_from_adamw(self):
        params = make_params()
        grads = make_grads(params, 30)
        l2 = run(od.adam_l2(0.05, 0.5), params, grads)[-1]
        w = run(od.adamw(0.05, 0.05 * 0.5), params, grads)[-1]
        assert max_rel_diff(l2, w) > 1e-2

    @pytest.mark.parametrize("name", sorted(ADAM_FAMILY))
    def test_zero_weight_decay_is_adam(self, name):
        params = make_params()
        grads = make_grads(params, 15)
        got = run(ADAM_FAMILY[name](0.05, 0.0, schedule=ETA), params, grads)
        want = run(optax.adam(lambda t: 0.05 * ETA(t)), params, grads)
        chex.assert_trees_all_close(got, want, rtol=1e-12, atol=1e-14)

    @pytest.mark.parametrize("name", sorted(SGD_FAMILY))
    def test_zero_weight_decay_is_sgd(self, name):
        params = make_params()
        grads = make_grads(params, 10)
        momentum = None if name in ("sgd_l2", "sgdw") else 0.9
        nesterov = name == "sgdw_nesterov"
        got = run(SGD_FAMILY[name](0.05, 0.0), params, grads)
        want = run(optax.sgd(0.05, momentum=momentum, nesterov=nesterov), params, grads)
        chex.assert_trees_all_close(got, want, rtol=1e-12, atol=1e-14)

    @pytest.mark.parametrize("name", sorted(ALL))
    def test_constant_schedule_equals_constant(self, name):
        params = make_params()
        grads = make_grads(params, 8)
        alpha, lam = HYPER[name]
        a = run(ALL[name](alpha, lam, schedule=0.7), params, grads)
        b = run(ALL[name](optax.constant_schedule(alpha), lam,
                          schedule=optax.constant_schedule(0.7)), params, grads)
        chex.assert_trees_all_close(a, b, rtol=1e-12, atol=1e-14)


def adam_moments(grads, b1=0.9, b2=0.999, eps=1e-8):
    """mhat_t and D_t of the last gradient of the stream, in float64 NumPy."""
    m = v = 0.0
    for g in grads:
        m = b1 * m + (1 - b1) * np.asarray(g)
        v = b2 * v + (1 - b2) * np.asarray(g) ** 2
    t = len(grads)
    return m / (1 - b1**t), np.sqrt(v / (1 - b2**t)) + eps


class TestProximalObjectives:
    """ProxAdam and AdamP return the minimizers of the seed's objectives (P1), (P2)."""

    def setup_method(self):
        rng = np.random.default_rng(3)
        self.w0 = jnp.asarray(rng.normal(size=(7,)))
        self.grads = [jnp.asarray(rng.normal(size=(7,))) for _ in range(5)]
        self.alpha, self.lam, self.eta = 0.1, 0.8, 0.6

    def last_step(self, tx):
        """Params before and after the last update (the earlier ones build the state)."""
        w, state = self.w0, tx.init(self.w0)
        for g in self.grads:
            before = w
            u, state = tx.update(g, state, w)
            w = w + u
        return before, w

    def test_prox_adam_minimizes_p1(self):
        tx = od.prox_adam(self.alpha, self.lam, schedule=self.eta)
        w, y = self.last_step(tx)
        mhat, D = adam_moments(self.grads)
        a, lam, eta = self.alpha, self.lam, self.eta

        def p1(y):
            return (jnp.dot(y - w, mhat) + lam / (2 * a) * jnp.sum(D * y**2)
                    + 1 / (2 * eta * a) * jnp.sum(D * (y - w) ** 2))

        grad = jax.grad(p1)(y)
        assert float(jnp.max(jnp.abs(grad))) < 1e-12 * float(jnp.max(jnp.abs(mhat)) + 1)
        chex.assert_trees_all_close(y, (w - eta * a * mhat / D) / (1 + eta * lam), rtol=1e-13)

    def test_adamp_minimizes_p2(self):
        tx = od.adamp(self.alpha, self.lam, schedule=self.eta)
        w, y = self.last_step(tx)
        mhat, D = adam_moments(self.grads)
        a, lam, eta = self.alpha, self.lam, self.eta

        def p2(y):
            return (jnp.dot(y - w, mhat) + lam / 2 * jnp.sum(y**2)
                    + 1 / (2 * eta * a) * jnp.sum(D * (y - w) ** 2))

        grad = jax.grad(p2)(y)
        assert float(jnp.max(jnp.abs(grad))) < 1e-12 * float(jnp.max(jnp.abs(mhat)) + 1)
        chex.assert_trees_all_close(
            y, (w - eta * a * mhat / D) / (1 + eta * lam * a / D), rtol=1e-13
        )

    def test_adamw_does_not_minimize_p1(self):
        # The test above can fail: AdamW's point is only a first-order approximation.
        tx = od.adamw(self.alpha, self.lam, schedule=self.eta)
        w, y = self.last_step(tx)
        mhat, D = adam_moments(self.grads)
        grad = mhat + self.lam / self.alpha * D * y + D * (y - w) / (self.eta * self.alpha)
        assert float(jnp.max(jnp.abs(grad))) > 1e-3


def test_prox_minus_adamw_is_second_order_in_the_step():
    params = make_params()
    g = make_grads(params, 1)
    alpha, lam = 0.1, 0.5
    gaps = []
    for eta in [0.04, 0.02, 0.01, 0.005]:
        p = run(od.prox_adam(alpha, lam, schedule=eta), params, g)[-1]
        w = run(od.adamw(alpha, lam, schedule=eta), params, g)[-1]
        gaps.append(max(float(jnp.max(jnp.abs(x - y))) for x, y in
                        zip(jax.tree.leaves(p), jax.tree.leaves(w), strict=True)))
    ratios = np.array(gaps[:-1]) / np.array(gaps[1:])
    np.testing.assert_allclose(ratios, 4.0, rtol=0.03)


class TestScaleFreeness:
    """With eps = 0, multiplying the loss by c leaves AdamW and ProxAdam unchanged."""

    @staticmethod
    def trajectory(make_tx, c):
        rng = np.random.default_rng(5)
        X = jnp.asarray(rng.normal(size=(32, 6)))
        y = jnp.asarray(rng.normal(size=(32,)) > 0, jnp.float64)
        params = {"w": jnp.asarray(rng.normal(size=(6,))), "b": jnp.zeros(())}

        def loss(p):
            z = X @ p["w"] + p["b"]
            return c * jnp.mean(optax.sigmoid_binary_cross_entropy(z, y))

        tx = make_tx()
        state, out = tx.init(params), []
        for _ in range(25):
            u, state = tx.update(jax.grad(loss)(params), state, params)
            params = optax.apply_updates(params, u)
            out.append(params)
        return out

    @pytest.mark.parametrize("c", [1e-3, 1e3])
    @pytest.mark.parametrize("name", ["adamw", "adamw_coupled", "prox_adam"])
    def test_scale_free(self, name, c):
        make = functools.partial(ADAM_FAMILY[name], 0.05, 0.1, eps=0.0)
        chex.assert_trees_all_close(
            self.trajectory(make, c), self.trajectory(make, 1.0), rtol=1e-9, atol=1e-12
        )

    @pytest.mark.parametrize("c", [1e-3, 1e3])
    @pytest.mark.parametrize("name", ["adamp", "adam_l2"])
    def test_not_scale_free(self, name, c):
        make = functools.partial(ADAM_FAMILY[name], 0.05, 0.1, eps=0.0)
        assert max_rel_diff(self.trajectory(make, c)[-1], self.trajectory(make, 1.0)[-1]) > 1e-3


class TestMasks:
    @pytest.mark.parametrize("name", sorted(ADAM_FAMILY))
    @pytest.mark.parametrize(
        "mask",
        [
            {"w": True, "b": False, "k": True},
            od.weight_decay_mask,
            lambda p: {"w": True, "b": False, "k": True},
        ],
        ids=["tree", "helper", "callable"],
    )
    def test_masked_leaves_follow_plain_adam(self, name, mask):
        params = make_params()
        grads = make_grads(params, 10)
        got = run(ADAM_FAMILY[name](0.05, 0.3, mask=mask, schedule=ETA), params, grads)[-1]
        adam = run(optax.adam(lambda t: 0.05 * ETA(t)), params, grads)[-1]
        decayed = run(ADAM_FAMILY[name](0.05, 0.3, schedule=ETA), params, grads)[-1]
        chex.assert_trees_all_close(got["b"], adam["b"], rtol=1e-12, atol=1e-14)
        chex.assert_trees_all_close(got["w"], decayed["w"], rtol=1e-12, atol=1e-14)
        assert max_rel_diff(got["w"], adam["w"]) > 1e-4

    @pytest.mark.parametrize("name", sorted(SGD_FAMILY))
    def test_masked_leaves_follow_plain_sgd(self, name):
        params = make_params()
        grads = make_grads(params, 10)
        momentum = None if name in ("sgd_l2", "sgdw") else 0.9
        got = run(SGD_FAMILY[name](0.05, 0.3, mask={"w": False, "b": True, "k": False}),
                  params, grads)[-1]
        sgd = run(optax.sgd(0.05, momentum=momentum, nesterov=name == "sgdw_nesterov"),
                  params, grads)[-1]
        chex.assert_trees_all_close(got["w"], sgd["w"], rtol=1e-12, atol=1e-14)
        assert max_rel_diff(got["b"], sgd["b"]) > 1e-4

    def test_prefix_mask(self):
        params = {"dense": make_params(), "norm": make_params(seed=2)}
        grads = make_grads(params, 5)
        got = run(od.adamw(0.05, 0.3, mask={"dense": True, "norm": False}), params, grads)[-1]
        adam = run(optax.adam(0.05), params, grads)[-1]
        chex.assert_trees_all_close(got["norm"], adam["norm"], rtol=1e-12, atol=1e-14)
        assert max_rel_diff(got["dense"], adam["dense"]) > 1e-4


def test_adamp_nearly_zeroes_coordinates_without_gradient():
    """At vhat = 0, D = eps: the factor is 1/(1 + alpha*lambda/eps), ~1/101 at the defaults.

    The formula, stated in the docstring with its remedy (mask embeddings out, or raise eps).
    """
    with jax.enable_x64(True):
        alpha, lam, eps = 1e-3, 1e-3, 1e-8
        w = jnp.array([1.0, 1.0])
        g = jnp.array([0.5, 0.0])  # the second coordinate gets no gradient
        tx = od.adamp(alpha, lam, eps=eps)
        u, _ = tx.update(g, tx.init(w), w)
        new = np.asarray(w + u)
        np.testing.assert_allclose(new[1], 1.0 / (1.0 + alpha * lam / eps), rtol=1e-12)
        assert new[1] < 0.01
        # The remedies: masked out, or a larger eps, it keeps its value.
        for tx in [od.adamp(alpha, lam, mask=jnp.array([True, False])), od.adamp(alpha, lam, eps=1e-3)]:
            u, _ = tx.update(g, tx.init(w), w)
            assert float(w[1] + u[1]) > 0.99
    for doc in [od.adamp.__doc__, od.adaptive_decay.__doc__]:
        assert "embedding" in doc and "eps" in doc

"""`cpr` and `adamcpr` (`_cpr`): each leaf's squared norm kept under a bound by a multiplier.

The reference below is written from the docstrings of `cpr` and `adamcpr`, in float64 NumPy.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import make_params

import optax_decay as od
from optax_decay import CPRState, adamcpr, cpr

SHAPES = {"w": (4, 3), "k": (2, 2, 3), "b": (3,)}
MASK = {"w": True, "k": True, "b": False}


# ---- The NumPy reference, from the docstrings.


def _adam_direction(g, m, v, t, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g**2
    mhat, vhat = m / (1 - b1 ** (t + 1)), v / (1 - b2 ** (t + 1))
    return mhat / (np.sqrt(vhat + eps_root) + eps), m, v


def reference(
    params,
    grads,
    method,
    c=None,
    *,
    adam=True,
    alpha=0.05,
    mu=lambda t: 0.5,
    eta=lambda t: 1.0,
    coupled=False,
    S=200,
    d=0.99,
    mask=None,
):
    """Params, multipliers and bounds after each step: ``u`` is ``-alpha*eta_t*`` the Adam
    direction (``adam=True``) or the gradient itself (``cpr`` alone, ``u = g``)."""
    w = {k: np.asarray(p, np.float64) for k, p in params.items()}
    on = [k for k in w if mask is None or mask[k]]
    m = {k: np.zeros_like(p) for k, p in w.items()}
    v = {k: np.zeros_like(p) for k, p in w.items()}
    lam = {k: 0.0 for k in on}
    if method == "uniform":
        kap = {k: float(c) for k in on}
    elif method == "dependent":
        kap = {k: c * np.sum(w[k] ** 2) for k in on}
    else:
        kap = {k: np.inf for k in on}
    k_warm = c if method == "warm_start" else 0
    e, e_prev, g_prev = ({k: 0.0 for k in on} for _ in range(3))
    out, lams, kaps = [], [], []
    for t, g in enumerate(grads):
        T = t + 1
        new = {}
        for k in w:
            if adam:
                direction, m[k], v[k] = _adam_direction(np.asarray(g[k]), m[k], v[k], t)
                u = -alpha * eta(t) * direction
            else:
                u = np.asarray(g[k], np.float64)
            z = w[k] + u
            if k not in on:
                new[k] = z
                continue
            if np.isfinite(kap[k]) and T > k_warm:
                lam[k] = max(0.0, lam[k] + mu(t) / z.size * (np.sum(z**2) - kap[k]))
            if method == "warm_start" and T == k_warm:
                kap[k] = np.sum(z**2)
            gamma = alpha * eta(t) if coupled else eta(t)
            new[k] = (1 - 2 * gamma * lam[k]) * z
            if method == "inflection_point" and not np.isfinite(kap[k]):
                r = np.sqrt(np.sum(new[k] ** 2))
                e[k] = d * e[k] + (1 - d) * r if T >= S else r
                if T > S and T % S == 0:
                    growth = (e[k] - e_prev[k]) / e[k]
                    if T > 3 * S and g_prev[k] > growth > 0.01:
                        kap[k] = r**2
                    e_prev[k] = e[k]
                    if T > 2 * S:
                        g_prev[k] = growth
        w = new
        out.append(dict(w))
        lams.append(dict(lam))
        kaps.append(dict(kap))
    reference.search = (e, e_prev, g_prev)  # the inflection-point scalars after the last step
    return out, lams, kaps


def _grads(params, steps, seed=3, drift=0.3, scale=1.0):
    """Random gradients that push the weights away from 0 (``drift``), so the norms grow."""
    rng = np.random.default_rng(seed)
    return [
        {
            k: jnp.asarray(-drift * np.sign(np.asarray(p)) + scale * rng.normal(size=p.shape))
            for k, p in params.items()
        }
        for _ in range(steps)
    ]


def _cpr_state(state):
    """The CPRState inside a chain / masked / _checked state."""
    found = [
        s
        for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, CPRState))
        if isinstance(s, CPRState)
    ]
    assert len(found) == 1
    return found[0]


def _run(tx, params, grads, jit=True):
    update = jax.jit(tx.update) if jit else tx.update
    state = tx.init(params)
    out, lams, kaps = [], [], []
    for g in grads:
        u, state = update(g, state, params)
        params = optax.apply_updates(params, u)
        s = _cpr_state(state)
        out.append(params)
        lams.append(
            {k: float(x) for k, x in s.lagmul.items() if not isinstance(x, optax.MaskedNode)}
        )
        kaps.append(
            {k: float(x) for k, x in s.kappa.items() if not isinstance(x, optax.MaskedNode)}
        )
    return out, lams, kaps


def _assert_runs_close(got, want, rtol=1e-11):
    # 1e-11, not 1e-12: the update is (1 - 2*eta*lambda)*u - 2*eta*lambda*w, the reference's
    # (1 - 2*eta*lambda)*(w + u) - w, a few ulp apart after 60 steps
    for (gp, gl, gk), (wp, wl, wk) in zip(
        zip(*got, strict=True), zip(*want, strict=True), strict=True
    ):
        chex.assert_trees_all_close(gp, wp, rtol=rtol, atol=1e-13)
        assert gl.keys() == wl.keys()
        for k in gl:
            # a multiplier sums mu/n*(R - kappa), a difference of close numbers: absolute tolerance
            np.testing.assert_allclose(gl[k], wl[k], rtol=rtol, atol=1e-10)
            np.testing.assert_allclose(gk[k], wk[k], rtol=rtol)  # inf == inf


# ---- The formulas.

CASES = {  # name: (method, kappa_init_param, extra cpr kwargs, extra reference kwargs)
    "uniform": ("uniform", 8.0, {}, {}),
    "dependent": ("dependent", 0.9, {}, {}),
    "warm_start": ("warm_start", 6, {}, {}),
    "inflection_point": (
        "inflection_point",
        None,
        dict(inflection_interval=4, inflection_ema_decay=0.5),
        dict(S=4, d=0.5),
    ),
}


@pytest.mark.x64
@pytest.mark.parametrize("case", sorted(CASES))
def test_adamcpr_matches_the_formula(case):
    method, c, kw, ref_kw = CASES[case]
    params = make_params(shapes=SHAPES, seed=2)
    grads = _grads(params, 60)
    eta = lambda t: 1.0 / (1.0 + 0.01 * t)
    mu = lambda t: 0.5 + 0.01 * t
    tx = adamcpr(0.05, method, c, lagmul_rate=mu, schedule=eta, mask=MASK, **kw)
    got = _run(tx, params, grads)
    want = reference(params, grads, method, c, mu=mu, eta=eta, mask=MASK, **ref_kw)
    _assert_runs_close(got, want)
    if method == "inflection_point":  # the search's own scalars, frozen once the bound is set
        state = _cpr_state(_final_state(tx, params, grads))
        fields = (state.norm_ema, state.prev_norm_ema, state.prev_growth)
        for tree, ref in zip(fields, reference.search, strict=True):
            for k, value in ref.items():
                np.testing.assert_allclose(float(tree[k]), value, rtol=1e-12)
    lag = np.array([list(x.values()) for x in got[1]])
    assert lag.max() > 1e-3  # the constraint acted
    assert np.isfinite(list(got[2][-1].values())).all()  # every bound was set


@pytest.mark.x64
def test_adamcpr_coupled_multiplies_the_correction_by_the_step_size():
    params = make_params(shapes=SHAPES, seed=2)
    grads = _grads(params, 30)
    eta = lambda t: 1.0 / (1.0 + 0.05 * t)
    tx = adamcpr(0.05, "uniform", 8.0, lagmul_rate=2.0, coupled=True, schedule=eta)
    got = _run(tx, params, grads)
    want = reference(params, grads, "uniform", 8.0, mu=lambda t: 2.0, eta=eta, coupled=True)
    _assert_runs_close(got, want)


@pytest.mark.x64
@pytest.mark.parametrize("case", sorted(CASES))
def test_cpr_after_a_plain_step_matches_the_formula(case):
    """``cpr`` alone: ``u`` is the incoming update as given (here the raw gradient)."""
    method, c, kw, ref_kw = CASES[case]
    params = make_params(shapes=SHAPES, seed=4)
    grads = _grads(params, 50, drift=0.05, scale=0.05)
    tx = cpr(method, c, lagmul_rate=0.3, schedule=0.8, **kw)
    got = _run(tx, params, grads)
    want = reference(
        params, grads, method, c, adam=False, mu=lambda t: 0.3, eta=lambda t: 0.8, **ref_kw
    )
    _assert_runs_close(got, want)


def _final_state(tx, params, grads):
    update, state = jax.jit(tx.update), tx.init(params)
    for g in grads:
        u, state = update(g, state, params)
        params = optax.apply_updates(params, u)
    return state


@pytest.mark.x64
def test_inflection_point_needs_a_growth_over_one_percent():
    """A leaf whose norm grows by less than 1% per interval never gets a bound, though its
    growth slows down; a leaf growing faster gets one at the first chance, T = 4S."""
    params = make_params(shapes={"fast": (4, 3), "slow": (4, 3)}, seed=4)
    speed = {"fast": 0.05, "slow": 1e-4}
    grads = [{k: jnp.asarray(speed[k] * np.sign(np.asarray(p))) for k, p in params.items()}] * 40
    tx = cpr("inflection_point", lagmul_rate=0.3, inflection_interval=4, inflection_ema_decay=0.5)
    got = _run(tx, params, grads)
    want = reference(params, grads, "inflection_point", adam=False, mu=lambda t: 0.3, S=4, d=0.5)
    _assert_runs_close(got, want)
    kaps = got[2]
    assert np.isinf(kaps[14]["fast"]) and np.isfinite(kaps[15]["fast"])  # set at T = 16
    assert np.isinf(kaps[-1]["slow"])


# ---- Properties.


@pytest.mark.x64
def test_adamcpr_is_adam_while_every_leaf_is_inside_its_bound():
    params = make_params(shapes=SHAPES)
    grads = _grads(params, 20)
    out, lams, _ = _run(adamcpr(0.05, "uniform", 1e6), params, grads)
    assert all(v == 0.0 for lam in lams for v in lam.values())
    # bit for bit the package's Adam; optax.adam to rounding (XLA fuses it differently)
    chex.assert_trees_all_equal(out, _run_plain(od.adamw(0.05, 0.0), params, grads))
    chex.assert_trees_all_close(out, _run_plain(optax.adam(0.05), params, grads), rtol=1e-14)


@pytest.mark.x64
def test_adamcpr_with_warm_start_is_adam_for_the_warm_up_steps():
    params = make_params(shapes=SHAPES)
    grads = _grads(params, 8)
    out, lams, kaps = _run(adamcpr(0.05, "warm_start", 8, lagmul_rate=100.0), params, grads)
    chex.assert_trees_all_equal(out, _run_plain(od.adamw(0.05, 0.0), params, grads))
    for k in SHAPES:  # the bound is the squared norm after 8 updates
        np.testing.assert_allclose(kaps[-1][k], np.sum(np.asarray(out[-1][k]) ** 2), rtol=1e-14)
        assert np.isinf(kaps[-2][k])


def _run_plain(tx, params, grads):
    """Params after each step of a plain optimizer, jitted like ``_run``."""
    update, state, out = jax.jit(tx.update), tx.init(params), []
    for g in grads:
        u, state = update(g, state, params)
        params = optax.apply_updates(params, u)
        out.append(params)
    return out


@pytest.mark.x64
def test_multipliers_are_never_negative_and_fall_back_to_zero():
    """The norm goes far above the bound (the multiplier grows), then below it, where the
    multiplier is clipped at 0, not negative, and the step is Adam's again."""
    params = make_params(shapes={"w": (5, 4)}, seed=1)
    rng = np.random.default_rng(0)
    sign = np.sign(np.asarray(params["w"]))
    # 25 steps pushing |w| up, then no gradient: Adam's step dies out, the multiplier wins.
    grads = [{"w": jnp.asarray(-sign + 0.1 * rng.normal(size=(5, 4)))} for _ in range(25)]
    grads += [{"w": jnp.zeros((5, 4))} for _ in range(60)]
    kappa = float(np.sum(np.asarray(params["w"]) ** 2))
    tx = adamcpr(0.1, "uniform", kappa, lagmul_rate=0.05)
    got = _run(tx, params, grads)
    out, lams, _ = got
    lam = np.array([x["w"] for x in lams])
    norms = np.array([float(jnp.sum(p["w"] ** 2)) for p in out])
    assert (lam >= 0).all()
    assert lam.max() > 0.1 and norms.max() > 1.5 * kappa
    assert lam[-1] == 0.0 and norms[-1] < kappa
    first = np.argmax(lam > 0)
    assert (lam[first:] == 0).sum() > 10  # clipped at 0 after being positive, repeatedly
    want = reference(params, grads, "uniform", kappa, alpha=0.1, mu=lambda t: 0.05)
    _assert_runs_close(got, want)


def test_state_has_one_multiplier_and_one_bound_per_leaf_and_nothing_params_sized():
    params = make_params(jnp.float32, shapes=SHAPES)
    for method, c in [
        ("uniform", 1.0),
        ("dependent", 1.0),
        ("warm_start", 3),
        ("inflection_point", None),
    ]:
        state = cpr(method, c).init(params)
        assert isinstance(state, CPRState)
        assert state.step_count.shape == () and state.step_count.dtype == jnp.int32
        fields = [state.lagmul, state.kappa]
        if method == "inflection_point":
            fields += [state.norm_ema, state.prev_norm_ema, state.prev_growth]
        else:
            assert state.norm_ema is state.prev_norm_ema is state.prev_growth is None
        for tree in fields:
            assert jax.tree.structure(tree) == jax.tree.structure(params)
            assert all(x.shape == () and x.dtype == jnp.float32 for x in jax.tree.leaves(tree))
    # In adamcpr, only Adam's moments have the params' shapes.
    state = adamcpr(0.1, "uniform", 1.0).init(params)
    adam = state[0]
    big = [x for x in jax.tree.leaves(state) if x.shape != ()]
    assert len(big) == len(jax.tree.leaves(adam.mu)) + len(jax.tree.leaves(adam.nu))


def test_state_dtype_is_at_least_float32_and_kept():
    params = {"w": jnp.ones((3, 2), jnp.bfloat16), "v": jnp.ones((2,), jnp.float32)}
    tx = adamcpr(0.1, "uniform", 1.0)
    state = tx.init(params)
    u, new = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), state, params)
    assert jax.tree.map(lambda x: x.dtype, u) == jax.tree.map(lambda x: x.dtype, params)
    assert _cpr_state(new).lagmul["w"].dtype == jnp.float32
    chex.assert_trees_all_equal_shapes_and_dtypes(state, new)


def test_update_compiles_once():
    params = make_params(jnp.float32, shapes=SHAPES)
    tx = adamcpr(0.1, "inflection_point", inflection_interval=2, mask=MASK)
    traces = []

    @jax.jit
    def step(g, state, p):
        traces.append(1)
        return tx.update(g, state, p)

    state = tx.init(params)
    for g in _grads(params, 10):
        _, state = step(jax.tree.map(lambda x: x.astype(jnp.float32), g), state, params)
    assert len(traces) == 1


@pytest.mark.x64
def test_inject_hyperparams_and_a_constant_schedule_give_the_same_result():
    params = make_params(shapes=SHAPES, seed=2)
    grads = _grads(params, 15)
    base = _run(adamcpr(0.05, "dependent", 0.9, lagmul_rate=0.5), params, grads)
    injected = optax.inject_hyperparams(adamcpr)(0.05, "dependent", 0.9, lagmul_rate=0.5)
    got = _run(injected, params, grads)
    _assert_runs_close(got, base, rtol=1e-14)
    schedules = adamcpr(
        lambda t: 0.05, "dependent", 0.9, lagmul_rate=lambda t: 0.5, schedule=lambda t: 1.0
    )
    _assert_runs_close(_run(schedules, params, grads), base, rtol=1e-14)
    # warm_start and inflection_point under inject_hyperparams (their integers become arrays)
    for method, c, kw in [
        ("warm_start", 4, {}),
        ("inflection_point", None, {"inflection_interval": 3}),
    ]:
        want = _run(adamcpr(0.05, method, c, **kw), params, grads)
        got = _run(optax.inject_hyperparams(adamcpr)(0.05, method, c, **kw), params, grads)
        _assert_runs_close(got, want, rtol=1e-14)


@pytest.mark.x64
def test_a_callable_mask_equals_the_bool_mask_and_masked_leaves_take_the_adam_step():
    params = make_params(shapes=SHAPES, seed=2)
    grads = _grads(params, 20)
    by_bools = _run(adamcpr(0.05, "uniform", 3.0, mask=MASK), params, grads)
    by_fn = _run(adamcpr(0.05, "uniform", 3.0, mask=od.weight_decay_mask), params, grads)
    _assert_runs_close(by_fn, by_bools, rtol=0)
    adam = _run_plain(od.adamw(0.05, 0.0), params, grads)
    for got, want in zip(by_bools[0], adam, strict=True):
        np.testing.assert_array_equal(got["b"], want["b"])
    assert "b" not in by_bools[1][0]  # no multiplier for a leaf left out
    assert max(lam["w"] for lam in by_bools[1]) > 0


def test_per_element_masks_and_multipliers_are_rejected():
    params = make_params(jnp.float32, shapes=SHAPES)
    arrays = jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)
    with pytest.raises(ValueError, match=r"`adamcpr` acts on each leaf.*shape \(3,\) at \['b'\]"):
        adamcpr(0.1, "uniform", 1.0, mask=arrays).init(params)
    with pytest.raises(ValueError, match=r"`cpr` acts on each leaf.*2\.0 at \['w'\]"):
        cpr("uniform", 1.0, mask={"w": 2.0, "k": True, "b": False}).init(params)


def test_update_needs_params_and_passes_none():
    params = make_params(jnp.float32, shapes=SHAPES)
    for tx in (cpr("uniform", 1.0), adamcpr(0.1, "uniform", 1.0, mask=MASK)):
        state = tx.init(params)
        with pytest.raises(ValueError, match="needs the current `params`"):
            tx.update(params, state)
        assert tx.update(None, state, params) == (None, state)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kappa_init_method="l2"), r"`kappa_init_method` must be one of .*got 'l2'"),
        (dict(kappa_init_method="uniform"), r"'uniform'` needs `kappa_init_param`"),
        (dict(kappa_init_method="dependent"), r"'dependent'` needs `kappa_init_param`"),
        (dict(kappa_init_method="warm_start"), r"'warm_start'` needs `kappa_init_param`"),
        (dict(kappa_init_method="inflection_point", kappa_init_param=1000), "takes no"),
        (dict(kappa_init_method="uniform", kappa_init_param=-1.0), "finite number >= 0"),
        (dict(kappa_init_method="dependent", kappa_init_param=float("nan")), ">= 0"),
        (dict(kappa_init_method="warm_start", kappa_init_param=0), "integer >= 1"),
        (dict(kappa_init_method="warm_start", kappa_init_param=2.5), "integer >= 1"),
        (
            dict(kappa_init_method="uniform", kappa_init_param=1.0, lagmul_rate=-0.1),
            "`lagmul_rate`",
        ),
        (
            dict(kappa_init_method="uniform", kappa_init_param=1.0, lagmul_rate=lambda t: 1.0 - t),
            "`lagmul_rate`.*schedule",
        ),
        (dict(kappa_init_method="uniform", kappa_init_param=1.0, schedule=-1.0), "`schedule`"),
        (dict(inflection_interval=0), "`inflection_interval` must be an integer >= 1"),
        (dict(inflection_ema_decay=1.0), r"`inflection_ema_decay` must lie in \[0, 1\)"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, match):
    kwargs = {"kappa_init_method": "inflection_point", **kwargs}
    with pytest.raises(ValueError, match=match):
        cpr(**kwargs)
    with pytest.raises(ValueError, match=match):
        adamcpr(0.1, **kwargs)


def test_bad_adam_arguments_raise():
    with pytest.raises(ValueError, match="`b1`"):
        adamcpr(0.1, b1=1.0)
    with pytest.raises(ValueError, match="`learning_rate`"):
        adamcpr(-0.1)


@pytest.mark.parametrize("method, param", [("uniform", 0.5), ("inflection_point", None)])
def test_params_with_tuple_nodes_run_as_the_same_leaves_in_a_dict(method, param):
    """The per-leaf outputs (update, multiplier, bound, ...) are split by the params' structure:
    a tuple node of the params is not mistaken for one leaf's output tuple."""
    a, b = jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), jnp.linspace(0.5, 2.0, 4)
    g = (jnp.full((2, 3), 0.3), jnp.full(4, -0.2))
    runs = []
    for p, grads in [((a, b), g), ({"0": a, "1": b}, {"0": g[0], "1": g[1]})]:
        tx = adamcpr(0.1, method, param, lagmul_rate=0.01, inflection_interval=1)
        state, w = tx.init(p), p
        for _ in range(5):
            u, state = tx.update(grads, state, w)
            w = optax.apply_updates(w, u)
        runs.append(jax.tree.leaves(w))
    chex.assert_trees_all_equal(*runs)

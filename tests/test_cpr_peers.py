"""`adamcpr` (`_cpr`) against pytorch-cpr's `AdamCPR` (0.3.1), step by step in float64.

The peer keeps its multipliers and bounds in float32 tensors whatever the params' dtype
(``dtype=torch.float`` in ``_init_group``); the float64 comparisons run it with those
tensors in float64 (``_peer_state_in`` below), so that the two agree to rounding. One test
runs the peer as it is, at float32 tolerance.

Install: ``.venv/bin/python -m pip install --no-deps pytorch-cpr==0.3.1`` (beside torch).
"""

import contextlib

import jax
import numpy as np
import optax
import pytest
from helpers import make_params

from optax_decay import adamcpr

pytestmark = [
    pytest.mark.slow,
    pytest.mark.x64,
    # pytorch-cpr 0.3.1 calls torch functions that torch 2.13 deprecates.
    pytest.mark.filterwarnings("ignore:Use _accelerator_graph_capture_health_check"),
    pytest.mark.filterwarnings("ignore:`torch._utils.is_compiling` is deprecated"),
]

torch = pytest.importorskip("torch")
pytorch_cpr = pytest.importorskip("pytorch_cpr")
peer_module = pytest.importorskip("pytorch_cpr.adamcpr")

SHAPES = {"w": (4, 3), "k": (2, 2, 3), "b": (3,)}
MASK = {"w": True, "k": True, "b": False}  # the bias is not regularized, as in the peer
LR = 0.05


class _TorchWithFloat64State:
    """``torch`` as the peer module sees it, with ``torch.float`` meaning float64."""

    float = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


@contextlib.contextmanager
def _peer_state_in(dtype):
    """The peer's multipliers, bounds and search scalars created in ``dtype``."""
    if dtype == torch.float32:
        yield
        return
    saved = peer_module.torch
    peer_module.torch = _TorchWithFloat64State()
    try:
        yield
    finally:
        peer_module.torch = saved


def _grads(params, steps, seed=3, drift=0.3):
    """Gradients that push every weight away from 0 (so that the norms grow), plus noise."""
    rng = np.random.default_rng(seed)
    return [
        {k: -drift * np.sign(np.asarray(p)) + rng.normal(size=p.shape) for k, p in params.items()}
        for _ in range(steps)
    ]


def _run_peer(params, grads, state_dtype=torch.float64, **kwargs):
    """The peer's params (and multipliers, bounds) after every step."""
    tensors = {k: torch.tensor(np.asarray(p), dtype=torch.float64) for k, p in params.items()}
    groups = [
        {"params": [tensors[k] for k in SHAPES if MASK[k]], "regularize": True},
        {"params": [tensors[k] for k in SHAPES if not MASK[k]], "regularize": False},
    ]
    out, lagmuls, kappas = [], [], []
    with _peer_state_in(state_dtype):
        opt = pytorch_cpr.AdamCPR(groups, lr=LR, **kwargs)
        for g in grads:
            for k, t in tensors.items():
                t.grad = torch.tensor(g[k], dtype=torch.float64)
            opt.step()
            out.append({k: t.detach().numpy().copy() for k, t in tensors.items()})
            lagmuls.append({k: float(opt.state[tensors[k]]["lagmul"]) for k in SHAPES if MASK[k]})
            kappas.append({k: float(opt.state[tensors[k]]["kappa"]) for k in SHAPES if MASK[k]})
    return out, lagmuls, kappas


def _run_ours(tx, params, grads):
    state = tx.init(params)
    update = jax.jit(tx.update)
    out, lagmuls, kappas = [], [], []
    for g in grads:
        u, state = update(g, state, params)
        params = optax.apply_updates(params, u)
        cpr_state = state[-1].inner_state  # _checked(chain(adam, step, masked(cpr)))
        out.append({k: np.asarray(v) for k, v in params.items()})
        lagmuls.append({k: float(cpr_state.lagmul[k]) for k in SHAPES if MASK[k]})
        kappas.append({k: float(cpr_state.kappa[k]) for k in SHAPES if MASK[k]})
    return out, lagmuls, kappas


def _max_rel(a, b):
    return max(
        float(np.max(np.abs(x[k] - y[k]) / (np.abs(y[k]) + 1e-12)))
        for x, y in zip(a, b, strict=True)
        for k in x
    )


PEER = {  # name: (peer kwargs, our kwargs, steps)
    "uniform": (
        dict(kappa_init_method="uniform", kappa_init_param=8.0, kappa_update=0.5),
        dict(kappa_init_method="uniform", kappa_init_param=8.0, lagmul_rate=0.5),
        30,
    ),
    "dependent": (
        dict(kappa_init_method="dependent", kappa_init_param=0.9, kappa_update=0.5),
        dict(kappa_init_method="dependent", kappa_init_param=0.9, lagmul_rate=0.5),
        30,
    ),
    "warm_start": (
        dict(kappa_init_method="warm_start", kappa_init_param=6, kappa_update=0.5),
        dict(kappa_init_method="warm_start", kappa_init_param=6, lagmul_rate=0.5),
        30,
    ),
    "uniform_reg_by_lr": (
        dict(kappa_init_method="uniform", kappa_init_param=8.0, kappa_update=1.0, reg_by_lr=True),
        dict(kappa_init_method="uniform", kappa_init_param=8.0, lagmul_rate=1.0, coupled=True),
        30,
    ),
    # The peer's inflection-point search runs in its foreach path only (see _cpr's docstring).
    "inflection_point": (
        dict(
            kappa_init_method="inflection_point",
            reg_step_size=4,
            reg_ema_decay=0.5,
            kappa_update=0.5,
            foreach=True,
        ),
        dict(
            kappa_init_method="inflection_point",
            inflection_interval=4,
            inflection_ema_decay=0.5,
            lagmul_rate=0.5,
        ),
        60,
    ),
}


@pytest.mark.parametrize("case", sorted(PEER))
def test_adamcpr_matches_pytorch_cpr_step_by_step(case):
    peer_kwargs, ours_kwargs, steps = PEER[case]
    params = make_params(shapes=SHAPES, seed=2)
    grads = _grads(params, steps)
    want, want_lag, want_kap = _run_peer(params, grads, **peer_kwargs)
    got, got_lag, got_kap = _run_ours(adamcpr(LR, mask=MASK, **ours_kwargs), params, grads)
    for t in range(steps):
        for k in SHAPES:
            np.testing.assert_allclose(got[t][k], want[t][k], rtol=1e-10, atol=1e-12, err_msg=k)
        for k in got_lag[t]:
            np.testing.assert_allclose(got_lag[t][k], want_lag[t][k], rtol=1e-10, atol=1e-13)
            if np.isfinite(got_kap[t][k]):
                np.testing.assert_allclose(got_kap[t][k], want_kap[t][k], rtol=1e-10)
            else:  # not set yet: the peer's placeholder
                unset = peer_module.HIGHKAPPA if case == "inflection_point" else 0.0
                assert want_kap[t][k] == unset
    # The constraint was active: some multiplier grew, and then (the norm below the bound) fell.
    lag = np.array([list(x.values()) for x in got_lag])
    assert lag.max() > 1e-3
    if case == "inflection_point":  # the bound was found during the run, for every leaf
        assert all(np.isfinite(v) for v in got_kap[-1].values())
        assert all(not np.isfinite(v) for v in got_kap[0].values())


def test_negative_control_a_different_multiplier_rate_is_detected():
    """The comparison above can fail: lagmul_rate 0.55 instead of 0.5 is far outside it."""
    peer_kwargs, ours_kwargs, steps = PEER["uniform"]
    params = make_params(shapes=SHAPES, seed=2)
    grads = _grads(params, steps)
    want = _run_peer(params, grads, **peer_kwargs)[0]
    got = _run_ours(adamcpr(LR, mask=MASK, **{**ours_kwargs, "lagmul_rate": 0.55}), params, grads)
    assert _max_rel(got[0], want) > 1e-4
    # and so is the coupled form against the peer's default reg_by_lr=False
    got = _run_ours(adamcpr(LR, mask=MASK, coupled=True, **ours_kwargs), params, grads)[0]
    assert _max_rel(got, want) > 1e-4


def test_negative_control_the_peer_default_cpu_path_never_finds_the_inflection_point():
    """pytorch-cpr's single-tensor path (CPU's default) checks ``kappa == 1000``, never true:
    its bounds stay at the 1e6 sentinel, unlike ours (and its foreach path)."""
    peer_kwargs, ours_kwargs, steps = PEER["inflection_point"]
    params = make_params(shapes=SHAPES, seed=2)
    grads = _grads(params, steps)
    _, _, peer_kap = _run_peer(params, grads, **{**peer_kwargs, "foreach": False})
    _, _, our_kap = _run_ours(adamcpr(LR, mask=MASK, **ours_kwargs), params, grads)
    assert all(v == peer_module.HIGHKAPPA for v in peer_kap[-1].values())
    assert all(np.isfinite(v) for v in our_kap[-1].values())


@pytest.mark.parametrize("foreach", [False, True])
def test_adamcpr_matches_the_unmodified_peer_at_float32_state_precision(foreach):
    """The peer as shipped (float32 multipliers and bounds), both of its code paths."""
    peer_kwargs, ours_kwargs, steps = PEER["dependent"]
    params = make_params(shapes=SHAPES, seed=2)
    grads = _grads(params, steps)
    want, want_lag, _ = _run_peer(
        params, grads, state_dtype=torch.float32, foreach=foreach, **peer_kwargs
    )
    got, got_lag, _ = _run_ours(adamcpr(LR, mask=MASK, **ours_kwargs), params, grads)
    assert _max_rel(got, want) < 1e-5
    for a, b in zip(got_lag, want_lag, strict=True):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-7)

"""`adams` (`_stable`) against pytorch_optimizer's `AdamS` (4.1.0), step by step in float64.

The peer (``pytorch_optimizer/optimizer/adams.py``, read before writing this) and
``adams`` agree on: ``vbar`` is the mean of ``vhat = v/(1 - b2^t)`` over every element of
every parameter with a gradient, in every param group, whatever its ``weight_decay`` (our
mean over all leaves, decayed or not); the decay multiplies ``lambda`` by the group's
``lr`` (``fixed_decay=False``; our ``s_t = alpha(t)*eta_t``) and is applied before the Adam
step, which does not read ``w``, so the order does not matter; Adam's bias corrections and
``D = sqrt(vhat) + eps``. They differ in:

* ``eps`` in the decay: the peer divides by ``sqrt(vbar) + eps``, we by ``sqrt(vbar)`` (as
  the paper's code). With ``eps = 0`` the two are the same formula (the exact tests below);
  at ``eps = 1e-8`` they differ by ``s*lambda*eps/vbar`` per step, far below the
  tolerance of ``test_default_eps``.
* ``vbar = 0`` (all gradients zero so far): we do not decay; the peer's factor is
  ``1 - lr*lambda/eps`` (with ``eps = 0`` a ZeroDivisionError), which scales the weights
  by about ``-1e3`` at ``lr*lambda = 1e-5`` (``test_zero_gradients``).
* The peer's options that we do not have: ``ams_bound`` (AMSGrad), ``weight_decouple=False``
  (an L2 penalty), ``fixed_decay=True`` (``lambda`` not multiplied by ``lr``; used below as
  a negative control), ``maximize``. They are left at the defaults that match ``adams``.

Mapping: a param group with ``weight_decay = m*lambda`` is a mask leaf ``m`` (``0``:
``False``); the group's ``lr`` is set to ``alpha*eta_t`` before each step. Both the
peer's per-tensor loop (``foreach=False``) and its batched path (``foreach=True``) are run.

Install: ``.venv/bin/python -m pip install --no-deps pytorch_optimizer==4.1.0`` (beside
torch).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import make_grads, make_params, run

from optax_decay import adams

pytestmark = [pytest.mark.slow, pytest.mark.x64]

torch = pytest.importorskip("torch")
pytest.importorskip("pytorch_optimizer")
from pytorch_optimizer import AdamS  # noqa: E402

STEPS = 20
ALPHA, LAM = 0.05, 0.3
ETA = lambda t: 0.55 + 0.45 * jnp.cos(jnp.pi * jnp.asarray(t, jnp.float64) / STEPS)  # noqa: E731

# name -> (our mask, the peer's groups as (leaves, multiplier of lambda))
MASKS = {
    "all": (None, [(("w", "b", "k"), 1.0)]),
    "bools": ({"w": True, "b": False, "k": True}, [(("w", "k"), 1.0), (("b",), 0.0)]),
    "multipliers": ({"w": 2.5, "b": 0.0, "k": 0.5}, [(("w",), 2.5), (("k",), 0.5), (("b",), 0.0)]),
}


def peer_run(params, grads, groups, *, eps, betas, foreach, lam=LAM, **peer_kwargs):
    """The peer, fed the same params and gradients; params after every step."""
    tensors = {k: torch.tensor(np.asarray(v), dtype=torch.float64) for k, v in params.items()}
    opt = AdamS(
        [{"params": [tensors[k] for k in keys], "weight_decay": m * lam} for keys, m in groups],
        lr=ALPHA,
        betas=betas,
        eps=eps,
        foreach=foreach,
        **peer_kwargs,
    )
    out = []
    for t, g in enumerate(grads):
        for group in opt.param_groups:
            group["lr"] = ALPHA * float(ETA(t))
        for k, p in tensors.items():
            p.grad = torch.tensor(np.asarray(g[k]), dtype=torch.float64)
        opt.step()
        out.append({k: p.detach().numpy().copy() for k, p in tensors.items()})
    return out


def ours(params, grads, mask, *, eps, betas):
    tx = adams(ALPHA, LAM, schedule=ETA, mask=mask, b1=betas[0], b2=betas[1], eps=eps)
    return run(tx, params, grads)


def max_rel_diff(got, want):
    """Largest relative difference over every step and leaf."""
    return max(
        float(np.max(np.abs(np.asarray(a[k]) - b[k]) / np.abs(b[k])))
        for a, b in zip(got, want, strict=True)
        for k in b
    )


def problem(seed=0):
    params = make_params(seed=seed)
    return params, make_grads(params, STEPS, seed=seed + 1)


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.8, 0.95)])
@pytest.mark.parametrize("mask", MASKS)
def test_matches_pytorch_optimizer_adams(mask, betas, foreach):
    """eps = 0, where the two formulas are the same: equal to float64 rounding, every step."""
    params, grads = problem()
    our_mask, groups = MASKS[mask]
    got = ours(params, grads, our_mask, eps=0.0, betas=betas)
    want = peer_run(params, grads, groups, eps=0.0, betas=betas, foreach=foreach)
    assert max_rel_diff(got, want) < 1e-11
    # Negative controls: lambda not multiplied by lr, and vbar over the decayed leaves only
    # (the undecayed bias given to a second peer), both seen by the same comparison.
    fixed = peer_run(params, grads, groups, eps=0.0, betas=betas, foreach=foreach, fixed_decay=True)
    assert max_rel_diff(got, fixed) > 1e-3
    if mask == "bools":
        decayed = [(keys, m) for keys, m in groups if m]
        only = peer_run(
            {k: params[k] for k in ("w", "k")},
            [{k: g[k] for k in ("w", "k")} for g in grads],
            decayed,
            eps=0.0,
            betas=betas,
            foreach=foreach,
        )
        mine = [{k: p[k] for k in ("w", "k")} for p in got]
        assert max_rel_diff(mine, only) > 1e-6


def max_abs_diff(got, want):
    return max(
        float(np.max(np.abs(np.asarray(a[k]) - b[k])))
        for a, b in zip(got, want, strict=True)
        for k in b
    )


def test_default_eps():
    """eps = 1e-8: the peer's factor differs from ours by s*lambda*eps/vbar ~ 1.5e-10 per step.

    With unit-normal gradients (vbar ~ 1) and |w| < 4, 20 steps move w apart by at most
    about 20 * 1.5e-10 * 4 = 1.2e-8 (5e-9 measured): an absolute tolerance, since a
    relative one is loose near w = 0.
    """
    params, grads = problem(seed=3)
    our_mask, groups = MASKS["bools"]
    got = ours(params, grads, our_mask, eps=1e-8, betas=(0.9, 0.999))
    want = peer_run(params, grads, groups, eps=1e-8, betas=(0.9, 0.999), foreach=False)
    assert max_abs_diff(got, want) < 1.2e-8
    # The decay is visible at this tolerance: lambda = 0.9*LAM is detected.
    other = peer_run(
        params, grads, groups, eps=1e-8, betas=(0.9, 0.999), foreach=False, lam=0.9 * LAM
    )
    assert max_abs_diff(got, other) > 1e-4


def test_zero_gradients():
    """At vbar = 0 we do not decay; the peer multiplies by 1 - lr*lambda/eps (documented)."""
    params = make_params()
    zeros = [jax.tree.map(jnp.zeros_like, params)]
    lr, lam, eps = 1e-3, 1e-2, 1e-8
    tx = adams(lr, lam, eps=eps)
    got = run(tx, params, zeros)[-1]
    for k in params:
        np.testing.assert_array_equal(got[k], params[k])
    tensors = [torch.tensor(np.asarray(params[k])) for k in params]
    opt = AdamS(tensors, lr=lr, weight_decay=lam, eps=eps)
    for p in tensors:
        p.grad = torch.zeros_like(p)
    opt.step()
    for p, k in zip(tensors, params, strict=True):
        np.testing.assert_allclose(
            p.numpy(), (1 - lr * lam / eps) * np.asarray(params[k]), rtol=1e-12
        )

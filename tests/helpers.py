"""Shared test helpers: the registry of optimizers and transforms, param trees, gradient
streams and a NumPy reference.

The reference is written from the formulas of the source texts, in float64
NumPy, independently of the package, so that tests compare the package with
the math and not with itself.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_decay as od

ROOT = Path(__file__).resolve().parents[1]


def quick_run(main: Callable, out: Path) -> tuple[Any, dict, str]:
    """A script's ``--quick`` run into ``out``: what ``main`` returned, results.json, stdout."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        returned = main(["--quick", "--no-progress", "--out", str(out)])
    return returned, json.loads((out / "results.json").read_text()), stdout.getvalue()


def timm_optim(*modules: str) -> Any:
    """timm's ``timm/optim/<module>.py`` files, loaded as submodules of a stand-in package.

    ``import timm`` needs torchvision, which does not load here; the optimizer modules need
    only torch and their siblings (``_types``, ``_helpers``). Loaded in the order given;
    returns the last. Skips the test if torch or timm (``pip install --no-deps timm``) is
    missing.
    """
    pytest.importorskip("torch")
    package = "_timm_optim"
    spec = importlib.util.find_spec("timm")  # finds the files, does not import timm
    optim = Path(spec.submodule_search_locations[0], "optim") if spec else None
    if optim is None or not all((optim / f"{m}.py").is_file() for m in modules):
        pytest.skip("timm is not installed (pip install --no-deps timm==1.0.31)")
    if package not in sys.modules:  # its __init__ (which imports timm) is not run
        pkg = importlib.util.spec_from_file_location(
            package, optim / "__init__.py", submodule_search_locations=[str(optim)]
        )
        sys.modules[package] = importlib.util.module_from_spec(pkg)
    for name in modules:
        if f"{package}.{name}" not in sys.modules:
            sub = importlib.util.spec_from_file_location(f"{package}.{name}", optim / f"{name}.py")
            module = importlib.util.module_from_spec(sub)
            sys.modules[sub.name] = module
            sub.loader.exec_module(module)
    return sys.modules[f"{package}.{modules[-1]}"]


# ---- The registry: every optimizer and transform the tests run, and what to expect of it.


class Spec(NamedTuple):
    make: Callable[..., Any]  # make(learning_rate, weight_decay, **kwargs)
    alpha: float  # a learning rate and a weight decay, non-trivial, in the entry's convention
    lam: float
    kind: str  # lambda's place: "l2", "paper" (1 - eta*lam), "coupled", "prox", "adaptive",
    # "cautious" (paper, where the step does not move w away from 0) or "corrected" (below)
    family: str = "transform"  # "adam" or "sgd": the optimizers of `_alias`
    sgd: dict = {}  # the momentum arguments of an SGD optimizer


P = functools.partial
CORRECTED_PEAK = 1.0  # the gamma_max of the registry's `adamw_corrected`
MOMENTUM, NESTEROV = dict(momentum=0.9), dict(momentum=0.9, nesterov=True)
REGISTRY = {
    "adam_l2": Spec(od.adam_l2, 0.05, 0.3, "l2", "adam"),
    "adamw": Spec(od.adamw, 0.05, 0.2, "paper", "adam"),
    "adamw_coupled": Spec(P(od.adamw, coupled=True), 0.05, 4.0, "coupled", "adam"),
    "adamw_cautious": Spec(P(od.adamw, cautious=True), 0.05, 0.2, "cautious", "adam"),
    # gamma_max = CORRECTED_PEAK, so that the factor is 1 - eta_t*lambda*alpha(t)*eta_t for
    # any learning rate (a schedule or traced by inject_hyperparams) the tests pass.
    "adamw_corrected": Spec(
        P(od.adamw, corrected=True, peak_learning_rate=CORRECTED_PEAK),
        0.05,
        2.0,
        "corrected",
        "adam",
    ),
    "prox_adam": Spec(od.prox_adam, 0.05, 0.2, "prox", "adam"),
    "adamp": Spec(od.adamp, 0.05, 0.3, "adaptive", "adam"),
    # penalty="l1": thresholds small enough that some coordinates move and some become 0
    "prox_adam_l1": Spec(P(od.prox_adam, penalty="l1"), 0.05, 0.02, "l1", "adam"),
    "adamp_l1": Spec(P(od.adamp, penalty="l1"), 0.05, 0.3, "adaptive_l1", "adam"),
    "sgd_l2": Spec(od.sgd_l2, 0.1, 0.3, "l2", "sgd"),
    "sgdw": Spec(od.sgdw, 0.1, 0.05, "paper", "sgd"),
    "sgd_l2_momentum": Spec(P(od.sgd_l2, **MOMENTUM), 0.1, 0.3, "l2", "sgd", MOMENTUM),
    "sgdw_nesterov": Spec(P(od.sgdw, **NESTEROV), 0.1, 0.05, "paper", "sgd", NESTEROV),
    # The transforms take the same arguments; the learning rate is used where they have one.
    "add_l2_to_grad": Spec(lambda _, wd, **kw: od.add_l2_to_grad(wd, **kw), 0.05, 0.3, "l2"),
    "decoupled_decay": Spec(lambda _, wd, **kw: od.decoupled_decay(wd, **kw), 0.05, 0.2, "paper"),
    "prox_l2": Spec(lambda _, wd, **kw: od.prox_l2(wd, **kw), 0.05, 0.2, "prox"),
    "adaptive_decay": Spec(od.adaptive_decay, 0.05, 0.3, "adaptive"),
    "master_weights": Spec(
        lambda a, wd, **kw: od.master_weights(od.adamw(a, wd, **kw)), 0.05, 0.2, "paper"
    ),
}
ADAM_FAMILY = sorted(n for n, s in REGISTRY.items() if s.family == "adam")
SGD_FAMILY = sorted(n for n, s in REGISTRY.items() if s.family == "sgd")
OPTIMIZERS = ADAM_FAMILY + SGD_FAMILY
TRANSFORMS = sorted(n for n, s in REGISTRY.items() if s.family == "transform")


def build(name, learning_rate=None, weight_decay=None, **kwargs):
    """The registry's entry ``name``, with its own ``alpha`` and ``lambda`` unless given."""
    spec = REGISTRY[name]
    alpha = spec.alpha if learning_rate is None else learning_rate
    return spec.make(alpha, spec.lam if weight_decay is None else weight_decay, **kwargs)


def plain(name, learning_rate):
    """The Optax optimizer that the optimizer ``name`` is with ``weight_decay=0``."""
    spec = REGISTRY[name]
    if spec.family == "adam":
        return optax.adam(learning_rate)
    return optax.sgd(learning_rate, **spec.sgd)


# ---- Params, gradients, runs.

SHAPES = {"w": (3, 4), "b": (4,), "k": (2, 2, 3)}


def make_params(dtype=jnp.float64, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(rng.normal(size=s), dtype) for k, s in shapes.items()}


def make_grads(params, steps, seed=1, scale=1.0):
    rng = np.random.default_rng(seed)
    return [
        jax.tree.map(lambda p: jnp.asarray(scale * rng.normal(size=p.shape), p.dtype), params)
        for _ in range(steps)
    ]


def make_problem(steps, dtype=jnp.float64, **kwargs):
    """``make_params(dtype, **kwargs)`` and a stream of ``steps`` gradients for them."""
    params = make_params(dtype, **kwargs)
    return params, make_grads(params, steps)


def run(tx, params, grads, jit=True, return_state=False):
    """Feeds a fixed gradient stream; returns the params after every step (and the state)."""
    update = jax.jit(tx.update) if jit else tx.update
    state = tx.init(params)
    out = []
    for g in grads:
        u, state = update(g, state, params)
        params = optax.apply_updates(params, u)
        out.append(params)
    return (out, state) if return_state else out


def max_rel_diff(a, b):
    """Largest |a - b| / (|b| + 1e-30) over all leaves."""
    return max(
        float(jnp.max(jnp.abs(x - y) / (jnp.abs(y) + 1e-30)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


# ---- The source texts' formulas, in float64 NumPy.


def ravel(tree):
    """All leaves of ``tree`` in one float64 NumPy vector."""
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def adam_moments(grads, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0):
    """``mhat`` and ``D`` after the whole gradient stream, raveled, in float64 NumPy."""
    m = v = 0.0
    for g in grads:
        m = b1 * m + (1 - b1) * ravel(g)
        v = b2 * v + (1 - b2) * ravel(g) ** 2
    t = len(grads)
    return m / (1 - b1**t), np.sqrt(v / (1 - b2**t) + eps_root) + eps


def reference(name, params, grads, alpha, lam, eta=None, momentum=None, nesterov=False, **adam):
    """The source texts' update rules in float64 NumPy; returns params after each step.

    ``name`` is a registry name (``sgdw_nesterov``: ``sgdw`` with its momentum) or ``adam``;
    ``alpha`` and ``lam`` may be callables of the step ``t``, and ``eta`` one (default 1);
    ``adam`` holds ``b1``, ``b2``, ``eps``, ``eps_root``, each with Optax's default.
    """
    sgd = REGISTRY[name].sgd if name in REGISTRY else {}
    momentum, nesterov = sgd.get("momentum", momentum), sgd.get("nesterov", nesterov)
    name = name.removesuffix("_momentum").removesuffix("_nesterov")
    b1, b2, eps, eps_root = {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "eps_root": 0.0, **adam}.values()
    w = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v2 = {k: np.zeros_like(v) for k, v in w.items()}
    out = []
    weight_decay = lam
    for t, g in enumerate(grads):
        e = 1.0 if eta is None else eta(t)
        a = alpha(t) if callable(alpha) else alpha
        lam = weight_decay(t) if callable(weight_decay) else weight_decay
        s = a * e
        for k in w:
            gk = np.asarray(g[k], np.float64)
            if name.startswith("sgd"):
                d = gk + lam * w[k] if name == "sgd_l2" else gk
                if momentum is not None:
                    m[k] = momentum * m[k] + d
                    d = d + momentum * m[k] if nesterov else m[k]
                w[k] = w[k] - s * d if name == "sgd_l2" else (1 - e * lam) * w[k] - s * d
                continue
            if name == "adam_l2":
                gk = gk + lam * w[k]
            m[k] = b1 * m[k] + (1 - b1) * gk
            v2[k] = b2 * v2[k] + (1 - b2) * gk**2
            mhat = m[k] / (1 - b1 ** (t + 1))
            vhat = v2[k] / (1 - b2 ** (t + 1))
            D = np.sqrt(vhat + eps_root) + eps
            step = s * mhat / D
            if name in ("adam", "adam_l2"):
                w[k] = w[k] - step
            elif name == "adamw":
                w[k] = (1 - e * lam) * w[k] - step
            elif name == "adamw_coupled":
                w[k] = (1 - e * a * lam) * w[k] - step
            elif name == "adamw_cautious":  # Chen et al., Alg. 1: decay where d*w >= 0
                w[k] = w[k] - step - e * lam * (step * w[k] >= 0) * w[k]
            elif name == "adamw_corrected":  # Defazio: rate times gamma_t / gamma_max
                w[k] = (1 - e * lam * s / CORRECTED_PEAK) * w[k] - step
            elif name == "prox_adam":
                w[k] = (w[k] - step) / (1 + e * lam)
            elif name == "adamp":
                w[k] = (w[k] - step) / (1 + e * a * lam / D)
            elif name == "prox_adam_l1":  # soft-thresholding at eta_t*lambda
                y = w[k] - step
                w[k] = np.sign(y) * np.maximum(np.abs(y) - e * lam, 0.0)
            elif name == "adamp_l1":  # AdamL1: the threshold preconditioned, s*lambda/D
                y = w[k] - step
                w[k] = np.sign(y) * np.maximum(np.abs(y) - s * lam / D, 0.0)
            else:
                raise ValueError(name)
        out.append({k: v.copy() for k, v in w.items()})
    return out

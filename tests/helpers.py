"""Shared test helpers: param trees, gradient streams and a NumPy reference.

The reference is written from the formulas of the source texts, in float64
NumPy, independently of the package, so that tests compare the package with
the math and not with itself.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_decay as od

ROOT = Path(__file__).resolve().parents[1]


def load_script(relpath: str):
    """Imports a script of the repo (``examples/demo.py``, ...) as a module."""
    path = ROOT / relpath
    name = f"optax_decay_script_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(module)
    return module


SHAPES = {"w": (3, 4), "b": (4,), "k": (2, 2, 3)}

# name -> factory(learning_rate, weight_decay, **kwargs)
ADAM_FAMILY = {
    "adam_l2": od.adam_l2,
    "adamw": od.adamw,
    "adamw_coupled": functools.partial(od.adamw, coupled=True),
    "prox_adam": od.prox_adam,
    "adamp": od.adamp,
}
SGD_FAMILY = {
    "sgd_l2": od.sgd_l2,
    "sgdw": od.sgdw,
    "sgd_l2_momentum": functools.partial(od.sgd_l2, momentum=0.9),
    "sgdw_nesterov": functools.partial(od.sgdw, momentum=0.9, nesterov=True),
}
ALL = {**ADAM_FAMILY, **SGD_FAMILY}


def make_params(dtype=jnp.float64, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(rng.normal(size=s), dtype) for k, s in shapes.items()}


def make_grads(params, steps, seed=1, scale=1.0):
    rng = np.random.default_rng(seed)
    return [
        jax.tree.map(lambda p: jnp.asarray(scale * rng.normal(size=p.shape), p.dtype), params)
        for _ in range(steps)
    ]


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



def reference(name, params, grads, alpha, lam, eta=lambda t: 1.0, b1=0.9, b2=0.999, eps=1e-8,
              eps_root=0.0, momentum=None, nesterov=False):
    """The source texts' update rules in float64 NumPy; returns params after each step.

    ``alpha`` and ``lam`` may be callables of the step ``t``; ``eta`` is one.
    """
    w = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v2 = {k: np.zeros_like(v) for k, v in w.items()}
    out = []
    weight_decay = lam
    for t, g in enumerate(grads):
        e = eta(t)
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
            elif name == "prox_adam":
                w[k] = (w[k] - step) / (1 + e * lam)
            elif name == "adamp":
                w[k] = (w[k] - step) / (1 + e * a * lam / D)
            else:
                raise ValueError(name)
        out.append({k: v.copy() for k, v in w.items()})
    return out


def ref_kwargs(name):
    """The arguments of :func:`reference` for an optimizer of ``ALL`` named ``name``."""
    if name == "sgd_l2_momentum":
        return dict(name="sgd_l2", momentum=0.9)
    if name == "sgdw_nesterov":
        return dict(name="sgdw", momentum=0.9, nesterov=True)
    return dict(name=name)


def max_rel_diff(a, b):
    """Largest |a - b| / (|b| + 1e-30) over all leaves."""
    return max(
        float(jnp.max(jnp.abs(x - y) / (jnp.abs(y) + 1e-30)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


HYPER = {  # name -> (alpha, lambda): each in its own convention, all non-trivial.
    "adam_l2": (0.05, 0.3),
    "adamw": (0.05, 0.2),
    "adamw_coupled": (0.05, 4.0),
    "prox_adam": (0.05, 0.2),
    "adamp": (0.05, 0.3),
    "sgd_l2": (0.1, 0.3),
    "sgdw": (0.1, 0.05),
    "sgd_l2_momentum": (0.1, 0.3),
    "sgdw_nesterov": (0.1, 0.05),
}

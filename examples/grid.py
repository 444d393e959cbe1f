"""Train a whole grid of hyperparameters and seeds at once: one vmapped Flax NNX model each.

Member ``i`` of a grid of ``P`` points and ``S`` seeds is point ``i // S`` with seed ``i % S``;
the seed fixes its initial weights and batch order, so members of one seed differ only in their
hyperparameters. These live in the optimizer state (:func:`optax.inject_hyperparams`), so one
``nnx.vmap``-ed ``nnx.Optimizer`` holds the grid and one jitted step updates all of it.
``loss_scale`` multiplies a member's training loss by ``c``; the reported loss is unscaled.
``grad_norm_every=k`` records every ``k`` steps the global L2 norm of each member's (unscaled)
loss gradient on its training batch, before the optimizer, as ``history["grad_norm"]``.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from examples import optimizers
from examples.data import Dataset, batch_indices
from examples.models import cross_entropy, decayed_norm

Track = Callable[[nnx.State, nnx.State], Mapping[str, jax.Array]]


@dataclass
class GridResult:
    """What one grid run gives back; every array has the grid size ``G`` first."""

    optimizer: str
    hparams: dict[str, np.ndarray]  # name -> (G,)
    seed: np.ndarray  # (G,) the member's seed; member i is point i // S with seed i % S
    loss_scale: np.ndarray  # (G,)
    test_accuracy: np.ndarray  # (G,)
    train_loss: np.ndarray  # (G,) mean unscaled loss over the last tenth of the steps
    weight_norm: np.ndarray  # (G,) L2 norm of the decayed leaves (the kernels)
    params: dict  # final params, a pure dict of (G, ...) arrays
    history: dict[str, np.ndarray]  # name -> (steps // track_every, G, ...)
    seconds: float

    def by_seed(self, values) -> np.ndarray:
        """``values`` of shape ``(G, ...)`` as ``(P, S, ...)``: grid point x seed."""
        values = np.asarray(values)
        return values.reshape(-1, len(np.unique(self.seed)), *values.shape[1:])

    def records(self, **settings) -> list[dict]:
        """One ``results.json`` record per member, with ``settings`` added to each."""
        out = []
        for i in range(len(self.test_accuracy)):
            rec = {"optimizer": self.optimizer, "seed": int(self.seed[i])}
            rec.update({k: float(v[i]) for k, v in self.hparams.items()})
            for key in ("test_accuracy", "weight_norm", "train_loss", "loss_scale"):
                rec[key] = float(getattr(self, key)[i])
            rec.update(settings)
            out.append(rec)
        return out


@functools.partial(nnx.jit, static_argnames=("track", "grad_norm"))
@functools.partial(nnx.vmap, in_axes=(0, 0, 0, 0, None, None, None, None, None), out_axes=0)
def _train_step(model, optimizer, loss_scale, member_seed, x, y, batches, track, grad_norm):
    idx = batches[member_seed]  # this member's batch: row ``member_seed`` of (S, B) indices
    before = nnx.state(model, nnx.Param)
    if track is not None:
        before = jax.tree.map(jnp.copy, before)
    loss, grads = nnx.value_and_grad(lambda m: loss_scale * cross_entropy(m, x[idx], y[idx]))(model)
    optimizer.update(model, grads)
    metrics = {} if track is None else dict(track(before, nnx.state(model, nnx.Param)))
    if grad_norm:
        metrics["grad_norm"] = optax.tree.norm(grads) / loss_scale
    return loss / loss_scale, metrics


@nnx.jit
@functools.partial(nnx.vmap, in_axes=(0, None, None), out_axes=0)
def _correct(model, x, y):
    return jnp.sum(jnp.argmax(model(x), axis=-1) == y)


@nnx.jit
@functools.partial(nnx.vmap, in_axes=0, out_axes=0)
def _weight_norm(model):
    return decayed_norm(nnx.state(model, nnx.Param))


def init_grid(optimizer: str, model_fn: Callable, hparams: Mapping, seeds, schedule, options=None):
    """Member ``i``: ``model_fn(seeds[i])`` and its optimizer with ``hparams[...][i]``."""
    tx = optimizers.make(optimizer, 0.0, 0.0, schedule=schedule, inject=True, **(options or {}))

    @nnx.jit
    @nnx.vmap(in_axes=0, out_axes=0)
    def create(hp, seed):
        model = model_fn(seed)
        opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
        for name, value in hp.items():
            opt.opt_state.hyperparams[name][...] = value
        return model, opt

    return create({k: jnp.asarray(v, jnp.float32) for k, v in hparams.items()}, jnp.asarray(seeds))


def evaluate(model: nnx.Module, data: Dataset, batch: int = 1000) -> np.ndarray:
    """Test accuracy of every member, in batches of ``batch`` images."""
    model.eval()
    correct = 0
    for start in range(0, len(data.x_test), batch):
        x = jnp.asarray(data.x_test[start : start + batch])
        correct = correct + _correct(model, x, jnp.asarray(data.y_test[start : start + batch]))
    model.train()
    return np.asarray(correct) / len(data.x_test)


def train_grid(
    optimizer: str,
    hparams: Mapping[str, Sequence[float]],
    data: Dataset,
    model_fn: Callable[[jax.Array], nnx.Module],
    *,
    steps: int,
    batch_size: int,
    seeds: Sequence[int] = (0,),
    loss_scale: Sequence[float] | None = None,
    track: Track | None = None,
    track_every: int = 1,
    options: Mapping | None = None,
    grad_norm_every: int = 0,
    progress: bool = True,
) -> GridResult:
    """Trains one model per grid point and seed, with the schedule ``optimizers.schedule(steps)``.

    ``hparams``: ``learning_rate`` and ``weight_decay``, one value per grid point;
    ``model_fn``: ``seed -> model``, called inside ``nnx.vmap`` with a traced seed;
    ``loss_scale``: per grid point; ``track``: ``(params_before, params_after) -> {name: array}``,
    recorded every ``track_every`` steps into ``history``; ``options``: further keyword
    arguments of the optimizer, the same for all members (e.g. ``{"eps": 1e-12}``);
    ``grad_norm_every``: ``k > 0`` records the gradient norm every ``k`` steps (module docstring).
    """
    num_seeds = len(seeds)
    hp = {k: np.repeat(np.asarray(v, np.float64), num_seeds) for k, v in hparams.items()}
    size = len(next(iter(hp.values())))
    scale = np.ones(size) if loss_scale is None else np.repeat(loss_scale, num_seeds)
    member_seed = np.tile(np.arange(num_seeds), size // num_seeds)
    start, seed_of = time.perf_counter(), np.asarray(seeds)[member_seed]
    schedule = optimizers.schedule(steps)
    model, opt = init_grid(optimizer, model_fn, hp, seed_of, schedule, options)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    scale_j, member_j = jnp.asarray(scale, jnp.float32), jnp.asarray(member_seed)
    step = nnx.cached_partial(_train_step, model, opt)
    batches = np.stack([batch_indices(len(x), steps, batch_size, s) for s in seeds], axis=1)
    losses, history, norms, tail = [], [], [], max(1, steps // 10)  # tail: the steps of train_loss
    style = dict(unit="step", disable=not progress, file=sys.stderr, leave=False)
    with tqdm(batches, f"{optimizer:<13}", **style) as bar:
        for t, idx in enumerate(bar):
            on = track is not None and (t + 1) % track_every == 0
            # The norm is computed at every step (one reduction), so that the step compiles once.
            args = (jnp.asarray(idx), track if on else None, grad_norm_every > 0)
            loss, metrics = step(scale_j, member_j, x, y, *args)
            if t >= steps - tail:
                losses.append(loss)
            norm = metrics.pop("grad_norm", None)
            if norm is not None and (t + 1) % grad_norm_every == 0:
                norms.append(norm)
            if on:
                history.append(metrics)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return GridResult(
        optimizer=optimizer,
        hparams=hp,
        seed=seed_of,
        loss_scale=np.asarray(scale, np.float64),
        test_accuracy=evaluate(model, data),
        train_loss=np.asarray(jnp.mean(jnp.stack(losses), axis=0)),
        weight_norm=np.asarray(_weight_norm(model)),
        params=jax.tree.map(np.asarray, params),
        history={k: np.stack([np.asarray(h[k]) for h in history]) for k in (history or [{}])[0]}
        | ({"grad_norm": np.stack([np.asarray(n) for n in norms])} if norms else {}),
        seconds=time.perf_counter() - start,
    )

"""Train a whole grid of hyperparameters and seeds at once: one vmapped Flax NNX model each.

A grid is every point of ``hparams`` times every seed of ``seeds``. The seed is one more
member axis: it fixes a member's initial weights (``model_fn(seed)``) and its batch order
(``data.batch_indices(..., seed)``), so members of one seed differ only in their
hyperparameters, and three seeds run as one vmapped grid, not three runs. The
hyperparameters live in the optimizer state through :func:`optax.inject_hyperparams`,
so a single ``nnx.vmap``-ed ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` holds the whole
grid and one jitted step updates all of it. The decay mask is ``optax_decay.weight_decay_mask``:
kernels are decayed, biases and BatchNorm scales are not.

``loss_scale`` multiplies each member's training loss by its own constant ``c``
(the scale-freeness experiment); accuracy and the reported loss are unscaled.
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
            rec.update(
                test_accuracy=float(self.test_accuracy[i]),
                weight_norm=float(self.weight_norm[i]),
                train_loss=float(self.train_loss[i]),
                loss_scale=float(self.loss_scale[i]),
            )
            rec.update(settings)
            out.append(rec)
        return out


@functools.partial(nnx.jit, static_argnames="track")
@functools.partial(nnx.vmap, in_axes=(0, 0, 0, 0, None, None, None, None), out_axes=0)
def _train_step(model, optimizer, loss_scale, member_seed, x, y, batches, track):
    idx = batches[member_seed]  # this member's batch: row ``member_seed`` of (S, B) indices
    before = nnx.state(model, nnx.Param)
    if track is not None:
        before = jax.tree.map(jnp.copy, before)
    loss, grads = nnx.value_and_grad(lambda m: loss_scale * cross_entropy(m, x[idx], y[idx]))(model)
    optimizer.update(model, grads)
    metrics = {} if track is None else dict(track(before, nnx.state(model, nnx.Param)))
    return loss / loss_scale, metrics


@nnx.jit
@functools.partial(nnx.vmap, in_axes=(0, None, None), out_axes=0)
def _correct(model, x, y):
    return jnp.sum(jnp.argmax(model(x), axis=-1) == y)


@nnx.jit
@functools.partial(nnx.vmap, in_axes=0, out_axes=0)
def _weight_norm(model):
    return decayed_norm(nnx.state(model, nnx.Param))


def init_grid(
    optimizer: str,
    model_fn: Callable[[jax.Array], nnx.Module],
    hparams: Mapping[str, np.ndarray],
    seeds: np.ndarray,
    schedule: optax.Schedule,
    options: Mapping | None = None,
) -> tuple[nnx.Module, nnx.Optimizer]:
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
    progress: bool = True,
) -> GridResult:
    """Trains one model per grid point and seed, with the schedule ``optimizers.schedule(steps)``.

    Args:
      optimizer: a key of ``optimizers.METHODS``.
      hparams: ``learning_rate`` and ``weight_decay``, one value per grid point (``P``).
      data: train and test split.
      model_fn: ``seed -> model``, called once inside ``nnx.vmap`` with a traced seed.
      steps, batch_size: the run.
      seeds: ``S`` seeds; the grid has ``G = P * S`` members, member ``i`` being point
        ``i // S`` with seed ``seeds[i % S]`` (``reshape(P, S)`` gives point x seed).
      loss_scale: per grid point, the constant the training loss is multiplied by.
      track: ``(params_before, params_after) -> {name: array}``, recorded every
        ``track_every`` steps into ``GridResult.history``.
      options: further keyword arguments of the optimizer, the same for all
        members (e.g. ``{"eps": 1e-12}``).
      progress: show a tqdm bar.
    """
    if optimizer not in optimizers.METHODS:
        raise ValueError(
            f"unknown optimizer {optimizer!r}; choose from {', '.join(optimizers.METHODS)}"
        )
    num_seeds = len(seeds)
    hp = {k: np.repeat(np.asarray(v, np.float64), num_seeds) for k, v in hparams.items()}
    size = len(next(iter(hp.values())))
    scale = np.ones(size) if loss_scale is None else np.repeat(loss_scale, num_seeds)
    member_seed = np.tile(np.arange(num_seeds), size // num_seeds)
    start = time.perf_counter()
    schedule = optimizers.schedule(steps)
    model, opt = init_grid(
        optimizer, model_fn, hp, np.asarray(seeds)[member_seed], schedule, options
    )
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    scale_j = jnp.asarray(scale, jnp.float32)
    member_j = jnp.asarray(member_seed)
    step = nnx.cached_partial(_train_step, model, opt)
    batches = np.stack([batch_indices(len(x), steps, batch_size, s) for s in seeds], axis=1)
    losses, history = [], []
    tail = max(1, steps // 10)
    with tqdm(
        batches,
        desc=f"{optimizer:<13}",
        unit="step",
        disable=not progress,
        file=sys.stderr,
        leave=False,
    ) as bar:
        for t, idx in enumerate(bar):
            on = track is not None and (t + 1) % track_every == 0
            loss, metrics = step(scale_j, member_j, x, y, jnp.asarray(idx), track if on else None)
            if t >= steps - tail:
                losses.append(loss)
            if on:
                history.append(metrics)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return GridResult(
        optimizer=optimizer,
        hparams=hp,
        seed=np.asarray(seeds)[member_seed],
        loss_scale=np.asarray(scale, np.float64),
        test_accuracy=evaluate(model, data),
        train_loss=np.asarray(jnp.mean(jnp.stack(losses), axis=0)),
        weight_norm=np.asarray(_weight_norm(model)),
        params=jax.tree.map(np.asarray, params),
        history={k: np.stack([np.asarray(h[k]) for h in history]) for k in (history or [{}])[0]},
        seconds=time.perf_counter() - start,
    )

"""Train a whole grid of hyperparameters at once: one vmapped Flax NNX model per setting.

Every member of a grid starts from the same initial weights and sees the same
batches; only its hyperparameters differ. They live in the optimizer state
through :func:`optax.inject_hyperparams`, so a single ``nnx.vmap``-ed
``nnx.Optimizer(model, tx, wrt=nnx.Param)`` holds the whole grid and one jitted
step updates all of it. The decay mask is ``optax_decay.weight_decay_mask``:
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
    loss_scale: np.ndarray  # (G,)
    test_accuracy: np.ndarray  # (G,)
    train_loss: np.ndarray  # (G,) mean unscaled loss over the last tenth of the steps
    weight_norm: np.ndarray  # (G,) L2 norm of the decayed leaves (the kernels)
    params: dict  # final params, a pure dict of (G, ...) arrays
    history: dict[str, np.ndarray]  # name -> (steps // track_every, G, ...)
    seconds: float

    def records(self, **settings) -> list[dict]:
        """One ``results.json`` record per member, with ``settings`` added to each."""
        out = []
        for i in range(len(self.test_accuracy)):
            rec = {"optimizer": self.optimizer}
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
@functools.partial(nnx.vmap, in_axes=(0, 0, 0, None, None, None, None), out_axes=0)
def _train_step(model, optimizer, loss_scale, x, y, idx, track):
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
    model_fn: Callable[[], nnx.Module],
    hparams: Mapping[str, np.ndarray],
    schedule: optax.Schedule,
    options: Mapping | None = None,
) -> tuple[nnx.Module, nnx.Optimizer]:
    """``G`` copies of ``model_fn()`` and one optimizer each, ``G = len(learning_rate)``."""
    tx = optimizers.make(optimizer, 0.0, 0.0, schedule=schedule, inject=True, **(options or {}))

    @nnx.jit
    @nnx.vmap(in_axes=0, out_axes=0)
    def create(hp):
        model = model_fn()
        opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
        for name, value in hp.items():
            opt.opt_state.hyperparams[name][...] = value
        return model, opt

    return create({k: jnp.asarray(v, jnp.float32) for k, v in hparams.items()})


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
    model_fn: Callable[[], nnx.Module],
    *,
    steps: int,
    batch_size: int,
    seed: int,
    loss_scale: Sequence[float] | None = None,
    track: Track | None = None,
    track_every: int = 1,
    options: Mapping | None = None,
    progress: bool = True,
) -> GridResult:
    """Trains one model per grid point with the cosine schedule ``optimizers.schedule(steps)``.

    Args:
      optimizer: a key of ``optimizers.METHODS``.
      hparams: ``learning_rate`` and ``weight_decay``, one value per grid point.
      data: train and test split.
      model_fn: builds a fresh model; called once inside ``nnx.vmap``.
      steps, batch_size, seed: the run; ``seed`` fixes the batch order.
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
    hp = {k: np.asarray(v, np.float64) for k, v in hparams.items()}
    size = len(next(iter(hp.values())))
    scale = np.ones(size) if loss_scale is None else np.asarray(loss_scale, np.float64)
    start = time.perf_counter()
    schedule = optimizers.schedule(steps)
    model, opt = init_grid(optimizer, model_fn, hp, schedule, options)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    scale_j = jnp.asarray(scale, jnp.float32)
    step = nnx.cached_partial(_train_step, model, opt)
    losses, history = [], []
    tail = max(1, steps // 10)
    with tqdm(
        batch_indices(len(x), steps, batch_size, seed),
        desc=f"{optimizer:<13}",
        unit="step",
        disable=not progress,
        file=sys.stderr,
        leave=False,
    ) as bar:
        for t, idx in enumerate(bar):
            on = track is not None and (t + 1) % track_every == 0
            loss, metrics = step(scale_j, x, y, jnp.asarray(idx), track if on else None)
            if t >= steps - tail:
                losses.append(loss)
            if on:
                history.append(metrics)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return GridResult(
        optimizer=optimizer,
        hparams=hp,
        loss_scale=scale,
        test_accuracy=evaluate(model, data),
        train_loss=np.asarray(jnp.mean(jnp.stack(losses), axis=0)),
        weight_norm=np.asarray(_weight_norm(model)),
        params=jax.tree.map(np.asarray, params),
        history={k: np.stack([np.asarray(h[k]) for h in history]) for k in (history or [{}])[0]},
        seconds=time.perf_counter() - start,
    )

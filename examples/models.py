"""The examples' Flax NNX models, an MLP and a small CNN, and what they are trained and measured by.

``norm="batch"`` follows every hidden ``Linear`` or ``Conv`` with a ``BatchNorm``, which makes
that layer scale-invariant in its kernel; ``norm="layer"`` uses a ``LayerNorm``. Biases and norm
scales are named ``bias`` and ``scale``: ``optax_decay.weight_decay_mask`` decays the kernels.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import optax_decay

MODELS = ("mlp", "cnn")
NORMS = (None, "batch", "layer")


def _norm(kind: str | None, features: int, rngs: nnx.Rngs) -> nnx.Module | None:
    if kind not in NORMS:
        raise ValueError(f"unknown norm {kind!r}; choose one of {NORMS}")
    if kind == "batch":
        return nnx.BatchNorm(features, rngs=rngs)
    return nnx.LayerNorm(features, rngs=rngs) if kind == "layer" else None


class MLP(nnx.Module):
    """flatten -> [Linear -> (norm) -> ReLU] x len(hidden) -> Linear."""

    def __init__(self, image_shape: tuple, num_classes: int, *, hidden=(256,), norm=None, rngs):
        d_in = math.prod(image_shape)
        self.layers, self.norms = nnx.List(), nnx.List()
        for width in hidden:
            self.layers.append(nnx.Linear(d_in, width, rngs=rngs))
            self.norms.append(_norm(norm, width, rngs))
            d_in = width
        self.head = nnx.Linear(d_in, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for layer, norm in zip(self.layers, self.norms, strict=True):
            x = layer(x)
            if norm is not None:
                x = norm(x)
            x = jax.nn.relu(x)
        return self.head(x)


class CNN(nnx.Module):
    """[Conv3x3 -> (norm) -> ReLU -> 2x2 max-pool] x len(channels) -> Linear."""

    def __init__(self, image_shape: tuple, num_classes: int, *, channels=(16, 32), norm=None, rngs):
        height, width, c_in = image_shape
        self.layers, self.norms = nnx.List(), nnx.List()
        for c_out in channels:
            self.layers.append(nnx.Conv(c_in, c_out, (3, 3), rngs=rngs))
            self.norms.append(_norm(norm, c_out, rngs))
            c_in, height, width = c_out, height // 2, width // 2
        self.head = nnx.Linear(height * width * c_in, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer, norm in zip(self.layers, self.norms, strict=True):
            x = layer(x)
            if norm is not None:
                x = norm(x)
            x = nnx.max_pool(jax.nn.relu(x), (2, 2), strides=(2, 2))
        return self.head(x.reshape(x.shape[0], -1))


def make_model(kind: str, image_shape: tuple, num_classes: int, *, norm=None, seed=0, width=None):
    """``MLP`` or ``CNN`` by name, initialized from ``seed``; ``width`` overrides its sizes."""
    rngs = nnx.Rngs(jax.random.key(seed))  # a traced seed too (one per grid member)
    if kind == "mlp":
        return MLP(image_shape, num_classes, hidden=width or (256,), norm=norm, rngs=rngs)
    if kind == "cnn":
        return CNN(image_shape, num_classes, channels=width or (16, 32), norm=norm, rngs=rngs)
    raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODELS)}")


def factory(kind: str, data, **options):
    """``seed -> make_model(kind, ...)`` for ``data``'s image shape and classes (``model_fn``)."""
    return lambda seed: make_model(kind, data.image_shape, data.num_classes, seed=seed, **options)


def cross_entropy(model: nnx.Module, x: jax.Array, y: jax.Array) -> jax.Array:
    """The training loss: mean softmax cross-entropy of integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@nnx.jit
def accuracy(model: nnx.Module, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(model(x), axis=-1) == y)


@nnx.jit
def train_step(model: nnx.Module, optimizer: nnx.Optimizer, x, y, idx: jax.Array) -> jax.Array:
    """One update of one model on the batch ``x[idx], y[idx]`` (gathered inside the jit)."""
    loss, grads = nnx.value_and_grad(cross_entropy)(model, x[idx], y[idx])
    optimizer.update(model, grads)
    return loss


def decayed_norm(params) -> jax.Array:
    """L2 norm of the leaves that ``optax_decay.weight_decay_mask`` decays (the kernels)."""
    on = jax.tree.leaves(optax_decay.weight_decay_mask(params))
    return optax.tree.norm([p for p, m in zip(jax.tree.leaves(params), on, strict=True) if m])

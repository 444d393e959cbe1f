"""The experiments' Flax NNX models: an MLP and a small CNN, each with or without BatchNorm.

Both end in a plain ``Linear`` classifier. With ``batchnorm=True`` every hidden
``Linear`` or ``Conv`` is followed by a ``BatchNorm``, which makes that layer's
output invariant to the scale of its kernel: the case where weight decay no
longer limits capacity and only changes the effective step size.

Biases and BatchNorm scales are named ``bias`` and ``scale``, so
``optax_decay.weight_decay_mask`` decays the kernels only.
"""

from __future__ import annotations

import jax
from flax import nnx

MODELS = ("mlp", "cnn")


class MLP(nnx.Module):
    """flatten -> [Linear -> (BatchNorm) -> ReLU] x len(hidden) -> Linear."""

    def __init__(
        self,
        image_shape: tuple[int, ...],
        num_classes: int,
        *,
        hidden: tuple[int, ...] = (256,),
        batchnorm: bool = False,
        rngs: nnx.Rngs,
    ):
        d_in = 1
        for n in image_shape:
            d_in *= n
        self.layers = nnx.List()
        self.norms = nnx.List()
        for width in hidden:
            self.layers.append(nnx.Linear(d_in, width, rngs=rngs))
            self.norms.append(nnx.BatchNorm(width, rngs=rngs) if batchnorm else None)
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
    """[Conv3x3 -> (BatchNorm) -> ReLU -> 2x2 max-pool] x len(channels) -> Linear."""

    def __init__(
        self,
        image_shape: tuple[int, ...],
        num_classes: int,
        *,
        channels: tuple[int, ...] = (16, 32),
        batchnorm: bool = False,
        rngs: nnx.Rngs,
    ):
        height, width, c_in = image_shape
        self.layers = nnx.List()
        self.norms = nnx.List()
        for c_out in channels:
            self.layers.append(nnx.Conv(c_in, c_out, (3, 3), rngs=rngs))
            self.norms.append(nnx.BatchNorm(c_out, rngs=rngs) if batchnorm else None)
            c_in, height, width = c_out, height // 2, width // 2
        self.head = nnx.Linear(height * width * c_in, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer, norm in zip(self.layers, self.norms, strict=True):
            x = layer(x)
            if norm is not None:
                x = norm(x)
            x = nnx.max_pool(jax.nn.relu(x), (2, 2), strides=(2, 2))
        return self.head(x.reshape(x.shape[0], -1))


def make_model(
    kind: str,
    image_shape: tuple[int, ...],
    num_classes: int,
    *,
    batchnorm: bool = False,
    seed: int = 0,
    width: tuple[int, ...] | None = None,
) -> nnx.Module:
    """``MLP`` or ``CNN`` by name, initialized from ``seed``; ``width`` overrides its sizes."""
    rngs = nnx.Rngs(seed)
    if kind == "mlp":
        return MLP(image_shape, num_classes, hidden=width or (256,), batchnorm=batchnorm, rngs=rngs)
    if kind == "cnn":
        return CNN(
            image_shape, num_classes, channels=width or (16, 32), batchnorm=batchnorm, rngs=rngs
        )
    raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODELS)}")

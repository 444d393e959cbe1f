"""optax_decay demo: every optimizer of the package on a small MLP and the digits data set.

Trains a 64 -> 128 -> 10 Flax NNX MLP (with a LayerNorm) on scikit-learn's bundled
8x8 digits (no download) with each optimizer of the package, plus plain
``optax.adamw`` as a reference, and two runs without weight decay (plain SGD
with momentum and plain Adam) to compare the weight norms against. Every run
starts from the same initial weights and sees the same batches.

All runs use the cosine schedule ``eta_t`` through the package's ``schedule=``
argument, and ``mask=optax_decay.weight_decay_mask``, so that only the two
kernels are decayed: biases and the LayerNorm scale are not. The "weight
norm" column is the L2 norm of exactly those decayed leaves.

The paper-convention weight decay (``sgdw``, ``adamw``, ``prox_adam``) is set
from a decay timescale with ``optax_decay.weight_decay_from_timescale``, so
that it scales with ``--steps``; the coupled ``adamw(coupled=True)`` and
``optax.adamw`` get the same decay converted with ``paper_to_coupled``, which
makes the three AdamW rows the same run written in two conventions.

Run::

    python examples/demo.py                 # ~1000 steps per optimizer, well under a minute
    python examples/demo.py --quick         # a few steps, for tests
    python examples/demo.py --steps 3000 --seed 1 --out out/demo

It prints a markdown table and writes ``results.json`` and ``demo.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

import optax_decay

matplotlib.use("Agg")

DEFAULT_STEPS = 1000
QUICK_STEPS = 60
SGD_LR = 0.05  # with heavy-ball momentum 0.9
ADAM_LR = 3e-3
MOMENTUM = 0.9

# ------------------------------------------------------------------------------------------
# Data and model
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_data(seed: int = 0, test_size: float = 0.25) -> Data:
    """The 1797 8x8 digits, pixels scaled to [0, 1], a stratified split fixed by ``seed``."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y
    )
    return Data(x_train, y_train, x_test, y_test)


class MLP(nnx.Module):
    """64 -> 128 -> LayerNorm -> ReLU -> 10."""

    def __init__(self, rngs: nnx.Rngs, d_in: int = 64, d_hidden: int = 128, d_out: int = 10):
        self.hidden = nnx.Linear(d_in, d_hidden, rngs=rngs)
        self.norm = nnx.LayerNorm(d_hidden, rngs=rngs)
        self.out = nnx.Linear(d_hidden, d_out, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(jax.nn.relu(self.norm(self.hidden(x))))


def loss_fn(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@nnx.jit
def train_step(
    model: MLP, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array, idx: jax.Array
) -> jax.Array:
    """One update on the batch ``x[idx], y[idx]`` (gathered inside the jitted step)."""
    loss, grads = nnx.value_and_grad(loss_fn)(model, x[idx], y[idx])
    optimizer.update(model, grads)
    return loss


@nnx.jit
def accuracy(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(model(x), axis=-1) == y)


def decayed_weight_norm(model: nnx.Module) -> float:
    """L2 norm of the leaves that ``weight_decay_mask`` decays (the kernels)."""
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    mask = optax_decay.weight_decay_mask(params)
    leaves = [p for p, on in zip(jax.tree.leaves(params), jax.tree.leaves(mask), strict=True) if on]
    return float(jnp.sqrt(sum(jnp.sum(jnp.square(p)) for p in leaves)))


# ------------------------------------------------------------------------------------------
# Optimizers
# ------------------------------------------------------------------------------------------

TxFactory = Callable[..., optax.GradientTransformation]


@dataclass(frozen=True)
class Method:
    """One row of the table: ``make(learning_rate, weight_decay, schedule, mask)``."""

    name: str
    make: TxFactory
    learning_rate: float
    weight_decay: float
    decoupled: bool  # decay applied outside the gradient: must shrink the weights


def _optax_adamw(lr, wd, schedule, mask):
    # Optax folds the schedule into the learning rate and decays by lr(t) * wd.
    return optax.adamw(lambda t: lr * schedule(t), weight_decay=wd, mask=mask)


FACTORIES: dict[str, TxFactory] = {
    "sgd_l2": lambda lr, wd, s, m: optax_decay.sgd_l2(
        lr, wd, momentum=MOMENTUM, schedule=s, mask=m
    ),
    "sgdw": lambda lr, wd, s, m: optax_decay.sgdw(lr, wd, momentum=MOMENTUM, schedule=s, mask=m),
    "adam_l2": lambda lr, wd, s, m: optax_decay.adam_l2(lr, wd, schedule=s, mask=m),
    "adamw": lambda lr, wd, s, m: optax_decay.adamw(lr, wd, schedule=s, mask=m),
    "adamw(coupled=True)": lambda lr, wd, s, m: optax_decay.adamw(
        lr, wd, coupled=True, schedule=s, mask=m
    ),
    "prox_adam": lambda lr, wd, s, m: optax_decay.prox_adam(lr, wd, schedule=s, mask=m),
    "adamp": lambda lr, wd, s, m: optax_decay.adamp(lr, wd, schedule=s, mask=m),
    "optax.adamw": _optax_adamw,
}

# Methods whose decay is not part of the gradient (and so not undone by the optimizer).
DECOUPLED = ("sgdw", "adamw", "adamw(coupled=True)", "prox_adam", "adamp", "optax.adamw")


def default_methods(steps: int) -> list[Method]:
    """Every optimizer with a learning rate and weight decay that suit ``steps`` updates.

    The paper-convention ``lambda`` is ``1 / (eta_mean * tau)`` with a decay
    timescale ``tau = steps / 2`` iterations and ``eta_mean = 1/2`` the mean of
    the cosine schedule: the weights forget their initialization within the run.
    ``tau`` is at least 20 iterations, so that ``1 - eta_0 * lambda >= 0.9``.
    """
    paper = optax_decay.weight_decay_from_timescale(max(steps, 40) / 2, schedule=0.5)
    coupled = optax_decay.paper_to_coupled(paper, ADAM_LR)
    # The L2 penalties are in gradient units, independent of the run length; so is
    # AdamP's lambda, which is multiplied by the step size over Adam's denominator.
    l2_sgd, l2_adam = 5e-3, 1e-3
    adamp_wd = 1e-2
    rows = [
        ("sgd (no decay)", "sgdw", SGD_LR, 0.0),
        ("sgd_l2", "sgd_l2", SGD_LR, l2_sgd),
        ("sgdw", "sgdw", SGD_LR, paper),
        ("adam (no decay)", "adamw", ADAM_LR, 0.0),
        ("adam_l2", "adam_l2", ADAM_LR, l2_adam),
        ("adamw", "adamw", ADAM_LR, paper),
        ("adamw(coupled=True)", "adamw(coupled=True)", ADAM_LR, coupled),
        ("prox_adam", "prox_adam", ADAM_LR, paper),
        ("adamp", "adamp", ADAM_LR, adamp_wd),
        ("optax.adamw", "optax.adamw", ADAM_LR, coupled),
    ]
    return [
        Method(name, FACTORIES[kind], lr, wd, decoupled=kind in DECOUPLED and wd > 0)
        for name, kind, lr, wd in rows
    ]


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------


def batch_indices(num_examples: int, steps: int, batch_size: int, seed: int) -> np.ndarray:
    """``(steps, batch_size)`` indices: shuffled epochs, the same for every optimizer."""
    rng = np.random.default_rng(seed)
    per_epoch = num_examples // batch_size
    epochs = -(-steps // per_epoch)
    batches = [
        rng.permutation(num_examples)[: per_epoch * batch_size].reshape(per_epoch, batch_size)
        for _ in range(epochs)
    ]
    return np.concatenate(batches)[:steps]


def train(
    method: Method,
    data: Data,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    progress: tqdm | None = None,
) -> dict:
    """Trains a fresh MLP with ``method``; returns its row of the results."""
    start = time.perf_counter()
    schedule = optax.cosine_decay_schedule(1.0, steps)
    tx = method.make(
        method.learning_rate, method.weight_decay, schedule, optax_decay.weight_decay_mask
    )
    model = MLP(nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    # cached_partial skips re-traversing the model and optimizer graph on every call.
    step = nnx.cached_partial(train_step, model, optimizer)
    loss = jnp.nan
    for idx in batch_indices(len(data.x_train), steps, batch_size, seed):
        loss = step(x_train, y_train, idx)
        if progress is not None:
            progress.update(1)
    test_acc = float(accuracy(model, jnp.asarray(data.x_test), jnp.asarray(data.y_test)))
    train_acc = float(accuracy(model, x_train, y_train))
    return {
        "optimizer": method.name,
        "learning_rate": method.learning_rate,
        "weight_decay": method.weight_decay,
        "test_accuracy": test_acc,
        "train_accuracy": train_acc,
        "final_loss": float(loss),
        "weight_norm": decayed_weight_norm(model),
        "seconds": time.perf_counter() - start,
    }


# ------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------


def markdown_table(results: Sequence[dict]) -> str:
    lines = [
        "| optimizer | learning rate | weight decay | test accuracy | weight norm | seconds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['optimizer']} | {r['learning_rate']:g} | {r['weight_decay']:.3g} | "
            f"{r['test_accuracy']:.4f} | {r['weight_norm']:.3f} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def plot(results: Sequence[dict], path: pathlib.Path) -> None:
    import matplotlib.pyplot as plt

    names = [r["optimizer"] for r in results]
    colors = ["tab:gray" if r["weight_decay"] == 0 else "tab:blue" for r in results]
    fig, (ax_acc, ax_norm) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    ax_acc.bar(names, [r["test_accuracy"] for r in results], color=colors)
    lo = min(r["test_accuracy"] for r in results)
    ax_acc.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax_acc.set_title("test accuracy")
    ax_norm.bar(names, [r["weight_norm"] for r in results], color=colors)
    ax_norm.set_title("L2 norm of the decayed weights (gray: no decay)")
    for ax in (ax_acc, ax_norm):
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="split, init and batch seed")
    parser.add_argument("--steps", type=int, default=None, help=f"default {DEFAULT_STEPS}")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out/demo"))
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps, for tests")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = QUICK_STEPS if args.quick else DEFAULT_STEPS
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    data = load_data(args.seed)
    if args.batch_size > len(data.x_train):
        raise SystemExit(f"--batch-size must be <= {len(data.x_train)} (the training set)")
    methods = default_methods(args.steps)

    results = []
    total = time.perf_counter()
    with tqdm(
        total=len(methods) * args.steps, unit="step", disable=args.no_progress, file=sys.stderr
    ) as bar:
        for method in methods:
            bar.set_description(f"{method.name:<20}")
            results.append(
                train(
                    method,
                    data,
                    steps=args.steps,
                    batch_size=args.batch_size,
                    seed=args.seed,
                    progress=bar,
                )
            )
    total = time.perf_counter() - total

    print(
        f"\n{args.steps} steps of batch {args.batch_size} per optimizer, seed {args.seed}, "
        f"{len(data.x_train)} train / {len(data.x_test)} test digits, "
        f"cosine schedule, decay mask: kernels only.\n"
    )
    print(markdown_table(results))
    print(f"\nTotal {total:.1f} s.")
    for r in results:
        if not (0.0 <= r["test_accuracy"] <= 1.0 and math.isfinite(r["weight_norm"])):
            print(f"warning: {r['optimizer']} diverged", file=sys.stderr)

    args.out.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()}
    (args.out / "results.json").write_text(
        json.dumps({"config": config, "results": results}, indent=2) + "\n"
    )
    plot(results, args.out / "demo.png")
    print(f"Wrote {args.out / 'results.json'} and {args.out / 'demo.png'}.")
    return results


if __name__ == "__main__":
    main()

"""Flax NNX training on flat buffers: ``optax_decay.flat_layout`` in a real train step.

The model's ``nnx.Param`` state is packed into one 1-D buffer per dtype; the
optimizer (``optax_decay.adamw`` here, any optimizer of the package works) and
its Adam moments live on those buffers, so each step runs a handful of fused
loops instead of several per leaf. The loss unravels the buffer back into the
state pytree, so ``jax.grad`` returns flat gradients directly. The decay mask
(``weight_decay_mask``: kernels yes, biases and norm scales no) becomes
``layout.mask``, an iota compare, because the layout stores the decayed leaves
first.

The same model is also trained on the usual tree path with
``nnx.Optimizer(model, tx, wrt=nnx.Param)``; the script prints the largest
difference between the two final models (round-off only: both run the same
elementwise math) and the time per step of each, and plots both loss curves.

The pattern, in short::

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    layout = optax_decay.flat_layout(params, mask=optax_decay.weight_decay_mask)
    flat = layout.ravel(params)
    tx = optax_decay.adamw(lr, wd, mask=layout.mask)
    opt_state = tx.init(flat)

    def loss_fn(flat, rest, x, y):
        model = nnx.merge(graphdef, layout.unravel(flat), rest)
        ...

Run::

    python examples/flat_nnx.py                 # digits, 1500 steps, about 30 s
    python examples/flat_nnx.py --quick         # a few steps, for tests
    python examples/flat_nnx.py --depth 8 --width 256 --steps 500
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

import optax_decay

matplotlib.use("Agg")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from fashion_data import DATASETS, DEFAULT_DIR, load  # noqa: E402
from grid_training import batch_indices  # noqa: E402


class MLP(nnx.Module):
    """``depth`` blocks of Linear -> LayerNorm -> ReLU, then a Linear head: many small leaves."""

    def __init__(self, d_in: int, width: int, depth: int, d_out: int, rngs: nnx.Rngs):
        dims = [d_in] + [width] * depth
        self.layers = nnx.List(
            nnx.Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.norms = nnx.List(nnx.LayerNorm(width, rngs=rngs) for _ in range(depth))
        self.head = nnx.Linear(dims[-1], d_out, rngs=rngs)

    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for layer, norm in zip(self.layers, self.norms, strict=True):
            x = jax.nn.relu(norm(layer(x)))
        return self.head(x)


def cross_entropy(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def make_tx(args, mask):
    schedule = optax.cosine_decay_schedule(1.0, args.steps)
    return optax_decay.adamw(args.learning_rate, args.weight_decay, schedule=schedule, mask=mask)


# ------------------------------------------------------------------------------ flat path


def train_flat(model, args, x, y, batches, bar):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    layout = optax_decay.flat_layout(params, mask=optax_decay.weight_decay_mask)
    flat = layout.ravel(params)
    tx = make_tx(args, layout.mask)
    opt_state = tx.init(flat)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(flat, opt_state, idx):
        def loss_fn(flat):
            return cross_entropy(nnx.merge(graphdef, layout.unravel(flat), rest), x[idx], y[idx])

        loss, grads = jax.value_and_grad(loss_fn)(flat)
        updates, opt_state = tx.update(grads, opt_state, flat)
        return optax.apply_updates(flat, updates), opt_state, loss

    losses, start = [], None
    for t, idx in enumerate(batches):
        flat, opt_state, loss = step(flat, opt_state, idx)
        losses.append(loss)
        start = start or _after_compile(t, loss)
        bar.update()
    jax.block_until_ready(flat)
    seconds = (time.perf_counter() - start) / max(1, len(batches) - 1)
    return nnx.merge(graphdef, layout.unravel(flat), rest), losses, seconds, layout


# ------------------------------------------------------------------------------ tree path


@nnx.jit
def _tree_step(model, optimizer, x, y, idx):
    loss, grads = nnx.value_and_grad(cross_entropy)(model, x[idx], y[idx])
    optimizer.update(model, grads)
    return loss


def train_tree(model, args, x, y, batches, bar):
    optimizer = nnx.Optimizer(model, make_tx(args, optax_decay.weight_decay_mask), wrt=nnx.Param)
    step = nnx.cached_partial(_tree_step, model, optimizer)
    losses, start = [], None
    for t, idx in enumerate(batches):
        losses.append(step(x, y, idx))
        start = start or _after_compile(t, losses[-1])
        bar.update()
    jax.block_until_ready(nnx.state(model))
    seconds = (time.perf_counter() - start) / max(1, len(batches) - 1)
    return model, losses, seconds


# ------------------------------------------------------------------------------ main


def _after_compile(t: int, loss: jax.Array) -> float | None:
    """The clock once step 0 (which compiles) has finished: steady-state timing."""
    if t != 0:
        return None
    loss.block_until_ready()
    return time.perf_counter()


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=DATASETS, default="digits")
    parser.add_argument("--data-dir", type=pathlib.Path, default=DEFAULT_DIR)
    parser.add_argument("--steps", type=int, help="default 1500; --quick 30")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=4, help="hidden blocks (3 leaves each)")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-3, help="paper form, per step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out/flat_nnx"))
    parser.add_argument("--quick", action="store_true", help="30 steps, for tests")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    args.steps = args.steps or (30 if args.quick else 1500)
    if min(args.steps, args.batch_size, args.width, args.depth) < 1:
        parser.error("--steps, --batch-size, --width and --depth must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        data = load(args.dataset, args.data_dir, seed=args.seed)
    except FileNotFoundError as err:
        raise SystemExit(f"error: {err}") from None
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    batches = jnp.asarray(batch_indices(len(x), args.steps, args.batch_size, args.seed))

    def new_model():
        d_in = int(np.prod(data.image_shape))
        return MLP(d_in, args.width, args.depth, data.num_classes, nnx.Rngs(args.seed))

    with tqdm(total=2 * args.steps, unit="step", disable=args.no_progress, file=sys.stderr) as bar:
        bar.set_description("flat")
        flat_model, flat_losses, flat_s, layout = train_flat(new_model(), args, x, y, batches, bar)
        bar.set_description("tree")
        tree_model, tree_losses, tree_s = train_tree(new_model(), args, x, y, batches, bar)

    flat_params = nnx.state(flat_model, nnx.Param)
    tree_params = nnx.state(tree_model, nnx.Param)
    diff = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(flat_params), jax.tree.leaves(tree_params), strict=True)
    )
    x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)

    def accuracy(model):
        return float(jnp.mean(jnp.argmax(model(x_test), -1) == y_test))

    report = {
        "config": {k: str(v) if isinstance(v, pathlib.Path) else v for k, v in vars(args).items()},
        "n_leaves": len(jax.tree.leaves(tree_params)),
        "n_params": layout.size,
        "buffers": layout.sizes,
        "decayed_per_buffer": layout.num_decayed,
        "flat": {"seconds_per_step": flat_s, "test_accuracy": accuracy(flat_model)},
        "tree": {"seconds_per_step": tree_s, "test_accuracy": accuracy(tree_model)},
        "max_abs_param_difference": diff,
        "final_loss": {"flat": float(flat_losses[-1]), "tree": float(tree_losses[-1])},
    }
    print(
        f"{report['n_params']:,} params in {report['n_leaves']} leaves -> buffers "
        f"{report['buffers']} (decayed prefix {report['decayed_per_buffer']})\n"
        f"flat: {flat_s * 1e3:.2f} ms/step after compiling, "
        f"test accuracy {report['flat']['test_accuracy']:.4f}\n"
        f"tree: {tree_s * 1e3:.2f} ms/step, test accuracy {report['tree']['test_accuracy']:.4f}\n"
        f"largest |flat - tree| over all params: {diff:.2e}"
    )

    import matplotlib.pyplot as plt

    args.out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.plot(np.asarray(jnp.stack(tree_losses)), label="tree (nnx.Optimizer)", lw=2)
    ax.plot(np.asarray(jnp.stack(flat_losses)), "--", label="flat buffers", lw=1.5)
    ax.set(xlabel="step", ylabel="training loss", yscale="log", title="adamw: flat vs tree")
    ax.legend()
    fig.savefig(args.out / "flat_nnx.png", dpi=110)
    plt.close(fig)
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"Wrote {args.out / 'results.json'} and {args.out / 'flat_nnx.png'}.")
    return report


if __name__ == "__main__":
    main()

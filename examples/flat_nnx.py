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
    python -m examples.flat_nnx                 # the same
    python examples/flat_nnx.py --quick         # a few steps, for tests
    python examples/flat_nnx.py --depth 8 --width 256 --steps 500
"""

from __future__ import annotations

import functools
import pathlib
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

import optax_decay
from examples import cli, data, models, optimizers
from examples.reporting import write_json


def make_tx(args, mask):
    return optimizers.make(
        "adamw",
        args.learning_rate,
        args.weight_decay,
        schedule=optimizers.schedule(args.steps),
        mask=mask,
    )


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
            model = nnx.merge(graphdef, layout.unravel(flat), rest)
            return models.cross_entropy(model, x[idx], y[idx])

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


def train_tree(model, args, x, y, batches, bar):
    optimizer = nnx.Optimizer(model, make_tx(args, optax_decay.weight_decay_mask), wrt=nnx.Param)
    step = nnx.cached_partial(models.train_step, model, optimizer)
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
    parser = cli.Parser(__doc__)
    parser.add_argument("--dataset", choices=data.DATASETS, default="digits")
    parser.add_argument("--data-dir", type=pathlib.Path, default=data.DEFAULT_DIR)
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
    cli.check_positive(
        steps=args.steps, batch_size=args.batch_size, width=args.width, depth=args.depth
    )
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    dataset = data.load(args.dataset, args.data_dir, seed=args.seed)
    cli.check_batch_size(args.batch_size, dataset)
    x, y = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)
    batches = jnp.asarray(data.batch_indices(len(x), args.steps, args.batch_size, args.seed))

    def new_model():
        return models.make_model(
            "mlp",
            dataset.image_shape,
            dataset.num_classes,
            norm="layer",
            seed=args.seed,
            width=(args.width,) * args.depth,
        )

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
    x_test, y_test = jnp.asarray(dataset.x_test), jnp.asarray(dataset.y_test)

    def accuracy(model):
        return float(models.accuracy(model, x_test, y_test))

    report = {
        "config": cli.config_of(args),
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
    write_json(args.out / "results.json", report)
    print(f"Wrote {args.out / 'results.json'} and {args.out / 'flat_nnx.png'}.")
    return report


if __name__ == "__main__":
    cli.run_cli(main)

"""Flax NNX training on flat buffers (``optax_decay.flat_layout``), next to the tree path.

The model's ``nnx.Param`` state is packed into one 1-D buffer per dtype, the decayed leaves
(kernels) first, so the decay mask is ``layout.mask``; ``adamw`` and its moments live on the
buffers and the loss unravels them, so gradients come out flat. The same model is also trained
with ``nnx.Optimizer`` on the tree. Printed and written to ``--out`` (``results.json``,
``flat_nnx.png``): ``max |flat - tree|`` over the final params (round-off only), each path's time
per step after compiling, the test accuracies and both loss curves.
"""

from __future__ import annotations

import functools
import pathlib
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

import optax_decay
from examples import cli, data, models, optimizers
from examples.reporting import save_figure, write_json


def timed_loop(step, carry, batches, bar):
    """``step(carry, idx) -> (carry, loss)`` over ``batches``: carry, losses, s/step after 0."""
    losses = []
    for idx in batches:
        carry, loss = step(carry, idx)
        losses.append(loss)
        bar.update()
        if len(losses) == 1:
            loss.block_until_ready()
            start = time.perf_counter()
    jax.block_until_ready((carry, losses[-1]))
    seconds = (time.perf_counter() - start) / max(1, len(batches) - 1)
    return carry, np.asarray(jnp.stack(losses)), seconds


def train_flat(model, new_tx, x, y, batches, bar):
    """``model`` trained on one flat buffer per dtype, its losses, s/step and the layout."""
    bar.set_description("flat")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    layout = optax_decay.flat_layout(params, mask=optax_decay.weight_decay_mask)
    tx = new_tx(mask=layout.mask)

    def loss_fn(flat, idx):  # unravel is slices and reshapes: the gradients come out flat
        model = nnx.merge(graphdef, layout.unravel(flat), rest)
        return models.cross_entropy(model, x[idx], y[idx])

    @functools.partial(jax.jit, donate_argnums=0)
    def step(carry, idx):
        flat, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(flat, idx)
        updates, opt_state = tx.update(grads, opt_state, flat)
        return (optax.apply_updates(flat, updates), opt_state), loss

    flat = layout.ravel(params)
    (flat, _), losses, seconds = timed_loop(step, (flat, tx.init(flat)), batches, bar)
    return nnx.merge(graphdef, layout.unravel(flat), rest), losses, seconds, layout


def train_tree(model, new_tx, x, y, batches, bar):
    """``model`` trained with ``nnx.Optimizer`` on the tree, its losses and s/step."""
    bar.set_description("tree")
    optimizer = nnx.Optimizer(model, new_tx(mask=optax_decay.weight_decay_mask), wrt=nnx.Param)
    step = nnx.cached_partial(models.train_step, model, optimizer)
    _, losses, seconds = timed_loop(lambda _, idx: (None, step(x, y, idx)), None, batches, bar)
    return model, losses, seconds


def parse_args(argv: Sequence[str] | None):
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
    if args.steps is None:
        args.steps = 30 if args.quick else 1500
    cli.check_positive(args, "steps", "batch_size", "width", "depth")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    dataset = data.load(args.dataset, args.data_dir, seed=args.seed)
    cli.check_batch_size(args.batch_size, dataset)
    x, y = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)
    batches = jnp.asarray(data.batch_indices(len(x), args.steps, args.batch_size, args.seed))
    lr, wd, schedule = args.learning_rate, args.weight_decay, optimizers.schedule(args.steps)
    new_tx = functools.partial(optimizers.make, "adamw", lr, wd, schedule=schedule)
    spec, width = ("mlp", dataset.image_shape, dataset.num_classes), (args.width,) * args.depth
    new_model = lambda: models.make_model(*spec, norm="layer", seed=args.seed, width=width)

    with tqdm(total=2 * args.steps, unit="step", disable=args.no_progress, file=sys.stderr) as bar:
        run = (new_tx, x, y, batches, bar)
        flat_model, flat_losses, flat_s, layout = train_flat(new_model(), *run)
        tree_model, tree_losses, tree_s = train_tree(new_model(), *run)

    leaves = [jax.tree.leaves(nnx.state(m, nnx.Param)) for m in (flat_model, tree_model)]
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(*leaves, strict=True))
    test = jnp.asarray(dataset.x_test), jnp.asarray(dataset.y_test)
    flat_acc, tree_acc = (float(models.accuracy(m, *test)) for m in (flat_model, tree_model))
    report = {
        "config": cli.config_of(args),
        "n_leaves": len(leaves[1]),
        "n_params": layout.size,
        "buffers": layout.sizes,
        "decayed_per_buffer": layout.num_decayed,
        "flat": {"seconds_per_step": flat_s, "test_accuracy": flat_acc},
        "tree": {"seconds_per_step": tree_s, "test_accuracy": tree_acc},
        "max_abs_param_difference": diff,
        "final_loss": {"flat": float(flat_losses[-1]), "tree": float(tree_losses[-1])},
    }
    print(
        f"{layout.size:,} params in {len(leaves[1])} leaves -> buffers {layout.sizes} "
        f"(decayed prefix {layout.num_decayed})\n"
        f"flat: {flat_s * 1e3:.2f} ms/step after compiling, test accuracy {flat_acc:.4f}\n"
        f"tree: {tree_s * 1e3:.2f} ms/step, test accuracy {tree_acc:.4f}\n"
        f"largest |flat - tree| over all params: {diff:.2e}"
    )
    write_json(args.out / "results.json", report)  # makes --out
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.plot(tree_losses, label="tree (nnx.Optimizer)", lw=2)
    ax.plot(flat_losses, "--", label="flat buffers", lw=1.5)
    ax.set(xlabel="step", ylabel="training loss", yscale="log", title="adamw: flat vs tree")
    ax.legend()
    save_figure(fig, args.out / "flat_nnx.png", 110)
    print(f"Wrote {args.out / 'results.json'} and {args.out / 'flat_nnx.png'}.")
    return report


if __name__ == "__main__":
    cli.run_cli(main)

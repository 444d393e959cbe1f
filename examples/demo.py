"""optax_decay demo: every optimizer of the package on a small MLP and the digits data set.

A 64 -> 128 (LayerNorm) -> 10 Flax NNX MLP on the digits, trained with each optimizer, plain
``optax.adamw``, and SGD and Adam without decay, from the same weights and batches; only the
kernels are decayed, and "weight norm" is their L2 norm. The paper-form decay is
``lambda = 1 / (mean(eta_t) * tau)`` with ``tau = max(steps, 40) / 2``; ``adamw(coupled=True)`` and
``optax.adamw`` get ``lambda / alpha`` (the three AdamW rows are one run); the L2 penalties and
AdamP have their own units (``optimizers.OWN_DECAYS``). Prints a markdown table; writes
``results.json`` and ``demo.png`` to ``--out``.
"""

from __future__ import annotations

import math
import pathlib
import sys
import time
from collections.abc import Sequence

import jax.numpy as jnp
import matplotlib.pyplot as plt
import optax
from flax import nnx
from tqdm.auto import tqdm

import optax_decay
from examples import cli, data, models, optimizers
from examples.reporting import markdown_table, save_figure, write_json

DEFAULT_STEPS, QUICK_STEPS = 1000, 60
ROWS = [  # (row name, key of optimizers.METHODS, decayed?); optax.adamw takes adamw_coupled's
    ("sgd (no decay)", "sgdw", False),
    ("sgd_l2", "sgd_l2", True),
    ("sgdw", "sgdw", True),
    ("adam (no decay)", "adamw", False),
    ("adam_l2", "adam_l2", True),
    ("adamw", "adamw", True),
    ("adamw(coupled=True)", "adamw_coupled", True),
    ("prox_adam", "prox_adam", True),
    ("adamp", "adamp", True),
    ("optax.adamw", "adamw_coupled", True),
]
FORMATS = {"optimizer": "s", "learning_rate": "g", "weight_decay": ".3g", "test_accuracy": ".4f"}
FORMATS |= {"weight_norm": ".3f", "seconds": ".1f"}  # the table's columns
TABLE = [(key.replace("_", " "), key, fmt) for key, fmt in FORMATS.items()]


def default_runs(steps: int) -> list[tuple[str, str, float, float]]:
    """``(name, method, learning_rate, weight_decay)`` of every row, for ``steps`` updates."""
    paper = optax_decay.weight_decay_from_timescale(max(steps, 40) / 2, schedule=0.5)
    return [
        (name, method, *optimizers.default_hparams(method, paper if decayed else 0.0))
        for name, method, decayed in ROWS
    ]


def train(name, method, lr, wd, digits, args, bar=None) -> dict:
    """Trains a fresh MLP with one row's optimizer for ``args.steps``; returns its results row."""
    start, seed = time.perf_counter(), args.seed
    schedule = optimizers.schedule(args.steps)
    if name == "optax.adamw":  # decays by lr * schedule(t) * wd: the coupled form
        lr_t = lambda t: lr * schedule(t)
        tx = optax.adamw(lr_t, weight_decay=wd, mask=optax_decay.weight_decay_mask)
    else:
        tx = optimizers.make(method, lr, wd, schedule=schedule)
    model = models.make_model("mlp", digits.image_shape, 10, norm="layer", width=(128,), seed=seed)
    step = nnx.cached_partial(models.train_step, model, nnx.Optimizer(model, tx, wrt=nnx.Param))
    x, y = jnp.asarray(digits.x_train), jnp.asarray(digits.y_train)
    for idx in data.batch_indices(len(x), args.steps, args.batch_size, seed):
        loss = step(x, y, idx)
        if bar is not None:
            bar.update(1)
    x_test, y_test = jnp.asarray(digits.x_test), jnp.asarray(digits.y_test)
    return {
        "optimizer": name,
        "learning_rate": lr,
        "weight_decay": wd,
        "test_accuracy": float(models.accuracy(model, x_test, y_test)),
        "train_accuracy": float(models.accuracy(model, x, y)),
        "final_loss": float(loss),
        "weight_norm": float(models.decayed_norm(nnx.state(model, nnx.Param))),
        "seconds": time.perf_counter() - start,
    }


def plot(results: Sequence[dict], path: pathlib.Path) -> None:
    names = [r["optimizer"] for r in results]
    colors = ["tab:gray" if r["weight_decay"] == 0 else "tab:blue" for r in results]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    titles = ("test accuracy", "L2 norm of the decayed weights (gray: no decay)")
    for ax, key, title in zip(axes, ("test_accuracy", "weight_norm"), titles, strict=True):
        ax.bar(names, [r[key] for r in results], color=colors)
        ax.set_title(title)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes[0].set_ylim(max(0.0, min(r["test_accuracy"] for r in results) - 0.05), 1.0)
    save_figure(fig, path, 120)


def parse_args(argv: Sequence[str] | None):
    parser = cli.Parser(__doc__)
    parser.add_argument("--seed", type=int, default=0, help="split, init and batch seed")
    parser.add_argument("--steps", type=int, help=f"default {DEFAULT_STEPS}")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out/demo"))
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps, for tests")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = QUICK_STEPS if args.quick else DEFAULT_STEPS
    cli.check_positive(args, "steps", "batch_size")
    return args


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    digits = data.load_digits(args.seed)
    cli.check_batch_size(args.batch_size, digits)
    runs, results, total = default_runs(args.steps), [], time.perf_counter()
    style = dict(unit="step", disable=args.no_progress, file=sys.stderr)
    with tqdm(total=len(runs) * args.steps, **style) as bar:
        for run in runs:
            bar.set_description(f"{run[0]:<20}")
            results.append(train(*run, digits, args, bar))
    setup = f"{args.steps} steps of batch {args.batch_size} per optimizer, seed {args.seed}"
    sizes = f"{len(digits.x_train)} train / {len(digits.x_test)} test digits"
    print(f"\n{setup}, {sizes}, cosine schedule, decay mask: kernels only.\n")
    print(markdown_table(results, TABLE, align="lrrrrr"))
    print(f"\nTotal {time.perf_counter() - total:.1f} s.")
    for r in results:
        if not (0.0 <= r["test_accuracy"] <= 1.0 and math.isfinite(r["weight_norm"])):
            print(f"warning: {r['optimizer']} diverged", file=sys.stderr)
    write_json(args.out / "results.json", {"config": cli.config_of(args), "results": results})
    plot(results, args.out / "demo.png")
    print(f"Wrote {args.out / 'results.json'} and {args.out / 'demo.png'}.")
    return results


if __name__ == "__main__":
    cli.run_cli(main)

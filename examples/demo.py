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
    python -m examples.demo                 # the same
    python examples/demo.py --quick         # a few steps, for tests
    python examples/demo.py --steps 3000 --seed 1 --out out/demo

It prints a markdown table and writes ``results.json`` and ``demo.png`` to ``--out``.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import sys
import time
from collections.abc import Sequence

import jax.numpy as jnp
import matplotlib
import optax
from flax import nnx
from tqdm.auto import tqdm

import optax_decay
from examples import cli, data, models, optimizers
from examples.reporting import markdown_table, write_json

matplotlib.use("Agg")

DEFAULT_STEPS = 1000
QUICK_STEPS = 60


@dataclasses.dataclass(frozen=True)
class Run:
    """One row of the table: ``method`` (a key of ``optimizers.METHODS``, or ``"optax.adamw"``)
    with its own learning rate and weight decay."""

    name: str
    method: str
    learning_rate: float
    weight_decay: float


def default_runs(steps: int) -> list[Run]:
    """Every optimizer with a learning rate and weight decay that suit ``steps`` updates.

    The paper-convention ``lambda`` is ``1 / (eta_mean * tau)`` with a decay
    timescale ``tau = steps / 2`` iterations and ``eta_mean = 1/2`` the mean of
    the cosine schedule: the weights forget their initialization within the run.
    ``tau`` is at least 20 iterations, so that ``1 - eta_0 * lambda >= 0.9``.
    The L2 penalties are in gradient units, independent of the run length; so is
    AdamP's lambda, which is multiplied by the step size over Adam's denominator
    (``optimizers.OWN_DECAYS``).
    """
    paper = optax_decay.weight_decay_from_timescale(max(steps, 40) / 2, schedule=0.5)

    def run(name: str, method: str, decay: float = paper) -> Run:
        return Run(name, method, *optimizers.default_hparams(method, decay))

    coupled = run("adamw(coupled=True)", "adamw_coupled")
    return [
        run("sgd (no decay)", "sgdw", 0.0),
        run("sgd_l2", "sgd_l2"),
        run("sgdw", "sgdw"),
        run("adam (no decay)", "adamw", 0.0),
        run("adam_l2", "adam_l2"),
        run("adamw", "adamw"),
        coupled,
        run("prox_adam", "prox_adam"),
        run("adamp", "adamp"),
        # optax.adamw decays by alpha(t) * lambda: the coupled convention.
        dataclasses.replace(coupled, name="optax.adamw", method="optax.adamw"),
    ]


def make_tx(run: Run, schedule: optax.Schedule) -> optax.GradientTransformation:
    """``run``'s optimizer with the cosine ``schedule`` and the kernels-only decay mask."""
    if run.method == "optax.adamw":
        # Optax folds the schedule into the learning rate and decays by lr(t) * wd.
        lr = run.learning_rate
        return optax.adamw(
            lambda t: lr * schedule(t),
            weight_decay=run.weight_decay,
            mask=optax_decay.weight_decay_mask,
        )
    return optimizers.make(run.method, run.learning_rate, run.weight_decay, schedule=schedule)


def train(
    run: Run,
    digits: data.Dataset,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    progress: tqdm | None = None,
) -> dict:
    """Trains a fresh MLP with ``run``'s optimizer; returns its row of the results."""
    start = time.perf_counter()
    model = models.make_model("mlp", digits.image_shape, 10, norm="layer", width=(128,), seed=seed)
    optimizer = nnx.Optimizer(model, make_tx(run, optimizers.schedule(steps)), wrt=nnx.Param)
    x_train, y_train = jnp.asarray(digits.x_train), jnp.asarray(digits.y_train)
    # cached_partial skips re-traversing the model and optimizer graph on every call.
    step = nnx.cached_partial(models.train_step, model, optimizer)
    loss = jnp.nan
    for idx in data.batch_indices(len(digits.x_train), steps, batch_size, seed):
        loss = step(x_train, y_train, idx)
        if progress is not None:
            progress.update(1)
    x_test, y_test = jnp.asarray(digits.x_test), jnp.asarray(digits.y_test)
    return {
        "optimizer": run.name,
        "learning_rate": run.learning_rate,
        "weight_decay": run.weight_decay,
        "test_accuracy": float(models.accuracy(model, x_test, y_test)),
        "train_accuracy": float(models.accuracy(model, x_train, y_train)),
        "final_loss": float(loss),
        "weight_norm": float(models.decayed_norm(nnx.state(model, nnx.Param))),
        "seconds": time.perf_counter() - start,
    }


TABLE = [
    ("optimizer", "optimizer", "s"),
    ("learning rate", "learning_rate", "g"),
    ("weight decay", "weight_decay", ".3g"),
    ("test accuracy", "test_accuracy", ".4f"),
    ("weight norm", "weight_norm", ".3f"),
    ("seconds", "seconds", ".1f"),
]


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


def parse_args(argv: Sequence[str] | None):
    parser = cli.Parser(__doc__)
    parser.add_argument("--seed", type=int, default=0, help="split, init and batch seed")
    parser.add_argument("--steps", type=int, default=None, help=f"default {DEFAULT_STEPS}")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out/demo"))
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps, for tests")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = QUICK_STEPS if args.quick else DEFAULT_STEPS
    cli.check_positive(steps=args.steps, batch_size=args.batch_size)
    return args


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    digits = data.load_digits(args.seed)
    cli.check_batch_size(args.batch_size, digits)
    runs = default_runs(args.steps)

    results = []
    total = time.perf_counter()
    with tqdm(
        total=len(runs) * args.steps, unit="step", disable=args.no_progress, file=sys.stderr
    ) as bar:
        for run in runs:
            bar.set_description(f"{run.name:<20}")
            results.append(
                train(
                    run,
                    digits,
                    steps=args.steps,
                    batch_size=args.batch_size,
                    seed=args.seed,
                    progress=bar,
                )
            )
    total = time.perf_counter() - total

    print(
        f"\n{args.steps} steps of batch {args.batch_size} per optimizer, seed {args.seed}, "
        f"{len(digits.x_train)} train / {len(digits.x_test)} test digits, "
        f"cosine schedule, decay mask: kernels only.\n"
    )
    print(markdown_table(results, TABLE, align="lrrrrr"))
    print(f"\nTotal {total:.1f} s.")
    for r in results:
        if not (0.0 <= r["test_accuracy"] <= 1.0 and math.isfinite(r["weight_norm"])):
            print(f"warning: {r['optimizer']} diverged", file=sys.stderr)

    write_json(args.out / "results.json", {"config": cli.config_of(args), "results": results})
    plot(results, args.out / "demo.png")
    print(f"Wrote {args.out / 'results.json'} and {args.out / 'demo.png'}.")
    return results


if __name__ == "__main__":
    cli.run_cli(main)

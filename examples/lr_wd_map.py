"""Learning rate x weight decay maps: does decoupled weight decay make the good region rectangular?

Loshchilov & Hutter (2019) report that decoupling the weight decay from the
gradient step also decouples the two hyperparameters: in a heatmap of test
accuracy over the learning rate ``alpha`` and the weight decay ``lambda`` the
good region of SGDW and AdamW is close to an axis-aligned rectangle, so that
the best ``alpha`` hardly moves when ``lambda`` changes, while for SGD+L2 and
Adam+L2 it slides along a diagonal. They also find that the L2 penalty
regularizes Adam poorly. This script draws those maps for every optimizer of
the package on a one-hidden-layer Flax NNX MLP and Fashion-MNIST.

The updates, with ``eta_t`` the cosine schedule (mean 1/2 over the run),
``D_t = sqrt(vhat_t) + eps`` and ``d_t`` the heavy-ball trace (``mu = 0.9``)::

    sgd_l2     d_t = mu d_{t-1} + grad f(w) + lambda w;  w <- w - eta_t alpha d_t
    sgdw       w <- (1 - eta_t lambda) w - eta_t alpha d_t,  d_t = mu d_{t-1} + grad f(w)
    adam_l2    Adam on f(w) + (lambda/2) ||w||^2
    adamw      w <- (1 - eta_t lambda) w - eta_t alpha mhat/D
    prox_adam  w <- (w - eta_t alpha mhat/D) / (1 + eta_t lambda)
    adamp      w <- (w - eta_t alpha mhat/D) / (1 + eta_t lambda alpha/D)

Each optimizer trains its whole grid at once (``examples.grid.train_grid``: one
vmapped model per grid point, same initial weights and batches). For each
column ``lambda`` the best learning rate is ``argmax_alpha acc(alpha, lambda)``;
the *decoupling number* is the spread of those best rates in decades,
``log10(max / min)`` (0 = a perfectly rectangular map; the grid resolution is
half a decade). It is also given over the "good" columns only, those whose best
accuracy is within ``--tolerance`` of the map's best, since a decay strong
enough to wreck the model moves the best rate of any method. The regularization
gain is the best accuracy over the map minus the best accuracy in the
smallest-``lambda`` column; the drop is the best accuracy minus that of the
largest-``lambda`` column.

Default grids (``GRIDS``, half-decade spacing, 6 x 6), probed with full-length
runs so that each map has its best learning rate inside the grid and a clear
loss of accuracy at its edges:

- learning rates: SGD with momentum 0.9 ``1e-3 .. 3e-1`` (the effective step is
  ``alpha/(1 - mu) = 10 alpha``); the Adam family ``1e-4 .. 3e-2``.
- ``sgdw``, ``adamw``, ``prox_adam`` (paper form, ``lambda`` times ``eta_t``
  only): the number of decay timescales in the run is
  ``lambda * sum_t eta_t ~ lambda * steps / 2``, so ``3e-5 .. 1e-2`` spans
  0.03 (negligible) to 10 timescales (the weights forget everything older than
  a tenth of the run) at 2000 steps.
- ``sgd_l2``, ``adam_l2`` (gradient units): the penalty ``(lambda/2)||w||^2``
  at the initial kernel norm (about 12) goes from 0.007 (the maps do not change
  below it) to 2, more than the loss itself, over ``1e-4 .. 3e-2``. For
  ``sgd_l2`` the decay per step is ``eta_t alpha lambda / (1 - mu)``, so its
  timescales also scale with ``alpha``.
- ``adamp``: the decay per step is ``eta_t lambda alpha / D``, per coordinate
  and strongest where the gradients are small; probes put no effect below
  ``1e-4`` and a clear loss from ``1e-2``: ``1e-4 .. 3e-2``.
- ``adamw_coupled`` (not run by default; the PyTorch form, ``lambda`` times
  ``alpha``): the paper-form range divided by a typical ``alpha = 3e-3``,
  ``1e-2 .. 3``.

Data: weight decay is a regularizer, so the default keeps a random 5,000-image
subset of the training split (``--train-size``; the test split stays 10,000):
2,000 steps of batch 128 are then 51 epochs and the MLP overfits. In probes on
the full 60,000 images (``--train-size 60000``, 4 epochs), weight decay raised
the best test accuracy of AdamW and Adam+L2 by at most 0.3 points, within the
noise, so the claims about regularization could not show.

Run::

    python examples/lr_wd_map.py                      # 6 x 36 runs, ~6-7 min on 2 CPU cores
    python examples/lr_wd_map.py --quick              # digits, 4 x 4 grids, < 30 s
    python examples/lr_wd_map.py --optimizers adam_l2,adamw --steps 3000
    python examples/lr_wd_map.py --optimizers sgdw --learning-rates 1e-2,3e-2 \\
        --weight-decays 1e-4,1e-3

It writes ``results.json`` (one record per run, plus ``decoupling``: best rates,
spreads, accuracies per optimizer), ``lr_wd_maps.png`` (test-error heatmaps,
best rate per column outlined), ``best_lr.png`` and ``summary.md`` to ``--out``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from examples import models, optimizers
from examples.cli import (
    UsageError,
    base_parser,
    config_of,
    finish_args,
    load_data,
    parse_floats,
    parse_names,
    run_cli,
)
from examples.grid import train_grid
from examples.optimizers import METHODS, MOMENTUM
from examples.reporting import heatmap, markdown_table, write_outputs

DEFAULT_STEPS = 2000
QUICK_STEPS = 150
DEFAULT_TRAIN_SIZE = 5000
HIDDEN = 128
QUICK_HIDDEN = 32
TOLERANCE = 0.01

SGD_LR = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
ADAM_LR = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
DECAY = (3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)  # paper form: 0.03 to 10 timescales
L2_DECAY = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)  # gradient units

# optimizer -> {"learning_rate": rows, "weight_decay": columns}, each in its own convention.
GRIDS: dict[str, dict[str, tuple[float, ...]]] = {
    "sgd_l2": {"learning_rate": SGD_LR, "weight_decay": L2_DECAY},
    "sgdw": {"learning_rate": SGD_LR, "weight_decay": DECAY},
    "adam_l2": {"learning_rate": ADAM_LR, "weight_decay": L2_DECAY},
    "adamw": {"learning_rate": ADAM_LR, "weight_decay": DECAY},
    "adamw_coupled": {"learning_rate": ADAM_LR, "weight_decay": (1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)},
    "prox_adam": {"learning_rate": ADAM_LR, "weight_decay": DECAY},
    "adamp": {"learning_rate": ADAM_LR, "weight_decay": L2_DECAY},
}

# --quick: the same conventions on 4 x 4 grids, decays scaled up for the 150-step run.
QUICK_SGD_LR = (3e-3, 1e-2, 3e-2, 1e-1)
QUICK_ADAM_LR = (3e-4, 1e-3, 3e-3, 1e-2)
QUICK_DECAY = (1e-3, 1e-2, 3e-2, 1e-1)
QUICK_GRIDS: dict[str, dict[str, tuple[float, ...]]] = {
    "sgd_l2": {"learning_rate": QUICK_SGD_LR, "weight_decay": QUICK_DECAY},
    "sgdw": {"learning_rate": QUICK_SGD_LR, "weight_decay": QUICK_DECAY},
    "adam_l2": {"learning_rate": QUICK_ADAM_LR, "weight_decay": QUICK_DECAY},
    "adamw": {"learning_rate": QUICK_ADAM_LR, "weight_decay": QUICK_DECAY},
    "adamw_coupled": {"learning_rate": QUICK_ADAM_LR, "weight_decay": (0.3, 1.0, 3.0, 10.0)},
    "prox_adam": {"learning_rate": QUICK_ADAM_LR, "weight_decay": QUICK_DECAY},
    "adamp": {"learning_rate": QUICK_ADAM_LR, "weight_decay": QUICK_DECAY},
}

DEFAULT_OPTIMIZERS = ("sgd_l2", "sgdw", "adam_l2", "adamw", "prox_adam", "adamp")
# Paper-form decoupled decay: lambda * sum_t eta_t is the number of decay timescales.
PAPER_FORM = tuple(n for n, m in METHODS.items() if m.convention == optimizers.PAPER)
# The decay factor 1 - eta_t * lambda (times alpha when coupled) must stay > 0.
LINEAR_DECAY = ("sgdw", "adamw", "adamw_coupled")
# The pairs of the claim: (coupled L2 penalty, decoupled decay).
PAIRS = (("sgd_l2", "sgdw"), ("adam_l2", "adamw"))


def parse_args(argv: Sequence[str] | None):
    parser = base_parser(
        __doc__, default_steps=DEFAULT_STEPS, quick_steps=QUICK_STEPS, out="out/lr_wd_map"
    )
    parser.set_defaults(train_size=DEFAULT_TRAIN_SIZE)
    parser.add_argument(
        "--optimizers",
        default=",".join(DEFAULT_OPTIMIZERS),
        help=f"comma-separated, from {', '.join(METHODS)} (default: %(default)s)",
    )
    parser.add_argument(
        "--learning-rates",
        help="comma-separated alphas for every chosen optimizer (default: GRIDS per optimizer)",
    )
    parser.add_argument(
        "--weight-decays",
        help="comma-separated lambdas for every chosen optimizer (default: GRIDS per optimizer)",
    )
    parser.add_argument(
        "--hidden", type=int, help=f"MLP hidden width (default {HIDDEN}; --quick {QUICK_HIDDEN})"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=TOLERANCE,
        help="a column is 'good' if its best accuracy is within this of the map's best",
    )
    args = finish_args(parser.parse_args(argv))
    if args.hidden is None:
        args.hidden = QUICK_HIDDEN if args.quick else HIDDEN
    if args.hidden < 1:
        raise UsageError(f"`--hidden` must be >= 1, got {args.hidden}")
    if not 0 <= args.tolerance < 1:
        raise UsageError(f"`--tolerance` must lie in [0, 1), got {args.tolerance}")
    return args


def grids_of(args) -> dict[str, dict[str, list[float]]]:
    """Each chosen optimizer's sorted ``learning_rate`` rows and ``weight_decay`` columns."""
    names = parse_names("--optimizers", args.optimizers, METHODS)
    lrs = wds = None
    if args.learning_rates is not None:
        lrs = parse_floats("--learning-rates", args.learning_rates)
        if min(lrs) <= 0:
            raise UsageError(f"`--learning-rates` must be > 0, got {args.learning_rates!r}")
    if args.weight_decays is not None:
        wds = parse_floats("--weight-decays", args.weight_decays)
    defaults = QUICK_GRIDS if args.quick else GRIDS
    grids = {}
    for name in names:
        rows = lrs if lrs is not None else defaults[name]["learning_rate"]
        cols = wds if wds is not None else defaults[name]["weight_decay"]
        grids[name] = {"learning_rate": sorted(set(rows)), "weight_decay": sorted(set(cols))}
        limit = 1.0 / max(grids[name]["learning_rate"]) if name == "adamw_coupled" else 1.0
        if name in LINEAR_DECAY and max(grids[name]["weight_decay"]) >= limit:
            raise UsageError(
                f"`--weight-decays`: {name} decays by 1 - eta_t*"
                f"{'alpha*' if name == 'adamw_coupled' else ''}lambda, which must stay > 0: "
                f"give values < {limit:g}"
            )
    return grids


def decay_timescales(name: str, lr: float, wd: float, eta_sum: float) -> float | None:
    """How many e-folds the decay alone applies over the run, where a per-step rate is defined."""
    rate = optimizers.to_paper(name, wd, lr)
    return None if rate is None else rate * eta_sum


def decoupling(acc: np.ndarray, lrs: Sequence[float], wds: Sequence[float], tol: float) -> dict:
    """The claim's numbers for one map ``acc[i, j]`` (row ``lrs[i]``, column ``wds[j]``)."""
    best_row = np.argmax(acc, axis=0)  # per column, the first of any tie
    best_lr = [float(lrs[i]) for i in best_row]
    best_acc = acc.max(axis=0)
    top = float(acc.max())
    good = [j for j in range(len(wds)) if best_acc[j] >= top - tol]
    good_lr = [best_lr[j] for j in good]
    i, j = np.unravel_index(np.argmax(acc), acc.shape)
    return {
        "weight_decays": [float(w) for w in wds],
        "best_lr_per_wd": best_lr,
        "best_accuracy_per_wd": [float(a) for a in best_acc],
        "spread_decades": float(math.log10(max(best_lr) / min(best_lr))),
        "good_weight_decays": [float(wds[k]) for k in good],
        "spread_decades_good": float(math.log10(max(good_lr) / min(good_lr))),
        "best_test_accuracy": top,
        "best_learning_rate": float(lrs[i]),
        "best_weight_decay": float(wds[j]),
        "gain_from_decay": float(top - best_acc[0]),
        "drop_at_largest_wd": float(top - best_acc[-1]),
    }


def _clean(record: dict) -> dict:
    """JSON-safe: a diverged run's NaN or infinity becomes null."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()
    }


def plot_maps(maps: dict, grids: dict, stats: dict, path) -> None:
    names = list(maps)
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(5.2 * ncols, 4.4 * nrows), layout="constrained", squeeze=False
    )
    for ax, name in zip(axes.flat, names, strict=False):
        acc = maps[name]
        mark = np.zeros(acc.shape, bool)
        mark[np.argmax(acc, axis=0), np.arange(acc.shape[1])] = True
        s = stats[name]
        image = heatmap(
            ax,
            1.0 - acc,
            grids[name]["learning_rate"],
            grids[name]["weight_decay"],
            title=f"{name}: best error {1 - s['best_test_accuracy']:.3f}, "
            f"spread {s['spread_decades']:.1f} dec",
            row_label="learning rate alpha",
            col_label="weight decay lambda",
            mark=mark,
        )
        fig.colorbar(image, ax=ax, shrink=0.8)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle("Test error (dark = low); red: best learning rate per weight decay")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_best_lr(stats: dict, path) -> None:
    fig, (ax_lr, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    markers = "osD^v<>"
    has_zero = any(min(s["weight_decays"]) == 0 for s in stats.values())
    positive = [w for s in stats.values() for w in s["weight_decays"] if w > 0]
    for k, (name, s) in enumerate(stats.items()):
        style = {"marker": markers[k % len(markers)], "label": name, "alpha": 0.85}
        style["linestyle"] = "--" if name.endswith("_l2") else "-"
        # A tiny per-optimizer offset keeps equal best rates from hiding each other.
        offset = 10 ** (0.02 * (k - len(stats) / 2))
        ax_lr.plot(s["weight_decays"], np.asarray(s["best_lr_per_wd"]) * offset, **style)
        ax_acc.plot(s["weight_decays"], s["best_accuracy_per_wd"], **style)
    for ax in (ax_lr, ax_acc):
        if has_zero:
            ax.set_xscale("symlog", linthresh=min(positive) if positive else 1e-6)
        else:
            ax.set_xscale("log")
        ax.set_xlabel("weight decay lambda (each optimizer's own convention)")
        ax.grid(True, which="both", alpha=0.3)
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("best learning rate (curves offset by < 0.1 decade)")
    ax_lr.set_title("Best learning rate per weight decay (flat = decoupled)")
    ax_acc.set_ylabel("best test accuracy over the learning rates")
    ax_acc.set_title("Best accuracy per weight decay (rise = regularization gain)")
    ax_lr.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt_list(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.0e}" for v in values)


def summarize(args, data, grids: dict, stats: dict, eta_sum: float, seconds: float) -> str:
    rows = [
        {
            "optimizer": name,
            **s,
            "best_error": 1 - s["best_test_accuracy"],
            "acc_small_wd": s["best_accuracy_per_wd"][0],
            "acc_large_wd": s["best_accuracy_per_wd"][-1],
        }
        for name, s in stats.items()
    ]
    table = markdown_table(
        rows,
        [
            ("optimizer", "optimizer", "s"),
            ("best test acc", "best_test_accuracy", ".4f"),
            ("best alpha", "best_learning_rate", ".0e"),
            ("best lambda", "best_weight_decay", ".0e"),
            ("best-alpha spread (dec)", "spread_decades", ".1f"),
            ("spread, good columns", "spread_decades_good", ".1f"),
            ("acc at smallest lambda", "acc_small_wd", ".4f"),
            ("gain from lambda", "gain_from_decay", "+.4f"),
            ("drop at largest lambda", "drop_at_largest_wd", ".4f"),
        ],
    )
    per_wd = "\n".join(
        f"- `{name}`: lambda = {_fmt_list(s['weight_decays'])} -> best alpha = "
        f"{_fmt_list(s['best_lr_per_wd'])}"
        for name, s in stats.items()
    )
    scales = [
        f"`{name}` {min(g['weight_decay']) * eta_sum:.2g} to {max(g['weight_decay']) * eta_sum:.2g}"
        for name, g in grids.items()
        if name in PAPER_FORM
    ]
    lines = [
        "# Learning rate x weight decay maps",
        "",
        f"MLP (hidden {args.hidden}) on {data.name} ({len(data.x_train)} train / "
        f"{len(data.x_test)} test images), {args.steps} steps of batch {args.batch_size}, "
        f"cosine schedule, seed {args.seed}; SGD momentum {MOMENTUM}; only kernels decayed. "
        f"{sum(len(g['learning_rate']) * len(g['weight_decay']) for g in grids.values())} runs "
        f"in {seconds:.0f} s.",
        "",
        table,
        "",
        "Best learning rate per weight-decay column (argmax of the test accuracy over alpha):",
        "",
        per_wd,
        "",
        "The spread is log10(max/min) of the best learning rates over the columns, "
        f"in decades (grid step: {_grid_step(grids)}); 'good columns' are those whose best "
        f"accuracy is within {args.tolerance} of the map's best. The gain is the map's best "
        "accuracy minus the best at the smallest lambda; the drop is the map's best minus the "
        "best at the largest lambda.",
    ]
    if scales:
        lines += [
            "",
            "Decay timescales in the run (lambda * sum_t eta_t) of the paper-form grids: "
            + "; ".join(scales)
            + ".",
        ]
    lines += ["", "## What came out", "", _verdict(stats, args.tolerance)]
    return "\n".join(lines)


def _grid_step(grids: dict) -> str:
    steps = {
        round(float(np.mean(np.diff(np.log10(g["learning_rate"])))), 1)
        for g in grids.values()
        if len(g["learning_rate"]) > 1
    }
    return ", ".join(f"about {s:g} decade" for s in sorted(steps)) or "a single learning rate"


def _verdict(stats: dict, tol: float) -> str:
    """One paragraph that says, from the numbers, whether the seeds' claims held here."""
    parts = []
    for coupled, decoupled in PAIRS:
        if coupled not in stats or decoupled not in stats:
            continue
        a, b = stats[coupled], stats[decoupled]
        if b["spread_decades"] < a["spread_decades"]:
            how, verdict = "less than", "agrees with"
        elif b["spread_decades"] > a["spread_decades"]:
            how, verdict = "more than", "contradicts"
        else:
            how, verdict = "as much as", "neither supports nor contradicts"
        parts.append(
            f"Across the weight decays, the best learning rate of {decoupled} moved {how} that "
            f"of {coupled} ({b['spread_decades']:.1f} vs {a['spread_decades']:.1f} decades; "
            f"{b['spread_decades_good']:.1f} vs {a['spread_decades_good']:.1f} over the columns "
            f"within {tol} of the best), which {verdict} the claim that decoupling makes the "
            "good region more rectangular."
        )
    if "adam_l2" in stats and "adamw" in stats:
        a, b = stats["adam_l2"], stats["adamw"]
        better = b["gain_from_decay"] > a["gain_from_decay"]
        parts.append(
            f"Weight decay raised the best accuracy of adamw by {100 * b['gain_from_decay']:.2f} "
            f"points over its smallest lambda and that of adam_l2 by "
            f"{100 * a['gain_from_decay']:.2f} points"
            + (
                ", so here the L2 penalty regularized Adam less well than decoupled decay"
                if better
                else ", so here the L2 penalty did not regularize Adam worse than decoupled decay"
            )
            + f"; best accuracies {b['best_test_accuracy']:.4f} (adamw) vs "
            f"{a['best_test_accuracy']:.4f} (adam_l2)."
        )
    others = [n for n in stats if n not in ("sgd_l2", "sgdw", "adam_l2", "adamw")]
    if others:
        parts.append(
            "Spreads of the other optimizers: "
            + ", ".join(
                f"{n} {stats[n]['spread_decades']:.1f} ({stats[n]['spread_decades_good']:.1f} "
                "good columns)"
                for n in others
            )
            + " decades."
        )
    parts.append(
        "One seed and one test set: accuracy differences below about 0.5 points, and spreads "
        "of one grid step on a flat optimum, are within the noise."
    )
    return " ".join(parts)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    grids = grids_of(args)
    data = load_data(args)
    eta_sum = float(np.sum(optimizers.schedule(args.steps)(np.arange(args.steps))))

    def model_fn():
        return models.make_model(
            "mlp", data.image_shape, data.num_classes, seed=args.seed, width=(args.hidden,)
        )

    settings = {
        "dataset": data.name,
        "train_size": len(data.x_train),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "hidden": args.hidden,
    }
    records, maps, stats, seconds = [], {}, {}, 0.0
    for name, grid in grids.items():
        lrs, wds = grid["learning_rate"], grid["weight_decay"]
        pairs = [(lr, wd) for lr in lrs for wd in wds]  # row-major: lr is the row
        result = train_grid(
            name,
            {"learning_rate": [p[0] for p in pairs], "weight_decay": [p[1] for p in pairs]},
            data,
            model_fn,
            steps=args.steps,
            batch_size=args.batch_size,
            seed=args.seed,
            progress=not args.no_progress,
        )
        seconds += result.seconds
        for rec in result.records(**settings):
            rec["test_error"] = 1.0 - rec["test_accuracy"]
            rec["decay_timescales"] = decay_timescales(
                name, rec["learning_rate"], rec["weight_decay"], eta_sum
            )
            records.append(_clean(rec))
        maps[name] = np.asarray(result.test_accuracy, float).reshape(len(lrs), len(wds))
        stats[name] = decoupling(maps[name], lrs, wds, args.tolerance)
        print(
            f"{name:<13} {len(pairs)} runs in {result.seconds:.1f} s, best accuracy "
            f"{stats[name]['best_test_accuracy']:.4f}, best-lr spread "
            f"{stats[name]['spread_decades']:.1f} decades",
            file=sys.stderr,
        )

    args.out.mkdir(parents=True, exist_ok=True)
    plot_maps(maps, grids, stats, args.out / "lr_wd_maps.png")
    plot_best_lr(stats, args.out / "best_lr.png")
    summary = summarize(args, data, grids, stats, eta_sum, seconds)
    write_outputs(
        args.out,
        config_of(args),
        records,
        summary,
        extra={"grids": grids, "eta_sum": eta_sum, "decoupling": stats},
    )
    print(summary)
    print(f"\nWrote results.json, summary.md, lr_wd_maps.png and best_lr.png to {args.out}.")
    return {"results": records, "decoupling": stats, "grids": grids}


if __name__ == "__main__":
    run_cli(main)

"""AdamW (PyTorch form) vs AdamP: similar accuracy, but does AdamP end at a smaller weight norm?

The "Decay No More" blog post (Schaipp, ICLR blogposts 2023) derives AdamP from ProxAdam's
proximal step with the plain squared norm ``(lambda/2)*‖w‖^2`` as regularizer. Coordinatewise,
with ``D_t = sqrt(vhat_t) + eps`` and the cosine schedule ``eta_t``::

    AdamW (coupled, PyTorch):  w <- (1 - eta_t*alpha*lambda) * w - eta_t*alpha*mhat/D_t
    AdamP:                     w <- (w - eta_t*alpha*mhat/D_t) / (1 + eta_t*alpha*lambda/D_t)

AdamP shrinks a weight harder the smaller its ``D_t``. On a ResNet20 without BatchNorm, over
``alpha`` in {1e-3, 1e-2, 1e-1} and ``lambda`` in {1e-5, ..., 1e-2}, the blog found about the
same best test accuracy for both, and a smaller weight norm for AdamP at its good settings.

Here: the same grid on Fashion-MNIST, a CNN without BatchNorm (channels 8, 16), 500 steps of
batch 32, every (alpha, lambda, seed) member of an optimizer in one vmapped model; only kernels
are decayed, and ``‖w‖`` is their final L2 norm. Per optimizer and seed (``ref``: the first of
``--optimizers``):

- ``best_accuracy``: the highest test accuracy over the grid, and ``‖w‖`` at that point;
- ``lambda_effect``: max over alpha of ``max_lambda ‖w‖ / min_lambda ‖w‖ - 1``;
- ``median_norm_ratio``, ``median_accuracy_difference``: medians over the grid of ``‖w‖ / ‖w_ref‖``
  (the finite ones) and ``acc - acc_ref``; ``smaller_norm_count``: points with ``‖w‖ < ‖w_ref‖``.

Writes ``results.json`` (``per_seed``: these statistics), ``summary.md`` and 3 PNGs to ``--out``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from examples import cli, reporting
from examples.cli import UsageError
from examples.grid import train_grid
from examples.models import factory
from examples.optimizers import METHODS

DEFAULT_STEPS, QUICK_STEPS, DEFAULT_BATCH_SIZE = 500, 100, 32
DEFAULT_WIDTH, QUICK_WIDTH = "8,16", "4,8"


def parse_args(argv: Sequence[str] | None):
    parser = cli.base_parser(__doc__, DEFAULT_STEPS, QUICK_STEPS, "out/adamw_vs_adamp")
    parser.add_argument("--learning-rates", default="1e-3,1e-2,1e-1", help="alpha grid (rows)")
    parser.add_argument("--weight-decays", default="1e-5,1e-4,1e-3,1e-2", help="lambda (columns)")
    names = f"comma-separated, the first is the reference; any of {', '.join(METHODS)}"
    parser.add_argument("--optimizers", default="adamw_coupled,adamp", help=names)
    parser.add_argument("--width", help=f"CNN channels (default {DEFAULT_WIDTH}; --quick 4,8)")
    parser.set_defaults(batch_size=DEFAULT_BATCH_SIZE)
    args = cli.finish_args(parser.parse_args(argv))
    for flag in ("--learning-rates", "--weight-decays"):
        key = flag[2:].replace("-", "_")
        values = cli.parse_floats(flag, getattr(args, key), positive=flag == "--learning-rates")
        if len(set(values)) != len(values):
            raise UsageError(f"`{flag}` lists a value twice: {','.join(map(str, values))}")
        setattr(args, key, values)
    args.optimizers = cli.parse_names("--optimizers", args.optimizers, METHODS)
    width = args.width or (QUICK_WIDTH if args.quick else DEFAULT_WIDTH)
    args.width = list(cli.parse_ints("--width", width))
    return args


def seed_stats(run: np.ndarray, ref: np.ndarray, lrs, wds) -> dict:
    """The docstring's statistics for one seed; ``run`` and ``ref``: (acc or ‖w‖, alpha, lambda)."""
    (acc, norm), (ref_acc, ref_norm) = run, ref
    best = np.unravel_index(np.argmax(np.nan_to_num(acc, nan=-1.0)), acc.shape)
    finite = np.where(np.isfinite(norm) & (norm > 0), norm, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = norm / ref_norm
    ratio = ratio[np.isfinite(ratio)]
    return {
        "best_accuracy": float(acc[best]),
        "best_learning_rate": lrs[best[0]],
        "best_weight_decay": wds[best[1]],
        "weight_norm_at_best": float(norm[best]),
        "lambda_effect": float(np.nanmax(np.nanmax(finite, 1) / np.nanmin(finite, 1) - 1)),
        "median_norm_ratio": float(np.median(ratio)) if ratio.size else float("nan"),
        "smaller_norm_count": int(np.sum(np.isfinite(norm) & ~(norm >= ref_norm))),
        "median_accuracy_difference": float(np.median(acc - ref_acc)),
    }


def plot_heatmaps(path, grids, title, lrs, wds, fmt, log=False, mark=None) -> None:
    """One panel per optimizer: the seed mean per (alpha, lambda), each cell "mean ± std"."""
    size = (4.6 * len(grids) + 1, 1.1 * len(lrs) + 2.6)
    fig, axes = plt.subplots(1, len(grids), figsize=size, layout="constrained", squeeze=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        shown = {k: np.log10(m) if log else m for k, (m, _) in grids.items()}
    finite = np.concatenate([v[np.isfinite(v)] for v in shown.values()] + [np.zeros(0)])
    lo, hi = (finite.min(), max(finite.max(), finite.min() + 1e-6)) if finite.size else (0, 1)
    for ax, (name, (mean, std)) in zip(axes[0], grids.items(), strict=True):
        text = np.frompyfunc(lambda m, s: f"{m:{fmt}}\n± {s:{fmt}}", 2, 1)(mean, std)
        box = None if mark is None else mark[name]
        cells = reporting.heatmap(
            ax, shown[name], lrs, wds, title=name, mark=box, text=text, clim=(lo, hi)
        )
    fig.colorbar(cells, ax=axes, label=f"log10 {title}" if log else title)
    reporting.save_figure(fig, path, 120)


def plot_curves(path, runs, lrs, wds) -> None:
    """Test accuracy and ‖w‖ against lambda, one line per optimizer and alpha, every seed."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), layout="constrained")
    x = np.log10(wds)
    for (name, run), (i, lr) in itertools.product(runs.items(), enumerate(lrs)):
        ls = "-" if name == next(iter(runs)) else "--"
        style = {"label": f"{name}, alpha={lr:g}", "ls": ls, "color": f"C{i}"}
        for ax, values in zip(axes, run[:, i], strict=True):
            reporting.plot_seeds(ax, x, values, **style)
    for ax, ylabel in zip(axes, ("test accuracy", "‖w‖ of the kernels"), strict=True):
        ax.set(xlabel="log10 weight decay lambda", ylabel=ylabel, xticks=x)
    axes[1].set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(lrs), fontsize=8)
    reporting.save_figure(fig, path, 120)


STATS = [  # (per_seed key, summary column, format): mean ± std over seeds
    ("best_accuracy", "best acc", ".4f"),
    ("weight_norm_at_best", "‖w‖ at best", ".3g"),
    ("lambda_effect", "lambda effect", ".3g"),
    ("median_norm_ratio", "median ‖w‖ / ‖w_ref‖", ".3g"),
    ("median_accuracy_difference", "median acc - acc_ref", ".4f"),
]


def summary_text(args, train_size, runs, per_seed, seconds) -> str:
    """Title, setup, and two tables of seed means ± sample std (``reporting.mean_pm``)."""
    lrs, wds, pm = args.learning_rates, args.weight_decays, reporting.mean_pm
    columns = [("alpha", "alpha", ".0e"), ("lambda", "lambda", ".0e")]
    columns += [(f"{n} {c}", f"{n} {c}", "s") for n in runs for c in ("acc", "‖w‖")]
    rows = []
    for i, j in np.ndindex(len(lrs), len(wds)):
        rows.append({"alpha": lrs[i], "lambda": wds[j]})
        for n, (acc, norm) in runs.items():
            rows[-1] |= {f"{n} acc": pm(acc[i, j]), f"{n} ‖w‖": pm(norm[i, j], ".3g")}
    stats = []
    for n in runs:
        mine = [r for r in per_seed if r["optimizer"] == n]
        at = [f"({r['best_learning_rate']:g}, {r['best_weight_decay']:g})" for r in mine]
        smaller = [f"{r['smaller_norm_count']}/{len(rows)}" for r in mine]
        stats.append({"optimizer": n} | {h: pm([r[k] for r in mine], f) for k, h, f in STATS})
        stats[-1]["best (alpha, lambda), per seed"] = " ".join(at)
        stats[-1]["‖w‖ < ‖w_ref‖, per seed"] = " ".join(smaller)
    timing = ", ".join(f"{n} {s:.0f} s" for n, s in seconds.items())
    seeds = ", ".join(map(str, args.seed_list))
    return "\n\n".join(
        [
            f"# AdamW vs AdamP: test accuracy and kernel norm ({args.dataset}, {args.seeds} seeds)",
            f"CNN without BatchNorm, channels {tuple(args.width)}; {args.steps} steps of batch "
            f"{args.batch_size}, cosine schedule; {train_size} training images; seeds {seeds}; "
            f"‖w‖: L2 norm of the kernels at the end; ref: {args.optimizers[0]}; time {timing}.",
            "## Per grid point, mean ± std over seeds",
            reporting.markdown_table(rows, columns),
            "## Per optimizer: each seed's statistics, mean ± std over seeds",
            reporting.markdown_table(stats),
        ]
    )


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    data = cli.load_data(args)
    lrs, wds, names = args.learning_rates, args.weight_decays, args.optimizers
    grid = list(itertools.product(lrs, wds))
    hparams = {"learning_rate": [lr for lr, _ in grid], "weight_decay": [wd for _, wd in grid]}
    shape = (len(lrs), len(wds), args.seeds)
    run = {"steps": args.steps, "batch_size": args.batch_size, "seeds": args.seed_list}
    settings = {"model": "cnn", "width": args.width, "batchnorm": False, "steps": args.steps}
    model_fn = factory("cnn", data, width=args.width)
    records, per_seed, runs, seconds = [], [], {}, {}
    for name in names:
        result = train_grid(name, hparams, data, model_fn, **run, progress=not args.no_progress)
        records += result.records(**settings)
        # runs[name]: [test accuracy, ‖w‖] x alpha x lambda x seed
        runs[name] = np.stack([result.test_accuracy, result.weight_norm]).reshape(2, *shape)
        seconds[name] = result.seconds
        for s, seed in enumerate(args.seed_list):  # names[0], the reference, runs first
            stats = seed_stats(runs[name][..., s], runs[names[0]][..., s], lrs, wds)
            per_seed.append({"optimizer": name, "seed": seed} | stats)
    summary = summary_text(args, len(data.x_train), runs, per_seed, seconds)
    extra = {"per_seed": per_seed}
    reporting.write_outputs(args.out, cli.config_of(args), records, summary, extra=extra)
    acc, norm = ({k: reporting.spread(v[i]) for k, v in runs.items()} for i in (0, 1))
    best = {k: m == np.nanmax(m) for k, (m, _) in acc.items()}
    plot_heatmaps(args.out / "accuracy.png", acc, "test accuracy", lrs, wds, ".3f", mark=best)
    plot_heatmaps(args.out / "weight_norm.png", norm, "‖w‖", lrs, wds, ".3g", log=True)
    plot_curves(args.out / "curves.png", runs, lrs, wds)
    for r in [r for r in records if not np.isfinite(r["weight_norm"] * r["train_loss"])]:
        print(f"warning: {r['optimizer']} diverged at", {k: r[k] for k in list(r)[1:4]})
    print(summary)
    return {"results": records, "per_seed": per_seed}


if __name__ == "__main__":
    cli.run_cli(main)

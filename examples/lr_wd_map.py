"""Learning rate x weight decay maps: does decoupled weight decay make the good region rectangular?

Loshchilov & Hutter (2019): with decoupled decay (SGDW, AdamW) the good region of test accuracy
over the learning rate ``alpha`` and the weight decay ``lambda`` is nearly an axis-aligned
rectangle; with an L2 penalty (SGD+L2, Adam+L2) it runs along a diagonal, and Adam+L2 regularizes
poorly. Here: an MLP on 5,000 Fashion-MNIST images, 6 x 6 grids (``LRS`` x ``DECAYS``).

With ``acc[i, j, s]`` the test accuracy at ``alpha_i``, ``lambda_j``, seed ``s`` and ``m`` its
mean over seeds, ``decoupling`` gives per column ``a*_j = argmax_i m[i, j]`` and how many seeds'
own argmax equal it; the spread ``log10(max_j a*_j / min_j a*_j)`` in decades (0: rectangular),
also over the good columns (best ``m`` within ``--tolerance`` of the best) and per seed on its
own map; each seed's shift ``log10(a*_{j+1,s} / a*_{j,s})``, its mean and std over seeds, and
how many shifts have ``|mean| > std``; per seed at the cells of ``m``: the best accuracy, its
gain over the smallest ``lambda``'s best and its drop to the largest ``lambda``'s best. Records
carry ``decay_timescales = lambda_paper sum_t eta_t``. Writes ``results.json`` (``decoupling`` per
optimizer), ``lr_wd_maps.png``, ``best_lr.png`` and ``summary.md`` to ``--out``.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from examples import cli, models, optimizers, reporting
from examples.grid import train_grid
from examples.reporting import heatmap, markdown_table, mean_pm, plot_seeds, spread, write_outputs

DEFAULT_STEPS, QUICK_STEPS = 1000, 150  # 25 epochs of the 5,000 images
DEFAULT_TRAIN_SIZE, HIDDEN, QUICK_HIDDEN, TOLERANCE = 5000, 64, 32, 0.01
# Rows by the method's family, columns by its decay convention (optimizers.METHODS).
LRS = {"sgd": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1), "adam": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)}
DECAYS = dict.fromkeys(("paper", "l2", "adaptive"), (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2))
DECAYS["coupled"] = (1e-2, 3e-2, 0.1, 0.3, 1, 3)  # times alpha (about 3e-3): paper form
QUICK_LRS = {"sgd": (1e-2, 3e-2, 0.1, 0.3), "adam": (1e-3, 3e-3, 1e-2, 3e-2)}
QUICK_DECAYS = (1e-3, 1e-2, 3e-2, 0.1)  # every convention
DEFAULT_OPTIMIZERS = ("sgd_l2", "sgdw", "adam_l2", "adamw", "prox_adam", "adamp")
LINEAR_DECAY = ("sgdw", "adamw", "adamw_coupled")  # 1 - eta_t lambda (alpha) must stay > 0
SEED_LR, SEED_ACC = "best_lr_per_wd_per_seed", "best_accuracy_per_wd_per_seed"
SHIFT_MEAN, SHIFT_STD = "shift_decades_mean", "shift_decades_std"


def parse_args(argv: Sequence[str] | None):
    """The flags, and ``args.grids``: each optimizer's sorted rows (alpha) and columns (lambda)."""
    parser = cli.base_parser(__doc__, DEFAULT_STEPS, QUICK_STEPS, "out/lr_wd_map")
    parser.set_defaults(train_size=DEFAULT_TRAIN_SIZE)
    parser.add_argument("--optimizers", default=",".join(DEFAULT_OPTIMIZERS), help="%(default)s")
    parser.add_argument("--learning-rates", help="alphas for every optimizer (default: LRS)")
    parser.add_argument("--weight-decays", help="lambdas for every optimizer (default: DECAYS)")
    parser.add_argument("--hidden", type=int, help=f"default {HIDDEN}; --quick {QUICK_HIDDEN}")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="for good columns")
    args = cli.finish_args(parser.parse_args(argv))
    args.hidden = (QUICK_HIDDEN if args.quick else HIDDEN) if args.hidden is None else args.hidden
    cli.check_positive(args, "hidden")
    if not 0 <= args.tolerance < 1:
        raise cli.UsageError(f"`--tolerance` must lie in [0, 1), got {args.tolerance}")
    lrs = cli.parse_floats("--learning-rates", args.learning_rates, positive=True)
    wds = cli.parse_floats("--weight-decays", args.weight_decays)
    args.grids = {}
    for name in cli.parse_names("--optimizers", args.optimizers, optimizers.METHODS):
        rows = lrs or (QUICK_LRS if args.quick else LRS)[optimizers.METHODS[name].family]
        cols = wds or (QUICK_DECAYS if args.quick else DECAYS[optimizers.METHODS[name].convention])
        limit = 1.0 / max(rows) if name == "adamw_coupled" else 1.0
        if name in LINEAR_DECAY and max(cols) >= limit:
            raise cli.UsageError(f"`--weight-decays`: {name} needs values < {limit:g}")
        args.grids[name] = {"learning_rate": sorted(set(rows)), "weight_decay": sorted(set(cols))}
    return args


def decoupling(acc, lrs: Sequence[float], wds: Sequence[float], tol: float) -> dict:
    """The claim's numbers for ``acc[i, j, s]`` (alpha ``lrs[i]``, lambda ``wds[j]``, seed s)."""
    acc, log_lr, cols = np.asarray(acc, float), np.log10(lrs), np.arange(len(wds))
    mean, own = acc.mean(axis=2), np.argmax(acc, axis=0)  # own[j, s]: seed s's best row
    best = np.argmax(mean, axis=0)  # per column, the best row of the mean map (first on a tie)
    at = acc[best, cols]  # (W, S): every seed's accuracy at the columns' best cells
    top = int(np.argmax(mean[best, cols]))  # the column of the mean map's best cell
    good = mean[best, cols] >= mean[best[top], top] - tol
    shift_mean, shift_std = spread(np.diff(log_lr[own], axis=0))
    decades = lambda rows: float(np.ptp(log_lr[rows]))  # log10(max / min) of the rates
    return {
        "weight_decays": [float(w) for w in wds],
        "best_lr_per_wd": [float(lrs[i]) for i in best],
        SEED_LR: [[float(lrs[i]) for i in row] for row in own.T],
        SEED_ACC: at.T.tolist(),
        "seeds_agreeing": (own == best[:, None]).sum(axis=1).tolist(),
        "spread_decades": decades(best),
        "good_weight_decays": [float(w) for w, g in zip(wds, good, strict=True) if g],
        "spread_decades_good": decades(best[good]),
        "spread_decades_per_seed": [decades(row) for row in own.T],
        SHIFT_MEAN: shift_mean.tolist(),
        SHIFT_STD: shift_std.tolist(),
        "shifts_beyond_spread": int(np.sum(np.abs(shift_mean) > shift_std)),
        "best_learning_rate": float(lrs[best[top]]),
        "best_weight_decay": float(wds[top]),
        "best_test_accuracy_per_seed": at[top].tolist(),
        "gain_from_decay_per_seed": (at[top] - at[0]).tolist(),
        "drop_at_largest_wd_per_seed": (at[top] - at[-1]).tolist(),
    }


def plot_maps(maps: dict, grids: dict, stats: dict, path) -> None:
    """Mean test error per cell; red boxes: ``a*_j``; white dots: each seed's own best alpha."""
    nrows, ncols = -(-len(maps) // 3), min(3, len(maps))
    fig = plt.figure(figsize=(5.2 * ncols, 4.4 * nrows), layout="constrained")
    for k, (name, acc) in enumerate(maps.items()):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        mean, title = acc.mean(axis=2), f"{name}: spread {stats[name]['spread_decades']:.1f} dec"
        mark = mean == mean.max(axis=0)
        image = heatmap(ax, 1 - mean, *grids[name].values(), title=title, mark=mark)
        dx = np.linspace(-0.3, 0.3, acc.shape[2])
        for j, rows in enumerate(np.argmax(acc, axis=0)):
            ax.plot(j + dx, rows - 0.32, "o", ms=3, color="white", mec="black", mew=0.5)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle("Mean test error over seeds; red: best alpha per lambda; dots: per-seed best")
    reporting.save_figure(fig, path, 110)


def plot_best_lr(stats: dict, path) -> None:
    """Per column: every seed's best log10 alpha, and its accuracy at ``a*_j``; mean +- std."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    for k, (name, s) in enumerate(stats.items()):
        x = np.asarray(s["weight_decays"]) * 10 ** (0.03 * (k - len(stats) / 2))  # apart
        style = {"label": name, "ls": "--" if "_l2" in name else "-"}
        plot_seeds(axes[0], x, np.log10(s[SEED_LR]).T, **style)
        plot_seeds(axes[1], x, np.transpose(s[SEED_ACC]), **style)
    for ax in axes:
        ax.set_xscale("symlog", linthresh=1e-5)  # lambda = 0 at the left
        ax.set_xlabel("weight decay lambda (own convention)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set(ylabel="log10 best alpha (dots: seeds)", title="Best alpha per lambda")
    axes[1].set(ylabel="test accuracy at the mean map's best alpha", title="Best accuracy")
    axes[0].legend(fontsize=8)
    reporting.save_figure(fig, path, 110)


def summarize(args, data, stats: dict, runs: int, seconds: float) -> str:
    """Title, setup, a table per optimizer and one per weight-decay column."""
    per_opt, per_col = [], []
    for name, s in stats.items():
        row = {
            "optimizer": name,
            "best acc": mean_pm(s["best_test_accuracy_per_seed"]),
            "best alpha, lambda": f"{s['best_learning_rate']:.0e}, {s['best_weight_decay']:.0e}",
            "spread (dec)": f"{s['spread_decades']:.1f}",
            "spread, good columns": f"{s['spread_decades_good']:.1f}",
            "spread per seed": mean_pm(s["spread_decades_per_seed"], ".2f"),
            "shifts abs(mean) > std": f"{s['shifts_beyond_spread']}/{len(s[SHIFT_STD])}",
            "gain from lambda": mean_pm(s["gain_from_decay_per_seed"]),
            "drop at largest lambda": mean_pm(s["drop_at_largest_wd_per_seed"]),
        }
        per_opt.append(row)
        shifts = [f"{m:+.2f} ± {d:.2f}" for m, d in np.c_[s[SHIFT_MEAN], s[SHIFT_STD]]]
        for j, wd in enumerate(s["weight_decays"]):
            col = {
                "optimizer": name,
                "lambda": f"{wd:.0e}",
                "best alpha": f"{s['best_lr_per_wd'][j]:.0e}",
                "seeds agreeing": f"{s['seeds_agreeing'][j]}/{args.seeds}",
                "per-seed best alpha": ", ".join(f"{r[j]:.0e}" for r in s[SEED_LR]),
                "acc at best alpha": mean_pm([r[j] for r in s[SEED_ACC]]),
                "shift to next lambda (dec)": (shifts + [""])[j],
            }
            per_col.append(col)
    tables = [markdown_table(t) for t in (per_opt, per_col)]
    return (
        f"# Learning rate x weight decay maps\n\nMLP ({args.hidden} hidden) on {data.name} "
        f"({len(data.x_train)} train / {len(data.x_test)} test), {args.steps} steps of batch "
        f"{args.batch_size}, seeds {args.seed_list}, {runs} runs in {seconds:.0f} s; mean ± std "
        f"over seeds; good columns: within {args.tolerance} of the best.\n\n" + "\n\n".join(tables)
    )


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    data = cli.load_data(args)
    eta_sum = float(np.sum(optimizers.schedule(args.steps)(np.arange(args.steps))))
    model_fn = models.factory("mlp", data, width=(args.hidden,))
    run = {"steps": args.steps, "batch_size": args.batch_size, "seeds": args.seed_list}
    records, maps, stats, seconds = [], {}, {}, 0.0
    for name, grid in args.grids.items():
        lrs, wds = grid["learning_rate"], grid["weight_decay"]
        points = {"learning_rate": np.repeat(lrs, len(wds)), "weight_decay": np.tile(wds, len(lrs))}
        result = train_grid(name, points, data, model_fn, progress=not args.no_progress, **run)
        seconds += result.seconds
        for rec in result.records(dataset=data.name, steps=args.steps, hidden=args.hidden):
            rate = optimizers.to_paper(name, rec["weight_decay"], rec["learning_rate"])
            rec["decay_timescales"] = rate and rate * eta_sum  # None: no per-step rate
            bad = [k for k, v in rec.items() if isinstance(v, float) and not np.isfinite(v)]
            records.append(rec | dict.fromkeys(bad))  # a diverged run's NaN or inf: null
        maps[name] = result.by_seed(result.test_accuracy).reshape(len(lrs), len(wds), -1)
        stats[name] = decoupling(maps[name], lrs, wds, args.tolerance)
    summary = summarize(args, data, stats, len(records), seconds)
    extra = {"eta_sum": eta_sum, "decoupling": stats}
    write_outputs(args.out, cli.config_of(args), records, summary, extra=extra)  # makes --out
    plot_maps(maps, args.grids, stats, args.out / "lr_wd_maps.png")
    plot_best_lr(stats, args.out / "best_lr.png")
    print(summary)
    return {"results": records, "decoupling": stats, "grids": args.grids}


if __name__ == "__main__":
    cli.run_cli(main)

"""Norm control: AdamW's decay, stable decay (AdamS), a norm constraint (AdamCPR) and a projection
onto the initial norms: how do they hold the weights' norms, and how sensitive is each to its one
hyperparameter?

A small CNN without normalization (Conv3x3-ReLU-pool x 2, then a Linear head) on Fashion-MNIST,
with the cosine schedule ``eta_t`` and Adam's ``alpha`` fixed (``--lr``), trained by four methods,
each over its one hyperparameter (one ``train_grid`` per method, the seeds one more vmapped axis;
every method decays or constrains the framework's ``weight_decay_mask``: the three kernels):

- ``adamw``: ``lambda``, paper form (the weights shrink by ``eta_t*lambda`` per step);
- ``adams`` (Xie et al. 2023): ``lambda`` times the step size ``alpha*eta_t`` divided by
  ``sqrt(vbar_t)``, the root mean of Adam's ``vhat`` over all elements: another scale than
  ``adamw``'s (per step ``alpha*eta_t*lambda/sqrt(vbar_t)``);
- ``adamcpr_ws`` (Franke et al. 2024): ``adamcpr`` with ``kappa_init_method="warm_start"``: ``k``
  steps of plain Adam, then each kernel's squared norm is bounded by the one reached at step
  ``k``, kept by a Lagrange multiplier (rate ``mu = 1``, the reference's);
- ``adamw_projected``: ``adamw`` with ``lambda = 0``, then each kernel back onto the sphere of
  ``r`` times its initial norm after every step (``project_to_norm("init")``, whole-leaf norms).

Measured per member: test accuracy, train loss (last 10%), the norm of each kernel over training
(every step; ``layers.0``, ``layers.1``, ``head``), the global gradient norm (``grad_late``: the
mean over the last 10% of the steps; ``grad_rise``: that over the lowest 10%-window mean in
20-80% of the steps). Per method: its best setting (highest mean test accuracy) and its
sensitivity, the range (max - min) of the mean test accuracy over its sweep. For the projection,
``norm_error``: the largest relative deviation of a kernel's norm from ``r`` times its initial
norm over training. Run: ``python -m examples.norm_control [--quick]``.
"""

from __future__ import annotations

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from examples import cli, models
from examples.grid import train_grid
from examples.reporting import markdown_table, mean_pm, plot_seeds, save_figure, write_outputs

# Sized from a timed 230-step run (12 members, about 0.5 s of CPU per step, batch 64, plus
# about 40 s of compiling per method). The full run used 1165 s of CPU (27.5 min wall on the
# shared 2-core machine; alone about 10-16 min, as modern_decay). --quick: digits.
DEFAULT_STEPS, QUICK_STEPS, BATCH, LR = 300, 60, 64, 3e-3
# name -> (hyperparameter, its symbol, default sweep, --quick sweep)
SWEEPS = {
    "adamw": ("weight_decay", "λ (paper)", "1e-3,3e-3,1e-2,3e-2", "1e-3,3e-2"),
    "adams": ("weight_decay", "λ (AdamS)", "1e-2,3e-2,1e-1,3e-1", "1e-2,3e-1"),
    "adamcpr_ws": ("weight_decay", "k (warm-start steps)", "1,10,30,100", "1,20"),
    "adamw_projected": ("radius_scale", "r (× init norm)", "0.5,1,1.5,2", "0.5,1"),
}
LAYERS = ("layers.0", "layers.1", "head")
WINDOWS, MIDDLE = 10, slice(2, 8)  # deciles of the run; the middle: windows 3-8 (20-80%)


def parse_args(argv: list[str] | None):
    parser = cli.base_parser(__doc__, DEFAULT_STEPS, QUICK_STEPS, "out/norm_control")
    add = parser.add_argument
    add("--optimizers", default=",".join(SWEEPS), help="comma-separated, from the default")
    for name, (_, symbol, default, quick) in SWEEPS.items():
        add(f"--{name.replace('_', '-')}", help=f"{symbol} (default {default}; --quick {quick})")
    add("--lr", type=float, default=LR, help="alpha, Adam's peak step size")
    add("--width", default="8,16", help="the CNN's channels, comma-separated")
    parser.set_defaults(batch_size=BATCH)
    args = cli.finish_args(parser.parse_args(argv))
    args.optimizers = cli.parse_names("--optimizers", args.optimizers, SWEEPS)
    args.sweeps = {}
    for name, (_, _, default, quick) in SWEEPS.items():
        flag = f"--{name.replace('_', '-')}"
        text = getattr(args, name) or (quick if args.quick else default)
        args.sweeps[name] = cli.parse_floats(flag, text, positive=name != "adamw")
    if any(k != int(k) for k in args.sweeps["adamcpr_ws"]):
        raise cli.UsageError("`--adamcpr-ws` takes whole numbers of steps >= 1")
    if not 0 < args.lr < np.inf:
        raise cli.UsageError(f"`--lr` must be a positive number, got {args.lr}")
    if args.steps < WINDOWS:
        raise cli.UsageError(f"`--steps` must be >= {WINDOWS}")
    args.width = cli.parse_ints("--width", args.width)
    return args


def track(before, after):
    """The norm of each kernel after the step."""
    del before
    kernels = [after["layers"][i]["kernel"][...] for i in range(len(LAYERS) - 1)]
    kernels.append(after["head"]["kernel"][...])
    return {name: jnp.linalg.norm(k) for name, k in zip(LAYERS, kernels, strict=True)}


def run(name: str, args, data, model_fn):
    key, values = SWEEPS[name][0], args.sweeps[name]
    hparams = {"learning_rate": [args.lr] * len(values), "weight_decay": [0.0] * len(values)}
    hparams[key] = values
    options = {"radius_scale": 1.0} if key == "radius_scale" else None  # injected per member
    result = train_grid(
        name,
        hparams,
        data,
        model_fn,
        steps=args.steps,
        batch_size=args.batch_size,
        seeds=args.seed_list,
        track=track,
        options=options,
        grad_norm_every=1,
        progress=not args.no_progress,
    )
    norms = np.stack([result.history[layer] for layer in LAYERS], axis=-1)  # (steps, G, layer)
    windows = np.stack([w.mean(0) for w in np.array_split(result.history["grad_norm"], WINDOWS)])
    records = result.records(steps=args.steps, hparam=key)
    for i, r in enumerate(records):
        r["value"] = r[key]
        r.update({f"norm_{layer}": float(norms[-1, i, j]) for j, layer in enumerate(LAYERS)})
        r["grad_late"], r["grad_rise"] = (
            float(windows[-1, i]),
            float(windows[-1, i] / windows[MIDDLE, i].min()),
        )
        if key == "radius_scale":  # the first record is after one step: already on the sphere
            r["norm_error"] = float(np.max(np.abs(norms[:, i] / norms[0, i] - 1)))
    history = {"norms": norms.tolist(), "seconds": result.seconds}
    return records, history


def best_values(records: list[dict], num_seeds: int) -> dict[str, float]:
    """Per method: the swept value with the highest mean test accuracy."""
    best = {}
    for name in dict.fromkeys(r["optimizer"] for r in records):
        rows = [r for r in records if r["optimizer"] == name]
        acc = np.reshape([r["test_accuracy"] for r in rows], (-1, num_seeds)).mean(1)
        best[name] = rows[int(np.argmax(acc)) * num_seeds]["value"]
    return best


def plot(records: list[dict], history: dict, best: dict, args) -> None:
    """norms.png: each kernel's norm over training, one line per method at its best value (mean
    over seeds, the band min-max); sensitivity.png: test accuracy vs the hyperparameter."""
    n = len(args.seed_list)
    fig, axes = plt.subplots(1, len(LAYERS), figsize=(5.5 * len(LAYERS), 4), squeeze=False)
    for k, (name, h) in enumerate(history.items()):
        norms = np.reshape(h["norms"], (args.steps, -1, n, len(LAYERS)))
        j = args.sweeps[name].index(best[name])
        steps = np.arange(1, args.steps + 1)
        for layer, ax in enumerate(axes[0]):
            seeds = norms[:, j, :, layer]
            label = f"{name}, {SWEEPS[name][1].split()[0]} = {best[name]:g}"
            ax.plot(steps, seeds.mean(1), color=f"C{k}", lw=1.2, label=label)
            ax.fill_between(steps, seeds.min(1), seeds.max(1), color=f"C{k}", alpha=0.2)
            ax.set(title=f"‖w‖ of {LAYERS[layer]}", xlabel="step")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"kernel norms at each method's best setting, {args.dataset}, {n} seeds")
    fig.tight_layout()
    save_figure(fig, args.out / "norms.png", 100)
    fig, axes = plt.subplots(1, len(history), figsize=(4.5 * len(history), 3.6), squeeze=False)
    for k, (name, ax) in enumerate(zip(history, axes[0], strict=True)):
        rows = [r for r in records if r["optimizer"] == name]
        values = np.reshape([r["test_accuracy"] for r in rows], (-1, n))
        plot_seeds(ax, np.asarray(args.sweeps[name]), values, label=name, color=f"C{k}", fmt="o-")
        ax.set(title=name, xlabel=SWEEPS[name][1], xscale="log", ylabel="test accuracy")
    fig.tight_layout()
    save_figure(fig, args.out / "sensitivity.png", 100)


def summarize(records: list[dict], best: dict, args) -> str:
    columns = [  # header, record key, number format
        ("test accuracy", "test_accuracy", ".4f"),
        ("train loss (last 10%)", "train_loss", ".3f"),
        *((f"‖w‖ {layer}", f"norm_{layer}", ".3g") for layer in LAYERS),
        ("grad norm (last 10%)", "grad_late", ".3g"),
        ("grad rise", "grad_rise", ".3f"),
    ]
    n = len(args.seed_list)
    rows = [
        {"optimizer": records[i]["optimizer"], "hyperparameter": SWEEPS[records[i]["optimizer"]][1]}
        | {"value": f"{records[i]['value']:g}"}
        | {h: mean_pm([r[k] for r in records[i : i + n]], f) for h, k, f in columns}
        for i in range(0, len(records), n)
    ]
    per_method = []
    for name in best:
        rs = [r for r in records if r["optimizer"] == name]
        acc = np.reshape([r["test_accuracy"] for r in rs], (-1, n))
        top = rs[int(np.argmax(acc.mean(1))) * n : int(np.argmax(acc.mean(1))) * n + n]
        sweep = args.sweeps[name]
        row = {"optimizer": name, "best value": f"{best[name]:g}"}
        row["best test accuracy"] = mean_pm([r["test_accuracy"] for r in top])
        row["worst mean accuracy"] = f"{acc.mean(1).min():.4f}"
        row["sensitivity (max - min)"] = f"{np.ptp(acc.mean(1)):.4f}"
        row["sweep span (max/min)"] = f"{max(sweep) / min(sweep):g}" if min(sweep) else "-"
        row["max norm error"] = (
            f"{max(r['norm_error'] for r in rs):.2g}" if "norm_error" in rs[0] else "-"
        )
        per_method.append(row)
    return (
        f"# Norm control: decay, stable decay, CPR and projection\n\n"
        f"{args.dataset}, CNN {args.width} without normalization, {args.steps} steps of batch "
        f"{args.batch_size}, α = {args.lr:g}, cosine schedule, seeds {args.seed_list} "
        f"(mean ± std). Norms: after the last step. Grad rise: the last 10% of the steps over "
        f"the lowest 10%-window in 20-80%.\n\n{markdown_table(rows)}\n\n"
        f"## Per method: best setting and sensitivity\n\n"
        f"Sensitivity: the range of the mean test accuracy over the sweep; max norm error: the "
        f"largest |‖w_t‖ / (r ‖w_0‖) - 1| of a kernel over training.\n\n"
        f"{markdown_table(per_method)}\n"
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    data = cli.load_data(args)
    model_fn = models.factory("cnn", data, norm=None, width=args.width)
    records, history = [], {}
    for name in args.optimizers:
        recs, history[name] = run(name, args, data, model_fn)
        records += recs
    best = best_values(records, len(args.seed_list))
    summary = summarize(records, best, args)
    config = cli.config_of(args)
    extra = {"history": history, "best": best}
    write_outputs(args.out, config, records, summary, extra=extra)
    plot(records, history, best, args)
    print(summary)
    return {"results": records, "history": history, "best": best}


if __name__ == "__main__":
    cli.run_cli(main)

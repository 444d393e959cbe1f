"""BatchNorm and weight decay: decay sets the step size of a scale-invariant layer, not its capacity.

A kernel ``w`` before a BatchNorm (batch statistics) is scale-invariant, ``f(c*w) = f(w)``, so
``<grad f(w), w> = 0`` and ``grad f(c*w) = grad f(w)/c``: decay cannot limit its capacity, only set
the effective step ``||dw||/||w||`` (SGD: ``alpha*eta_t*||g~||/||w||^2``, Adam: about
``alpha*eta_t/||w||``; ``g~``: the unit-norm gradient, ``eta_t``: the schedule). Without decay
``||w||`` only grows; with decoupled decay it settles in ``~1/(2*eta_t*lambda)`` steps, where for
momentum ``mu`` (Adam: ``beta1``) and noise uncorrelated in time the angular step is
``sqrt(2*lambda_paper*eta_t*(1-mu)/(1+mu))`` (``optax_decay.equilibrium_angular_update``;
``lambda_paper``: the per-step decay,
``optimizers.to_paper``; none for ``adam_l2``, ``adamp``).

One ``train_grid`` per optimizer over decays x seeds, ``lambda_paper = k/(0.5*steps)`` (a shrink by
``e^-k``) per ``--decay-folds`` ``k``, or ``--weight-decays``. Tracked per layer before a BatchNorm:
``||w0||``, ``||w1 - w0||/||w0||`` and its angular part. Per member, for ``layers.0``: the final
``||w||``, the late (last 20%) mean effective step, the mid-run (45-55%) angular step /
equilibrium, the train loss, the test accuracy with BatchNorm's running averages (they lag a
fast-shrinking norm) and with each test batch on its own statistics; changes and ratios vs the
same seed's ``lambda = 0``. The mask also decays the head (not scale-invariant).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

import optax_decay
from examples import cli, grid, models, optimizers
from examples.optimizers import METHODS, MOMENTUM
from examples.reporting import markdown_table, mean_pm, plot_seeds, save_figure, write_outputs

DEFAULT_STEPS, QUICK_STEPS = 6000, 600
DEFAULT_FOLDS, QUICK_FOLDS = "0,2,10", "0,1,2"  # quick: milder, so the running averages follow
SGD_LR, ADAM_LR, ADAM_B1 = 0.05, 1e-3, 0.9  # ADAM_B1: optax_decay's default beta1
WIDTH = {"mlp": "256,256", "cnn": "16,32"}
LATE, MID, ETA_FLOOR = 0.8, 0.05, 0.02  # late: t > LATE*steps; mid: |t/steps - 1/2| <= MID
METRICS = ("weight_norm", "effective_step", "angular_step")


def parse_args(argv: list[str] | None):
    parser = cli.base_parser(__doc__, DEFAULT_STEPS, QUICK_STEPS, "out/batchnorm_decay")
    add = parser.add_argument
    add("--model", choices=models.MODELS, default="mlp")
    add("--width", help="hidden sizes, comma-separated (default mlp 256,256; cnn 16,32)")
    add("--optimizers", default="sgdw,adamw", help=f"comma-separated, from {', '.join(METHODS)}")
    add("--weight-decays", help="in each optimizer's own convention (default: --decay-folds)")
    add("--decay-folds", help=f"lambda_paper = k/(0.5*steps) (default {DEFAULT_FOLDS})")
    add("--sgd-lr", type=float, default=SGD_LR, help="alpha of the sgd_* names")
    add("--adam-lr", type=float, default=ADAM_LR, help="alpha of the others")
    add("--track-every", type=int, help="record every this many steps (default steps // 200)")
    add("--no-bn", action="store_true", help="the control: the same model without BatchNorm")
    args = cli.finish_args(parser.parse_args(argv))
    args.optimizers = cli.parse_names("--optimizers", args.optimizers, METHODS)
    args.weight_decays = cli.parse_floats("--weight-decays", args.weight_decays)
    if args.decay_folds is None:
        args.decay_folds = QUICK_FOLDS if args.quick else DEFAULT_FOLDS
    args.decay_folds = cli.parse_floats("--decay-folds", args.decay_folds)
    width = cli.parse_ints("--width", args.width or WIDTH[args.model])
    if not all(0 < lr < np.inf for lr in (args.sgd_lr, args.adam_lr)):
        raise cli.UsageError("`--sgd-lr` and `--adam-lr` must be positive numbers")
    if args.track_every is None:
        args.track_every = 1 if args.quick else max(1, args.steps // 200)
    if not 1 <= args.track_every <= args.steps:
        raise cli.UsageError(f"`--track-every` must be in [1, --steps={args.steps}]")
    args.width, args.batchnorm = width, not args.no_bn
    return args


def make_track(layers: list[int]):
    """Per layer ``||w0||``, ``||dw||/||w0||`` and ``||dw - (<dw, w0>/||w0||^2) w0|| / ||w0||``."""

    def track(before, after):
        out = {}
        for i in layers:
            w0 = before["layers"][i]["kernel"][...]
            dw, norm = after["layers"][i]["kernel"][...] - w0, jnp.linalg.norm(w0)
            angular = jnp.linalg.norm(dw - jnp.vdot(dw, w0) / norm**2 * w0) / norm
            values = (norm, jnp.linalg.norm(dw) / norm, angular)
            out |= {f"layers.{i}/{m}": v for m, v in zip(METRICS, values, strict=True)}
        return out

    return track


def batch_stat_accuracy(scratch, result, member: int, data, batch: int = 1000) -> float:
    """Test accuracy of grid member ``member``, each test batch normalized by its own statistics
    (``scratch``: a model of the grid's architecture; its params are overwritten)."""
    nnx.update(scratch, jax.tree.map(lambda a: a[member], result.params))
    scratch.train()
    x, y = data.x_test, data.y_test
    chunks = [slice(s, s + batch) for s in range(0, len(y), batch)]
    return float(sum(models.accuracy(scratch, x[c], y[c]) * len(y[c]) for c in chunks) / len(y))


def equilibrium(lam: float, eta: np.ndarray, mu: float) -> np.ndarray:
    """The equilibrium angular step at each ``eta_t``: ``sqrt(eta_t)`` times that at ``eta = 1``."""
    return np.sqrt(eta) * optax_decay.equilibrium_angular_update(lam, momentum=mu)


def run_optimizer(name: str, args, data, model_fn, layers: list[int], scratch):
    """One ``train_grid`` over decays x seeds: one record per member, and the history."""
    sgd, bn, num_seeds = METHODS[name].family == "sgd", args.batchnorm, len(args.seed_list)
    lr, mu = (args.sgd_lr, MOMENTUM) if sgd else (args.adam_lr, ADAM_B1)
    folds = [k / (0.5 * args.steps) for k in args.decay_folds]
    decays = args.weight_decays or [optimizers.from_paper(name, k, lr) or k for k in folds]
    hparams = {"learning_rate": [lr] * len(decays), "weight_decay": decays}
    run = dict(steps=args.steps, batch_size=args.batch_size, seeds=args.seed_list)
    run.update(track=make_track(layers), track_every=args.track_every)
    result = grid.train_grid(name, hparams, data, model_fn, **run, progress=not args.no_progress)
    first, kernel = f"layers.{layers[0]}", result.params["layers"][layers[0]]["kernel"]
    norm, eff, ang = (result.history[f"{first}/{m}"] for m in METRICS)
    steps = args.track_every * np.arange(1, len(norm) + 1)
    eta = 0.5 * (1 + np.cos(np.pi * (steps - 1) / args.steps))  # record i: eta at steps[i] - 1
    mid = (abs(steps / args.steps - 0.5) <= MID) | (steps == steps[len(steps) // 2])
    late_eff = eff[(steps > LATE * args.steps) | (steps == steps[-1])].mean(0)
    records = result.records(batchnorm=bn, tracked_layer=first)
    for i, r in enumerate(records):
        lam = optimizers.to_paper(name, r["weight_decay"], lr)
        r.update(paper_weight_decay=lam, first_layer_norm=float(np.linalg.norm(kernel[i])))
        r["late_effective_step"] = float(late_eff[i])
        r["mid_equilibrium_ratio"] = (
            float(np.mean(ang[mid, i] / equilibrium(lam, eta[mid], mu))) if lam and bn else None
        )
        r["batch_stat_accuracy"] = batch_stat_accuracy(scratch, result, i, data) if bn else None
        if 0.0 in decays:  # b: the same seed's lambda = 0 member
            b = decays.index(0.0) * num_seeds + i % num_seeds
            r["accuracy_change"] = r["test_accuracy"] - records[b]["test_accuracy"]
            r["late_effective_step_ratio"] = float(late_eff[i] / late_eff[b])
    history = dict(steps=steps.tolist(), eta=eta.tolist(), momentum=mu, seconds=result.seconds)
    history.update(seed=result.seed.tolist(), weight_decay=result.hparams["weight_decay"].tolist())
    return records, history | {k: v.tolist() for k, v in sorted(result.history.items())}


def plot(history: dict, records: list[dict], args) -> None:
    """Per optimizer: ||w||, the effective step and step / eta_t over training (a line per seed),
    and the test accuracy per decay and seed."""
    layer, num_seeds = records[0]["tracked_layer"], len(args.seed_list)
    size, n = (20, 4 * len(history)), len(history)
    fig, axes = plt.subplots(n, 4, figsize=size, squeeze=False, layout="constrained")
    for row, (name, h) in zip(axes, history.items(), strict=True):
        steps, eta, mu = np.asarray(h["steps"]), np.asarray(h["eta"]), h["momentum"]
        shape = (len(steps), -1, num_seeds)  # record x decay x seed
        norm, eff, ang = (np.reshape(h[f"{layer}/{m}"], shape) for m in METRICS)
        rows = [r for r in records if r["optimizer"] == name]
        decays, seen = [r["weight_decay"] for r in rows[::num_seeds]], eta >= ETA_FLOOR
        for j, r in enumerate(rows[::num_seeds]):
            c, lam = plt.cm.viridis(0.85 * j / len(decays)), r["paper_weight_decay"]
            labels = [f"λ = {decays[j]:.3g}"] + ["_"] * (num_seeds - 1)  # one line per seed
            row[0].plot(steps, norm[:, j], color=c, lw=1, label=labels)
            row[1].plot(steps, eff[:, j], color=c, lw=1)
            row[1].plot(steps, ang[:, j], "--", color=c, lw=0.5)
            if lam and args.batchnorm:
                row[1].plot(steps, equilibrium(lam, eta, mu), ":", color=c, lw=1)
            row[2].plot(steps[seen], eff[seen, j] / eta[seen, None], color=c, lw=1, label=labels)
        row[1].plot([], [], "k--", lw=1, label="angular part")
        row[1].plot([], [], "k:", lw=1, label="equilibrium angular step")
        for key in ("test_accuracy", "batch_stat_accuracy")[: 1 + args.batchnorm]:
            values = np.reshape([r[key] for r in rows], (-1, num_seeds))
            plot_seeds(row[3], np.arange(len(decays)), values, label=key.replace("_", " "))
        titles = [f"||w|| of {layer}", "||Δw|| / ||w||", f"||Δw|| / (η_t ||w||), η_t ≥ {ETA_FLOOR}"]
        for ax, title in zip(row, [*titles, "test accuracy per seed"], strict=True):
            ax.set(title=f"{name}: {title}", xlabel="training step", yscale="log")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        row[3].set(xlabel="λ", yscale="linear", xticks=range(len(decays)))
        row[3].set_xticklabels([f"{wd:.3g}" for wd in decays])
    fig.suptitle(f"{args.model}, batchnorm={args.batchnorm}, {args.dataset}, {args.steps} steps")
    save_figure(fig, args.out / "batchnorm.png", 100)


def summarize(records: list[dict], args) -> str:
    """Per optimizer and decay: the mean ± std over seeds of each record's numbers."""
    columns = [  # header, record key, number format
        ("test accuracy", "test_accuracy", ".4f"),
        ("test acc. (batch stats)", "batch_stat_accuracy", ".4f"),
        ("Δ test acc. vs λ=0", "accuracy_change", ".4f"),
        ("train loss (last 10%)", "train_loss", ".3f"),
        ("final ‖w‖ of layers.0", "first_layer_norm", ".3g"),
        ("late ‖Δw‖/‖w‖ ÷ λ=0", "late_effective_step_ratio", ".3g"),
        ("mid-run angular / equilibrium", "mid_equilibrium_ratio", ".3g"),
    ]
    pm = lambda g, k, f: "-" if g[0].get(k) is None else mean_pm([r[k] for r in g], f)
    rows = [
        {"optimizer": records[i]["optimizer"], "λ": format(records[i]["weight_decay"], ".3g")}
        | {h: pm(records[i : i + len(args.seed_list)], k, f) for h, k, f in columns}
        for i in range(0, len(records), len(args.seed_list))
    ]
    return (
        f"# BatchNorm and weight decay ({args.model}, batchnorm={args.batchnorm})\n\n"
        f"{args.dataset}, {args.steps} steps of batch {args.batch_size}, seeds {args.seed_list} "
        f"(mean ± std); late: the last {1 - LATE:.0%} of the steps; Δ, ÷: to the same seed's "
        f"λ = 0; - where not defined.\n\n{markdown_table(rows)}\n"
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    data = cli.load_data(args)
    norm = "batch" if args.batchnorm else None
    model_fn = models.factory(args.model, data, norm=norm, width=args.width)
    scratch = nnx.jit(lambda: model_fn(args.seed))()  # one jitted init
    layers = [i for i, n in enumerate(scratch.norms) if n is not None or not args.batchnorm]
    records, history = [], {}
    for name in args.optimizers:
        recs, history[name] = run_optimizer(name, args, data, model_fn, layers, scratch)
        records += recs
    summary = summarize(records, args)
    write_outputs(args.out, cli.config_of(args), records, summary, extra={"history": history})
    plot(history, records, args)
    print(summary)
    return {"results": records, "history": history}


if __name__ == "__main__":
    cli.run_cli(main)

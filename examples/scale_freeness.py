"""Are AdamW and ProxAdam scale-free, and AdamP, Adam+L2 and SGDW not? Multiply the loss by c.

Scale-free: training on ``c * f`` instead of ``f`` (``c > 0``) gives the same iterates. The loss
times ``c`` scales the gradient, ``mhat`` and ``sqrt(vhat)`` by ``c``; with ``alpha`` the
learning rate, ``eta`` the cosine schedule, ``lambda`` the decay and ``D = sqrt(vhat) + eps``::

    adamw      w <- (1 - eta*lambda) w - eta*alpha*mhat/D              scale-free if eps = 0
    prox_adam  w <- (w - eta*alpha*mhat/D) / (1 + eta*lambda)          scale-free if eps = 0
    adamp      w <- (w - eta*alpha*mhat/D) / (1 + eta*lambda*alpha/D)  decay acts like lambda/c
    adam_l2    Adam on c*grad + lambda*w                               penalty's share ~ 1/c
    sgdw       w <- (1 - eta*lambda) w - eta*alpha*c*grad              the step scales with c

(``tests/test_alias.py``: exact in float64 at ``eps = 0``.) Per method one ``train_grid`` call
trains an MLP per seed and ``c`` in ``--scales`` (``c = 1`` added) or ``c = 1 + 2**-20`` (the
control: float32 round-off amplified by training); within a seed only ``c`` differs. Per member:
test accuracy, kernel L2 norm, ``max_rel_param_diff`` to its seed's ``c = 1`` member
(``rel_param_diffs``), ``diverged`` (non-finite, loss > ``2 ln K`` or norm > 100x the initial);
per method and seed: ``seed_stat`` and (Adam family) ``eps_shares``.

Defaults: ``eps = 1e-8``, ``alpha`` 1e-3 (Adam) or 0.05 (SGDW, momentum 0.9), MLP 784-256-10;
``lambda = 3 / (0.5 * steps)`` (3 decay timescales: sgdw, adamw, prox_adam) or ``OWN_DECAYS``.
Writes ``results.json`` (``seed_stats``), ``scale_freeness.png`` and ``summary.md`` to ``--out``.
"""

from __future__ import annotations

import math

import jax
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

import optax_decay
from examples import cli, optimizers
from examples.data import batch_indices
from examples.grid import train_grid
from examples.models import cross_entropy, decayed_norm, factory
from examples.reporting import markdown_table, mean_pm, plot_seeds, save_figure, write_outputs

DEFAULT_STEPS, QUICK_STEPS = 3000, 100
DEFAULT_SCALES, DEFAULT_OPTIMIZERS = "1e-3,1,1e3", "adam_l2,adamw,prox_adam,adamp,sgdw"
OWN_DECAYS = {"sgd_l2": 5e-4, "adam_l2": 1e-3, "adamp": 1e-3}  # not per-step rates
CONTROL = 1 + 2**-20  # the round-off control: the loss changed by one part in a million
EPS, TOLERANCE, ROUNDOFF, EPS_SHARE, GRAD_BATCHES = 1e-8, 1e-3, 2.0, 0.01, 20
BOUNDS = {"learning_rate": ">", "eps": ">", "tolerance": ">", "weight_decay": ">="}
grad = nnx.jit(nnx.grad(cross_entropy))  # of the unscaled loss
member = lambda params, i: jax.tree.map(lambda a: a[i], params)  # member i of (G, ...) arrays


def default_hparams(name: str, args) -> tuple[float, float]:
    """``(alpha, lambda)``: paper-form lambda of 3 timescales, ``OWN_DECAYS`` or the flags."""
    paper = optax_decay.weight_decay_from_timescale(max(args.steps, 60) / 3.0, schedule=0.5)
    lr, wd = optimizers.default_hparams(name, paper, sgd_lr=0.05, adam_lr=1e-3, own=OWN_DECAYS)
    return args.learning_rate or lr, wd if args.weight_decay is None else args.weight_decay


def rel_param_diffs(params, i: int, j: int) -> dict[str, float]:
    """Per leaf l of a grid's params: ``||p_i[l] - p_j[l]||_2 / ||p_j[l]||_2``, NaN if not finite."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        p, r = np.asarray(leaf[i], np.float64), np.asarray(leaf[j], np.float64)
        finite = np.isfinite(p).all() and np.isfinite(r).all()
        diff = np.linalg.norm(p - r) / max(np.linalg.norm(r), 1e-30) if finite else math.nan
        out[jax.tree_util.keystr(path, simple=True, separator="/")] = float(diff)
    return out


def eps_shares(model_fn, params, data, args, seed: int) -> dict[str, float]:
    """Per c: the share of coordinates with ``rms > 0`` where ``eps / (c*rms + eps) >= 1%``;
    ``rms``: the per-coordinate RMS of the unscaled gradient at ``params`` over 20 batches."""
    model = model_fn(seed)
    nnx.update(model, params)
    total = 0.0
    for idx in batch_indices(len(data.x_train), GRAD_BATCHES, args.batch_size, seed + 1):
        grads = jax.tree.leaves(grad(model, data.x_train[idx], data.y_train[idx]))
        total = total + np.concatenate([np.asarray(g, np.float64).ravel() for g in grads]) ** 2
    rms = np.sqrt(total[total > 0] / GRAD_BATCHES)
    share = {c: np.mean(args.eps / (c * rms + args.eps) >= EPS_SHARE) for c in args.scales}
    return {f"{c:g}": float(v) for c, v in share.items()}


def seed_stat(rows: list[dict]) -> dict:
    """One seed's ``rows`` (the control last): ``worst``, the largest ``max_rel_param_diff`` over
    ``--scales`` (NaN if any is); ``control``, the control's; ``ratio = worst / control``."""
    control = rows[-1]["max_rel_param_diff"]
    worst = float(np.max([r["max_rel_param_diff"] for r in rows[:-1]]))
    return dict(control=control, worst=worst, ratio=worst / control if control > 0 else math.nan)


def by_point(records: list[dict], name: str, key: str, seeds: int) -> np.ndarray:
    """``key`` of ``name``'s members as ``(points, seeds)``: the scales, then the control."""
    return np.array([r[key] for r in records if r["optimizer"] == name], float).reshape(-1, seeds)


def plot(records, args, path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), layout="constrained")
    keys, scales = ("max_rel_param_diff", "test_accuracy", "weight_norm"), np.asarray(args.scales)
    for k, name in enumerate(args.optimizers):
        x = scales * 1.12 ** (k - (len(args.optimizers) - 1) / 2)  # side by side
        diff, acc, norm = (by_point(records, name, key, len(args.seed_list)) for key in keys)
        line = plot_seeds(axes[0], x[scales != 1], diff[:-1][scales != 1], label=name, marker="o")
        axes[0].axhline(np.nanmean(diff[-1]), color=line[0].get_color(), ls=":")  # the control
        plot_seeds(axes[1], x, acc[:-1], label=name, marker="o")
        plot_seeds(axes[2], x, norm[:-1], label=name, marker="o")
    axes[0].axhline(args.tolerance, color="gray", ls="--", label="tolerance; dotted: c=1+2^-20")
    for ax, key in zip(axes, keys, strict=True):
        ax.set(xscale="log", yscale="linear" if ax is axes[1] else "log", xlabel="loss scale c")
        ax.set_title(f"{key} (mean ± std over seeds)", fontsize=10)
    axes[0].legend(fontsize=8)
    save_figure(fig, path, 120)


def summarize(records, stats, args, seconds: float) -> str:
    """Title, setup, a table per method and c, and a table per method (over its seeds)."""
    n, rows, method_rows = len(args.seed_list), [], []
    table = lambda head, rows: markdown_table([dict(zip(head, r, strict=True)) for r in rows])
    for name in args.optimizers:
        keys = ("test_accuracy", "weight_norm", "max_rel_param_diff", "diverged")
        acc, norm, diff, div = (by_point(records, name, k, n) for k in keys)
        for p, c in enumerate([*args.scales, CONTROL]):
            rows.append([name, "1+2^-20" if c == CONTROL else f"{c:g}", mean_pm(acc[p])])
            rows[-1] += [mean_pm(norm[p], ".4g"), mean_pm(diff[p], ".2e"), f"{div[p].sum():g}/{n}"]
        st = [s for s in stats if s["optimizer"] == name]
        rec = next(r for r in records if r["optimizer"] == name)
        row = [name, f"{rec['learning_rate']:g}", f"{rec['weight_decay']:.3g}"]
        row += [mean_pm([s[k] for s in st], ".2e") for k in ("control", "worst")]
        row += [mean_pm([s["ratio"] for s in st], ".3g")]
        row += [f"{sum(s['worst'] < args.tolerance for s in st)}/{n}"]
        row += [f"{sum(s['ratio'] <= ROUNDOFF for s in st)}/{n}"]
        shares = [[s["eps_share"][f"{c:g}"] for s in st if s["eps_share"]] for c in args.scales]
        method_rows.append(row + [mean_pm(v, ".3f") if v else "-" for v in shares])
    head = ["optimizer", "c", "test acc", "weight norm", "max rel diff vs c=1", "diverged"]
    head2 = ["optimizer", "lr", "wd", "control diff", "worst diff", "worst/control"]
    head2 += [f"worst < {args.tolerance:g}", f"worst <= {ROUNDOFF:g}x control"]
    head2 += [f"eps share c={c:g}" for c in args.scales]
    return (
        f"# Scale-freeness: the training loss multiplied by c\n\n{args.dataset}, MLP "
        f"{list(args.width)}, {args.steps} steps of batch {args.batch_size}, seeds "
        f"{args.seed_list}, eps = {args.eps:g}, eps share: eps >= {EPS_SHARE:.0%} of D; mean ± "
        f"std over seeds; {seconds:.0f} s.\n\n{table(head, rows)}\n\n{table(head2, method_rows)}"
    )


def parse_args(argv: list[str] | None):
    parser = cli.base_parser(__doc__, DEFAULT_STEPS, QUICK_STEPS, "out/scale_freeness")
    parser.add_argument("--optimizers", default=DEFAULT_OPTIMIZERS, help="comma-separated")
    parser.add_argument("--scales", default=DEFAULT_SCALES, help="c > 0; c = 1 is always added")
    parser.add_argument("--learning-rate", type=float, help="one alpha for every method")
    parser.add_argument("--weight-decay", type=float, help="one lambda for every method")
    parser.add_argument("--eps", type=float, default=EPS, help="eps of the Adam family")
    parser.add_argument("--width", default="256", help="MLP hidden sizes, e.g. 256,128")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="on worst diff")
    args = cli.finish_args(parser.parse_args(argv))
    args.optimizers = cli.parse_names("--optimizers", args.optimizers, optimizers.METHODS)
    args.scales = sorted(set(cli.parse_floats("--scales", args.scales, positive=True)) | {1.0})
    args.width = cli.parse_ints("--width", args.width)
    for key, op in BOUNDS.items():
        v = getattr(args, key)
        if v is not None and not (math.isfinite(v) and (v > 0 or (op == ">=" and v == 0))):
            raise cli.UsageError(f"`--{key.replace('_', '-')}` must be finite and {op} 0, got {v}")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Runs it; returns the records, ``seed_stats`` and per method the ``(G, ...)`` params."""
    args = parse_args(argv)
    data = cli.load_data(args)
    model_fn = factory("mlp", data, width=args.width)
    n, ref, scales = len(args.seed_list), args.scales.index(1.0), [*args.scales, CONTROL]
    max_loss = 2 * math.log(data.num_classes)
    max_norm = [100 * decayed_norm(nnx.state(model_fn(s), nnx.Param)) for s in args.seed_list]
    run = dict(steps=args.steps, batch_size=args.batch_size, seeds=args.seed_list)
    run.update(loss_scale=scales, progress=not args.no_progress)
    records, stats, params, seconds = [], [], {}, 0.0
    for name in args.optimizers:
        lr, wd = default_hparams(name, args)
        hparams = {"learning_rate": [lr] * len(scales), "weight_decay": [wd] * len(scales)}
        options = {"eps": args.eps} if optimizers.METHODS[name].family == "adam" else None
        result = train_grid(name, hparams, data, model_fn, options=options, **run)
        seconds += result.seconds
        p = params[name] = result.params
        recs = result.records(steps=args.steps, dataset=args.dataset, eps=args.eps)
        for i, rec in enumerate(recs):
            rec["rel_param_diff_per_leaf"] = per_leaf = rel_param_diffs(p, i, ref * n + i % n)
            rec["max_rel_param_diff"] = float(np.max(list(per_leaf.values())))  # NaN if any is
            loss, norm = rec["train_loss"], rec["weight_norm"]  # NaN and inf compare False
            rec["diverged"] = not (loss <= max_loss and norm <= max_norm[i % n])
        for s, seed in enumerate(args.seed_list):  # recs[s::n]: seed s's scales, then the control
            share = options and eps_shares(model_fn, member(p, ref * n + s), data, args, seed)
            stat = {"optimizer": name, "seed": seed, **seed_stat(recs[s::n]), "eps_share": share}
            stats.append(stat)
        records += recs
    summary = summarize(records, stats, args, seconds)
    write_outputs(args.out, cli.config_of(args), records, summary, extra={"seed_stats": stats})
    plot(records, args, args.out / "scale_freeness.png")
    print(summary)
    return {"records": records, "seed_stats": stats, "params": params}


if __name__ == "__main__":
    cli.run_cli(main)

"""The sparsity frontier: test accuracy against exact zeros for L1 (ProxAdam, AdamL1), group
lasso and AdamW followed by magnitude pruning.

An MLP (ReLU, no norm) trained with the cosine schedule ``eta_t`` by three proximal methods, each
over its own ``lambda`` grid x seeds in one ``train_grid``: ``prox_adam_l1`` (Adam's step, then
the soft threshold ``eta_t*lambda``, on every kernel), ``adamp_l1`` (ProxGen's AdamL1: the
threshold ``alpha*eta_t*lambda/D_t``, preconditioned, on every kernel) and ``adam_group_lasso``
(Adam's step, then ``prox_group_lasso`` with ``axis=0``: a hidden unit's incoming weights are one
group, thresholded at ``eta_t*lambda`` on its L2 norm; the hidden kernels only, the head's
columns being the classes). The dense baseline: ``adamw`` (``--adamw-decay``, paper form), one
run per seed, then pruned without retraining to each sparse run of the same seed: *magnitude
pruning* zeroes the globally smallest ``|w|`` over all kernels (the two hidden ones and the
head's) until the number of zeros equals the sparse run's; *unit pruning* zeroes, per hidden
layer, the incoming weights of as many units as the sparse run removed in that layer, those of
smallest incoming L2 norm.

Measured on the final params: the fraction of kernel weights that are exactly 0 (``== 0``, over
all kernels, the same denominator for every method), the fraction of removed hidden units (all
incoming weights exactly 0; both hidden layers) and the test accuracy. Run it with
``python -m examples.sparsity_frontier [--quick]``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

import optax_decay
from examples import cli, models
from examples.grid import train_grid
from examples.reporting import markdown_table, mean_pm, save_figure, spread, write_outputs

DEFAULT_STEPS, QUICK_STEPS = 1500, 100
LR, ADAMW_DECAY = 1e-3, 1e-4  # Adam's alpha for every method; AdamW's lambda (paper form)
# lambda per method, each in its own scale (the L1 thresholds are absolute per step), sized from
# a 1000-step, one-seed run over 6 values each to span a few % to nearly all zeros (units).
DECAYS = {
    "prox_adam_l1": "5e-5,1.5e-4,3e-4,6e-4",
    "adamp_l1": "3e-5,3e-4,1e-3,3e-3",
    "adam_group_lasso": "1.5e-3,2.5e-3,4e-3,6e-3",
}
QUICK_DECAYS = {
    "prox_adam_l1": "1e-4,1e-3",
    "adamp_l1": "1e-5,1e-3",
    "adam_group_lasso": "5e-3,2e-2",
}
HIDDEN = functools.partial(optax_decay.weight_decay_mask, exclude=("bias", "scale", "head"))
OPTIONS = {"adam_group_lasso": {"mask": HIDDEN}}  # the L1 methods: every kernel (default mask)
FLAGS = {"prox_adam_l1": "l1_decays", "adamp_l1": "adamp_decays"}
FLAGS |= {"adam_group_lasso": "group_decays"}


def parse_args(argv):
    parser = cli.base_parser(__doc__, DEFAULT_STEPS, QUICK_STEPS, "out/sparsity_frontier")
    add = parser.add_argument
    for name, flag in FLAGS.items():
        default = f"default {DECAYS[name]}; --quick {QUICK_DECAYS[name]}"
        add(f"--{flag.replace('_', '-')}", help=f"lambda of {name} ({default})")
    add("--adamw-decay", type=float, default=ADAMW_DECAY, help="the dense baseline's lambda")
    add("--lr", type=float, default=LR, help=f"alpha of every method (default {LR})")
    add("--width", default="256,256", help="the MLP's hidden sizes, comma-separated")
    args = cli.finish_args(parser.parse_args(argv))
    for name, flag in FLAGS.items():
        text = getattr(args, flag) or (QUICK_DECAYS if args.quick else DECAYS)[name]
        setattr(args, flag, cli.parse_floats(f"--{flag.replace('_', '-')}", text))
    args.width = cli.parse_ints("--width", args.width)
    if not 0 < args.lr < np.inf:
        raise cli.UsageError(f"`--lr` must be a positive number, got {args.lr}")
    if not 0 <= args.adamw_decay < np.inf:
        raise cli.UsageError(f"`--adamw-decay` must be a number >= 0, got {args.adamw_decay}")
    return args


def kernels(params) -> list[np.ndarray]:
    """The kernels, hidden layers first and the head last, each ``(G, in, out)``."""
    hidden = [params["layers"][i]["kernel"] for i in sorted(params["layers"])]
    return [np.asarray(k) for k in (*hidden, params["head"]["kernel"])]


def sparsity(ks: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per member: exact zeros (all kernels, and per kernel) and removed hidden units."""
    zeros = np.stack([np.sum(k == 0, axis=(1, 2)) for k in ks], axis=1)  # (G, layers)
    units = np.stack([np.all(k == 0, axis=1).sum(axis=1) for k in ks[:-1]], axis=1)
    sizes = np.array([k[0].size for k in ks])
    widths = np.array([k.shape[2] for k in ks[:-1]])
    return {
        "zero_fraction": zeros.sum(1) / sizes.sum(),
        "zero_fraction_layers": zeros / sizes,
        "zeros": zeros.sum(1),
        "removed_units": units.sum(1) / widths.sum(),
        "removed_units_layers": units,
    }


def prune_weights(ks: list[np.ndarray], count: int) -> list[np.ndarray]:
    """One member's kernels with the ``count`` globally smallest ``|w|`` set to 0."""
    flat = np.concatenate([k.ravel() for k in ks])
    flat[np.argsort(np.abs(flat), kind="stable")[:count]] = 0
    return np.split(flat, np.cumsum([k.size for k in ks])[:-1])


def prune_units(ks: list[np.ndarray], counts) -> list[np.ndarray]:
    """One member's kernels with, per hidden layer, the ``counts[l]`` units of smallest incoming
    L2 norm removed (their columns set to 0); the head unchanged."""
    out = [k.copy() for k in ks]
    for k, c in zip(out[:-1], counts, strict=True):
        k[:, np.argsort(np.linalg.norm(k, axis=0), kind="stable")[: int(c)]] = 0
    return out


@nnx.jit
def correct(model, x, y):
    return jnp.sum(jnp.argmax(model(x), axis=-1) == y)


def main(argv=None) -> dict:
    args = parse_args(argv)
    data = cli.load_data(args)
    seeds, width = args.seed_list, args.width
    make = lambda seed: models.make_model("mlp", data.image_shape, 10, seed=seed, width=width)
    run = dict(steps=args.steps, batch_size=args.batch_size, seeds=seeds)
    run |= dict(progress=not args.no_progress)
    hp = {"learning_rate": [args.lr], "weight_decay": [args.adamw_decay]}
    dense = train_grid("adamw", hp, data, make, **run)
    dense_ks, dense_stats = kernels(dense.params), sparsity(kernels(dense.params))
    records = [
        r | {"role": "dense"} | {k: np.asarray(v[i]).tolist() for k, v in dense_stats.items()}
        for i, r in enumerate(dense.records(seconds=dense.seconds))
    ]
    scratch, x, y = nnx.jit(lambda: make(args.seed))(), jnp.asarray(data.x_test), data.y_test

    def accuracy(ks: list[np.ndarray], s: int) -> float:
        """Test accuracy of the dense run of seed ``s`` with its kernels replaced by ``ks``."""
        params = jax.tree.map(lambda a: a[s], dense.params)
        shapes = [k.shape[1:] for k in dense_ks]
        ks = [jnp.asarray(k.reshape(shape)) for k, shape in zip(ks, shapes, strict=True)]
        for layer, k in zip(sorted(params["layers"]), ks[:-1], strict=True):
            params["layers"][layer]["kernel"] = k
        params["head"]["kernel"] = ks[-1]
        nnx.update(scratch, params)
        return float(correct(scratch, x, jnp.asarray(y))) / len(y)

    for name, flag in FLAGS.items():
        lams = getattr(args, flag)
        hparams = {"learning_rate": [args.lr] * len(lams), "weight_decay": lams}
        result = train_grid(name, hparams, data, make, options=OPTIONS.get(name), **run)
        stats = sparsity(kernels(result.params))
        for i, r in enumerate(result.records(seconds=result.seconds)):
            s = i % len(seeds)  # the dense run of the same seed
            r |= {"role": "sparse"} | {k: np.asarray(v[i]).tolist() for k, v in stats.items()}
            own = [k[s] for k in dense_ks]
            r["pruned_accuracy"] = accuracy(prune_weights(own, r["zeros"]), s)
            r["unit_pruned_accuracy"] = accuracy(prune_units(own, r["removed_units_layers"]), s)
            records.append(r)
    summary = summarize(records, args)
    write_outputs(args.out, cli.config_of(args), records, summary)
    plot(records, args)
    print(summary)
    return {"results": records}


def groups(records, num_seeds):
    """The sparse records of one (method, lambda), seeds in order, in the run's order."""
    sparse = [r for r in records if r["role"] == "sparse"]
    return [sparse[i : i + num_seeds] for i in range(0, len(sparse), num_seeds)]


def summarize(records, args) -> str:
    num_seeds = len(args.seed_list)
    dense = [r for r in records if r["role"] == "dense"]
    columns = [  # header, record key, number format
        ("zeros (kernels)", "zero_fraction", ".4f"),
        ("removed units", "removed_units", ".4f"),
        ("test acc.", "test_accuracy", ".4f"),
        ("AdamW, magnitude-pruned to the same zeros", "pruned_accuracy", ".4f"),
        ("AdamW, unit-pruned to the same units", "unit_pruned_accuracy", ".4f"),
    ]
    rows = [
        {"method": g[0]["optimizer"], "λ": format(g[0]["weight_decay"], ".3g")}
        | {h: mean_pm([r[k] for r in g], f) for h, k, f in columns}
        for g in groups(records, num_seeds)
    ]
    names = [f"layer {i}" for i in range(len(args.width))] + ["head"]
    layers = [
        {"method": g[0]["optimizer"], "λ": format(g[0]["weight_decay"], ".3g")}
        | {
            f"zeros, {n}": mean_pm([r["zero_fraction_layers"][j] for r in g], ".4f")
            for j, n in enumerate(names)
        }
        | {
            f"removed units, {n}": mean_pm([r["removed_units_layers"][j] for r in g], ".1f")
            for j, n in enumerate(names[:-1])
        }
        for g in groups(records, num_seeds)
    ]
    train_s = sum({r["optimizer"]: r["seconds"] for r in records}.values())
    return (
        f"# The sparsity frontier\n\n"
        f"{args.dataset}, MLP {args.width}, {args.steps} steps of batch {args.batch_size}, "
        f"α = {args.lr:g}, cosine schedule, seeds {args.seed_list} (mean ± std); λ in each "
        f"method's own convention. Dense baseline: adamw, λ = {args.adamw_decay:g} (paper form), "
        f"test acc. {mean_pm([r['test_accuracy'] for r in dense])}, zeros "
        f"{mean_pm([r['zero_fraction'] for r in dense])}. Pruned baselines: not retrained. "
        f"Training: {train_s:.0f} s.\n\n"
        f"{markdown_table(rows)}\n\n"
        f"Per kernel: fraction of zeros; per hidden layer: removed units (of {args.width}).\n\n"
        f"{markdown_table(layers)}\n"
    )


def _errorbar(ax, g_list, xkey, ykey, **style):
    """One line: a point per group, mean ± std over seeds in x and y, sorted by x."""
    xs = np.array([spread([r[xkey] for r in g]) for g in g_list])  # (points, 2)
    ys = np.array([spread([r[ykey] for r in g]) for g in g_list])
    order = np.argsort(xs[:, 0])
    xs, ys = xs[order], ys[order]
    ax.errorbar(xs[:, 0], ys[:, 0], xerr=xs[:, 1], yerr=ys[:, 1], capsize=3, **style)


def plot(records, args) -> None:
    """Test accuracy against the fraction of zero weights (left) and of removed units (right)."""
    gs, dense = groups(records, len(args.seed_list)), [r for r in records if r["role"] == "dense"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    for ax, xkey, pruned, label in (
        (axes[0], "zero_fraction", "pruned_accuracy", "AdamW + magnitude pruning"),
        (axes[1], "removed_units", "unit_pruned_accuracy", "AdamW + unit pruning"),
    ):
        for j, name in enumerate(FLAGS):
            mine = [g for g in gs if g[0]["optimizer"] == name]
            _errorbar(ax, mine, xkey, "test_accuracy", label=name, marker="o", color=f"C{j}")
        # The pruned baseline at the sparsity of every sparse run, of every method.
        _errorbar(ax, gs, xkey, pruned, label=f"{label} (no retraining)", marker="s", color="k")
        mean, std = spread([r["test_accuracy"] for r in dense])
        ax.axhspan(mean - std, mean + std, color="0.8", alpha=0.5)
        ax.axhline(mean, color="0.4", ls=":", label=f"AdamW dense (λ = {args.adamw_decay:g})")
        ax.set(ylabel="test accuracy", ylim=(max(0.0, ax.get_ylim()[0]), None))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    axes[0].set(xlabel="fraction of kernel weights exactly 0", title="weights")
    axes[1].set(xlabel="fraction of hidden units removed (incoming weights all 0)", title="units")
    fig.suptitle(
        f"{args.dataset}, MLP {args.width}, {args.steps} steps: {len(args.seed_list)} seeds, "
        f"mean ± std in x and y"
    )
    save_figure(fig, args.out / "sparsity_frontier.png", 100)


if __name__ == "__main__":
    cli.run_cli(main)

"""Fine-tuning with decay toward the pre-trained point: does it keep the old classes, and the new?

One pre-training run per seed (Adam, no decay) on the images of classes 0-4, then one fine-tuning
``train_grid`` per method and center on ``--finetune-size`` images of classes 5-9, over a decay
grid x seeds; every member starts from its seed's pre-trained weights. Methods: ``adam_l2`` (the
penalty ``(lambda/2)||w - c||^2`` through Adam's denominator; with ``c`` the pre-trained weights
this is L2-SP) and ``adamw`` (decoupled: ``w - c`` shrinks by ``eta_t*lambda`` per step); centers
``c = 0`` and ``c = w_pre`` (``center="init"``: the fine-tuning's init is ``w_pre``). The Adam pair,
not the SGD pair: with heavy-ball SGD, L2 and decoupled decay are the same update up to a constant
(``optimizers.to_paper``), so only Adam separates them. The mask decays the kernels, the head's
included: the head is one 10-way ``Linear``, part of the center like every other kernel; biases are
neither decayed nor centered. Paper-form methods get ``lambda = k/(0.5*steps)`` (a shrink of
``w - c`` by ``e^-k``) per ``--decay-folds`` ``k``; the others ``--l2-decays``.

Measured per member: new accuracy (test images of classes 5-9, argmax over logits 5-9), old accuracy
(test images of classes 0-4, argmax over logits 0-4 of the fine-tuned network, the old head rows as
they are after fine-tuning: nothing frozen, no probe), the 10-way accuracy on the new classes
(``test_accuracy``) and ``||w - w_pre||`` over the decayed kernels. Run it with
``python -m examples.finetune_center [--quick]``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

from examples import cli, grid, models, optimizers
from examples.optimizers import METHODS
from examples.reporting import markdown_table, mean_pm, plot_seeds, save_figure, write_outputs

DEFAULT_STEPS, QUICK_STEPS = 600, 100  # fine-tuning steps
PRETRAIN_STEPS, QUICK_PRETRAIN = 2000, 300
FOLDS, L2_DECAYS = "0,0.3,1,3,10", "0,1e-3,1e-2,1e-1,1"
PRETRAIN_LR, OLD, NEW = 1e-3, range(0, 5), range(5, 10)  # pre-training: Adam, no decay
CENTERS = {"zero": {}, "pretrained": {"center": "init"}}  # the optimizer's `center` option


def parse_args(argv):
    parser = cli.base_parser(__doc__, DEFAULT_STEPS, QUICK_STEPS, "out/finetune_center")
    add = parser.add_argument
    add("--optimizers", default="adam_l2,adamw", help=f"comma-separated, from {', '.join(METHODS)}")
    add("--decay-folds", default=FOLDS, help="paper-form methods: lambda = k/(0.5*steps)")
    add("--l2-decays", default=L2_DECAYS, help="methods without a paper form (adam_l2, adamp)")
    add("--lr", type=float, default=PRETRAIN_LR, help="alpha of the fine-tuning (Adam's: 1e-3)")
    add("--pretrain-steps", type=int, help=f"default {PRETRAIN_STEPS}; --quick {QUICK_PRETRAIN}")
    add("--finetune-size", type=int, help="new-class training images (default 1000; --quick 200)")
    add("--width", default="256,256", help="the MLP's hidden sizes, comma-separated")
    args = cli.finish_args(parser.parse_args(argv))
    args.optimizers = cli.parse_names("--optimizers", args.optimizers, METHODS)
    args.decay_folds = cli.parse_floats("--decay-folds", args.decay_folds)
    args.l2_decays = cli.parse_floats("--l2-decays", args.l2_decays)
    args.width = cli.parse_ints("--width", args.width)
    if args.pretrain_steps is None:
        args.pretrain_steps = QUICK_PRETRAIN if args.quick else PRETRAIN_STEPS
    if args.finetune_size is None:
        args.finetune_size = 200 if args.quick else 1000
    cli.check_positive(args, "pretrain_steps", "finetune_size")
    if not 0 < args.lr < np.inf:
        raise cli.UsageError(f"`--lr` must be a positive number, got {args.lr}")
    return args


def split(data, classes, size=None, seed=0):
    """The images of ``classes`` (labels kept); ``size``: a random subset of their train split."""
    keep, test = np.flatnonzero(np.isin(data.y_train, classes)), np.isin(data.y_test, classes)
    if size is not None and size > len(keep):
        raise cli.UsageError(f"`--finetune-size` {size} > the {len(keep)} new-class images")
    if size is not None:
        keep = np.sort(np.random.default_rng(seed).permutation(keep)[:size])
    arrays = {f"{k}_train": getattr(data, f"{k}_train")[keep] for k in "xy"}
    arrays |= {f"{k}_test": getattr(data, f"{k}_test")[test] for k in "xy"}
    return dataclasses.replace(data, **arrays)


@nnx.jit
def logits(model, x):
    return model(x)


def accuracies(scratch, params, old, new) -> dict[str, float]:
    """Old and new accuracy: on the test images of OLD (NEW), argmax over logits OLD (NEW)."""
    nnx.update(scratch, params)
    out = {}
    for key, data, c in (("old_accuracy", old, OLD), ("new_accuracy", new, NEW)):
        pred = jnp.argmax(logits(scratch, jnp.asarray(data.x_test))[:, c.start : c.stop], -1)
        out[key] = float(np.mean(np.asarray(pred) + c.start == data.y_test))
    return out


def tree_at(params, i):
    return jax.tree.map(lambda a: a[i], params)


def distance(params, reference) -> float:
    """``||w - w_ref||`` over the decayed leaves (the kernels, the head's included)."""
    return float(models.decayed_norm(jax.tree.map(lambda a, b: a - b, params, reference)))


def main(argv=None) -> dict:
    args = parse_args(argv)
    data = cli.load_data(args)
    old, new = split(data, OLD), split(data, NEW, args.finetune_size, args.seed)
    seeds, width = args.seed_list, args.width
    make = lambda seed: models.make_model("mlp", data.image_shape, 10, seed=seed, width=width)
    run = dict(batch_size=args.batch_size, seeds=seeds, progress=not args.no_progress)
    hp = {"learning_rate": [PRETRAIN_LR], "weight_decay": [0.0]}  # Adam: adamw without decay
    pre = grid.train_grid("adamw", hp, old, make, steps=args.pretrain_steps, **run)
    scratch, index, pick = nnx.jit(lambda: make(args.seed))(), jnp.asarray(seeds), tree_at
    stacked = jax.tree.map(jnp.asarray, pre.params)  # (S, ...): seed i's pre-trained weights

    def from_pretrained(seed):  # a traced seed: its own pre-trained weights
        model = make(seed)
        nnx.update(model, jax.tree.map(lambda a: a[jnp.argmax(index == seed)], stacked))
        return model

    reference = [accuracies(scratch, pick(pre.params, s), old, new) for s in range(len(seeds))]
    records = []
    for name in args.optimizers:
        lr = args.lr
        paper = [optimizers.from_paper(name, 2 * k / args.steps, lr) for k in args.decay_folds]
        decays = args.l2_decays if None in paper else paper
        hparams = {"learning_rate": [lr] * len(decays), "weight_decay": decays}
        for center, options in CENTERS.items():
            run |= dict(steps=args.steps, options=options)
            result = grid.train_grid(name, hparams, new, from_pretrained, **run)
            for i, r in enumerate(result.records(center=center, seconds=result.seconds)):
                s, params = i % len(seeds), pick(result.params, i)
                r["paper_weight_decay"] = optimizers.to_paper(name, r["weight_decay"], lr)
                r |= accuracies(scratch, params, old, new)
                r["distance_to_pretrained"] = distance(params, pick(pre.params, s))
                r["pretrained_old_accuracy"] = reference[s]["old_accuracy"]
                records.append(r)
    pretrain = {"seconds": pre.seconds, "train_loss": pre.train_loss.tolist()}
    pretrain |= {k: [ref[k] for ref in reference] for k in reference[0]}
    summary = summarize(records, pretrain, args)
    write_outputs(args.out, cli.config_of(args), records, summary, extra={"pretrain": pretrain})
    plot(records, args)
    print(summary)
    return {"results": records, "pretrain": pretrain}


def groups(records, num_seeds):
    """The records of one (optimizer, center, decay), seeds in order, in the run's order."""
    return [records[i : i + num_seeds] for i in range(0, len(records), num_seeds)]


def summarize(records, pretrain, args) -> str:
    columns = [  # header, record key, number format
        ("new acc. (5-9)", "new_accuracy", ".4f"),
        ("old acc. (0-4)", "old_accuracy", ".4f"),
        ("new acc. (10-way)", "test_accuracy", ".4f"),
        ("‖w - w_pre‖", "distance_to_pretrained", ".3g"),
        ("train loss (last 10%)", "train_loss", ".3g"),
    ]
    rows = [
        {
            "optimizer": g[0]["optimizer"],
            "center": g[0]["center"],
            "λ": format(g[0]["weight_decay"], ".3g"),
        }
        | {h: mean_pm([r[k] for r in g], f) for h, k, f in columns}
        for g in groups(records, len(args.seed_list))
    ]
    pre = {k: mean_pm(pretrain[f"{k}_accuracy"]) for k in ("old", "new")}
    return (
        f"# Fine-tuning with decay toward the pre-trained point\n\n"
        f"{args.dataset}, MLP {args.width}: pre-training {args.pretrain_steps} steps on classes "
        f"0-4 ({pretrain['seconds']:.0f} s), fine-tuning {args.steps} steps on "
        f"{args.finetune_size} images of classes 5-9, batch {args.batch_size}, λ in each "
        f"method's own convention, seeds {args.seed_list} (mean ± std).\n\n"
        f"| pre-trained | old acc. (0-4) | new acc. (5-9) |\n|---|---|---|\n"
        f"| before fine-tuning | {pre['old']} | {pre['new']} |\n\n{markdown_table(rows)}\n"
    )


def plot(records, args) -> None:
    """Per method: new and old accuracy (top) and ``||w - w_pre||`` (bottom) against lambda."""
    num_seeds, names = len(args.seed_list), args.optimizers
    fig, axes = plt.subplots(
        2, len(names), figsize=(6 * len(names), 8), squeeze=False, layout="constrained"
    )
    for j, name in enumerate(names):
        for center, style in (("zero", "--"), ("pretrained", "-")):
            gs = [
                g
                for g in groups(records, num_seeds)
                if g[0]["optimizer"] == name and g[0]["center"] == center
            ]
            x = np.arange(len(gs))
            for key, c in (("new_accuracy", "C0"), ("old_accuracy", "C1")):
                values = [[r[key] for r in g] for g in gs]
                plot_seeds(
                    axes[0, j], x, values, label=f"{key[:3]}, c = {center}", ls=style, color=c
                )
            values = [[r["distance_to_pretrained"] for r in g] for g in gs]
            plot_seeds(axes[1, j], x, values, label=f"c = {center}", ls=style, color="C2")
        for ax, title in zip(
            axes[:, j], ("test accuracy per seed", "‖w - w_pre‖ (kernels)"), strict=True
        ):
            ax.set(title=f"{name}: {title}", xlabel="λ", xticks=x)
            ax.set_xticklabels([format(g[0]["weight_decay"], ".3g") for g in gs])
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"{args.dataset}: fine-tuning on {args.finetune_size} images of classes 5-9")
    save_figure(fig, args.out / "finetune_center.png", 100)


if __name__ == "__main__":
    cli.run_cli(main)

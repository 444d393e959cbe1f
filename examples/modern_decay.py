"""Modern decay rules: does the gradient norm rise near the end of a cosine schedule with AdamW,
and does AdamC (corrected decay) remove the rise (Defazio 2025, arXiv 2506.02285)?

A CNN (Conv3x3-BatchNorm-ReLU-pool x 2, then a Linear head) on Fashion-MNIST with the cosine
schedule ``eta_t``, trained by ``adamw``, ``adamw_cautious`` (``cautious=True``),
``adamw_corrected`` (``corrected=True``) and ``prox_adam`` over a small learning rate x lambda
grid, one ``train_grid`` per method with the seeds as one more vmapped axis. ``lambda`` is in
the paper form for all four (the weights shrink by ``eta_t*lambda`` per step; corrected:
``eta_t*lambda*gamma_t/gamma_max = lambda*eta_t^2``, ``gamma_max`` = the member's learning rate,
since ``eta_t`` peaks at 1), the same values for every method. Masks: ``adamw``,
``adamw_cautious`` and ``prox_adam`` keep the framework's default ``weight_decay_mask`` (every
kernel: both conv kernels and the head's); ``adamw_corrected`` decays exactly the leaves
``layers/0/kernel`` and ``layers/1/kernel``, the conv kernels each followed by a BatchNorm
(``weight_decay_multipliers``), and nothing else: the head, biases and norm scales are undecayed
(Defazio keeps plain AdamW decay on the other layers; one optimizer here has one rule). The two
variants are ``adamw`` with options (``RULES``), not ``optimizers.METHODS`` entries.

Measured per member: test accuracy (BatchNorm running averages), train loss (last 10%), the
final norm of all kernels (``weight_norm``) and of the conv kernels, and the global L2 norm of
the loss gradient on the training batch, before the optimizer, every ``--grad-every`` steps.
The run is cut into ten equal windows (deciles of the steps); ``grad_mid`` is the lowest
window mean among windows 3-8 (20-80% of the steps), ``grad_late`` the mean of window 10 (the
last 10%), and ``grad_rise = grad_late / grad_mid`` (> 1: the gradient norm rises at the end).
Run: ``python -m examples.modern_decay [--quick]``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

import optax_decay
from examples import cli, models, optimizers
from examples.grid import train_grid
from examples.reporting import markdown_table, mean_pm, plot_seeds, save_figure, write_outputs

# Sized for about 12 min alone on 2 CPU cores (estimated from a timed 60-step run): the vmapped
# CNN grid costs about 1 s of CPU per step at batch 64; --quick: digits.
DEFAULT_STEPS, QUICK_STEPS, BATCH = 300, 200, 64
LRS, QUICK_LRS = "1e-3,3e-3", "3e-3"  # alpha
DECAYS, QUICK_DECAYS = "2e-3,8e-3", "1e-3,4e-3"  # lambda, paper form: settles in ~1/(2*lambda)
NORMALIZED = optax_decay.weight_decay_multipliers([(r"layers/\d+/kernel", 1.0)])
# name -> (optimizers.METHODS key, its options); all four take lambda in the paper form
RULES = {
    "adamw": ("adamw", {}),
    "adamw_cautious": ("adamw", {"cautious": True}),
    "adamw_corrected": (
        "adamw",
        {"corrected": True, "mask": NORMALIZED, "peak_learning_rate": 1.0},
    ),
    "prox_adam": ("prox_adam", {}),
}
WINDOWS, MIDDLE = 10, slice(2, 8)  # deciles of the run; the middle: windows 3-8 (20-80%)
KEYS = ("test_accuracy", "weight_norm", "conv_kernel_norm", "grad_rise")


def parse_args(argv: list[str] | None):
    parser = cli.base_parser(__doc__, DEFAULT_STEPS, QUICK_STEPS, "out/modern_decay")
    add = parser.add_argument
    add("--optimizers", default=",".join(RULES), help="comma-separated, from the default")
    add("--learning-rates", help=f"alpha, the peak step size (default {LRS}; --quick {QUICK_LRS})")
    add("--weight-decays", help=f"lambda, paper form (default {DECAYS}; --quick {QUICK_DECAYS})")
    parser.set_defaults(batch_size=BATCH)
    add("--width", default="8,16", help="the CNN's channels, comma-separated")
    add("--grad-every", type=int, help="record the gradient norm every this many steps")
    args = cli.finish_args(parser.parse_args(argv))
    args.optimizers = cli.parse_names("--optimizers", args.optimizers, RULES)
    lrs = args.learning_rates or (QUICK_LRS if args.quick else LRS)
    args.learning_rates = cli.parse_floats("--learning-rates", lrs, positive=True)
    wds = args.weight_decays or (QUICK_DECAYS if args.quick else DECAYS)
    args.weight_decays = cli.parse_floats("--weight-decays", wds)
    args.width = cli.parse_ints("--width", args.width)
    if args.grad_every is None:
        args.grad_every = max(1, args.steps // 200)
    if not 1 <= args.grad_every <= args.steps // WINDOWS:
        raise cli.UsageError(f"`--grad-every` must be in [1, --steps/{WINDOWS}]")
    return args


def rise(grad_norm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(grad_mid, grad_late)`` per member from ``(records, G)`` norms (module docstring)."""
    windows = np.stack([w.mean(0) for w in np.array_split(grad_norm, WINDOWS)])
    return windows[MIDDLE].min(0), windows[-1]


def run(name: str, args, data, model_fn):
    points = [(lr, wd) for lr in args.learning_rates for wd in args.weight_decays]
    method, options = RULES[name]
    lrs = [lr for lr, _ in points]
    wds = [optimizers.from_paper(method, wd, lr) for lr, wd in points]  # paper form -> own
    hparams = {"learning_rate": lrs, "weight_decay": wds}
    if options.get("corrected"):  # gamma_max: the member's alpha (eta_t peaks at 1)
        hparams["peak_learning_rate"] = lrs
    result = train_grid(
        method,
        hparams,
        data,
        model_fn,
        steps=args.steps,
        batch_size=args.batch_size,
        seeds=args.seed_list,
        options=options,
        grad_norm_every=args.grad_every,
        progress=not args.no_progress,
    )
    grad = result.history["grad_norm"]  # (records, G)
    mid, late = rise(grad)
    conv = np.sqrt(
        sum(
            np.sum(layer["kernel"] ** 2, axis=(1, 2, 3, 4))
            for layer in result.params["layers"].values()
        )
    )
    records = result.records(steps=args.steps, grad_every=args.grad_every)
    for i, r in enumerate(records):
        r.update(optimizer=name, method=method, **{k: v for k, v in options.items() if v is True})
        r["paper_weight_decay"] = optimizers.to_paper(method, r["weight_decay"], r["learning_rate"])
        r.update(conv_kernel_norm=float(conv[i]), grad_mid=float(mid[i]), grad_late=float(late[i]))
        r["grad_rise"] = float(late[i] / mid[i])
    steps = args.grad_every * np.arange(1, len(grad) + 1)
    return records, {"steps": steps.tolist(), "grad_norm": grad.tolist(), "seconds": result.seconds}


def plot(records: list[dict], history: dict, args) -> None:
    """grad_norm.png: the gradient norm over training per grid point, a line per seed;
    vs_lambda.png: accuracy, norms and the rise per lambda, one column per learning rate."""
    num_seeds, lrs, wds = len(args.seed_list), args.learning_rates, args.weight_decays
    shape = (len(lrs), len(wds))
    fig, axes = plt.subplots(*shape, figsize=(6 * len(wds), 4 * len(lrs)), squeeze=False)
    for k, (name, h) in enumerate(history.items()):
        grad, color = np.reshape(h["grad_norm"], (len(h["steps"]), *shape, num_seeds)), f"C{k}"
        for (i, j), ax in np.ndenumerate(axes):
            labels = [name] + ["_"] * (num_seeds - 1)
            ax.plot(h["steps"], grad[:, i, j], color=color, lw=0.8, alpha=0.8, label=labels)
            ax.set(title=f"α = {lrs[i]:g}, λ = {wds[j]:g}", xlabel="step", yscale="log")
    axes[0, 0].set_ylabel("gradient norm (global L2)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"gradient norm, {args.dataset}, {args.steps} steps, one line per seed")
    fig.tight_layout()
    save_figure(fig, args.out / "grad_norm.png", 100)
    fig, axes = plt.subplots(
        len(KEYS), len(lrs), figsize=(5 * len(lrs), 3.2 * len(KEYS)), squeeze=False
    )
    for k, name in enumerate(history):
        rows = [r for r in records if r["optimizer"] == name]
        for key, row in zip(KEYS, axes, strict=True):
            values = np.reshape([r[key] for r in rows], (*shape, num_seeds))
            for i, ax in enumerate(row):
                x = np.arange(len(wds)) + 0.05 * (k - 1.5)
                plot_seeds(ax, x, values[i], label=name, color=f"C{k}", fmt="o-")
                ax.set(title=f"{key}, α = {lrs[i]:g}", xticks=range(len(wds)), xlabel="λ")
                ax.set_xticklabels([f"{wd:g}" for wd in wds])
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, args.out / "vs_lambda.png", 100)


def summarize(records: list[dict], args) -> str:
    columns = [  # header, record key, number format
        ("test accuracy", "test_accuracy", ".4f"),
        ("train loss (last 10%)", "train_loss", ".3f"),
        ("‖w‖ all kernels", "weight_norm", ".3g"),
        ("‖w‖ conv kernels", "conv_kernel_norm", ".3g"),
        ("grad norm mid (min window)", "grad_mid", ".3g"),
        ("grad norm last 10%", "grad_late", ".3g"),
        ("rise: last / mid", "grad_rise", ".3f"),
    ]
    n = len(args.seed_list)
    rows = [
        {"optimizer": records[i]["optimizer"], "α": f"{records[i]['learning_rate']:g}"}
        | {"λ": f"{records[i]['weight_decay']:g}"}
        | {h: mean_pm([r[k] for r in records[i : i + n]], f) for h, k, f in columns}
        for i in range(0, len(records), n)
    ]
    return (
        f"# Modern decay rules: gradient norm at the end of a cosine schedule\n\n"
        f"{args.dataset}, CNN {args.width} with BatchNorm, {args.steps} steps of batch "
        f"{args.batch_size}, seeds {args.seed_list} (mean ± std); λ paper form; gradient norm "
        f"every {args.grad_every} steps; mid: the lowest mean of the 10%-windows in 20-80% of "
        f"the steps.\n\n{markdown_table(rows)}\n"
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    data = cli.load_data(args)
    model_fn = models.factory("cnn", data, norm="batch", width=args.width)
    records, history = [], {}
    for name in args.optimizers:
        recs, history[name] = run(name, args, data, model_fn)
        records += recs
    summary = summarize(records, args)
    write_outputs(args.out, cli.config_of(args), records, summary, extra={"history": history})
    plot(records, history, args)
    print(summary)
    return {"results": records, "history": history}


if __name__ == "__main__":
    cli.run_cli(main)

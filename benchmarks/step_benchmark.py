"""Step-time benchmark of every optax_decay optimizer against ``optax.adamw``.

An optimizer step is elementwise and memory bound, so each optimizer is timed
against the bandwidth the device actually delivers in the same run. The timing
is ``harness.Runner``'s, shared with ``train_step_benchmark.py``:

* **in-jit** (headline): one jitted function runs ``K`` steps of
  ``tx.update`` + ``optax.apply_updates`` inside a ``jax.lax.fori_loop`` with a
  fixed gradient tree, params and state donated. Seconds per step = time / K.
  The fixed gradients pass through a ``jax.lax.optimization_barrier`` together
  with the loop carry: otherwise XLA hoists gradient-only work
  (``g*g``, ``(1 - b1)*g``) out of the loop as loop invariant, adds buffers to
  the loop carry and times something that is not a training step.
* **per call**: a jitted, donated single step called ``K`` times from Python,
  so dispatch overhead (per leaf, per call) is included.
* **roofline**: ``x * 1.0000001`` over a flat fp32 array with as many elements
  as the param tree, ``K`` times inside a ``fori_loop`` (donated), gives the
  bandwidth ``2 * 4 * N / time``. An optimizer that moves ``B`` bytes per
  parameter per step (params read + write, grads read, each state leaf read
  + write) cannot be faster than ``B * N / bandwidth``; ``x roofline`` is the
  measured time over that bound.

* **flat path**: every optimizer again on ``optax_decay.flat_layout`` buffers
  (one 1-D fp32 array holding the whole tree), rows marked ``[flat]``; the
  ``adamw [flat+mask]`` row decays every other leaf through ``layout.mask``
  (an iota compare fused into the update), and ``adamw [flat+multipliers]``
  decays them with multipliers 2 and 1 (a constant per segment of the buffer,
  selected by iota compares). ``x optax.adamw`` always divides by
  the tree-path ``optax.adamw``.
* **optax.flatten(optax.adamw)**: Optax's own answer to many leaves, the peer
  of the flat path, on the tree path only: it concatenates params and grads
  into one vector and splits the update back into the tree at every step. Its
  ``bytes/param`` (and so its roofline) counts what ``optax.adamw`` moves,
  not the concatenations and the split: their traffic shows in its
  ``x roofline``. ``--no-tree`` keeps it, with ``optax.adamw``, on the tree path.

Every repeat runs every optimizer once, round robin, so that machine noise
hits all alike; times are medians over repeats (minima are in the JSON).
``x optax.adamw (paired)`` is the median over repeats of the ratio to the
``optax.adamw`` timing of the same round, which a machine that slows down
between rounds does not bias.

Usage::

  python benchmarks/step_benchmark.py                # all trees, default sizes
  python benchmarks/step_benchmark.py --trees gpt2 --steps 50 --repeats 9
  python benchmarks/step_benchmark.py --quick        # smoke test, seconds

The default ``--scale`` is 1.0 on an accelerator and 0.05 on the CPU: it
multiplies the leading dimension of every leaf (at least one row), leaf
counts stay fixed. Results go to ``--out`` (``results.json``, ``results.md``);
the markdown tables are also printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

import optax_decay
from benchmarks.harness import MODES, Runner, report_header, time_round_robin, write_report

TREES = ("one_leaf", "gpt2", "many_leaves")
REFERENCE = "optax.adamw"
# Optax's flattening wrapper, the peer of the flat path: on the tree path only
# (flattening one flat buffer is a no-op), and kept by --no-tree with REFERENCE.
FLATTEN = "optax.flatten(optax.adamw)"

LEARNING_RATE = 1e-3
WEIGHT_DECAY_PAPER = 1e-4  # paper convention (not multiplied by the learning rate)
WEIGHT_DECAY_COUPLED = 0.1  # PyTorch / optax.adamw convention
COSINE = optax.cosine_decay_schedule(1.0, 10_000)  # the eta_t of the corrected row


# --------------------------------------------------------------------------- optimizers


def optimizers(
    lr: float = LEARNING_RATE,
    wd: float = WEIGHT_DECAY_PAPER,
    wd_coupled: float = WEIGHT_DECAY_COUPLED,
) -> dict[str, optax.GradientTransformation]:
    """Every optimizer of the package, no mask, plus ``optax.adamw`` and its flattened form."""
    return {
        "sgd_l2": optax_decay.sgd_l2(lr, wd),
        "sgdw": optax_decay.sgdw(lr, wd),
        "adam_l2": optax_decay.adam_l2(lr, wd),
        "adamw": optax_decay.adamw(lr, wd),
        "adamw(coupled=True)": optax_decay.adamw(lr, wd_coupled, coupled=True),
        "prox_adam": optax_decay.prox_adam(lr, wd),
        "adamp": optax_decay.adamp(lr, wd),
        # The options of issue 12, each against adamw: the same bytes, except center="init"
        # (+4 B/param read: 32 instead of 28 in float32).
        "adamw(cautious=True)": optax_decay.adamw(lr, wd, cautious=True),
        "adamw(corrected=True)": optax_decay.adamw(lr, wd, corrected=True, schedule=COSINE),
        "adamw(mask=multipliers)": optax_decay.adamw(lr, wd, mask=alternate_multipliers),
        'adamw(center="init")': optax_decay.adamw(lr, wd, center="init"),
        # Issue 13. The L1 prox and AdamL1 are elementwise (28 B/param); a norm per leaf
        # (group lasso, CPR, the projection) or a global mean (adams) needs a reduction
        # before the update can be written: REDUCTION_BYTES counts the extra pass.
        'prox_adam(penalty="l1")': optax_decay.prox_adam(lr, wd, penalty="l1"),
        'adamp(penalty="l1")': optax_decay.adamp(lr, wd, penalty="l1"),
        "adam+prox_group_lasso": optax.chain(
            optax_decay.scale_by_adam(),
            optax.scale_by_learning_rate(lr),
            optax_decay.prox_group_lasso(wd),
        ),
        "adams": optax_decay.adams(lr, wd_coupled),
        "adamcpr": optax_decay.adamcpr(lr, "dependent", 1.0),
        "adamw+project_to_norm": optax.chain(
            optax_decay.adamw(lr, wd), optax_decay.project_to_norm()
        ),
        REFERENCE: optax.adamw(lr, weight_decay=wd_coupled),
        FLATTEN: optax.flatten(optax.adamw(lr, weight_decay=wd_coupled)),
    }


# Extra bytes per parameter of a reduction pass before the update (float32). A norm per leaf
# of z = w + u: read w, mu and nu again (the new moments, written by the first pass) to
# form z = 12 B; the global mean of vhat (adams): read g and nu again to form vhat = 8 B.
REDUCTION_BYTES = {
    "adam+prox_group_lasso": 12,
    "adamcpr": 12,
    "adamw+project_to_norm": 12,
    "adams": 8,
}


# --------------------------------------------------------------------------- param trees


def _is_shape(x: Any) -> bool:
    return isinstance(x, tuple) and all(isinstance(d, int) for d in x)


def gpt2_shapes(d: int = 768, vocab: int = 50257, ctx: int = 1024, layers: int = 12) -> dict:
    """GPT-2 small: 148 leaves, 124,439,808 params."""

    def ln():
        return {"scale": (d,), "bias": (d,)}

    def block():
        return {
            "ln_1": ln(),
            "attn": {
                "c_attn": {"w": (d, 3 * d), "b": (3 * d,)},
                "c_proj": {"w": (d, d), "b": (d,)},
            },
            "ln_2": ln(),
            "mlp": {
                "c_fc": {"w": (d, 4 * d), "b": (4 * d,)},
                "c_proj": {"w": (4 * d, d), "b": (d,)},
            },
        }

    tree = {"wte": (vocab, d), "wpe": (ctx, d)}
    tree.update({f"h{i:02d}": block() for i in range(layers)})
    tree["ln_f"] = ln()
    return tree


def tree_shapes(name: str, gpt2_layers: int = 12, many_leaves: int = 2000) -> Any:
    if name == "one_leaf":
        return {"w": (162_031, 768)}  # the gpt2-small parameter count in one leaf
    if name == "gpt2":
        return gpt2_shapes(layers=gpt2_layers)
    if name == "many_leaves":
        return {f"p{i:04d}": (65_536,) for i in range(many_leaves)}
    raise ValueError(f"unknown tree {name!r}; choose from {TREES}")


def scale_shapes(shapes: Any, scale: float) -> Any:
    """Scales the leading dimension of every leaf (at least 1 row)."""
    return jax.tree.map(lambda s: (max(1, round(s[0] * scale)),) + s[1:], shapes, is_leaf=_is_shape)


def random_tree(shapes: Any, seed: int, std: float) -> Any:
    """A host (numpy) tree: no per-shape compiles; ``device_put`` gives fresh buffers."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: std * rng.standard_normal(s, dtype=np.float32), shapes, is_leaf=_is_shape
    )


def bytes_per_param(runner: Runner) -> float:
    """Bytes moved per parameter per step: params r+w, grads r, state arrays r+w (a center r).

    For ``optax.flatten`` this is the traffic of the inner ``optax.adamw`` (its
    state is flat, same size): the concatenation of params and grads into one
    vector and the split of the update, each step, are not counted.
    """
    (params, state), grads = runner.carry, runner.data
    n = optax.tree.size(params)
    nbytes = lambda t: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(t))
    # scalar state (step counts) is a few bytes per step, not per parameter.
    state_arrays = [x for x in jax.tree.leaves(state) if x.ndim > 0]
    # A decay center (center="init") is read, never written.
    centers = [
        s.center
        for s in jax.tree.leaves(state, is_leaf=lambda s: hasattr(s, "center"))
        if hasattr(s, "center")
    ]
    return (2 * nbytes(params) + nbytes(grads) + 2 * nbytes(state_arrays) - nbytes(centers)) / n


# --------------------------------------------------------------------------- runners


def optimizer_runner(tx: optax.GradientTransformation, host_params, grads, steps) -> Runner:
    """``tx.update`` + ``optax.apply_updates``; carry ``(params, state)``, data the grads."""

    def step(carry, grads):
        params, state = carry
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = jax.device_put(host_params)  # fresh buffers per optimizer
    return Runner(step, (params, tx.init(params)), grads, steps)


def roofline_runner(n: int, steps: int) -> Runner:
    """``x * 1.0000001`` on a flat fp32 array of ``n`` elements: 8 bytes per element."""
    return Runner(lambda x, _: x * jnp.float32(1.0000001), jnp.ones((n,), jnp.float32), None, steps)


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def alternate_multipliers(params: Any) -> Any:
    """Multipliers 2 and 1 of lambda on alternate leaves (one per buffer on flat params)."""
    leaves, treedef = jax.tree.flatten(params)
    return jax.tree.unflatten(treedef, [2.0 if i % 2 == 0 else 1.0 for i in range(len(leaves))])


def alternate_mask(params: Any) -> Any:
    """Decays every other leaf (in tree order): the flat layout must regroup them."""
    leaves, treedef = jax.tree.flatten(params)
    return jax.tree.unflatten(treedef, [i % 2 == 0 for i in range(len(leaves))])


def flat_runners(host_params, grads, txs, steps) -> dict[str, Runner]:
    """Every optimizer but ``FLATTEN`` on the flat buffers of ``host_params``, plus masked AdamW."""
    layout = optax_decay.flat_layout(host_params, mask=alternate_mask)
    flat_host = jax.tree.map(np.asarray, layout.ravel(host_params))
    flat_grads = layout.ravel(grads)
    runners = {
        f"{opt} [flat]": optimizer_runner(tx, flat_host, flat_grads, steps)
        for opt, tx in txs.items()
        if opt != FLATTEN
    }
    masked = optax_decay.adamw(LEARNING_RATE, WEIGHT_DECAY_PAPER, mask=layout.mask)
    runners["adamw [flat+mask]"] = optimizer_runner(masked, flat_host, flat_grads, steps)
    # Multipliers 2 and 1 on alternate leaves: two segments per buffer, the same bytes.
    layout = optax_decay.flat_layout(host_params, mask=alternate_multipliers)
    flat_host = jax.tree.map(np.asarray, layout.ravel(host_params))
    mults = optax_decay.adamw(LEARNING_RATE, WEIGHT_DECAY_PAPER, mask=layout.mask)
    runners["adamw [flat+multipliers]"] = optimizer_runner(
        mults, flat_host, layout.ravel(grads), steps
    )
    return runners


# --------------------------------------------------------------------------- benchmark


def _stats(times: list[float]) -> dict:
    return {
        "median": statistics.median(times),
        "min": min(times),
        "max": max(times),
        "all": times,
    }


def bench_tree(name, args, txs, bar) -> tuple[dict, list[dict]]:
    shapes = scale_shapes(tree_shapes(name, args.gpt2_layers, args.many_leaves), args.scale)
    host_params = random_tree(shapes, 0, 0.02)
    grads = jax.device_put(random_tree(shapes, 1, 1e-3))
    n = optax.tree.size(host_params)
    n_leaves = len(jax.tree.leaves(host_params))

    bar.set_postfix_str(f"{name}: trace")
    t0 = time.perf_counter()
    copy = roofline_runner(n, args.steps)
    runners = {
        opt: optimizer_runner(tx, host_params, grads, args.steps)
        for opt, tx in txs.items()
        if opt in (REFERENCE, FLATTEN) or not args.no_tree
    }
    if not args.no_flat:
        runners.update(flat_runners(host_params, grads, txs, args.steps))
    del host_params
    t1 = time.perf_counter()
    bar.set_postfix_str(f"{name}: compile")
    with ThreadPoolExecutor(max(1, min(args.compile_threads, len(runners) + 1))) as pool:
        list(pool.map(lambda r: r.compile(), [copy, *runners.values()]))
    t2 = time.perf_counter()
    bar.write(
        f"{name}: {len(runners)} runners, traced in {t1 - t0:.1f} s, compiled in {t2 - t1:.1f} s",
        file=sys.stderr,
    )
    bar.set_postfix_str(f"{name}: warm up")
    copy.warmup()
    for runner in runners.values():
        runner.warmup()

    times, copy_times = time_round_robin(runners, args.repeats, bar, name, roofline=copy)

    copy_s = statistics.median(copy_times)
    bandwidth = 2 * 4 * n / copy_s
    tree_info = {
        "n_params": n,
        "n_leaves": n_leaves,
        "param_bytes": 4 * n,
        "roofline_copy_seconds": _stats(copy_times),
        "bandwidth_GBps": bandwidth / 1e9,
        "bandwidth_GBps_best": 2 * 4 * n / min(copy_times) / 1e9,
        "trace_seconds": t1 - t0,
        "compile_seconds": t2 - t1,
    }
    records = []
    for opt, runner in runners.items():
        finite = bool(_all_finite(runner.carry[0]))
        bpp = bytes_per_param(runner) + REDUCTION_BYTES.get(opt.removesuffix(" [flat]"), 0)
        for mode in MODES:
            st = _stats(times[opt][mode])
            ref = statistics.median(times[REFERENCE][mode])
            ref_min = min(times[REFERENCE][mode])
            bound = bpp * n / bandwidth
            records.append(
                {
                    "tree": name,
                    "optimizer": opt,
                    "path": "flat" if "[flat" in opt else "tree",
                    "mode": mode,
                    "n_params": n,
                    "n_leaves": n_leaves,
                    "steps": args.steps,
                    "repeats": args.repeats,
                    "bytes_per_param": bpp,
                    "seconds_per_step": st,
                    "roofline_seconds_per_step": bound,
                    "x_roofline": st["median"] / bound,
                    "x_optax_adamw": st["median"] / ref,
                    "x_optax_adamw_min": st["min"] / ref_min,
                    # per repeat, against optax.adamw timed moments apart in the same
                    # round: robust to the machine slowing down between repeats
                    "x_optax_adamw_paired": statistics.median(
                        t / r for t, r in zip(times[opt][mode], times[REFERENCE][mode], strict=True)
                    ),
                    "params_finite": finite,
                }
            )
    del runners, copy
    return tree_info, records


def _fmt_s(s: float) -> str:
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.1f} µs"


def markdown(result: dict) -> str:
    lines = []
    args = result["args"]
    lines.append(
        f"# optax_decay step benchmark\n\n"
        f"{result['machine']['backend']} ({result['machine']['devices'][0]}), "
        f"jax {result['versions']['jax']}, optax {result['versions']['optax']}; "
        f"scale {args['scale']}, K={args['steps']} steps per timing, "
        f"{args['repeats']} repeat(s), medians, lr={LEARNING_RATE}, "
        f"wd={WEIGHT_DECAY_PAPER} (paper) / {WEIGHT_DECAY_COUPLED} (coupled), no mask (but [flat+mask]).\n"
    )
    for name, info in result["trees"].items():
        lines.append(
            f"\n## {name}: {info['n_params']:,} params in {info['n_leaves']} leaves\n\n"
            f"Roofline copy kernel: {_fmt_s(info['roofline_copy_seconds']['median'])} "
            f"per pass, {info['bandwidth_GBps']:.1f} GB/s "
            f"(best {info['bandwidth_GBps_best']:.1f} GB/s).\n"
        )
        lines.append(
            "| optimizer | bytes/param | s/step in-jit | x roofline | x optax.adamw "
            "| x optax.adamw (paired) | s/step per call | x optax.adamw (per call) |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        recs = {(r["optimizer"], r["mode"]): r for r in result["records"] if r["tree"] == name}
        for opt in dict.fromkeys(r[0] for r in recs):
            a, c = recs[(opt, "in_jit")], recs[(opt, "per_call")]
            lines.append(
                f"| {opt} | {a['bytes_per_param']:.0f} | {_fmt_s(a['seconds_per_step']['median'])} "
                f"| {a['x_roofline']:.2f} | {a['x_optax_adamw']:.2f} "
                f"| {a['x_optax_adamw_paired']:.2f} "
                f"| {_fmt_s(c['seconds_per_step']['median'])} | {c['x_optax_adamw']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--trees", nargs="+", choices=TREES, default=list(TREES), help="param trees to run"
    )
    p.add_argument(
        "--scale",
        type=float,
        default=None,
        help="multiplies each leaf's leading dimension (default 1.0 on an accelerator, "
        "0.05 on the CPU, 0.001 with --quick)",
    )
    p.add_argument("--steps", type=int, default=None, help="K, steps per timing (default 20)")
    p.add_argument("--repeats", type=int, default=None, help="timings per optimizer (default 7)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out"), help="output folder")
    p.add_argument(
        "--gpt2-layers", type=int, default=None, help="blocks of the gpt2 tree (default 12)"
    )
    p.add_argument(
        "--many-leaves", type=int, default=None, help="leaves of many_leaves (default 2000)"
    )
    p.add_argument(
        "--compile-threads",
        type=int,
        default=os.cpu_count() or 1,
        help="XLA compiles in parallel (default: CPU count)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: scale 0.001, K=2, 1 repeat, gpt2 with 1 block, 16 many_leaves "
        "(the 2000-leaf loops alone take minutes to compile)",
    )
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.add_argument("--no-flat", action="store_true", help="skip the flat-buffer rows")
    p.add_argument(
        "--no-tree",
        action="store_true",
        help=f"tree path for {REFERENCE}, the reference of every ratio, and {FLATTEN}, "
        "the peer of the flat path, only (compiling 2000-leaf loops for every optimizer "
        "takes minutes)",
    )
    args = p.parse_args(argv)
    if args.scale is None:
        args.scale = 0.001 if args.quick else (0.05 if jax.default_backend() == "cpu" else 1.0)
    if args.steps is None:
        args.steps = 2 if args.quick else 20
    if args.repeats is None:
        args.repeats = 1 if args.quick else 7
    if args.gpt2_layers is None:
        args.gpt2_layers = 1 if args.quick else 12
    if args.many_leaves is None:
        args.many_leaves = 16 if args.quick else 2000
    if args.scale <= 0 or min(args.steps, args.repeats, args.gpt2_layers, args.many_leaves) < 1:
        p.error("--scale must be > 0; --steps, --repeats, --gpt2-layers, --many-leaves >= 1")
    if args.no_flat and args.no_tree:
        p.error(f"--no-flat and --no-tree leave nothing but {REFERENCE} and {FLATTEN}; drop one")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    txs = optimizers()
    result = {
        **report_header(args),
        "settings": {
            "learning_rate": LEARNING_RATE,
            "weight_decay_paper": WEIGHT_DECAY_PAPER,
            "weight_decay_coupled": WEIGHT_DECAY_COUPLED,
            "reference": REFERENCE,
        },
        "trees": {},
        "records": [],
    }
    n_tree = 2 if args.no_tree else len(txs)  # REFERENCE and FLATTEN
    n_flat = 0 if args.no_flat else len(txs) + 1  # all but FLATTEN, plus the two [flat+...]
    per_tree = args.repeats * (2 * (n_tree + n_flat) + 2)
    with tqdm(
        total=per_tree * len(args.trees), disable=args.no_progress, file=sys.stderr, unit="run"
    ) as bar:
        for name in args.trees:
            info, records = bench_tree(name, args, txs, bar)
            result["trees"][name] = info
            result["records"].extend(records)
            # after every tree: a run stopped by a time limit keeps what it measured
            write_report(result, markdown(result), args.out, echo=False)
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()

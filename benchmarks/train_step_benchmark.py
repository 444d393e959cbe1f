"""Whole train step, tree path vs flat path: forward, backward and optimizer update.

The step benchmark (``step_benchmark.py``) times the optimizer alone. This one
times what a user runs: a Flax NNX model's loss, its gradient and the update,
for two models:

* ``mlp``: a deep MLP on 784-dimensional inputs (many medium leaves);
* ``transformer``: a small pre-LayerNorm decoder-only transformer (token and
  position embeddings, ``--layers`` blocks of causal self-attention and MLP),
  about a dozen leaves per block, most of them small.

Each optimizer runs on two paths:

* **tree**: params as the ``nnx.Param`` state pytree, gradients by
  ``jax.grad`` with respect to it, the optimizer on the tree;
* **flat**: params as ``optax_decay.flat_layout`` buffers (one per dtype);
  the loss unravels them into the state pytree inside the step, so gradients
  come out flat, and the optimizer runs on the buffers, with
  ``mask=layout.mask``.

Both use ``mask=optax_decay.weight_decay_mask`` semantics (kernels and
embeddings decayed, biases and LayerNorm scales not) and the same batch. Times
are in-jit (``K`` steps in one ``lax.fori_loop``, params and state donated)
and per jit call from Python, by ``harness.Runner`` as in ``step_benchmark.py``;
every repeat runs every configuration once, round robin, and the medians are
reported with the ratio flat / tree.

Usage::

  python benchmarks/train_step_benchmark.py            # both models, ~3 min on 2 CPU cores
  python benchmarks/train_step_benchmark.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

import optax_decay
from benchmarks.harness import MODES, Runner, report_header, time_round_robin, write_report

MODELS = ("mlp", "transformer")


def optimizers(mask) -> dict[str, optax.GradientTransformation]:
    return {
        "adamw": optax_decay.adamw(1e-3, 1e-4, mask=mask),
        "adamp": optax_decay.adamp(1e-3, 1e-2, mask=mask),
        "sgdw": optax_decay.sgdw(1e-2, 1e-4, momentum=0.9, mask=mask),
    }


# --------------------------------------------------------------------------- models


class MLP(nnx.Module):
    def __init__(self, width: int, depth: int, rngs: nnx.Rngs):
        dims = [784] + [width] * depth
        self.layers = nnx.List(nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(dims))
        self.head = nnx.Linear(dims[-1], 10, rngs=rngs)

    def __call__(self, x):
        for layer in self.layers:
            x = jax.nn.relu(layer(x))
        return self.head(x)


class Block(nnx.Module):
    def __init__(self, d: int, heads: int, rngs: nnx.Rngs):
        self.ln_1 = nnx.LayerNorm(d, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(heads, d, decode=False, rngs=rngs)
        self.ln_2 = nnx.LayerNorm(d, rngs=rngs)
        self.fc = nnx.Linear(d, 4 * d, rngs=rngs)
        self.proj = nnx.Linear(4 * d, d, rngs=rngs)

    def __call__(self, x, mask):
        x = x + self.attn(self.ln_1(x), mask=mask)
        return x + self.proj(jax.nn.gelu(self.fc(self.ln_2(x))))


class Transformer(nnx.Module):
    def __init__(self, vocab: int, ctx: int, d: int, heads: int, layers: int, rngs: nnx.Rngs):
        self.wte = nnx.Embed(vocab, d, rngs=rngs)
        self.wpe = nnx.Embed(ctx, d, rngs=rngs)
        self.blocks = nnx.List(Block(d, heads, rngs) for _ in range(layers))
        self.ln_f = nnx.LayerNorm(d, rngs=rngs)
        self.head = nnx.Linear(d, vocab, rngs=rngs)

    def __call__(self, tokens):
        t = tokens.shape[-1]
        x = self.wte(tokens) + self.wpe(jnp.arange(t))
        mask = nnx.make_causal_mask(tokens)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.ln_f(x))


def make_problem(name: str, args):
    """(model, loss(model, batch), batch) for ``name``."""
    rngs = nnx.Rngs(0)
    rng = np.random.default_rng(0)
    if name == "mlp":
        model = MLP(args.mlp_width, args.mlp_depth, rngs)
        batch = (
            jnp.asarray(rng.random((args.batch, 784), np.float32)),
            jnp.asarray(rng.integers(0, 10, args.batch)),
        )
    elif name == "transformer":
        model = Transformer(args.vocab, args.ctx, args.d_model, 4, args.layers, rngs)
        tokens = jnp.asarray(rng.integers(0, args.vocab, (args.batch, args.ctx + 1)))
        batch = (tokens[:, :-1], tokens[:, 1:])
    else:
        raise ValueError(f"unknown model {name!r}; choose from {MODELS}")

    def loss(m, b):  # next class (mlp) or next token (transformer)
        return optax.softmax_cross_entropy_with_integer_labels(m(b[0]), b[1]).mean()

    return model, loss, batch


# --------------------------------------------------------------------------- steps


def make_runner(graphdef, params, loss, batch, tx, layout, steps) -> Runner:
    """One (model, optimizer, path) on the tree (layout None) or flat path.

    The carry is ``(params, state, loss at the last step)``, the data the batch.
    """
    to_tree = (lambda p: p) if layout is None else layout.unravel

    def step(carry, batch):
        p, s, _ = carry

        def objective(p):
            return loss(nnx.merge(graphdef, to_tree(p)), batch)

        value, grads = jax.value_and_grad(objective)(p)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    p = params if layout is None else layout.ravel(params)
    p = jax.tree.map(jnp.copy, p)  # fresh buffers per configuration, donated
    return Runner(step, (p, tx.init(p), jnp.zeros((), jnp.float32)), batch, steps)


def bench_model(name, args, bar) -> list[dict]:
    model, loss, batch = make_problem(name, args)
    graphdef, params = nnx.split(model, nnx.Param)
    decay_mask = optax_decay.weight_decay_mask  # kernels and embeddings
    layout = optax_decay.flat_layout(params, mask=decay_mask)
    n_params = optax.tree.size(params)
    configs = {}
    for opt in args.optimizers:
        configs[(opt, "tree")] = make_runner(
            graphdef, params, loss, batch, optimizers(decay_mask)[opt], None, args.steps
        )
        configs[(opt, "flat")] = make_runner(
            graphdef, params, loss, batch, optimizers(layout.mask)[opt], layout, args.steps
        )
    for key, cfg in configs.items():
        bar.set_postfix_str(f"{name}: compile {'/'.join(key)}")
        cfg.warmup()
    times, _ = time_round_robin(configs, args.repeats, bar, name)
    records = []
    for (opt, path), cfg in configs.items():
        for mode in MODES:
            median = statistics.median(times[(opt, path)][mode])
            tree = statistics.median(times[(opt, "tree")][mode])
            records.append(
                {
                    "model": name,
                    "optimizer": opt,
                    "path": path,
                    "mode": mode,
                    "n_params": n_params,
                    "n_leaves": len(jax.tree.leaves(cfg.carry[0])),
                    "seconds_per_step": median,
                    "seconds_all": times[(opt, path)][mode],
                    "x_tree": median / tree,
                    "final_loss": float(cfg.carry[2]),  # loss at the last step timed
                }
            )
    return records


def markdown(result: dict) -> str:
    a = result["args"]
    lines = [
        "# optax_decay train-step benchmark: tree vs flat\n",
        f"{result['machine']['backend']} ({result['machine']['devices'][0]}), "
        f"jax {result['versions']['jax']}, optax {result['versions']['optax']}; "
        f"K={a['steps']} steps per timing, {a['repeats']} repeats, medians; batch {a['batch']}.\n",
    ]
    for name in dict.fromkeys(r["model"] for r in result["records"]):
        recs = {
            (r["optimizer"], r["path"], r["mode"]): r
            for r in result["records"]
            if r["model"] == name
        }
        any_rec = next(r for r in result["records"] if r["model"] == name)
        leaves = {r["path"]: r["n_leaves"] for r in result["records"] if r["model"] == name}
        lines.append(
            f"\n## {name}: {any_rec['n_params']:,} params, {leaves['tree']} leaves "
            f"(flat: {leaves['flat']} buffer{'s' * (leaves['flat'] > 1)})\n"
        )
        lines.append(
            "| optimizer | tree in-jit | flat in-jit | flat / tree | tree per call "
            "| flat per call | flat / tree |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for opt in dict.fromkeys(k[0] for k in recs):
            t, f = recs[(opt, "tree", "in_jit")], recs[(opt, "flat", "in_jit")]
            tc, fc = recs[(opt, "tree", "per_call")], recs[(opt, "flat", "per_call")]
            lines.append(
                f"| {opt} | {t['seconds_per_step'] * 1e3:.2f} ms | {f['seconds_per_step'] * 1e3:.2f} ms "
                f"| {f['x_tree']:.2f} | {tc['seconds_per_step'] * 1e3:.2f} ms "
                f"| {fc['seconds_per_step'] * 1e3:.2f} ms | {fc['x_tree']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument(
        "--optimizers", nargs="+", choices=("adamw", "adamp", "sgdw"), default=["adamw", "adamp"]
    )
    p.add_argument("--steps", type=int, help="K, steps per timing (default 10)")
    p.add_argument("--repeats", type=int, help="default 5")
    p.add_argument(
        "--batch", type=int, help="examples (mlp) or sequences (transformer); default 32"
    )
    p.add_argument("--mlp-width", type=int, default=512)
    p.add_argument("--mlp-depth", type=int, default=8)
    p.add_argument("--layers", type=int, default=8, help="transformer blocks")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--ctx", type=int, default=64)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/train_step"))
    p.add_argument("--quick", action="store_true", help="tiny models, 2 steps, 1 repeat")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.mlp_width, args.mlp_depth, args.layers, args.d_model = 32, 2, 1, 32
        args.ctx, args.vocab = 8, 64
    args.steps = args.steps or (2 if args.quick else 10)
    args.repeats = args.repeats or (1 if args.quick else 5)
    args.batch = args.batch or (8 if args.quick else 32)
    if min(args.steps, args.repeats, args.batch) < 1:
        p.error("--steps, --repeats and --batch must be >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = {**report_header(args), "records": []}
    total = len(args.models) * args.repeats * 2 * 2 * len(args.optimizers)
    with tqdm(total=total, disable=args.no_progress, file=sys.stderr, unit="run") as bar:
        for name in args.models:
            result["records"].extend(bench_model(name, args, bar))
    write_report(result, markdown(result), args.out)
    return result


if __name__ == "__main__":
    main()

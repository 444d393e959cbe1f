"""Train a small MLP on digits with any optax_decay optimizer; checkpoint and resume with Orbax.

A 64 -> 128 -> LayerNorm -> ReLU -> 10 MLP in plain JAX (a checkpoint is ``(params, opt_state,
step)``) on the digits. Orbax saves every ``--checkpoint-every`` steps, at the last step and after
step 1 of a fresh run, keeping the newest ``--keep``. Run again with the same ``--checkpoint-dir``,
a run resumes and ends bit-identical to one never interrupted: the batch of step ``t`` depends on
``(seed, t)`` only; a cut-off write is never loaded (Orbax commits a step by renaming it); the
tree (structure, shapes, dtypes) and the flags that change the trajectory must match; every
array's SHA-256 is checked, and an unreadable step is reported in one line and the newest intact
older one used; NaN or infinity is never saved nor resumed from (exit status 1). E.g.::

    python -m examples.train --optimizer adamw --steps 600 --checkpoint-dir out/ckpt
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import math
import os
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import tensorstore as ts
from tqdm.auto import tqdm

import optax_decay
from examples import cli, data, optimizers

PAPER_DECAY = 1e-3  # sgdw, adamw, prox_adam: a decay timescale of ~1000 steps (per step)
MASKS = {"kernels": optax_decay.weight_decay_mask, "all": None}
CONFIG = ("optimizer", "learning_rate", "weight_decay", "mask", "steps", "batch_size", "seed")
eprint = lambda line: print(line, file=sys.stderr)  # sys.stderr when called
FIX = "or start a fresh run with a new --checkpoint-dir."
MISMATCHES = {  # the first subtree with a difference ("": the rest) -> (what, what to rebuild)
    "params": ("the checkpoint's params have a different structure, shape or dtype", "model"),
    "opt_state": ("the checkpoint was written by an optimizer with a different state structure",
                  "optimizer (same optimizer and same mask)"),
    "": ("the checkpoint does not hold (params, opt_state, step)", "model"),
}  # fmt: skip


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit this run's params, optimizer state or flags."""


class UnreadableCheckpointError(RuntimeError):
    """A step's files cannot be read or fail their checksums; or no step can be read."""


class NonFiniteError(FloatingPointError):
    """Params, optimizer state or loss hold NaN or infinity."""


Restored = collections.namedtuple("Restored", "step params opt_state meta")  # what restore gives


def make_optimizer(args: argparse.Namespace) -> optax.GradientTransformation:
    """``optimizers.make`` with the flags' rates and mask, and ``schedule(args.steps)``."""
    options = {"schedule": optimizers.schedule(args.steps), "mask": MASKS[args.mask]}
    return optimizers.make(args.optimizer, args.learning_rate, args.weight_decay, **options)


def init_params(seed: int, d_in: int = 64, d_hidden: int = 128, d_out: int = 10) -> dict:
    """LeCun-normal kernels, zero biases, unit LayerNorm scale (Flax's names), drawn with NumPy."""
    rng = np.random.default_rng([seed, 1])
    kernel = lambda m, n: jnp.asarray(rng.normal(0.0, m**-0.5, (m, n)), jnp.float32)
    return {
        "hidden": {"kernel": kernel(d_in, d_hidden), "bias": jnp.zeros(d_hidden)},
        "norm": {"scale": jnp.ones(d_hidden), "bias": jnp.zeros(d_hidden)},
        "out": {"kernel": kernel(d_hidden, d_out), "bias": jnp.zeros(d_out)},
    }


def apply(params: dict, x: jax.Array) -> jax.Array:
    h = x @ params["hidden"]["kernel"] + params["hidden"]["bias"]
    mean = h.mean(-1, keepdims=True)
    var = jnp.square(h - mean).mean(-1, keepdims=True)
    h = (h - mean) * jax.lax.rsqrt(var + 1e-6) * params["norm"]["scale"] + params["norm"]["bias"]
    return jax.nn.relu(h) @ params["out"]["kernel"] + params["out"]["bias"]


def metrics(params: dict, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(mean cross-entropy, accuracy)`` of the MLP on ``(x, y)``."""
    logits = apply(params, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, jnp.mean(jnp.argmax(logits, -1) == y)


evaluate = jax.jit(metrics)


def make_manager(directory, *, every: int = 1, keep: int | None = 3) -> ocp.CheckpointManager:
    """Saves synchronously every ``every`` steps, keeps the newest ``keep``, and removes what a
    crash left of an uncommitted save."""
    flags = dict(enable_async_checkpointing=False, cleanup_tmp_directories=True)
    options = ocp.CheckpointManagerOptions(save_interval_steps=every, max_to_keep=keep, **flags)
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    directory = pathlib.Path(directory).absolute()
    return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


def _state(params: Any, opt_state: Any, step: int) -> dict:
    return {"params": params, "opt_state": opt_state, "step": step}


def _flat(tree: Any, empty: bool = False) -> dict[str, Any]:
    """``{"opt_state/0/mu/hidden/kernel": leaf, ...}``: Orbax's paths, as in a checkpoint."""
    flat = ocp.tree.to_flat_dict(tree, keep_empty_nodes=empty)
    return {"/".join(map(str, k)): v for k, v in flat.items()}


def _host(params: Any, opt_state: Any) -> dict[str, np.ndarray]:
    flat = _flat({"params": params, "opt_state": opt_state})
    return dict(zip(flat, map(np.asarray, jax.device_get(list(flat.values()))), strict=True))


def checksums(params: Any, opt_state: Any) -> dict[str, str]:
    """Every leaf's SHA-256 of its dtype name, shape and bytes."""
    sha = lambda a: hashlib.sha256(f"{a.dtype.name}{list(a.shape)}".encode() + a.tobytes())
    return {path: sha(a).hexdigest() for path, a in _host(params, opt_state).items()}


def nonfinite(params: Any, opt_state: Any) -> list[str]:
    """The paths of the floating-point leaves that hold a NaN or an infinity."""
    bad = lambda a: jnp.issubdtype(a.dtype, jnp.inexact) and not np.isfinite(a).all()
    return [path for path, a in _host(params, opt_state).items() if bad(a)]


def _some(items: Sequence[str], limit: int = 3) -> str:
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _structures(params: Any, opt_state: Any) -> dict[str, str]:
    """Both trees' ``PyTreeDef``s as text, the copies of the params' structure as ``<params>``."""
    ours, state = str(jax.tree.structure(params)), str(jax.tree.structure(opt_state))
    return {"params": ours, "opt_state": state.replace(ours[len("PyTreeDef(") : -1], "<params>")}


def save(manager, step: int, params, opt_state, *, meta=None, force: bool = False) -> bool:
    """Saves ``(params, opt_state, step)`` and ``meta`` with the trees' structures and checksums
    if the interval says so (or ``force``); returns whether it did. NaN or infinity: raises."""
    if not (force or manager.should_save(step)):
        return False
    if bad := nonfinite(params, opt_state):
        raise NonFiniteError(
            f"step {step} was not saved to {manager.directory}: NaN or infinity in {_some(bad)}."
        )
    meta = {**(meta or {}), "structure": _structures(params, opt_state)}
    meta["sha256"] = checksums(params, opt_state)
    state = ocp.args.StandardSave(_state(params, opt_state, step))
    args = ocp.args.Composite(state=state, meta=ocp.args.JsonSave(meta))
    return manager.save(step, args=args, force=force)


def _describe(x: Any) -> str:
    """``float32[64,128]`` for an array or Orbax's array metadata, ``(empty)`` for empty nodes."""
    if x is None or (isinstance(x, (tuple, list, dict)) and not x):  # EmptyState(), MaskedNode()
        return "(empty)"
    shape = x.shape if hasattr(x, "shape") else np.shape(x)
    dtype = x.dtype if hasattr(x, "dtype") else np.result_type(x)
    return f"{np.dtype(dtype).name}[{','.join(map(str, shape))}]"


def _check_structure(manager, step: int, meta: dict, template: dict) -> None:
    """Raises :class:`CheckpointMismatchError` unless step ``step``'s tree metadata (paths, shapes,
    dtypes, empty nodes) is the template's: Orbax would raise a terse error, or cast silently."""
    saved_tree = manager.item_metadata(step).state
    if saved_tree is None:  # Orbax's answer without the item's _METADATA
        raise FileNotFoundError("no tree metadata in state/_METADATA")
    saved_tree = getattr(saved_tree, "tree", saved_tree)
    saved = {k: _describe(v) for k, v in _flat(saved_tree, empty=True).items()}
    target = {k: _describe(v) for k, v in _flat(template, empty=True).items()}
    diff = [k for k in sorted(saved.keys() | target.keys()) if saved.get(k) != target.get(k)]
    if not diff:
        return
    name = next(n for n in MISMATCHES if any(k.startswith(n) for k in diff))
    theirs = {"": str(jax.tree.structure(saved_tree)), **meta.get("structure", {})}
    ours = _structures(template["params"], template["opt_state"])
    ours[""] = str(jax.tree.structure(_state(0, 0, 0)))
    diff = [k for k in diff if k.startswith(name)]
    details = {
        "only in the checkpoint": [k for k in diff if k not in target],
        "only in this run": [k for k in diff if k not in saved],
        "different shape or dtype (checkpoint -> this run)": [
            f"{k}: {saved[k]} -> {target[k]}" for k in diff if k in saved and k in target
        ],
    }
    raise CheckpointMismatchError(
        f"Cannot restore step {step} from {manager.directory}: {MISMATCHES[name][0]}.\n"
        f"  checkpoint: {_shorten(theirs.get(name, theirs['']), 1500)}\n"
        f"  this run: {_shorten(ours[name], 1500)}\n"
        + "".join(f"  {title}: {_some(keys, 6)}\n" for title, keys in details.items() if keys)
        + f"Build the same {MISMATCHES[name][1]} as the run that wrote the checkpoint, {FIX}"
    )


def _read_every_array(item_dir: pathlib.Path) -> None:
    """Reads each array of an Orbax item stored in OCDBT, one after the other: a damaged file
    raises here, not in Orbax's restore (its reads left in flight print "Event loop is closed")."""
    if not (item_dir / "manifest.ocdbt").is_file():
        raise FileNotFoundError(f"no {item_dir.name}/manifest.ocdbt")
    kvstore = {"driver": "ocdbt", "base": {"driver": "file", "path": f"{item_dir}{os.sep}"}}
    for key in sorted(ts.KvStore.open(kvstore).result().list().result()):
        if (name := key.decode()).endswith("/.zarray"):  # one per array, next to its chunks
            spec = {"driver": "zarr", "kvstore": {**kvstore, "path": name.removesuffix(".zarray")}}
            ts.open(spec, open=True, read=True).result().read().result()


def _reason(err: BaseException, step_dir: pathlib.Path) -> str:
    """``Type: first line`` without TensorStore's specs, paths relative to the step's folder."""
    text = (str(err).strip().splitlines() or [""])[0].replace(f"{step_dir}{os.sep}", "")
    text = text.split(" See full TensorStore details")[0].split(" [tensorstore_spec=")[0]
    return _shorten(f"{type(err).__name__}: {text}" if text else type(err).__name__, 240)


def restore(manager, params_template, opt_state_template, *, step=None) -> Restored | None:
    """Step ``step`` (default: the newest committed one, ``None`` if none) restored into the
    templates' trees (``params``, ``tx.init(params)``); raises one of the three errors above."""
    step = manager.latest_step() if step is None else step
    if step is None:
        return None
    step_dir = pathlib.Path(manager.directory) / str(step)
    template = _state(params_template, opt_state_template, 0)
    where = f"checkpoint {step} in {manager.directory}"
    try:
        _read_every_array(step_dir / "state")  # first: Orbax's metadata reads open them all
        restored = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        meta = dict(restored.meta or {})
        _check_structure(manager, step, meta, template)
        args = ocp.args.Composite(state=ocp.args.StandardRestore(template))
        state = manager.restore(step, args=args).state
        saved, got = meta.get("sha256") or {}, checksums(state["params"], state["opt_state"])
        if bad := [k for k in sorted(saved.keys() | got.keys()) if saved.get(k) != got.get(k)]:
            reason = f"checksum mismatch in {_some(bad)}" if saved else "no checksums stored"
            raise UnreadableCheckpointError(f"{where} is unreadable: {reason}")
    except (CheckpointMismatchError, UnreadableCheckpointError):
        raise
    except Exception as err:  # whatever damaged files make TensorStore, JSON or the OS raise
        raise UnreadableCheckpointError(f"{where} is unreadable: {_reason(err, step_dir)}") from err
    if int(state["step"]) != step:
        raise CheckpointMismatchError(f"{where} holds step {int(state['step'])}; {FIX}")
    if bad := nonfinite(state["params"], state["opt_state"]):
        raise NonFiniteError(
            f"{where} holds NaN or infinity in {_some(bad)}; resuming from it would train on "
            f"them. Delete it to resume from an older checkpoint, {FIX}"
        )
    return Restored(step, state["params"], state["opt_state"], meta)


def restore_latest(manager, params_template, opt_state_template, *, report=eprint):
    """:func:`restore` of the newest intact step, each newer unreadable one reported in one line;
    ``None`` without committed steps; :class:`UnreadableCheckpointError` when none can be read."""
    unreadable = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            restored = restore(manager, params_template, opt_state_template, step=step)
        except UnreadableCheckpointError as err:
            unreadable.append(str(err))
            continue
        for line in unreadable:
            report(f"{line}; resuming from {step}")
        return restored
    if unreadable:
        raise UnreadableCheckpointError(
            f"no intact checkpoint in {manager.directory} to resume from:\n"
            + "".join(f"  {line}\n" for line in unreadable)
            + "Move the directory away to start a fresh run, or pass a new --checkpoint-dir."
        )
    return None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = cli.Parser(__doc__)
    add = parser.add_argument
    add("--optimizer", choices=sorted(optimizers.METHODS), default="adamw")
    add("--learning-rate", type=float, help="default per optimizer")
    add("--weight-decay", type=float, help="default per optimizer (PAPER_DECAY in paper form)")
    add("--mask", choices=sorted(MASKS), default="kernels", help="decay the kernels only, or all")
    add("--steps", type=int, default=600)
    add("--batch-size", type=int, default=64)
    add("--seed", type=int, default=0, help="split, init and batch-order seed")
    add("--checkpoint-dir", type=pathlib.Path)
    add("--checkpoint-every", type=int, default=50, metavar="N")
    add("--keep", type=int, default=3, help="checkpoints to keep")
    add("--resume", action=argparse.BooleanOptionalAction, default=True, help="(default)")
    add("--out", type=pathlib.Path, help="final params (.npz)")
    add("--no-progress", action="store_true", help="hide the progress bar")
    add("--step-delay", type=float, default=0.0, metavar="SECONDS", help="sleep per step (tests)")
    args = parser.parse_args(argv)
    cli.check_positive(args, "steps", "batch_size", "checkpoint_every", "keep")
    lr, wd = optimizers.default_hparams(args.optimizer, PAPER_DECAY)
    args.learning_rate = lr if args.learning_rate is None else args.learning_rate
    args.weight_decay = wd if args.weight_decay is None else args.weight_decay
    return args


def resume(manager, args, config: dict, params, opt_state) -> tuple[int, Any, Any]:
    """``(start step, params, opt_state)`` of the newest intact checkpoint, whose stored flags
    must equal ``config``; the newer, unreadable steps are deleted (the run writes them again)."""
    if (latest := manager.latest_step()) is None:
        return 0, params, opt_state
    if not args.resume:
        raise SystemExit(
            f"{args.checkpoint_dir} already holds checkpoints (newest: step {latest}). "
            "Resume from it (drop --no-resume) or use a new --checkpoint-dir."
        )
    restored = restore_latest(manager, params, opt_state)
    saved = restored.meta.get("config", config)
    if diff := [
        f"  --{k.replace('_', '-')}: checkpoint {saved.get(k)!r}, this run {config.get(k)!r}"
        for k in sorted(saved.keys() | config.keys())
        if saved.get(k) != config.get(k)
    ]:
        raise CheckpointMismatchError(
            f"Cannot resume from {manager.directory}: its checkpoints were written with other "
            "settings, which would change the run.\n" + "\n".join(diff) + "\nPass the same "
            f"flags as the run that wrote them, {FIX}"
        )
    if restored.step > args.steps:
        raise SystemExit(f"{args.checkpoint_dir} is at step {restored.step}, past --steps.")
    for step in manager.all_steps():
        if step > restored.step:
            manager.delete(step)
    eprint(f"Resumed from step {restored.step} of {manager.directory}.")
    return restored.step, restored.params, restored.opt_state


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    digits = data.load_digits(args.seed)
    cli.check_batch_size(args.batch_size, digits)
    config = {k: getattr(args, k) for k in CONFIG}
    tx, params, start = make_optimizer(args), init_params(args.seed), 0
    opt_state = tx.init(params)
    x, y = jnp.asarray(digits.x_train.reshape(-1, 64)), jnp.asarray(digits.y_train)
    batches = data.batch_indices(len(x), args.steps, args.batch_size, args.seed)

    @jax.jit
    def train_step(params, opt_state, idx):
        (loss, _), grads = jax.value_and_grad(metrics, has_aux=True)(params, x[idx], y[idx])
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    begin, manager = time.perf_counter(), None
    if args.checkpoint_dir is not None:
        manager = make_manager(args.checkpoint_dir, every=args.checkpoint_every, keep=args.keep)
    with contextlib.nullcontext() if manager is None else manager:  # closing it waits for saves
        if manager is not None:
            start, params, opt_state = resume(manager, args, config, params, opt_state)
        bar = tqdm(total=args.steps, initial=start, disable=args.no_progress, desc=args.optimizer)
        for step in range(start, args.steps):
            params, opt_state, loss = train_step(params, opt_state, batches[step])
            done = step + 1
            if manager is not None and (done == args.steps or manager.should_save(done)):
                if not math.isfinite(float(loss)):
                    raise NonFiniteError(
                        f"the training diverged: the loss is {float(loss)} at step {done} "
                        f"(lower --learning-rate?); step {done} was not saved."
                    )
                meta = {"config": config}
                save(manager, done, params, opt_state, meta=meta, force=done == args.steps)
            bar.update(1)
            if done % 10 == 0 and not bar.disable:
                bar.set_postfix(loss=f"{float(loss):.4f}")
            time.sleep(args.step_delay)
        bar.close()

    x_test, y_test = jnp.asarray(digits.x_test.reshape(-1, 64)), jnp.asarray(digits.y_test)
    result = {**config, "resumed_from": start, "seconds": time.perf_counter() - begin}
    for split, xs, ys in (("train", x, y), ("test", x_test, y_test)):
        result[f"{split}_loss"], result[f"{split}_accuracy"] = map(float, evaluate(params, xs, ys))
    if not math.isfinite(loss := result["train_loss"]) or nonfinite(params, opt_state):
        raise NonFiniteError(f"the training diverged: the final train loss is {loss}.")
    print(f"{args.optimizer}: test accuracy {result['test_accuracy']:.4f} after {args.steps} steps")
    if args.out is not None:  # atomically, keys like hidden/kernel
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp.npz")
        np.savez(tmp, **{k: np.asarray(v) for k, v in _flat(params).items()})
        os.replace(tmp, args.out)
        print(f"Wrote {args.out}.")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    failures = (CheckpointMismatchError, UnreadableCheckpointError, NonFiniteError)
    cli.run_cli(main, failures=failures)

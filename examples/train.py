"""Train a small MLP on digits with any optax_decay optimizer; checkpoint and resume with Orbax.

A 64 -> 128 -> LayerNorm -> ReLU -> 10 MLP, written in plain JAX (a dict of
params, so the checkpoint is exactly ``(params, opt_state, step)``), trained on
scikit-learn's bundled 8x8 digits (no download) with a cosine schedule
``eta_t`` and, by default, ``mask=optax_decay.weight_decay_mask``.

Checkpoints are written with ``orbax.checkpoint.CheckpointManager`` every
``--checkpoint-every`` steps, at the last step and (Orbax's ``InitialSavePolicy``)
after the first step of a fresh run, keeping the newest ``--keep``. A run started again with the same ``--checkpoint-dir`` resumes from
the newest *complete* checkpoint and ends with bit-identical params to a run
that was never interrupted:

* the batch of step ``t`` is a pure function of ``(seed, t)`` (``data.batch_indices``:
  shuffled epochs drawn from one generator seeded with ``seed``), so a resumed run
  sees exactly the same batches;
* Orbax writes a step into ``<step>.orbax-checkpoint-tmp`` and renames it to
  ``<step>`` only once everything is written (the rename is the commit, on a
  local file system); ``CheckpointManager.latest_step()`` lists committed steps
  only, so a checkpoint cut off by a crash is never loaded, and the leftover
  temporary directory is removed when the next run opens the directory;
* saves are synchronous, and the manager is closed (``wait_until_finished``)
  before the final params are written.

Restoring checks the checkpoint's tree (structure, shapes, dtypes, read from
Orbax's metadata) against the params and optimizer state of this run and
raises a ``ValueError`` naming both when they differ (another optimizer,
another mask, another model), instead of Orbax's own errors, or a silent cast
of the dtypes. The run's flags that change the trajectory are stored with the
checkpoint and must match on resume too.

A checkpoint cannot poison a run:

* every saved array's SHA-256 is stored with it (in the JSON ``meta`` item) and
  checked after a restore, so flipped or lost bytes are caught instead of being
  trained on;
* a step that cannot be read (truncated or corrupt files, an emptied
  ``_METADATA`` or ``manifest.ocdbt``) or that fails its checksum is reported
  in one line and the newest intact older step is used instead (the bad newer
  steps are deleted: the resumed run writes them again); when no step is
  intact the run stops with an error, leaving the directory as it is;
* params or optimizer state holding NaN or infinity are never saved, and never
  resumed from: a run whose loss becomes non-finite, or whose checkpoint holds
  non-finite values, stops with an error (exit status 1).

Run::

    python examples/train.py --optimizer adamw --steps 600 --checkpoint-dir out/ckpt
    # interrupt it (Ctrl-C, kill -9, preemption), then run the same command again
    python -m examples.train --optimizer adamw --steps 600 --checkpoint-dir out/ckpt

The save/restore helpers (``make_manager``, ``save``, ``restore``,
``restore_latest``) can be imported on their own (``from examples import train``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pathlib
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

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


def make_optimizer(
    name: str,
    learning_rate: float | None = None,
    weight_decay: float | None = None,
    *,
    mask: str = "kernels",
    steps: int,
) -> optax.GradientTransformation:
    """``optimizers.make(name)`` with a cosine schedule ``eta_t`` over ``steps`` and ``MASKS[mask]``.

    ``None`` takes the default of ``optimizers.default_hparams(name, PAPER_DECAY)``.
    """
    lr, wd = optimizers.default_hparams(name, PAPER_DECAY)
    return optimizers.make(
        name,
        lr if learning_rate is None else learning_rate,
        wd if weight_decay is None else weight_decay,
        schedule=optimizers.schedule(steps),
        mask=MASKS[mask],
    )


# ------------------------------------------------------------------------------------------
# Data and model
# ------------------------------------------------------------------------------------------


def flat_images(images: np.ndarray) -> jax.Array:
    """``(N, 8, 8, 1)`` digits as the ``(N, 64)`` inputs of the MLP."""
    return jnp.asarray(images.reshape(len(images), -1))


def init_params(seed: int, d_in: int = 64, d_hidden: int = 128, d_out: int = 10) -> dict:
    """LeCun-normal kernels, zero biases, unit LayerNorm scale (Flax's names), float32.

    Drawn with NumPy: a pure function of ``seed``, and no XLA compilations at startup.
    """
    rng = np.random.default_rng([seed, 1])

    def kernel(fan_in, fan_out):
        return jnp.asarray(rng.normal(0.0, fan_in**-0.5, (fan_in, fan_out)), jnp.float32)

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


def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(apply(params, x), y).mean()


def make_train_step(tx: optax.GradientTransformation) -> Callable:
    """``(params, opt_state, x, y, idx) -> (params, opt_state, loss)`` on the batch ``idx``."""

    @jax.jit
    def train_step(params, opt_state, x, y, idx):
        loss, grads = jax.value_and_grad(loss_fn)(params, x[idx], y[idx])
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


@jax.jit
def evaluate(params: dict, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    logits = apply(params, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, jnp.mean(jnp.argmax(logits, -1) == y)


# ------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------

STATE_ITEM = "state"  # params, opt_state and step (StandardSave)
META_ITEM = "meta"  # JSON: the trees' structures, the run's config and the checksums
CHECKSUMS_KEY = "sha256"  # in META_ITEM: {leaf path: SHA-256 of its dtype, shape and bytes}

MISMATCH_MSG = (
    "Cannot restore step {step} from {directory}: {what}.\n"
    "  checkpoint:   {saved}\n"
    "  this run:     {target}\n"
    "{details}"
    "{fix}"
)
OPT_STATE_FIX = (
    "Build the same optimizer (same optimizer and same mask) as the run that wrote the "
    "checkpoint, or start a fresh run with a new --checkpoint-dir."
)
PARAMS_FIX = (
    "Restore into params of the same model and dtypes as the run that wrote the checkpoint, "
    "or start a fresh run with a new --checkpoint-dir."
)
CONFIG_MSG = (
    "Cannot resume from {directory}: its checkpoints were written with other settings, "
    "which would change the run.\n{details}\n"
    "Pass the same flags as the run that wrote them, or start a fresh run with a new "
    "--checkpoint-dir."
)


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the params/optimizer (or the flags) of this run."""


class UnreadableCheckpointError(RuntimeError):
    """A step's files cannot be read, or its arrays differ from the checksums saved with them."""

    def __init__(self, step: int, directory: Any, reason: str):
        self.step, self.directory, self.reason = step, directory, reason
        super().__init__(f"checkpoint {step} in {directory} is unreadable: {reason}")


class NoIntactCheckpointError(RuntimeError):
    """Every committed step of a checkpoint directory is unreadable."""


class NonFiniteError(FloatingPointError):
    """Params, optimizer state or loss hold NaN or infinity."""


class Restored(NamedTuple):
    step: int
    params: Any
    opt_state: Any
    meta: dict


def make_manager(
    directory: str | os.PathLike, *, every: int = 1, keep: int | None = 3
) -> ocp.CheckpointManager:
    """A manager that saves synchronously every ``every`` steps and keeps the newest ``keep``.

    ``cleanup_tmp_directories`` removes what a crash left of an uncommitted save.
    """
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=every,
        max_to_keep=keep,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True,
        create=True,
    )
    return ocp.CheckpointManager(
        pathlib.Path(directory).absolute(),
        options=options,
        item_handlers={
            STATE_ITEM: ocp.StandardCheckpointHandler(),
            META_ITEM: ocp.JsonCheckpointHandler(),
        },
    )


def _state_tree(params: Any, opt_state: Any, step: int) -> dict:
    return {"params": params, "opt_state": opt_state, "step": step}


def _host_leaves(params: Any, opt_state: Any) -> dict[str, np.ndarray]:
    """``{"params/hidden/kernel": array, "opt_state/0/mu/hidden/kernel": array, ...}`` in NumPy.

    The keys are Orbax's flat paths (as in the structure checks); empty nodes are left out.
    """
    flat = ocp.tree.to_flat_dict({"params": params, "opt_state": opt_state})
    host = jax.device_get(list(flat.values()))
    return {"/".join(map(str, k)): np.asarray(v) for k, v in zip(flat, host, strict=True)}


def state_checksums(params: Any, opt_state: Any) -> dict[str, str]:
    """The SHA-256 of every leaf of ``params`` and ``opt_state``: its dtype, shape and raw bytes."""
    checksums = {}
    for path, leaf in _host_leaves(params, opt_state).items():
        digest = hashlib.sha256(f"{leaf.dtype.name}{list(leaf.shape)}".encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
        checksums[path] = digest.hexdigest()
    return checksums


def nonfinite_leaves(params: Any, opt_state: Any) -> list[str]:
    """The paths of the floating-point leaves that hold a NaN or an infinity."""
    return [
        path
        for path, leaf in _host_leaves(params, opt_state).items()
        if jnp.issubdtype(leaf.dtype, jnp.inexact) and not np.isfinite(leaf).all()
    ]


def _some(paths: Sequence[str], limit: int = 3) -> str:
    more = f" (and {len(paths) - limit} more)" if len(paths) > limit else ""
    return ", ".join(paths[:limit]) + more


def _short_reason(err: BaseException, step_dir: Any, limit: int = 240) -> str:
    """``ExceptionType: first line of the message``, without TensorStore's long specs.

    Paths inside the step's directory are written relative to it (``state/manifest.ocdbt``).
    """
    lines = str(err).strip().splitlines()
    text = lines[0].replace(f"{step_dir}{os.sep}", "") if lines else ""
    for cut in (" See full TensorStore details", " [tensorstore_spec="):
        text = text.split(cut)[0]
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def save(
    manager: ocp.CheckpointManager,
    step: int,
    params: Any,
    opt_state: Any,
    *,
    meta: Mapping[str, Any] | None = None,
    force: bool = False,
) -> bool:
    """Saves ``(params, opt_state, step)`` as step ``step`` if the manager's interval says so.

    ``meta`` (JSON) is stored next to it, with the structures of the two trees
    and the checksums of their arrays (:func:`state_checksums`). Returns whether
    a checkpoint was written; ``force`` writes one off the interval. Raises
    :class:`NonFiniteError`, and writes nothing, when ``params`` or
    ``opt_state`` hold a NaN or an infinity.
    """
    if not (force or manager.should_save(step)):
        return False
    if bad := nonfinite_leaves(params, opt_state):
        raise NonFiniteError(
            f"step {step} was not saved to {manager.directory}: NaN or infinity in {_some(bad)}."
        )
    meta = {
        "params_structure": str(jax.tree.structure(params)),
        "opt_state_structure": str(jax.tree.structure(opt_state)),
        **(meta or {}),
        CHECKSUMS_KEY: state_checksums(params, opt_state),
    }
    return manager.save(
        step,
        args=ocp.args.Composite(
            **{
                STATE_ITEM: ocp.args.StandardSave(_state_tree(params, opt_state, step)),
                META_ITEM: ocp.args.JsonSave(meta),
            }
        ),
        force=force,
    )


def _is_empty(x: Any) -> bool:
    return x is None or (isinstance(x, (tuple, list, dict)) and not x)


def _describe(x: Any) -> str:
    """``float32[64,128]`` for arrays and array metadata, ``(empty)`` for empty nodes."""
    if _is_empty(x):  # None, optax.EmptyState(), optax.MaskedNode(), {} ...
        return "(empty)"
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    shape = np.shape(x) if shape is None else shape
    dtype = np.result_type(x) if dtype is None else dtype
    return f"{np.dtype(dtype).name}[{','.join(map(str, shape))}]"


def _flat(tree: Any) -> dict[str, str]:
    """``{"opt_state/0/mu/hidden/kernel": "float32[64,128]", ...}``, empty nodes included.

    The keys are Orbax's own (NamedTuple fields and tuple indices become dict keys
    and list indices), so a template and a checkpoint's metadata compare directly.
    """
    flat = ocp.tree.to_flat_dict(tree, keep_empty_nodes=True)
    return {"/".join(map(str, k)): _describe(v) for k, v in flat.items()}


def _differences(saved: dict[str, str], target: dict[str, str], limit: int = 6) -> str:
    lines = []

    def show(title, items):
        if items:
            more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
            lines.append(f"  {title}: {', '.join(items[:limit])}{more}\n")

    show("only in the checkpoint", sorted(saved.keys() - target.keys()))
    show("only in this run", sorted(target.keys() - saved.keys()))
    show(
        "different shape or dtype (checkpoint -> this run)",
        [
            f"{k}: {saved[k]} -> {target[k]}"
            for k in sorted(saved.keys() & target.keys())
            if saved[k] != target[k]
        ],
    )
    return "".join(lines)


def _shorten(text: str, limit: int = 1500) -> str:
    return text if len(text) <= limit else text[: limit - 5] + " ...)"


def _structure(treedef: str, params_treedef: str) -> str:
    """``treedef`` with every copy of the params' structure written ``<params>``."""
    prefix = "PyTreeDef("
    inner = params_treedef[len(prefix) : -1] if params_treedef.startswith(prefix) else ""
    return _shorten(treedef.replace(inner, "<params>") if inner else treedef)


def check_structure(
    manager: ocp.CheckpointManager, step: int, params_template: Any, opt_state_template: Any
) -> None:
    """Raises :class:`CheckpointMismatchError` unless step ``step`` fits the templates.

    Compares the checkpoint's tree metadata (every leaf's path, shape and dtype,
    and the empty nodes) with the templates' before anything is restored: Orbax
    itself would raise a terse error, or cast the dtypes silently. Raises
    ``FileNotFoundError`` when the checkpoint has no tree metadata.
    """
    saved_tree = manager.item_metadata(step)[STATE_ITEM]
    if saved_tree is None:  # what Orbax returns without the item's _METADATA
        raise FileNotFoundError(f"no tree metadata in {STATE_ITEM}/_METADATA")
    saved_tree = getattr(saved_tree, "tree", saved_tree)  # TreeMetadata -> its tree
    saved = _flat(saved_tree)
    target = _flat(_state_tree(params_template, opt_state_template, 0))
    if saved == target:
        return
    meta = _read_meta(manager, step)  # the exact structures the checkpoint was saved from
    saved_params = meta.get("params_structure", "")
    target_params = str(jax.tree.structure(params_template))
    for name, what, fix, saved_str, target_str in (
        (
            "params",
            "the checkpoint's params have a different structure, shape or dtype",
            PARAMS_FIX,
            _shorten(saved_params or str(jax.tree.structure(saved_tree.get("params")))),
            _shorten(target_params),
        ),
        (
            "opt_state",
            "the checkpoint was written by an optimizer with a different state structure",
            OPT_STATE_FIX,
            _structure(
                meta.get("opt_state_structure")
                or str(jax.tree.structure(saved_tree.get("opt_state"))),
                saved_params,
            ),
            _structure(str(jax.tree.structure(opt_state_template)), target_params),
        ),
        (
            "step",
            "the checkpoint does not hold (params, opt_state, step)",
            PARAMS_FIX,
            _shorten(str(jax.tree.structure(saved_tree))),
            str(jax.tree.structure(_state_tree(0, 0, 0))),
        ),
    ):
        # The last case compares the whole trees: whatever differs outside params and opt_state.
        sub_saved = {k: v for k, v in saved.items() if name == "step" or k.startswith(name + "/")}
        sub_target = {k: v for k, v in target.items() if name == "step" or k.startswith(name + "/")}
        if sub_saved != sub_target:
            raise CheckpointMismatchError(
                MISMATCH_MSG.format(
                    step=step,
                    directory=manager.directory,
                    what=what,
                    saved=saved_str,
                    target=target_str,
                    details=_differences(sub_saved, sub_target),
                    fix=fix,
                )
            )


def _read_meta(manager: ocp.CheckpointManager, step: int) -> dict:
    restored = manager.restore(step, args=ocp.args.Composite(**{META_ITEM: ocp.args.JsonRestore()}))
    return dict(restored[META_ITEM] or {})


def read_every_array(item_dir: pathlib.Path) -> None:
    """Reads each array of an Orbax item stored in OCDBT (Orbax's default), one after the other.

    Raises TensorStore's ``ValueError`` (``DATA_LOSS: Error decoding manifest``,
    ``OUT_OF_RANGE: ... byte range``) on a damaged or truncated manifest, B-tree
    node or data file, and ``FileNotFoundError`` without a manifest. Orbax's own
    restore would fail too, but with many reads in flight: those it leaves behind
    print ``Event loop is closed`` tracebacks. Values are checked by the checksums.
    """
    if not (item_dir / "manifest.ocdbt").is_file():
        raise FileNotFoundError(f"no {item_dir.name}/manifest.ocdbt")
    kvstore = {"driver": "ocdbt", "base": {"driver": "file", "path": f"{item_dir}{os.sep}"}}
    for key in sorted(ts.KvStore.open(kvstore).result().list().result()):
        name = key.decode()
        if name.endswith("/.zarray"):  # one per array, next to its chunks
            spec = {"driver": "zarr", "kvstore": {**kvstore, "path": name.removesuffix(".zarray")}}
            ts.open(spec, open=True, read=True).result().read().result()


def _verify_checksums(step: int, directory: Any, meta: Mapping[str, Any], params, opt_state):
    """Raises :class:`UnreadableCheckpointError` unless the arrays match the saved checksums."""
    saved = meta.get(CHECKSUMS_KEY)
    if not isinstance(saved, dict):
        raise UnreadableCheckpointError(
            step, directory, "no checksums stored with it (an older train.py?)"
        )
    restored = state_checksums(params, opt_state)
    if bad := sorted(saved.keys() ^ restored.keys()):
        raise UnreadableCheckpointError(
            step, directory, f"checksums for other arrays: {_some(bad)}"
        )
    if bad := [path for path, digest in restored.items() if saved[path] != digest]:
        raise UnreadableCheckpointError(step, directory, f"checksum mismatch in {_some(bad)}")


def restore(
    manager: ocp.CheckpointManager,
    params_template: Any,
    opt_state_template: Any,
    *,
    step: int | None = None,
) -> Restored | None:
    """Restores step ``step`` (default: the newest committed one) into the templates' trees.

    Returns ``None`` when the directory holds no committed checkpoint. The
    templates (e.g. ``params`` and ``tx.init(params)``) give the structure,
    dtypes and shardings. Raises

    * :class:`CheckpointMismatchError` (a ``ValueError``) naming both structures
      when the checkpoint does not fit the templates;
    * :class:`UnreadableCheckpointError` when its files cannot be read, or its
      arrays differ from the checksums saved with them;
    * :class:`NonFiniteError` when the restored params or state hold NaN or infinity.
    """
    if step is None:
        step = manager.latest_step()
        if step is None:
            return None
    directory = manager.directory
    step_dir = pathlib.Path(directory) / str(step)
    try:
        read_every_array(step_dir / STATE_ITEM)  # first: Orbax's metadata reads open them all
        check_structure(manager, step, params_template, opt_state_template)
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                **{
                    STATE_ITEM: ocp.args.StandardRestore(
                        _state_tree(params_template, opt_state_template, 0)
                    ),
                    META_ITEM: ocp.args.JsonRestore(),
                }
            ),
        )
        state, meta = restored[STATE_ITEM], dict(restored[META_ITEM] or {})
    except CheckpointMismatchError:
        raise
    except Exception as err:  # whatever damaged files make TensorStore, JSON or the OS raise
        raise UnreadableCheckpointError(step, directory, _short_reason(err, step_dir)) from err
    _verify_checksums(step, directory, meta, state["params"], state["opt_state"])
    if int(state["step"]) != step:
        raise CheckpointMismatchError(
            f"Checkpoint {directory}/{step} holds step {int(state['step'])}; "
            "the directory was edited by hand. Start a fresh run with a new --checkpoint-dir."
        )
    if bad := nonfinite_leaves(state["params"], state["opt_state"]):
        raise NonFiniteError(
            f"checkpoint {step} in {directory} holds NaN or infinity in {_some(bad)}; "
            "resuming from it would train on them. Delete it to resume from an older "
            "checkpoint, or start a fresh run with a new --checkpoint-dir."
        )
    return Restored(step, state["params"], state["opt_state"], meta)


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def restore_latest(
    manager: ocp.CheckpointManager,
    params_template: Any,
    opt_state_template: Any,
    *,
    report: Callable[[str], None] = _to_stderr,
) -> Restored | None:
    """Restores the newest intact step, skipping the newer ones that cannot be read.

    Tries the committed steps newest first; each one that raises
    :class:`UnreadableCheckpointError` is reported in one line through
    ``report`` (``checkpoint 60 in DIR is unreadable: ...; resuming from 55``).
    Returns ``None`` when the directory holds no committed step, and raises
    :class:`NoIntactCheckpointError` when none of them can be read. Mismatching
    structures and non-finite values are errors, as in :func:`restore`.
    """
    unreadable: list[UnreadableCheckpointError] = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            restored = restore(manager, params_template, opt_state_template, step=step)
        except UnreadableCheckpointError as err:
            unreadable.append(err)
            continue
        for err in unreadable:
            report(f"{err}; resuming from {step}")
        return restored
    if not unreadable:
        return None
    raise NoIntactCheckpointError(
        f"no intact checkpoint in {manager.directory} to resume from:\n"
        + "".join(f"  {err}\n" for err in unreadable)
        + "Move the directory away to start a fresh run, or pass a new --checkpoint-dir."
    )


# ------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------


def run_config(args: argparse.Namespace) -> dict:
    """The flags that determine the trajectory; a resumed run must repeat them."""
    return {
        "optimizer": args.optimizer,
        "learning_rate": args.learning_rate,
        "weight_decay": args.weight_decay,
        "mask": args.mask,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
    }


def check_config(directory: Any, saved: Mapping[str, Any] | None, current: Mapping[str, Any]):
    if saved is None:
        return
    diff = [
        f"  --{k.replace('_', '-')}: checkpoint {saved.get(k)!r}, this run {current.get(k)!r}"
        for k in sorted(saved.keys() | current.keys())
        if saved.get(k) != current.get(k)
    ]
    if diff:
        raise CheckpointMismatchError(
            CONFIG_MSG.format(directory=directory, details="\n".join(diff))
        )


def save_params(path: pathlib.Path, params: Any) -> None:
    """Writes the params to ``path`` (npz, keys like ``hidden/kernel``) atomically."""
    flat = {
        "/".join(str(getattr(k, "key", k)) for k in kp): np.asarray(v)
        for kp, v in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **flat)
    os.replace(tmp, path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = cli.Parser(__doc__)
    parser.add_argument("--optimizer", choices=sorted(optimizers.METHODS), default="adamw")
    parser.add_argument("--learning-rate", type=float, default=None, help="default per optimizer")
    parser.add_argument("--weight-decay", type=float, default=None, help="default per optimizer")
    parser.add_argument(
        "--mask", choices=sorted(MASKS), default="kernels", help="decay the kernels only, or all"
    )
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="split, init and batch-order seed")
    parser.add_argument("--checkpoint-dir", type=pathlib.Path, default=None)
    parser.add_argument("--checkpoint-every", type=int, default=50, metavar="N")
    parser.add_argument("--keep", type=int, default=3, help="checkpoints to keep")
    parser.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="resume from the newest complete checkpoint in --checkpoint-dir (default)",
    )
    parser.add_argument("--out", type=pathlib.Path, default=None, help="final params (.npz)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--step-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="sleep after each step: makes a run slow enough to interrupt, for tests",
    )
    args = parser.parse_args(argv)
    cli.check_positive(
        steps=args.steps,
        batch_size=args.batch_size,
        checkpoint_every=args.checkpoint_every,
        keep=args.keep,
    )
    lr, wd = optimizers.default_hparams(args.optimizer, PAPER_DECAY)
    args.learning_rate = lr if args.learning_rate is None else args.learning_rate
    args.weight_decay = wd if args.weight_decay is None else args.weight_decay
    return args


def resume(
    manager: ocp.CheckpointManager,
    args: argparse.Namespace,
    config: Mapping[str, Any],
    params: Any,
    opt_state: Any,
) -> tuple[int, Any, Any]:
    """``(start step, params, opt_state)``: the newest intact checkpoint's, or the arguments.

    Steps newer than the one resumed from could not be read (see
    :func:`restore_latest`); they are deleted, as the run writes them again.
    """
    latest = manager.latest_step()
    if latest is None:
        return 0, params, opt_state
    if not args.resume:
        raise SystemExit(
            f"{args.checkpoint_dir} already holds checkpoints (newest: step {latest}). "
            "Resume from it (drop --no-resume) or use a new --checkpoint-dir."
        )
    restored = restore_latest(manager, params, opt_state)
    check_config(manager.directory, restored.meta.get("config"), config)
    if restored.step > args.steps:
        raise SystemExit(
            f"{args.checkpoint_dir} is at step {restored.step}, past --steps {args.steps}."
        )
    for step in manager.all_steps():
        if step > restored.step:
            manager.delete(step)
    print(f"Resumed from step {restored.step} of {manager.directory}.", file=sys.stderr)
    return restored.step, restored.params, restored.opt_state


def _check_loss(loss: jax.Array, step: int) -> None:
    """Raises :class:`NonFiniteError` when the loss of step ``step`` is NaN or infinite."""
    if not math.isfinite(float(loss)):
        raise NonFiniteError(
            f"the training diverged: the loss is {float(loss)} at step {step} "
            f"(lower --learning-rate?); step {step} was not saved."
        )


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    digits = data.load_digits(args.seed)
    cli.check_batch_size(args.batch_size, digits)
    config = run_config(args)
    tx = make_optimizer(
        args.optimizer, args.learning_rate, args.weight_decay, mask=args.mask, steps=args.steps
    )
    params = init_params(args.seed)
    opt_state = tx.init(params)
    start = 0

    manager = None
    if args.checkpoint_dir is not None:
        manager = make_manager(args.checkpoint_dir, every=args.checkpoint_every, keep=args.keep)
        try:
            start, params, opt_state = resume(manager, args, config, params, opt_state)
        except BaseException:
            manager.close()
            raise

    x_train, y_train = flat_images(digits.x_train), jnp.asarray(digits.y_train)
    batches = data.batch_indices(len(x_train), args.steps, args.batch_size, args.seed)
    train_step = make_train_step(tx)
    begin = time.perf_counter()
    try:
        with tqdm(
            total=args.steps,
            initial=start,
            unit="step",
            disable=args.no_progress,
            file=sys.stderr,
            desc=args.optimizer,
        ) as bar:
            for step in range(start, args.steps):
                params, opt_state, loss = train_step(
                    params, opt_state, x_train, y_train, batches[step]
                )
                done = step + 1
                if manager is not None and (done == args.steps or manager.should_save(done)):
                    _check_loss(loss, done)
                    save(
                        manager,
                        done,
                        params,
                        opt_state,
                        meta={"config": config},
                        force=done == args.steps,
                    )
                bar.update(1)
                if done % 10 == 0 and not bar.disable:
                    bar.set_postfix(loss=f"{float(loss):.4f}")
                if args.step_delay:
                    time.sleep(args.step_delay)
    finally:
        if manager is not None:
            manager.wait_until_finished()
            manager.close()

    train_loss, train_acc = map(float, evaluate(params, x_train, y_train))
    if not math.isfinite(train_loss) or nonfinite_leaves(params, opt_state):
        not_written = f"; {args.out} was not written" if args.out is not None else ""
        raise NonFiniteError(
            f"the training diverged: the final train loss is {train_loss} "
            f"(lower --learning-rate?){not_written}."
        )
    test_loss, test_acc = map(
        float, evaluate(params, flat_images(digits.x_test), jnp.asarray(digits.y_test))
    )
    result = {
        **config,
        "resumed_from": start,
        "train_loss": train_loss,
        "train_accuracy": train_acc,
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "seconds": time.perf_counter() - begin,
    }
    print(
        f"{args.optimizer}: {args.steps} steps (from step {start}), train loss {train_loss:.4f}, "
        f"train accuracy {train_acc:.4f}, test loss {test_loss:.4f}, test accuracy {test_acc:.4f}"
    )
    if args.out is not None:
        save_params(args.out, params)
        print(f"Wrote {args.out}.")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    cli.run_cli(
        main,
        failures=(
            CheckpointMismatchError,
            UnreadableCheckpointError,
            NoIntactCheckpointError,
            NonFiniteError,
        ),
    )

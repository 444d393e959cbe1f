"""Checkpoint and resume (examples/train.py): nothing may be lost.

A run killed (SIGKILL, also mid-write) and started again ends bit-identical to one never
interrupted; a cut-off write is never loaded; a corrupt newest step (flipped bytes, a truncated
data file, an emptied ``_METADATA`` or ``manifest.ocdbt``) is reported in one line and an older
intact one used; no intact step, a NaN checkpoint or a NaN loss stop the run (exit status 1)
without writing NaN; another optimizer state structure, params dtype or flags raise a clear
``ValueError``; every optimizer's state round-trips exactly and continues bit-identically.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import optax_decay
from examples import optimizers, train

TRAIN_PATH = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train.py"
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax.checkpoint._src.path.atomicity_types.TMP_DIR_SUFFIX
STEPS, EVERY = 60, 5
DELAY = 0.05  # seconds per step: a 60-step run lasts >= 3 s, long enough to interrupt
RUN_ARGS = ["--optimizer", "adamw", "--steps", str(STEPS), "--checkpoint-every", str(EVERY)]
RUN_ARGS += ["--seed", "0", "--keep", "3", "--no-progress"]
TIMEOUT = 120  # seconds, for any one subprocess
# examples/train.py's --optimizer choices: every package optimizer, adamw in both conventions.
TRAIN_OPTIMIZERS = ("sgd_l2", "sgdw", "adam_l2", "adamw", "adamw_coupled", "prox_adam", "adamp")


def _start(tmp_path: pathlib.Path, name: str, *args: str) -> subprocess.Popen:
    with open(tmp_path / f"{name}.log", "w") as log:  # a file, not a pipe: nothing can block
        return subprocess.Popen(
            [sys.executable, str(TRAIN_PATH), *RUN_ARGS, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "JAX_PLATFORMS": "cpu"},
            start_new_session=True,  # its own process group, killed as a whole
        )


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _run(tmp_path: pathlib.Path, name: str, *args: str, expect: int = 0) -> str:
    """Runs train.py to its end; it must exit with ``expect`` (and no traceback if it fails)."""
    proc = _start(tmp_path, name, *args)
    try:
        rc = proc.wait(timeout=TIMEOUT)
    finally:
        _kill(proc)
    log = (tmp_path / f"{name}.log").read_text()
    assert rc == expect, f"{name} exited with {rc}:\n{log}"
    assert not expect or "Traceback" not in log, log
    return log


_committed = lambda ckpt: sorted(int(p.name) for p in ckpt.glob("*") if p.name.isdigit())
_uncommitted = lambda ckpt: sorted(p.name for p in ckpt.glob(f"*{TMP_SUFFIX}"))


def _assert_params_identical(path: pathlib.Path, reference: pathlib.Path) -> None:
    got, want = dict(np.load(path)), dict(np.load(reference / "params.npz"))
    chex.assert_trees_all_equal(got, want, strict=True)  # same names, dtypes, shapes and bits


def _restore(ckpt: pathlib.Path, **kwargs) -> train.Restored | None:
    """``train.restore`` into the params and optimizer state of a RUN_ARGS run."""
    params = train.init_params(0)
    tx = train.make_optimizer(train.parse_args(RUN_ARGS))
    with train.make_manager(ckpt, every=EVERY) as manager:
        return train.restore(manager, params, tx.init(params), **kwargs)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: its final params and its checkpoint directory."""
    tmp = tmp_path_factory.mktemp("reference")
    _run(tmp, "reference", "--checkpoint-dir", str(tmp / "ckpt"), "--out", str(tmp / "params.npz"))
    assert _committed(tmp / "ckpt") == [50, 55, 60]  # --keep 3
    return tmp


@pytest.fixture
def ckpt(tmp_path, reference):
    """A copy of the reference run's checkpoints, to damage."""
    shutil.copytree(reference / "ckpt", tmp_path / "ckpt")
    return tmp_path / "ckpt"


def _resume(ckpt: pathlib.Path) -> dict:
    return train.main([*RUN_ARGS, "--checkpoint-dir", str(ckpt), "--out", str(ckpt.parent / "p")])


def _kill_at_random_point(proc, ckpt, deadline):
    """Waits for a committed interval checkpoint (Orbax also commits step 1 of a fresh run: its
    ``InitialSavePolicy``), then kills the run 0-1.5 s later."""
    while not [s for s in _committed(ckpt) if s >= EVERY]:
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.01)
    delay = random.uniform(0.0, 1.5)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    return f"killed {delay:.2f} s after the first interval checkpoint"


def _kill_mid_write(proc, ckpt, deadline):
    """Kills the run while it writes the checkpoint of a random step (10 to 50): when its
    temporary folder shows up, the run is frozen (SIGSTOP) and looked at again: still
    uncommitted, it is killed; committed meanwhile, it goes on (SIGCONT)."""
    target = random.randrange(2 * EVERY, STEPS - 2 * EVERY + 1, EVERY)
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, "no write caught in time"
        if any(int(name.split(".")[0]) >= target for name in _uncommitted(ckpt)):
            os.killpg(proc.pid, signal.SIGSTOP)
            if partial := _uncommitted(ckpt):
                os.killpg(proc.pid, signal.SIGKILL)
                return f"killed while writing {partial}"
            os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.001)


@pytest.mark.parametrize("when", [_kill_at_random_point, _kill_mid_write], ids=lambda f: f.__name__)
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, reference, when):
    ckpt, out = tmp_path / "ckpt", tmp_path / "params.npz"
    args = ("--checkpoint-dir", str(ckpt), "--out", str(out))
    proc = _start(tmp_path, "killed", *args, "--step-delay", str(DELAY))
    try:
        how = when(proc, ckpt, time.monotonic() + TIMEOUT)
        proc.wait(timeout=30)
    finally:
        _kill(proc)
    assert proc.returncode == -signal.SIGKILL, f"{how}; the run was not killed"
    assert not out.exists(), f"{how}, but the run had finished"
    committed = _committed(ckpt)
    assert committed and committed[-1] < STEPS, (how, committed)
    if when is _kill_mid_write:
        [partial] = _uncommitted(ckpt)
        assert int(partial.split(".")[0]) > committed[-1]

    log = _run(tmp_path, "resumed", *args)
    assert f"Resumed from step {committed[-1]} " in log, (how, log)
    _assert_params_identical(out, reference)
    assert _uncommitted(ckpt) == [], "the interrupted write was left behind"
    assert _committed(ckpt) == [50, 55, 60]


def test_checkpoint_cut_off_mid_write_is_never_loaded(ckpt, reference, capsys):
    """Step 60 turned into what a crash before its commit leaves: the temporary name, no
    ``commit_success.txt``, no item metadata, truncated array files."""
    partial = ckpt / f"60{TMP_SUFFIX}"
    (ckpt / "60").rename(partial)
    for f in [*partial.rglob("commit_success.txt"), partial / "state" / "_METADATA"]:
        f.unlink()
    for f in (p for p in (partial / "state").rglob("*") if p.is_file()):
        _half(f)
    shutil.rmtree(ckpt / "50" / "state")  # a crash while max_to_keep deletes the oldest step

    # Orbax lists committed steps only (a read-only manager leaves the directory as it is)...
    with ocp.CheckpointManager(ckpt, options=ocp.CheckpointManagerOptions(read_only=True)) as m:
        assert m.latest_step() == 55 and 60 not in m.all_steps()
    assert partial.exists()
    # ... restore() picks the newest of them, and the trainer's manager removes the partial write.
    restored = _restore(ckpt)
    assert restored.step == 55 and restored.meta["config"]["steps"] == STEPS
    assert not partial.exists()

    assert _resume(ckpt)["resumed_from"] == 55
    assert "Resumed from step 55 " in capsys.readouterr().err
    _assert_params_identical(ckpt.parent / "p", reference)
    assert _uncommitted(ckpt) == [] and 60 in _committed(ckpt)


_half = lambda f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _data_file(step_dir: pathlib.Path) -> pathlib.Path:
    """The largest file of the step's array item: OCDBT's data file, the arrays' chunks."""
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=os.path.getsize)


def _flip_bytes(step_dir: pathlib.Path) -> None:
    """Inverts 64 bytes in the middle of the data file (it stays readable: zstd has no CRC)."""
    f = _data_file(step_dir)
    data, middle = bytearray(f.read_bytes()), f.stat().st_size // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    f.write_bytes(bytes(data))


_empty = lambda name: lambda step_dir: (step_dir / "state" / name).write_bytes(b"")
CORRUPTIONS = {  # name -> (corruption of a step's folder, the reason the one-line report gives)
    "flip_bytes": (_flip_bytes, "checksum mismatch in "),
    "truncate_data_file": (lambda d: _half(_data_file(d)), "OUT_OF_RANGE: "),
    "empty_metadata": (_empty("_METADATA"), "JSONDecodeError: "),
    "empty_manifest": (
        _empty("manifest.ocdbt"),
        'Error decoding local file "state/manifest.ocdbt"',
    ),
}


def _unreadable(ckpt: pathlib.Path, step: int, corruption: str, then: str) -> str:
    reason = re.escape(CORRUPTIONS[corruption][1])
    return rf"checkpoint {step} in {re.escape(str(ckpt))} is unreadable: .*{reason}.*{then}"


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_newest_checkpoint_falls_back_to_older_step(
    ckpt, reference, capsys, monkeypatch, corruption
):
    """One line, resumed from step 55, trained to the end as without it; no traceback, none of
    the "Event loop is closed" errors of reads left in flight (``sys.unraisablehook``)."""
    CORRUPTIONS[corruption][0](ckpt / "60")
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(repr(u.exc_value)))

    assert _resume(ckpt)["resumed_from"] == 55

    err = capsys.readouterr().err
    assert unraisable == [] and "Traceback" not in err and "Event loop" not in err, err
    reports = [line for line in err.splitlines() if "unreadable" in line]
    assert len(reports) == 1, err
    assert re.fullmatch(_unreadable(ckpt, 60, corruption, "; resuming from 55"), reports[0])
    assert "Resumed from step 55 " in err
    _assert_params_identical(ckpt.parent / "p", reference)
    assert _committed(ckpt) == [50, 55, 60] and _restore(ckpt).step == 60  # 60 intact again


def test_no_intact_checkpoint_exits_with_the_reasons(ckpt, tmp_path):
    corruptions = {60: "flip_bytes", 55: "empty_metadata", 50: "empty_manifest"}
    for step, corruption in corruptions.items():
        CORRUPTIONS[corruption][0](ckpt / str(step))

    out = tmp_path / "params.npz"
    log = _run(tmp_path, "corrupt", "--checkpoint-dir", str(ckpt), "--out", str(out), expect=1)

    assert f"error: no intact checkpoint in {ckpt} to resume from:\n" in log
    for step, corruption in corruptions.items():
        assert re.search(_unreadable(ckpt, step, corruption, "\n"), log), log
    assert "Resumed" not in log and not out.exists()
    assert _committed(ckpt) == [50, 55, 60], "the checkpoints were touched"


def test_non_finite_checkpoint_is_an_error(tmp_path, monkeypatch):
    """A checkpoint holding NaN with matching checksums (saved without the finiteness guard):
    ``main`` raises instead of training on it (``__main__`` makes it exit status 1)."""
    ckpt = tmp_path / "ckpt"
    args = train.parse_args(RUN_ARGS)
    params = train.init_params(0)
    state = train.make_optimizer(args).init(params)
    params["hidden"]["kernel"] = params["hidden"]["kernel"].at[3, 7].set(jnp.nan)
    config = {k: getattr(args, k) for k in train.CONFIG}
    with monkeypatch.context() as patch, train.make_manager(ckpt, every=EVERY) as manager:
        patch.setattr(train, "nonfinite", lambda *trees: [])
        assert train.save(manager, EVERY, params, state, meta={"config": config})

    message = f"checkpoint {EVERY} in {ckpt} holds NaN or infinity in params/hidden/kernel;"
    with pytest.raises(FloatingPointError, match=re.escape(message)):
        _resume(ckpt)
    assert not (tmp_path / "p").exists() and _committed(ckpt) == [EVERY]


def test_diverging_run_exits_non_zero_and_saves_no_nan(tmp_path):
    ckpt, out = tmp_path / "ckpt", tmp_path / "params.npz"
    args = ("--learning-rate", "1e30", "--steps", "20", "--checkpoint-dir", str(ckpt))

    log = _run(tmp_path, "diverging", *args, "--out", str(out), expect=1)

    assert re.search(r"error: the training diverged: the loss is (nan|-?inf) at step \d+", log), log
    assert not out.exists()
    committed = _committed(ckpt)
    assert committed and committed[-1] < 20, committed
    for step in committed:  # read with Orbax alone: whatever was written is finite
        with ocp.StandardCheckpointer() as checkpointer:
            state = checkpointer.restore(ckpt / str(step) / "state")
        for leaf in jax.tree.leaves(state):
            assert np.isfinite(np.asarray(leaf, np.float64)).all(), f"step {step} holds NaN"


def _params(dtype):
    kernel, bias = np.linspace(-1, 1, 12).reshape(4, 3), np.linspace(0, 1, 3)
    tree = {"dense": {"kernel": kernel, "bias": bias}, "norm": {"scale": 1 + bias}}
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)


def _updates(tx, params, state, steps, start=0):
    for i in range(start, start + steps):
        grads = jax.tree.map(lambda p, i=i: jnp.cos(p * (i + 1.0) + 0.5).astype(p.dtype), params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


_adamw = lambda mask=optax_decay.weight_decay_mask: optax_decay.adamw(1e-2, 1e-2, mask=mask)

OTHER_TREES = {  # what the restore targets: optimizer, params dtype
    "adamw-without-mask": (_adamw(None), jnp.float32),
    "sgdw": (optax_decay.sgdw(1e-2, 1e-2, momentum=0.9), jnp.float32),
    "adam_l2": (optax_decay.adam_l2(1e-2, 1e-2), jnp.float32),
    "bfloat16-params": (_adamw(), jnp.bfloat16),
}


@pytest.mark.parametrize("other", OTHER_TREES)
def test_restore_into_other_structure_raises(tmp_path, other):
    """Names both structures (the opt_state's copies of the params written ``<params>``), the
    paths that differ and what to do."""
    tx, dtype = OTHER_TREES[other]
    params = _params(jnp.float32)
    params, state = _updates(_adamw(), params, _adamw().init(params), 2)
    with train.make_manager(tmp_path / "ckpt") as manager:
        assert train.save(manager, 2, params, state)
        params = _params(dtype)
        with pytest.raises(ValueError, match="Cannot restore step 2 from ") as e:
            train.restore(manager, params, tx.init(params))
    lines = dict(line.strip().split(": ", 1) for line in str(e.value).splitlines()[1:-1])
    if dtype == jnp.float32:
        assert "optimizer with a different state structure" in str(e.value).splitlines()[0]
        assert "only in the checkpoint" in lines and "only in this run" in lines
        assert "namedtuple[MaskedState]" in lines["checkpoint"]
        assert "namedtuple[ScaleByAdamState], [*, <params>, <params>]" in lines["checkpoint"]
        assert "<params>" in lines["this run"] and lines["this run"] != lines["checkpoint"]
        assert "optimizer (same optimizer and same mask)" in str(e.value)
    else:  # Orbax would cast float32 to bfloat16 silently
        assert "params have a different structure, shape or dtype" in str(e.value)
        assert lines["checkpoint"] == str(jax.tree.structure(params)) == lines["this run"]
        changed = lines["different shape or dtype (checkpoint -> this run)"]
        assert "params/dense/kernel: float32[4,3] -> bfloat16[4,3]" in changed
    assert str(e.value).endswith("new --checkpoint-dir.")


def test_resume_with_other_optimizer_or_mask_raises(tmp_path):
    args = ["--steps", "4", "--checkpoint-every", "2", "--no-progress"]
    args += ["--checkpoint-dir", str(tmp_path / "ckpt")]
    train.main([*args, "--optimizer", "adamw"])
    for other in (["--optimizer", "sgdw"], ["--optimizer", "adamw", "--mask", "all"]):
        with pytest.raises(ValueError, match="optimizer with a different state structure"):
            train.main([*args, *other])
    # Same state structure as adamw, another optimizer: caught by the stored flags.
    with pytest.raises(ValueError, match="--optimizer: checkpoint 'adamw', this run 'prox_adam'"):
        train.main([*args, "--optimizer", "prox_adam"])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("name", TRAIN_OPTIMIZERS)
def test_round_trip_every_optimizer(tmp_path, name, dtype):
    """Also: train.py's optimizers are the package's, each of them taken by --optimizer."""
    assert set(TRAIN_OPTIMIZERS) <= set(optimizers.METHODS)
    assert optimizers.METHODS[name].factory is getattr(optax_decay, name.removesuffix("_coupled"))
    assert train.parse_args(["--optimizer", name]).optimizer == name
    # eta_t * lambda ~ 0.05 per step (lambda * lr for the coupled form), well above bfloat16's
    # resolution, so the decay changes the params (no DecayPrecisionWarning).
    weight_decay = 5.0 if name == "adamw_coupled" else 0.05
    schedule = optax.cosine_decay_schedule(1.0, 10)
    tx = optimizers.make(name, 1e-2, weight_decay, schedule=schedule)
    params0 = _params(dtype)
    params, state = _updates(tx, params0, tx.init(params0), 3)
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), params, params0)
    assert any(jax.tree.leaves(changed)), "the saved params must differ from the template's"

    with train.make_manager(tmp_path / "ckpt") as manager:
        assert train.save(manager, 3, params, state)
    with train.make_manager(tmp_path / "ckpt") as manager:
        restored = train.restore(manager, params0, tx.init(params0))

    assert restored.step == 3  # the same trees (NamedTuples included), dtypes and bits:
    chex.assert_trees_all_equal(restored[1:3], (params, state), strict=True)
    # The restored optimizer continues exactly as the original one.
    want = _updates(tx, params, state, 3, start=3)
    got = _updates(tx, restored.params, restored.opt_state, 3, start=3)
    chex.assert_trees_all_equal(got, want, strict=True)

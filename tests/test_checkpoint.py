"""Checkpoint and resume (examples/train.py): nothing may be lost.

* A run killed with SIGKILL at an arbitrary point, or in the middle of writing
  a checkpoint, and started again ends with params bit-identical to a run that
  was never interrupted.
* A checkpoint cut off mid-write is never loaded: Orbax 0.12.8 writes step N
  into ``N.orbax-checkpoint-tmp`` and commits it by renaming it to ``N`` (on a
  local file system the name is the commit mark; ``commit_success.txt`` is
  written too, but only checked on GCS). What a crash leaves behind is ignored
  by ``latest_step()`` and removed when the next run opens the directory.
* A corrupt newest checkpoint (flipped bytes, caught by the checksums stored
  with it; a truncated data file; an emptied ``_METADATA`` or
  ``manifest.ocdbt``) is reported in one line and the older intact step is
  used; with none intact, or a checkpoint holding NaN, or a run whose loss
  becomes NaN, the trainer exits with status 1 and writes no NaN checkpoint.
* Restoring into an optimizer whose state has another structure (another mask,
  another optimizer) or params of another dtype raises a clear ``ValueError``.
* Every optimizer's state round-trips exactly (float32 and bfloat16) and the
  restored optimizer continues bit-identically.
"""

from __future__ import annotations

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

STEPS = 60
EVERY = 5
DELAY = 0.05  # seconds per step: a 60-step run lasts >= 3 s, long enough to interrupt
RUN_ARGS = ["--optimizer", "adamw", "--steps", str(STEPS), "--checkpoint-every", str(EVERY)]
RUN_ARGS += ["--seed", "0", "--keep", "3", "--no-progress"]
TIMEOUT = 120  # seconds, for any one subprocess
# examples/train.py's --optimizer choices: every package optimizer, adamw in both conventions.
TRAIN_OPTIMIZERS = ("sgd_l2", "sgdw", "adam_l2", "adamw", "adamw_coupled", "prox_adam", "adamp")


def _env():
    return {**os.environ, "JAX_PLATFORMS": "cpu"}


def _start(tmp_path: pathlib.Path, name: str, *args: str) -> subprocess.Popen:
    log = open(tmp_path / f"{name}.log", "w")  # a file, not a pipe: nothing can block on it
    try:
        return subprocess.Popen(
            [sys.executable, str(TRAIN_PATH), *RUN_ARGS, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(),
            start_new_session=True,  # its own process group, killed as a whole
        )
    finally:
        log.close()


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def _run(tmp_path: pathlib.Path, name: str, *args: str, expect: int = 0) -> str:
    """Runs examples/train.py to its end; it must exit with status ``expect``. Returns its log.

    A failing run (``expect != 0``) must also print no traceback.
    """
    proc = _start(tmp_path, name, *args)
    try:
        rc = proc.wait(timeout=TIMEOUT)
    finally:
        _kill(proc)
    log = (tmp_path / f"{name}.log").read_text()
    assert rc == expect, f"{name} exited with {rc}:\n{log}"
    if expect:
        assert "Traceback" not in log, log
    return log


def _committed(ckpt: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.exists() else []


def _uncommitted(ckpt: pathlib.Path) -> list[str]:
    return sorted(p.name for p in ckpt.iterdir() if TMP_SUFFIX in p.name) if ckpt.exists() else []


def _assert_params_identical(path: pathlib.Path, reference: pathlib.Path) -> None:
    got, want = np.load(path), np.load(reference)
    assert sorted(got.files) == sorted(want.files)
    for k in want.files:
        assert got[k].dtype == want[k].dtype, k
        assert np.array_equal(got[k], want[k]), f"{k} differs from the uninterrupted run"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: its final params and its checkpoint directory."""
    tmp = tmp_path_factory.mktemp("reference")
    _run(tmp, "reference", "--checkpoint-dir", str(tmp / "ckpt"), "--out", str(tmp / "params.npz"))
    assert _committed(tmp / "ckpt") == [50, 55, 60]  # --keep 3
    return tmp


# ------------------------------------------------------------------------------------------
# Killed and resumed runs
# ------------------------------------------------------------------------------------------


def _kill_at_random_point(proc, ckpt, deadline):
    """Waits for a committed interval checkpoint, then kills the run 0-1.5 s later.

    (Orbax also commits step 1 of a fresh run: its ``InitialSavePolicy``.)
    """
    while not [s for s in _committed(ckpt) if s >= EVERY]:
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint committed in time"
        time.sleep(0.01)
    delay = random.uniform(0.0, 1.5)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    return f"killed {delay:.2f} s after the first interval checkpoint"


def _kill_mid_write(proc, ckpt, deadline):
    """Kills the run while it writes the checkpoint of a random step (10 to 45).

    When that step's temporary directory shows up, the run is frozen (SIGSTOP)
    and looked at again: still uncommitted, it is killed; committed meanwhile,
    it goes on (SIGCONT) and the next write is the target.
    """
    target = random.randrange(2 * EVERY, STEPS - 2 * EVERY + 1, EVERY)
    while True:
        assert proc.poll() is None, "the run ended before it could be killed mid-write"
        assert time.monotonic() < deadline, "no checkpoint write caught in time"
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
    log = (tmp_path / "killed.log").read_text()
    assert proc.returncode == -signal.SIGKILL, f"{how}; the run was not killed:\n{log}"
    assert not out.exists(), f"{how}, but the run had finished"
    committed = _committed(ckpt)
    assert committed and committed[-1] < STEPS, (how, committed)
    if when is _kill_mid_write:
        [partial] = _uncommitted(ckpt)
        assert int(partial.split(".")[0]) > committed[-1]

    _run(tmp_path, "resumed", *args)
    resumed_log = (tmp_path / "resumed.log").read_text()
    assert f"Resumed from step {committed[-1]} " in resumed_log, (how, resumed_log)
    _assert_params_identical(out, reference / "params.npz")
    assert _uncommitted(ckpt) == [], "the resumed run left the interrupted write behind"
    assert _committed(ckpt) == [50, 55, 60]


# ------------------------------------------------------------------------------------------
# A checkpoint cut off mid-write is never loaded
# ------------------------------------------------------------------------------------------


def _cut_off(step_dir: pathlib.Path) -> pathlib.Path:
    """Turns a committed step into what a crash before its commit leaves behind.

    Orbax writes ``<step>.orbax-checkpoint-tmp/`` (``_CHECKPOINT_METADATA``, then
    each item's files) and, once all is written, ``commit_success.txt`` and the
    rename to ``<step>/``. A crash before the rename leaves the temporary name,
    no ``commit_success.txt`` and any prefix of the files: here, the array
    data is truncated and the item metadata missing.
    """
    partial = step_dir.with_name(step_dir.name + TMP_SUFFIX)
    step_dir.rename(partial)
    for marker in partial.rglob("commit_success.txt"):
        marker.unlink()
    (partial / "state" / "_METADATA").unlink()
    for f in sorted(p for p in (partial / "state").rglob("*") if p.is_file()):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return partial


def test_checkpoint_cut_off_mid_write_is_never_loaded(tmp_path, reference, capsys):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(reference / "ckpt", ckpt)
    partial = _cut_off(ckpt / "60")
    # A crash while max_to_keep deletes the oldest step leaves it half deleted.
    shutil.rmtree(ckpt / "50" / "state")

    # Orbax lists committed steps only (a read-only manager leaves the directory as it is)...
    options = ocp.CheckpointManagerOptions(read_only=True)
    with ocp.CheckpointManager(ckpt, options=options) as manager:
        assert manager.latest_step() == 55
        assert 60 not in manager.all_steps()
    assert partial.exists()
    # ... and restore() picks the newest of them; the trainer's manager removes the partial write.
    params = train.init_params(0)
    tx = train.make_optimizer("adamw", steps=STEPS)
    with train.make_manager(ckpt, every=EVERY) as manager:
        assert manager.latest_step() == 55
        restored = train.restore(manager, params, tx.init(params))
    assert restored.step == 55
    assert not partial.exists()
    assert restored.meta["config"]["steps"] == STEPS

    # Training resumes from step 55 and ends exactly where the uninterrupted run ended.
    out = tmp_path / "params.npz"
    result = train.main([*RUN_ARGS, "--checkpoint-dir", str(ckpt), "--out", str(out)])
    assert result["resumed_from"] == 55
    assert "Resumed from step 55 " in capsys.readouterr().err
    _assert_params_identical(out, reference / "params.npz")
    assert _uncommitted(ckpt) == []
    assert 60 in _committed(ckpt)


# ------------------------------------------------------------------------------------------
# Corrupt checkpoints and non-finite state
# ------------------------------------------------------------------------------------------


def _data_file(step_dir: pathlib.Path) -> pathlib.Path:
    """The largest file of the step's array item: OCDBT's data file, the arrays' chunks."""
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=_size)


def _size(path: pathlib.Path) -> int:
    return path.stat().st_size


def _flip_bytes(step_dir: pathlib.Path) -> None:
    """Inverts 64 bytes in the middle of the data file (it stays readable: zstd has no CRC)."""
    f = _data_file(step_dir)
    data = bytearray(f.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    f.write_bytes(bytes(data))


def _truncate_data_file(step_dir: pathlib.Path) -> None:
    f = _data_file(step_dir)
    f.write_bytes(f.read_bytes()[: _size(f) // 2])


def _empty_metadata(step_dir: pathlib.Path) -> None:
    (step_dir / "state" / "_METADATA").write_bytes(b"")


def _empty_manifest(step_dir: pathlib.Path) -> None:
    (step_dir / "state" / "manifest.ocdbt").write_bytes(b"")


# corruption -> what the one-line report gives as the reason
CORRUPTIONS = {
    _flip_bytes: "checksum mismatch in ",
    _truncate_data_file: "OUT_OF_RANGE: ",
    _empty_metadata: "JSONDecodeError: ",
    _empty_manifest: 'Error decoding local file "state/manifest.ocdbt"',
}


def _unreadable_line(ckpt: pathlib.Path, step: int, reason: str, then: str) -> str:
    return (
        rf"checkpoint {step} in {re.escape(str(ckpt))} is unreadable: .*{re.escape(reason)}.*{then}"
    )


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.lstrip("_"))
def test_corrupt_newest_checkpoint_falls_back_to_older_step(
    tmp_path, reference, capsys, monkeypatch, corrupt
):
    """Reported in one line, resumed from step 55, trained to the end exactly as without it.

    Nothing else is printed: no traceback, and none of the "Event loop is closed"
    errors that reads left in flight by a failed Orbax restore raise in TensorStore's
    threads (Python passes them to ``sys.unraisablehook``).
    """
    ckpt, out = tmp_path / "ckpt", tmp_path / "params.npz"
    shutil.copytree(reference / "ckpt", ckpt)
    corrupt(ckpt / "60")
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(repr(u.exc_value)))

    result = train.main([*RUN_ARGS, "--checkpoint-dir", str(ckpt), "--out", str(out)])

    assert unraisable == []
    err = capsys.readouterr().err
    reports = [line for line in err.splitlines() if "unreadable" in line]
    assert len(reports) == 1, err
    assert re.fullmatch(
        _unreadable_line(ckpt, 60, CORRUPTIONS[corrupt], "; resuming from 55"), reports[0]
    )
    assert "Traceback" not in err and "Event loop" not in err, err
    assert "Resumed from step 55 " in err
    assert result["resumed_from"] == 55
    _assert_params_identical(out, reference / "params.npz")
    # The corrupt step was written again, intact.
    assert _committed(ckpt) == [50, 55, 60]
    params = train.init_params(0)
    tx = train.make_optimizer("adamw", steps=STEPS)
    with train.make_manager(ckpt, every=EVERY) as manager:
        assert train.restore(manager, params, tx.init(params)).step == 60


def test_no_intact_checkpoint_exits_with_the_reasons(tmp_path, reference):
    ckpt, out = tmp_path / "ckpt", tmp_path / "params.npz"
    shutil.copytree(reference / "ckpt", ckpt)
    _flip_bytes(ckpt / "60")
    _empty_metadata(ckpt / "55")
    _empty_manifest(ckpt / "50")

    log = _run(tmp_path, "corrupt", "--checkpoint-dir", str(ckpt), "--out", str(out), expect=1)

    assert f"error: no intact checkpoint in {ckpt} to resume from:\n" in log
    for step, corrupt in ((60, _flip_bytes), (55, _empty_metadata), (50, _empty_manifest)):
        assert re.search(_unreadable_line(ckpt, step, CORRUPTIONS[corrupt], "\n"), log), log
    assert "Resumed" not in log and not out.exists()
    assert _committed(ckpt) == [50, 55, 60], "the checkpoints were touched"


def test_non_finite_checkpoint_is_an_error(tmp_path, monkeypatch):
    """A checkpoint holding NaN, with checksums that match (saved without the finiteness guard).

    ``main`` raises instead of training on it (``__main__`` turns the error into
    "error: ..." and exit status 1, as the tests before and after this one check).
    """
    ckpt, out = tmp_path / "ckpt", tmp_path / "params.npz"
    params = train.init_params(0)
    tx = train.make_optimizer("adamw", steps=STEPS)
    state = tx.init(params)
    params["hidden"]["kernel"] = params["hidden"]["kernel"].at[3, 7].set(jnp.nan)
    config = train.run_config(train.parse_args(RUN_ARGS))
    with monkeypatch.context() as patch, train.make_manager(ckpt, every=EVERY) as manager:
        patch.setattr(train, "nonfinite_leaves", lambda *trees: [], raising=False)
        assert train.save(manager, EVERY, params, state, meta={"config": config})

    message = f"checkpoint {EVERY} in {ckpt} holds NaN or infinity in params/hidden/kernel;"
    with pytest.raises(FloatingPointError, match=re.escape(message)):
        train.main([*RUN_ARGS, "--checkpoint-dir", str(ckpt), "--out", str(out)])
    assert not out.exists()
    assert _committed(ckpt) == [EVERY]


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


# ------------------------------------------------------------------------------------------
# Restoring into another structure
# ------------------------------------------------------------------------------------------

PARAMS = {
    "dense": {"kernel": np.linspace(-1, 1, 12).reshape(4, 3), "bias": np.linspace(0, 1, 3)},
    "norm": {"scale": np.linspace(1, 2, 3)},
}


def _params(dtype):
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), PARAMS)


def _grads(params, i):
    return jax.tree.map(lambda p: jnp.cos(p * (i + 1.0) + 0.5).astype(p.dtype), params)


def _updates(tx, params, state, steps, start=0):
    for i in range(start, start + steps):
        updates, state = tx.update(_grads(params, i), state, params)
        params = optax.apply_updates(params, updates)
    return params, state


@pytest.fixture
def adamw_checkpoint(tmp_path):
    """A checkpoint of adamw with ``weight_decay_mask`` after 2 steps."""
    params = _params(jnp.float32)
    tx = optax_decay.adamw(1e-2, 1e-2, mask=optax_decay.weight_decay_mask)
    params, state = _updates(tx, params, tx.init(params), 2)
    with train.make_manager(tmp_path / "ckpt") as manager:
        assert train.save(manager, 2, params, state)
    return tmp_path / "ckpt"


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(lambda: optax_decay.adamw(1e-2, 1e-2, mask=None), id="adamw-without-mask"),
        pytest.param(lambda: optax_decay.sgdw(1e-2, 1e-2, momentum=0.9), id="sgdw"),
        pytest.param(lambda: optax_decay.adam_l2(1e-2, 1e-2), id="adam_l2"),
    ],
)
def test_restore_into_other_optimizer_structure_raises(adamw_checkpoint, other):
    params = _params(jnp.float32)
    tx = other()
    with train.make_manager(adamw_checkpoint) as manager:
        with pytest.raises(ValueError, match="written by an optimizer with a different state") as e:
            train.restore(manager, params, tx.init(params))
    # Both structures named (the params' subtrees written <params>), the paths that differ,
    # and what to do.
    lines = {
        line.split(":")[0].strip(): line.split(":", 1)[1].strip()
        for line in str(e.value).splitlines()
        if ":" in line
    }
    assert "namedtuple[MaskedState]" in lines["checkpoint"]
    assert "namedtuple[ScaleByAdamState], [*, <params>, <params>]" in lines["checkpoint"]
    assert lines["this run"] == train._structure(
        str(jax.tree.structure(tx.init(params))), str(jax.tree.structure(params))
    )
    assert "only in the checkpoint" in lines and "only in this run" in lines
    assert "same mask" in str(e.value) and "new --checkpoint-dir" in str(e.value)


def test_restore_into_other_params_dtype_raises(adamw_checkpoint):
    """Orbax would cast float32 to bfloat16 silently."""
    params = _params(jnp.bfloat16)
    tx = optax_decay.adamw(1e-2, 1e-2, mask=optax_decay.weight_decay_mask)
    with train.make_manager(adamw_checkpoint) as manager:
        with pytest.raises(ValueError, match=r"float32\[4,3\] -> bfloat16\[4,3\]"):
            train.restore(manager, params, tx.init(params))


def test_resume_with_other_optimizer_or_mask_raises(tmp_path):
    ckpt = tmp_path / "ckpt"
    args = ["--steps", "4", "--checkpoint-every", "2", "--no-progress"]
    train.main([*args, "--optimizer", "adamw", "--checkpoint-dir", str(ckpt)])
    with pytest.raises(ValueError, match="optimizer with a different state structure"):
        train.main([*args, "--optimizer", "sgdw", "--checkpoint-dir", str(ckpt)])
    with pytest.raises(ValueError, match="optimizer with a different state structure"):
        train.main([*args, "--optimizer", "adamw", "--mask", "all", "--checkpoint-dir", str(ckpt)])
    # Same state structure as adamw, another optimizer: caught by the stored flags.
    with pytest.raises(ValueError, match="--optimizer: checkpoint 'adamw', this run 'prox_adam'"):
        train.main([*args, "--optimizer", "prox_adam", "--checkpoint-dir", str(ckpt)])


# ------------------------------------------------------------------------------------------
# Round trip of every optimizer
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("name", TRAIN_OPTIMIZERS)
def test_round_trip_every_optimizer(tmp_path, name, dtype):
    schedule = optax.cosine_decay_schedule(1.0, 10)
    # eta_t * lambda ~ 0.05 per step (lambda * lr for the coupled form), well above bfloat16's
    # resolution, so the decay changes the params (no DecayPrecisionWarning).
    weight_decay = 5.0 if name == "adamw_coupled" else 0.05
    tx = optimizers.make(
        name, 1e-2, weight_decay, schedule=schedule, mask=optax_decay.weight_decay_mask
    )
    params0 = _params(dtype)
    params, state = _updates(tx, params0, tx.init(params0), 3)
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), params, params0)
    assert any(jax.tree.leaves(changed)), "the saved params must differ from the template's"

    with train.make_manager(tmp_path / "ckpt") as manager:
        assert train.save(manager, 3, params, state)
    with train.make_manager(tmp_path / "ckpt") as manager:
        restored = train.restore(manager, params0, tx.init(params0))

    assert restored.step == 3
    assert jax.tree.structure(restored.opt_state) == jax.tree.structure(state)
    chex.assert_trees_all_equal(restored.params, params, strict=True)
    chex.assert_trees_all_equal(restored.opt_state, state, strict=True)
    chex.assert_trees_all_equal_dtypes(restored.params, params)
    chex.assert_trees_all_equal_dtypes(restored.opt_state, state)
    # The restored optimizer continues exactly as the original one.
    want = _updates(tx, params, state, 3, start=3)
    got = _updates(tx, restored.params, restored.opt_state, 3, start=3)
    chex.assert_trees_all_equal(got, want, strict=True)


def test_train_optimizers_are_the_package_optimizers():
    assert set(optimizers.METHODS) == set(TRAIN_OPTIMIZERS)
    for name in TRAIN_OPTIMIZERS:  # train.py's --optimizer takes each of them
        assert train.parse_args(["--optimizer", name]).optimizer == name
        factory = optimizers.METHODS[name].factory
        assert factory is getattr(optax_decay, name.removesuffix("_coupled"))

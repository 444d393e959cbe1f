"""The timing harness and report writing shared by the benchmark scripts.

``Runner`` times one jitted step ``step(carry, data) -> carry`` two ways:

* **in-jit**: ``K`` steps inside one jitted ``jax.lax.fori_loop``, the carry
  donated. The fixed ``data`` passes through a ``jax.lax.optimization_barrier``
  together with the loop carry: otherwise XLA hoists data-only work (an
  optimizer's ``g*g``, ``(1 - b1)*g``) out of the loop as loop invariant, adds
  buffers to the loop carry and times something that is not a training step.
* **per call**: the jitted, donated single step called ``K`` times from
  Python, so dispatch overhead (per leaf, per call) is included.

``time_round_robin`` times a dict of runners: every repeat runs every runner
once in-jit, then once per call, so that machine noise hits all alike.

The scripts import it as ``benchmarks.harness``, like the examples import their shared
modules (examples/README.md): the repo root is on the venv's ``sys.path``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

import optax_decay

MODES = ("in_jit", "per_call")


def _loop(step: Callable, steps: int) -> Callable:
    def run(carry, data):
        tie = bool(jax.tree.leaves(data))  # without data, there is nothing to hoist

        def body(_, carry):
            # No-op at run time: the fixed data looks loop variant to XLA, so each
            # iteration does exactly the work of one step.
            d, carry = jax.lax.optimization_barrier((data, carry)) if tie else (data, carry)
            return step(carry, d)

        return jax.lax.fori_loop(0, steps, body, carry)

    return run


class Runner:
    """One step function, its donated ``carry`` and its fixed ``data``.

    ``__init__`` only traces and lowers; ``compile`` (thread safe, XLA releases
    the GIL) can run in a pool, which matters for 2000-leaf trees. ``warmup``
    compiles what is not compiled yet.
    """

    def __init__(self, step: Callable, carry: Any, data: Any, steps: int):
        self.carry = carry
        self.data = data
        self.steps = steps
        self._lowered: tuple | None = (
            jax.jit(_loop(step, steps), donate_argnums=0).lower(carry, data),
            jax.jit(step, donate_argnums=0).lower(carry, data),
        )

    def compile(self) -> Runner:
        if self._lowered is not None:
            self.in_jit, self.single = (lowered.compile() for lowered in self._lowered)
            self._lowered = None
        return self

    def warmup(self) -> None:
        self.compile()
        self.carry = self.in_jit(self.carry, self.data)
        self.carry = self.single(self.carry, self.data)
        jax.block_until_ready(self.carry)

    def time_in_jit(self) -> float:
        """Seconds per step, ``K`` steps in one jitted loop."""
        jax.block_until_ready(self.carry)
        t0 = time.perf_counter()
        self.carry = self.in_jit(self.carry, self.data)
        jax.block_until_ready(self.carry)
        return (time.perf_counter() - t0) / self.steps

    def time_per_call(self) -> float:
        """Seconds per step, ``K`` jitted calls from Python."""
        jax.block_until_ready(self.carry)
        carry = self.carry
        t0 = time.perf_counter()
        for _ in range(self.steps):
            carry = self.single(carry, self.data)
        jax.block_until_ready(carry)
        elapsed = time.perf_counter() - t0
        self.carry = carry
        return elapsed / self.steps


def time_round_robin(
    runners: dict[Hashable, Runner],
    repeats: int,
    bar: Any,
    label: str,
    roofline: Runner | None = None,
) -> tuple[dict[Hashable, dict[str, list[float]]], list[float]]:
    """``times[key][mode]``, seconds per step, one per repeat, and the roofline's times.

    Every repeat times every runner in-jit, then every runner per call; the
    ``roofline`` runner (in-jit only) is timed at the start and at the end of
    every repeat. ``bar`` (tqdm) advances by one per timing.
    """
    times: dict = {key: {mode: [] for mode in MODES} for key in runners}
    roofline_times: list[float] = []
    for rep in range(repeats):
        bar.set_postfix_str(f"{label}: repeat {rep + 1}/{repeats}")
        if roofline is not None:
            roofline_times.append(roofline.time_in_jit())
            bar.update()
        for key, runner in runners.items():
            times[key]["in_jit"].append(runner.time_in_jit())
            bar.update()
        for key, runner in runners.items():
            times[key]["per_call"].append(runner.time_per_call())
            bar.update()
        if roofline is not None:
            roofline_times.append(roofline.time_in_jit())
            bar.update()
    return times, roofline_times


# --------------------------------------------------------------------------- reports


def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
    }
    try:  # platform.processor() is often empty on Linux
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=Path(optax_decay.__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def versions() -> dict:
    import jaxlib

    status = _git("status", "--porcelain", "--", ".")
    return {
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "optax": optax.__version__,
        "optax_decay": optax_decay.__version__,
        "optax_decay_path": str(Path(optax_decay.__file__).parent),
        # the measured package code: commit, and whether optax_decay/ had local edits
        "optax_decay_commit": _git("rev-parse", "HEAD"),
        "optax_decay_dirty": None if status is None else bool(status),
        "numpy": np.__version__,
    }


def report_header(args: argparse.Namespace) -> dict:
    """Machine, versions, date and arguments: what every results.json starts with."""
    return {
        "machine": machine_info(),
        "versions": versions(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }


def write_report(result: dict, md: str, out: Path, echo: bool = True) -> None:
    """``results.json`` and ``results.md`` into ``out``; ``echo`` prints the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "results.md").write_text(md)
    if echo:
        print(md)

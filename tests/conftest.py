"""Test setup: 8 host CPU devices (before JAX starts its backend), and examples/ importable.

The experiment scripts import their sibling modules (``fashion_data``, ``grid_training``,
``reporting``...), and so do their tests.
"""

import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))

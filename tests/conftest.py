"""Test setup: 8 host CPU devices (before JAX starts its backend), x64.

The examples are imported as ``from examples import ...``: pytest's ``pythonpath``
(pyproject.toml) puts the repo root on ``sys.path``.

``@pytest.mark.x64`` (on a test, a ``pytest.param`` or a module's ``pytestmark``) is the one
way a test runs in float64: the test, its fixtures and every hypothesis example run under
``jax.enable_x64(True)``; everything else runs in JAX's default float32.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)


def pytest_configure(config):
    config.addinivalue_line("markers", "x64: run the test under jax.enable_x64(True)")


@pytest.fixture(autouse=True)
def _x64_marker(request):
    if request.node.get_closest_marker("x64") is None:
        yield
    else:
        with jax.enable_x64(True):
            yield

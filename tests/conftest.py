"""Test setup: 8 host CPU devices (before JAX starts its backend), x64.

The examples are imported as ``from examples import ...``: pytest's ``pythonpath``
(pyproject.toml) puts the repo root on ``sys.path``.

Two tiers. ``bash scripts/test.sh`` (the README's test command) runs ``-m "not slow"``:
the package's unit, closed-form and property tests, doctests, the README's code and the
checks of the shared example modules, in a few minutes. The peers (torch.optim, heavyball,
timm), the heavy suites and the tests that train or start processes, listed in ``SLOW``
(whole files) or marked ``@pytest.mark.slow`` form the slow tier:
``bash scripts/test_slow.sh`` (which installs the peers first), which ``.ci/run`` runs too.
The notebooks are executed by the docs build (``bash scripts/docs.sh``), not by the tests.

``@pytest.mark.x64`` (on a test, a ``pytest.param`` or a module's ``pytestmark``) is the one
way a test runs in float64: the test, its fixtures and every hypothesis example run under
``jax.enable_x64(True)``; everything else runs in JAX's default float32.
"""

import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)


# Files whose every test belongs to the slow tier: end-to-end runs of the scripts
# (training, checkpoints killed and resumed, several processes), long float64 runs, and
# the heaviest compile-bound suites (hypothesis, sharding, flat buffers; about 40 s of
# CPU each), so that the README's test command fits in a few minutes.
SLOW = {
    "test_torch_parity.py",  # the peers, installed by scripts/test_slow.sh (torch: ~1 min)
    "test_peers.py",
    "test_recipes.py",  # Optax's other optimizers rebuilt (about 40 s of CPU)
    "test_hypothesis.py",
    "test_sharding.py",
    "test_flat.py",
    "test_checkpoint.py",
    "test_multiprocess.py",
    "test_long_run.py",
    "test_lr_wd_map.py",
    "test_adamw_vs_adamp.py",
    "test_scale_freeness.py",
    "test_batchnorm_decay.py",
    "test_demo.py",
    "test_flat_nnx.py",
    "test_benchmark_smoke.py",
}


def pytest_configure(config):
    config.addinivalue_line("markers", "x64: run the test under jax.enable_x64(True)")
    config.addinivalue_line("markers", "slow: the slow tier (`bash scripts/test.sh -m slow`)")


def pytest_collection_modifyitems(items):
    for item in items:
        path = pathlib.Path(str(item.fspath))
        if path.name in SLOW:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _x64_marker(request):
    if request.node.get_closest_marker("x64") is None:
        yield
    else:
        with jax.enable_x64(True):
            yield

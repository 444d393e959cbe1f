"""Multi-process (multi-host) training with JAX's own distributed runtime.

Trains a few steps of a tiny two-layer MLP regression with one of the package's
optimizers (``optax_decay.adamw`` by default; built by ``examples.optimizers``, which
gives the SGD pair heavy-ball momentum 0.9) with the params **sharded across
all devices of all processes**: one global ``jax.make_mesh`` over
``jax.devices()`` with a single axis ``"devices"``, every param and every batch
sharded along its leading dimension on that axis (a leaf whose leading
dimension does not divide evenly is replicated), and the optimizer state
sharded exactly like the params. The train step is one ``jax.jit`` with explicit
in/out shardings; XLA inserts the cross-process collectives.

Every process computes the same deterministic (seeded) init and batches, and
builds the global arrays with ``jax.make_array_from_callback``, which only asks
for the slices that live on this process's devices; a real input pipeline would
load just its own rows and use ``jax.make_array_from_process_local_data``. At
the end the params are gathered to every process with
``jax.experimental.multihost_utils.process_allgather``; process 0 prints a
checksum and writes them to ``--out`` as an ``.npz`` file (keys like
``layer1/kernel``).

Results do not depend on how the devices are split into processes: 2 processes
with 2 CPU devices each give the params of 1 process with 4 CPU devices (up to
float rounding in the cross-device reductions; see tests/test_multiprocess.py).

Run on one machine, CPU only
----------------------------
One process, 4 host CPU devices::

    python examples/multihost.py --cpu-devices 4 --out out/multihost_1proc.npz

Two processes with 2 CPU devices each (4 devices in all), talking over
loopback; cross-process CPU collectives use gloo (``--cpu-collectives``)::

    python examples/multihost.py --cpu-devices 2 --num-processes 2 --process-id 0 \\
        --coordinator 127.0.0.1:12355 --out out/multihost_2proc.npz &
    python examples/multihost.py --cpu-devices 2 --num-processes 2 --process-id 1 \\
        --coordinator 127.0.0.1:12355

Run on a multi-host GPU or TPU cluster
--------------------------------------
The code is the same: start **one process per host** (each process drives all
the accelerators of its host), leave out ``--cpu-devices``, and give every
process the same ``--coordinator``, the ``host:port`` of host 0 (process 0
serves the coordination service there; the port must be reachable from every
host), the same ``--num-processes`` (the number of hosts) and its own
``--process-id`` (0 on host 0)::

    # on host i of N, with host 0 reachable as host0.example:
    python examples/multihost.py --num-processes N --process-id i \\
        --coordinator host0.example:12355 --steps 100 --out /shared/params.npz

On Cloud TPU pods, and on GPU clusters started by SLURM, Open MPI or similar,
``jax.distributed.initialize()`` can find all of this itself; pass
``--auto-distributed`` instead of the three flags to call it with no arguments.
The global batch (``--batch-size``) must be divisible by the total number of
devices. Only process 0 writes ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
import sys
from collections.abc import Sequence

import numpy as np

# Imports JAX, but starts no backend: setup_runtime can still configure it.
from examples import cli, optimizers

AXIS = "devices"
IN_DIM, HIDDEN, OUT_DIM = 16, 32, 8


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = cli.Parser(__doc__)
    p.add_argument("--optimizer", choices=optimizers.METHODS, default="adamw")
    p.add_argument("--learning-rate", type=float, default=1e-2)
    p.add_argument(
        "--weight-decay",
        type=float,
        default=0.01,
        help="the optimizer's weight_decay, in the package's convention (for "
        "sgdw/adamw/prox_adam the fraction removed per step, not times the "
        "learning rate)",
    )
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32, help="global batch size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out",
        type=pathlib.Path,
        default=None,
        help="write the final params here (.npz), from process 0",
    )
    dist = p.add_argument_group("distributed runtime")
    dist.add_argument("--num-processes", type=int, default=1)
    dist.add_argument("--process-id", type=int, default=0)
    dist.add_argument(
        "--coordinator", default=None, help="host:port of process 0's coordination service"
    )
    dist.add_argument(
        "--auto-distributed",
        action="store_true",
        help="call jax.distributed.initialize() with no arguments (cluster autodetect)",
    )
    dist.add_argument(
        "--init-timeout", type=int, default=300, help="seconds to wait for all processes to join"
    )
    cpu = p.add_argument_group("CPU only")
    cpu.add_argument(
        "--cpu-devices",
        type=int,
        default=None,
        help="run on CPU with this many devices per process",
    )
    cpu.add_argument(
        "--cpu-collectives",
        default="gloo",
        choices=("gloo", "mpi"),
        help="cross-process CPU collectives (with --cpu-devices)",
    )
    args = p.parse_args(argv)
    if args.num_processes > 1 and not args.auto_distributed and args.coordinator is None:
        raise cli.UsageError("`--coordinator` is required with `--num-processes` > 1")
    if not 0 <= args.process_id < args.num_processes:
        raise cli.UsageError("need 0 <= `--process-id` < `--num-processes`")
    return args


def setup_runtime(args: argparse.Namespace):
    """Configures and starts JAX; must run before JAX touches any backend."""
    import jax

    if args.cpu_devices is not None:
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)
        jax.config.update("jax_cpu_collectives_implementation", args.cpu_collectives)
    if args.auto_distributed:
        jax.distributed.initialize(initialization_timeout=args.init_timeout)
    elif args.num_processes > 1:
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=args.init_timeout,
        )
    return jax


# ------------------------------------------------------------------------------------------
# Deterministic data: identical in every process and every run (NumPy, seeded).


def init_params(seed: int) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng([seed, 0])
    return {
        "layer1": {
            "kernel": (rng.normal(size=(IN_DIM, HIDDEN)) / np.sqrt(IN_DIM)).astype(np.float32),
            "bias": np.zeros((HIDDEN,), np.float32),
        },
        "layer2": {
            "kernel": (rng.normal(size=(HIDDEN, OUT_DIM)) / np.sqrt(HIDDEN)).astype(np.float32),
            "bias": np.zeros((OUT_DIM,), np.float32),
        },
    }


def make_batch(seed: int, step: int, batch_size: int) -> dict[str, np.ndarray]:
    """The global batch of ``step``: inputs and targets of a fixed random teacher."""
    teacher = np.random.default_rng([seed, 1]).normal(size=(IN_DIM, OUT_DIM))
    x = np.random.default_rng([seed, 2, step]).normal(size=(batch_size, IN_DIM))
    y = np.tanh(x @ teacher) + 0.1 * np.random.default_rng([seed, 3, step]).normal(
        size=(batch_size, OUT_DIM)
    )
    return {"x": x.astype(np.float32), "y": y.astype(np.float32)}


def flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key in sorted(tree):
        value = tree[key]
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = np.asarray(value)
    return out


def checksum(flat: dict[str, np.ndarray]) -> tuple[float, str]:
    """(sum of |params| in float64, sha256 prefix of the raw bytes)."""
    total = float(sum(np.abs(v.astype(np.float64)).sum() for v in flat.values()))
    h = hashlib.sha256()
    for k in sorted(flat):
        h.update(k.encode())
        h.update(np.ascontiguousarray(flat[k]).tobytes())
    return total, h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    args = parse_args(argv)
    jax = setup_runtime(args)

    import jax.numpy as jnp
    import optax
    from jax.experimental import multihost_utils
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    n_dev = jax.device_count()
    if args.batch_size % n_dev:
        raise cli.UsageError(
            f"`--batch-size` {args.batch_size} must be divisible by {n_dev} devices"
        )
    is_main = jax.process_index() == 0

    def log(msg: str) -> None:
        if is_main:
            print(msg, flush=True)

    log(
        f"processes: {jax.process_count()}, devices: {n_dev} "
        f"({jax.local_device_count()} per process, {jax.devices()[0].platform})"
    )

    # One global mesh over the devices of every process.
    mesh = jax.make_mesh((n_dev,), (AXIS,), axis_types=(AxisType.Auto,))
    replicated = NamedSharding(mesh, P())

    def sharding_for(shape: tuple[int, ...]) -> NamedSharding:
        """Leading dim sharded over all devices where it divides evenly, else replicated."""
        if len(shape) >= 1 and shape[0] % n_dev == 0:
            return NamedSharding(mesh, P(AXIS))
        return replicated

    def to_global(tree):
        """Global jax.Arrays from host values every process holds (only local slices are put)."""

        def put(x):
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, sharding_for(x.shape), lambda i: x[i])

        return jax.tree.map(put, tree)

    tx = optimizers.make(args.optimizer, args.learning_rate, args.weight_decay)

    params = to_global(init_params(args.seed))
    param_sh = jax.tree.map(lambda x: x.sharding, params)
    # The optimizer state is sharded like the params: every param-shaped leaf gets
    # its param's sharding (which depends on the shape only), scalars are replicated.
    state_sh = jax.tree.map(lambda s: sharding_for(s.shape), jax.eval_shape(tx.init, params))
    state = jax.jit(tx.init, out_shardings=state_sh)(params)
    batch_sh = jax.tree.map(
        lambda s: sharding_for(s.shape),
        jax.eval_shape(lambda: make_batch(args.seed, 0, args.batch_size)),
    )

    def loss_fn(p, batch):
        h = jnp.tanh(batch["x"] @ p["layer1"]["kernel"] + p["layer1"]["bias"])
        pred = h @ p["layer2"]["kernel"] + p["layer2"]["bias"]
        return jnp.mean((pred - batch["y"]) ** 2)

    def train_step(p, s, batch):
        loss, grads = jax.value_and_grad(loss_fn)(p, batch)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    train_step = jax.jit(
        train_step,
        in_shardings=(param_sh, state_sh, batch_sh),
        out_shardings=(param_sh, state_sh, replicated),
        donate_argnums=(0, 1),
    )

    for step in range(args.steps):
        batch = to_global(make_batch(args.seed, step, args.batch_size))
        params, state, loss = train_step(params, state, batch)
        log(f"step {step:3d}  loss {float(loss):.6f}")  # `loss` is replicated: readable anywhere

    for leaf, sh in zip(jax.tree.leaves(state), jax.tree.leaves(state_sh), strict=True):
        assert leaf.sharding.is_equivalent_to(sh, leaf.ndim), (leaf.sharding, sh)

    # Every process gets the full final params (a collective: all processes call it).
    gathered = multihost_utils.process_allgather(params, tiled=True)
    flat = flatten(gathered)
    total, digest = checksum(flat)
    log(f"final params: sum|w| = {total:.9g}  sha256[:16] = {digest}")
    if is_main and args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.out, **flat)
        log(f"wrote {args.out}")
    if jax.process_count() > 1:
        # Wait until everybody is done before process 0 takes the coordinator down.
        multihost_utils.sync_global_devices("multihost example done")
        jax.distributed.shutdown()
    return flat


if __name__ == "__main__":
    cli.run_cli(main, sys.argv[1:])

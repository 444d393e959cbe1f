"""Multi-process (multi-host) training with JAX's distributed runtime, params sharded over all devices.

A tiny two-layer MLP regression with one optimizer of the package (``adamw`` by default). Params,
batches and optimizer state are sharded along their leading dimension over one mesh of all
processes' devices (replicated where it does not divide); one ``jax.jit`` lets XLA insert the
collectives. Every process draws the same seeded data and puts only its devices' slices. Process
0 prints a checksum of the final params and writes them to ``--out``: 2 processes with 2 CPU
devices each give those of 1 process with 4, up to float rounding. On one machine::

    python examples/multihost.py --cpu-devices 2 --num-processes 2 --process-id 0 \\
        --coordinator 127.0.0.1:12355 --out out/multihost.npz &
    python examples/multihost.py --cpu-devices 2 --num-processes 2 --process-id 1 \\
        --coordinator 127.0.0.1:12355

On a cluster: one process per host, no ``--cpu-devices``, ``--coordinator`` host 0's ``host:port``;
or ``--auto-distributed`` (Cloud TPU, SLURM, Open MPI). ``--batch-size`` must divide by the
number of devices.
"""

from __future__ import annotations

import functools
import hashlib
import pathlib
from collections.abc import Sequence

import jax  # importing starts no backend: setup_runtime can still configure it
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from examples import cli, optimizers

IN_DIM, HIDDEN, OUT_DIM = 16, 32, 8


def parse_args(argv: Sequence[str] | None):
    p = cli.Parser(__doc__)
    p.add_argument("--optimizer", choices=optimizers.METHODS, default="adamw")
    p.add_argument("--learning-rate", type=float, default=1e-2)
    p.add_argument("--weight-decay", type=float, default=0.01, help="in its own convention")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32, help="global batch size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=pathlib.Path, help="process 0 writes the final params here (.npz)")
    dist = p.add_argument_group("distributed runtime")
    dist.add_argument("--num-processes", type=int, default=1)
    dist.add_argument("--process-id", type=int, default=0)
    dist.add_argument("--coordinator", help="host:port of process 0's coordination service")
    dist.add_argument("--auto-distributed", action="store_true", help="let JAX find the cluster")
    dist.add_argument("--init-timeout", type=int, default=300, help="seconds to wait for all")
    cpu = p.add_argument_group("CPU only")
    cpu.add_argument("--cpu-devices", type=int, help="run on CPU, this many devices per process")
    cpu.add_argument("--cpu-collectives", default="gloo", choices=("gloo", "mpi"))
    args = p.parse_args(argv)
    if args.num_processes > 1 and not args.auto_distributed and args.coordinator is None:
        raise cli.UsageError("`--coordinator` is required with `--num-processes` > 1")
    if not 0 <= args.process_id < args.num_processes:
        raise cli.UsageError("need 0 <= `--process-id` < `--num-processes`")
    return args


def setup_runtime(args) -> None:
    """Configures and starts JAX; must run before JAX touches any backend."""
    if args.cpu_devices is not None:
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)
        jax.config.update("jax_cpu_collectives_implementation", args.cpu_collectives)
    timeout = {"initialization_timeout": args.init_timeout}
    if args.auto_distributed:
        jax.distributed.initialize(**timeout)
    elif args.num_processes > 1:
        ids = dict(num_processes=args.num_processes, process_id=args.process_id)
        jax.distributed.initialize(coordinator_address=args.coordinator, **ids, **timeout)


def init_params(seed: int) -> dict:
    rng = np.random.default_rng([seed, 0])

    def layer(d_in, d_out):
        kernel = rng.normal(size=(d_in, d_out)) / np.sqrt(d_in)
        return {"kernel": kernel.astype(np.float32), "bias": np.zeros(d_out, np.float32)}

    return {"layer1": layer(IN_DIM, HIDDEN), "layer2": layer(HIDDEN, OUT_DIM)}


def make_batch(seed: int, step: int, batch_size: int) -> dict[str, np.ndarray]:
    """The global batch of ``step``: ``y = tanh(x @ teacher) + 0.1 * noise``, all seeded."""
    teacher = np.random.default_rng([seed, 1]).normal(size=(IN_DIM, OUT_DIM))
    x = np.random.default_rng([seed, 2, step]).normal(size=(batch_size, IN_DIM))
    noise = np.random.default_rng([seed, 3, step]).normal(size=(batch_size, OUT_DIM))
    return {"x": x.astype(np.float32), "y": (np.tanh(x @ teacher) + 0.1 * noise).astype(np.float32)}


def flatten(tree: dict) -> dict[str, np.ndarray]:
    """``{"layer1": {"kernel": a}}`` -> ``{"layer1/kernel": a}``, keys sorted."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {jax.tree_util.keystr(k, simple=True, separator="/"): np.asarray(v) for k, v in leaves}


def checksum(flat: dict[str, np.ndarray]) -> tuple[float, str]:
    """(sum of |params| in float64, the first 16 hex digits of a SHA-256 of names and bytes)."""
    h = hashlib.sha256()
    for k in sorted(flat):
        h.update(k.encode() + np.ascontiguousarray(flat[k]).tobytes())
    return float(sum(np.abs(v.astype(np.float64)).sum() for v in flat.values())), h.hexdigest()[:16]


def log(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, flush=True)


def main(argv: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    args = parse_args(argv)
    setup_runtime(args)
    n_dev = jax.device_count()
    if args.batch_size % n_dev:
        raise cli.UsageError(
            f"`--batch-size` {args.batch_size} must be divisible by {n_dev} devices"
        )
    local = f"{jax.local_device_count()} per process, {jax.devices()[0].platform}"
    log(f"processes: {jax.process_count()}, devices: {n_dev} ({local})")
    mesh = jax.make_mesh((n_dev,), ("devices",), axis_types=(AxisType.Auto,))

    def sharding(shape) -> NamedSharding:  # leading dim over the devices where it divides evenly
        return NamedSharding(mesh, P("devices") if shape and shape[0] % n_dev == 0 else P())

    def shardings(tree):
        return jax.tree.map(lambda x: sharding(x.shape), tree)

    def to_global(tree):  # every process holds all the values; it puts its devices' slices
        put = lambda x: jax.make_array_from_callback(x.shape, sharding(x.shape), lambda i: x[i])
        return jax.tree.map(put, tree)

    tx = optimizers.make(args.optimizer, args.learning_rate, args.weight_decay)
    params = to_global(init_params(args.seed))
    param_sh, state_sh = shardings(params), shardings(jax.eval_shape(tx.init, params))
    state = jax.jit(tx.init, out_shardings=state_sh)(params)  # sharded like the params

    def loss_fn(p, batch):
        h = jnp.tanh(batch["x"] @ p["layer1"]["kernel"] + p["layer1"]["bias"])
        return jnp.mean((h @ p["layer2"]["kernel"] + p["layer2"]["bias"] - batch["y"]) ** 2)

    in_sh = (param_sh, state_sh, shardings(make_batch(args.seed, 0, args.batch_size)))
    out_sh = (param_sh, state_sh, sharding(()))

    @functools.partial(jax.jit, in_shardings=in_sh, out_shardings=out_sh, donate_argnums=(0, 1))
    def train_step(p, s, batch):
        loss, grads = jax.value_and_grad(loss_fn)(p, batch)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    for step in range(args.steps):
        batch = to_global(make_batch(args.seed, step, args.batch_size))
        params, state, loss = train_step(params, state, batch)
        log(f"step {step:3d}  loss {float(loss):.6f}")  # `loss` is replicated: readable anywhere
    for leaf, sh in zip(jax.tree.leaves(state), jax.tree.leaves(state_sh), strict=True):
        assert leaf.sharding.is_equivalent_to(sh, leaf.ndim), (leaf.sharding, sh)

    flat = flatten(multihost_utils.process_allgather(params, tiled=True))  # all processes call it
    total, digest = checksum(flat)
    log(f"final params: sum|w| = {total:.9g}  sha256[:16] = {digest}")
    if jax.process_index() == 0 and args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.out, **flat)
        log(f"wrote {args.out}")
    if jax.process_count() > 1:  # all done before process 0 takes the coordinator down
        multihost_utils.sync_global_devices("multihost example done")
        jax.distributed.shutdown()
    return flat


if __name__ == "__main__":
    cli.run_cli(main)

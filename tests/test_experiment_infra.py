"""The examples' shared modules (data, registry, vmapped grids, CLI) and every script's bad input."""

from __future__ import annotations

import gzip
import importlib
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optax_decay as od
from examples import cli, data, grid, models, optimizers, reporting

ROOT = pathlib.Path(__file__).resolve().parents[1]

# ---- IDX files


def _idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding written from its definition: 0, 0, type 0x08, ndim, big-endian dims."""
    header = bytes([0, 0, 0x08, array.ndim])
    dims = b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + dims + array.astype(np.uint8).tobytes()


def _write_fake(folder: pathlib.Path, n_train: int, n_test: int, gz: bool) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28)),
        "y_train": rng.integers(0, 10, n_train),
        "x_test": rng.integers(0, 256, (n_test, 28, 28)),
        "y_test": rng.integers(0, 10, n_test),
    }
    for key, stem in data.FILES.items():
        raw = _idx_bytes(arrays[key])
        (folder / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_loader_reads_what_was_written(tmp_path, gz):
    arrays = _write_fake(tmp_path, 12, 5, gz)
    got = data.load_fashion_mnist(tmp_path)
    assert got.x_train.shape == (12, 28, 28, 1) and got.x_train.dtype == np.float32
    np.testing.assert_array_equal(
        got.x_train[..., 0], arrays["x_train"].astype(np.float32) / np.float32(255)
    )
    np.testing.assert_array_equal(got.y_test, arrays["y_test"])
    assert got.image_shape == (28, 28, 1)


def test_idx_subset_is_a_seeded_subset(tmp_path):
    arrays = _write_fake(tmp_path, 30, 5, True)
    a = data.load_fashion_mnist(tmp_path, train_size=10, seed=3)
    b = data.load_fashion_mnist(tmp_path, train_size=10, seed=3)
    assert len(a.x_train) == 10
    np.testing.assert_array_equal(a.x_train, b.x_train)
    rows = {r.tobytes() for r in arrays["x_train"].astype(np.float32) / np.float32(255)}
    assert all(x[..., 0].tobytes() in rows for x in a.x_train)


def test_truncated_idx_is_rejected(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(_idx_bytes(np.zeros((4, 3)))[:-2])
    with pytest.raises(ValueError, match="header says"):
        data.read_idx(path)


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(data.DatasetMissingError) as err:
        data.load_fashion_mnist(tmp_path)
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message
    assert str(tmp_path) in message


@pytest.mark.skipif(
    not (data.DEFAULT_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_fashion_mnist():
    fashion = data.load_fashion_mnist()
    assert fashion.x_train.shape == (60000, 28, 28, 1)
    assert fashion.x_test.shape == (10000, 28, 28, 1)
    assert fashion.num_classes == 10
    np.testing.assert_array_equal(np.bincount(fashion.y_test), np.full(10, 1000))


# ---- The grid trainer: each vmapped member is exactly the run it stands for


def _single_run(optimizer, lr, wd, digits, model_fn, steps, batch_size, seed, loss_scale=1.0):
    """The reference: one plain nnx.Optimizer with the hyperparameters passed directly."""
    schedule = optax.cosine_decay_schedule(1.0, steps)
    tx = optimizers.make(optimizer, lr, wd, schedule=schedule, mask=od.weight_decay_mask)
    model = model_fn(seed)
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x, y = jnp.asarray(digits.x_train), jnp.asarray(digits.y_train)

    @nnx.jit
    def step(model, opt, idx):
        def loss(m):
            ce = optax.softmax_cross_entropy_with_integer_labels(m(x[idx]), y[idx])
            return loss_scale * ce.mean()

        grads = nnx.grad(loss)(model)
        opt.update(model, grads)

    for idx in data.batch_indices(len(x), steps, batch_size, seed):
        step(model, opt, jnp.asarray(idx))
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("optimizer", "model", "norm"),
    [("adamw", "mlp", None), ("sgdw", "cnn", "batch"), ("adamp", "mlp", "batch")],
)
def test_grid_member_equals_its_single_run(optimizer, model, norm):
    digits = data.load_digits()
    lrs, wds = [1e-3, 3e-3], [1e-2, 0.0]
    if optimizer == "sgdw":
        lrs = [0.05, 0.02]

    width = (8, 8) if model == "cnn" else (8,)

    def model_fn(seed):
        return models.make_model(model, digits.image_shape, 10, norm=norm, width=width, seed=seed)

    hparams = {"learning_rate": lrs, "weight_decay": wds}
    result = grid.train_grid(
        optimizer, hparams, digits, model_fn, steps=12, batch_size=32, seeds=(1, 2), progress=False
    )
    # Member i is grid point i // 2 with seed (1, 2)[i % 2]: its own init and batch order.
    np.testing.assert_array_equal(result.seed, [1, 2, 1, 2])
    for i in range(4):
        lr, wd, seed = lrs[i // 2], wds[i // 2], (1, 2)[i % 2]
        expected = _single_run(optimizer, lr, wd, digits, model_fn, 12, 32, seed)
        got = jax.tree.map(lambda a, i=i: a[i], result.params)
        if norm == "batch":
            # A bias right before a BatchNorm has a zero gradient up to rounding, and
            # Adam's normalization turns that rounding noise into full-size steps.
            for layer in got["layers"]:
                del got["layers"][layer]["bias"], expected["layers"][layer]["bias"]
        # atol: Adam turns round-off on near-zero gradients (vmapped vs single-model
        # kernels) into ~1e-6 differences; a mixed-up member would differ by ~1e-3.
        jax.tree.map(
            lambda g, e: np.testing.assert_allclose(g, e, rtol=2e-5, atol=1e-5), got, expected
        )
    # The decayed weight norm reported is the norm of the kernels of that member.
    paths = jax.tree_util.tree_leaves_with_path(result.params)
    kernels = [v for path, v in paths if "kernel" in jax.tree_util.keystr(path)]
    norms = np.sqrt(sum(np.sum(np.square(k.reshape(4, -1)), axis=1) for k in kernels))
    np.testing.assert_allclose(result.weight_norm, norms, rtol=1e-5)
    assert result.by_seed(result.weight_norm).shape == (2, 2)
    assert result.test_accuracy.shape == (4,)
    assert np.all((0 <= result.test_accuracy) & (result.test_accuracy <= 1))


@pytest.mark.slow
def test_loss_scale_member_equals_scaled_single_run():
    digits = data.load_digits()

    model_fn = lambda seed: models.make_model("mlp", digits.image_shape, 10, width=(16,), seed=seed)

    result = grid.train_grid(
        "adam_l2",
        {"learning_rate": [1e-3, 1e-3], "weight_decay": [1e-2, 1e-2]},
        digits,
        model_fn,
        steps=8,
        batch_size=32,
        loss_scale=[1.0, 100.0],
        progress=False,
    )
    expected = _single_run("adam_l2", 1e-3, 1e-2, digits, model_fn, 8, 32, 0, loss_scale=100.0)
    got = jax.tree.map(lambda a: a[1], result.params)
    jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=2e-5, atol=1e-5), got, expected)
    records = result.records(model="mlp")
    assert [r["loss_scale"] for r in records] == [1.0, 100.0]
    assert {"optimizer", "learning_rate", "weight_decay", "test_accuracy", "weight_norm"} <= set(
        records[0]
    )


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="unknown optimizer 'adamx'"):
        grid.train_grid("adamx", {"learning_rate": [1.0]}, None, None, steps=1, batch_size=1)


def test_batch_order_depends_on_the_seed_and_step_only():
    long = data.batch_indices(100, 30, 16, seed=4)
    assert long.shape == (30, 16)
    np.testing.assert_array_equal(data.batch_indices(100, 7, 16, seed=4), long[:7])
    assert not np.array_equal(data.batch_indices(100, 7, 16, seed=5), long[:7])
    for epoch in range(5):  # 6 batches per epoch, each example at most once per epoch
        rows = long[6 * epoch : 6 * (epoch + 1)].ravel()
        assert len(set(rows.tolist())) == len(rows)


# ---- The optimizer registry: conventions and conversions


@pytest.mark.parametrize("name", ["sgd_l2", "sgdw", "adamw", "adamw_coupled", "prox_adam"])
def test_to_paper_is_the_decay_per_step(name):
    """With a zero loss gradient the weights shrink by about ``1 - to_paper`` per step."""
    lr, paper, steps = 1e-2, 1e-3, 300
    wd = optimizers.from_paper(name, paper, lr)
    assert optimizers.to_paper(name, wd, lr) == pytest.approx(paper, rel=1e-12)
    w = {"kernel": jnp.ones((2, 2))}
    tx = optimizers.make(name, lr, wd, mask=None)

    @jax.jit
    def run(w):
        def step(_, carry):
            w, state = carry
            updates, state = tx.update(jax.tree.map(jnp.zeros_like, w), state, w)
            return optax.apply_updates(w, updates), state

        return jax.lax.fori_loop(0, steps, step, (w, tx.init(w)))[0]

    rate = -np.log(float(run(w)["kernel"][0, 0])) / steps
    # sgd_l2: the momentum trace needs ~1/(1 - mu) = 10 steps to build the full decay.
    assert rate == pytest.approx(paper, rel=0.05 if name == "sgd_l2" else 1e-3)


def test_conversions_use_the_package_conventions():
    lr = 3e-3
    assert optimizers.to_paper("adamw_coupled", 2.0, lr) == od.coupled_to_paper(2.0, lr)
    assert optimizers.from_paper("adamw_coupled", 1e-3, lr) == od.paper_to_coupled(1e-3, lr)
    for name in ("adam_l2", "adamp"):  # their decay goes through Adam's denominator
        assert optimizers.to_paper(name, 1e-3, lr) is None
        assert optimizers.from_paper(name, 1e-3, lr) is None
    # default_hparams: the method's own value wins, then the conversion, then paper itself.
    assert optimizers.default_hparams("sgd_l2", 1e-3) == (0.05, 5e-3)
    assert optimizers.default_hparams("adamw_coupled", 1e-3) == (lr, 1e-3 / lr)
    assert optimizers.default_hparams("sgd_l2", 1e-3, own={}) == (0.05, 1e-3 * (1 - 0.9) / 0.05)
    assert optimizers.default_hparams("adamp", 1e-3, own={}) == (lr, 1e-3)


# ---- Command lines: bad input, exit codes, both ways of running a script


def test_parse_floats():
    assert cli.parse_floats("--x", "1e-3, 0.5,") == [1e-3, 0.5]
    with pytest.raises(cli.UsageError, match="`--x` is empty"):
        cli.parse_floats("--x", " , ")
    with pytest.raises(cli.UsageError, match="`--x`"):
        cli.parse_floats("--x", "1e-3,abc")
    with pytest.raises(cli.UsageError, match=">= 0"):
        cli.parse_floats("--x", "-1")


def test_parse_names():
    assert cli.parse_names("--o", "adamw,sgdw", ["adamw", "sgdw"]) == ["adamw", "sgdw"]
    with pytest.raises(cli.UsageError, match="unknown 'adamx'; choose from adamw"):
        cli.parse_names("--o", "adamx", ["adamw"])
    # a repeated name counts once (a second run would overwrite the first's history)
    assert cli.parse_names("--o", "sgdw,adamw,sgdw", ["adamw", "sgdw"]) == ["sgdw", "adamw"]


def test_run_cli_exit_codes(capsys):
    def bad_input(argv):
        raise cli.UsageError("`--steps` must be >= 1")

    def diverged(argv):
        raise FloatingPointError("the training diverged")

    with pytest.raises(SystemExit) as exit_info:
        cli.run_cli(bad_input, [])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: `--steps` must be >= 1"
    with pytest.raises(SystemExit) as exit_info:
        cli.run_cli(diverged, [], failures=(FloatingPointError,))
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == "error: the training diverged"


EXPERIMENTS = (
    "lr_wd_map",
    "adamw_vs_adamp",
    "scale_freeness",
    "batchnorm_decay",
    "finetune_center",
    "sparsity_frontier",
    "norm_control",
)
MISSING = ["--dataset", "fashion_mnist", "--data-dir", "{empty}"]
BAD_INPUT = [
    ("sparsity_frontier", ["--group-decays", "-1"], "`--group-decays`"),
    ("sparsity_frontier", ["--lr", "0"], "`--lr` must be a positive number"),
    ("demo", ["--steps", "0"], "`--steps` must be >= 1, got 0"),
    ("demo", ["--batch-size", "5000"], "`--batch-size` 5000 is larger than the training set"),
    ("train", ["--checkpoint-every", "0"], "`--checkpoint-every` must be >= 1"),
    ("train", ["--optimizer", "adamx"], "argument --optimizer: invalid choice: 'adamx'"),
    ("multihost", ["--num-processes", "2"], "`--coordinator` is required"),
    ("multihost", ["--process-id", "1"], "`--process-id`"),
    ("flat_nnx", ["--depth", "0"], "`--depth` must be >= 1"),
    ("flat_nnx", MISSING, "--data-dir"),
    ("lr_wd_map", ["--optimizers", "adamw,rmsprop"], "`--optimizers`: unknown 'rmsprop'"),
    ("lr_wd_map", ["--optimizers", ""], "`--optimizers`"),
    ("lr_wd_map", ["--learning-rates", ""], "`--learning-rates`"),
    ("lr_wd_map", ["--weight-decays", " , "], "`--weight-decays`"),
    ("lr_wd_map", ["--learning-rates", "0,1e-3"], "`--learning-rates` must be > 0"),
    ("lr_wd_map", ["--optimizers", "adamw", "--weight-decays", "2"], "`--weight-decays`"),
    ("adamw_vs_adamp", ["--optimizers", "adamw_coupled,nope"], "`--optimizers`"),
    ("adamw_vs_adamp", ["--optimizers", ","], "`--optimizers`"),
    ("adamw_vs_adamp", ["--learning-rates", ""], "`--learning-rates`"),
    ("adamw_vs_adamp", ["--weight-decays", " , "], "`--weight-decays`"),
    ("adamw_vs_adamp", ["--learning-rates", "1e-3,abc"], "`--learning-rates`"),
    ("adamw_vs_adamp", ["--width", "8,x"], "`--width`"),
    ("adamw_vs_adamp", ["--weight-decays", "1e-3,1e-3"], "`--weight-decays` lists a value twice"),
    ("scale_freeness", ["--optimizers", "adamw,nope"], "`--optimizers`"),
    ("scale_freeness", ["--optimizers", ""], "`--optimizers`"),
    ("scale_freeness", ["--scales", ""], "`--scales`"),
    ("scale_freeness", ["--scales", "1,0"], "`--scales` must be > 0"),
    ("scale_freeness", ["--width", "0"], "`--width`"),
    ("batchnorm_decay", ["--optimizers", "sgdw,nope"], "`--optimizers`"),
    ("batchnorm_decay", ["--optimizers", ""], "`--optimizers`"),
    ("batchnorm_decay", ["--weight-decays", ""], "`--weight-decays`"),
    ("batchnorm_decay", ["--weight-decays", "0,-1"], "`--weight-decays`"),
    ("batchnorm_decay", ["--track-every", "0"], "`--track-every`"),
    ("batchnorm_decay", ["--width", "a,b"], "`--width`"),
    ("finetune_center", ["--optimizers", "adamw,nope"], "`--optimizers`"),
    ("finetune_center", ["--decay-folds", ","], "`--decay-folds`"),
    ("finetune_center", ["--l2-decays", "0,-1"], "`--l2-decays`"),
    ("finetune_center", ["--finetune-size", "100000"], "`--finetune-size`"),
    ("finetune_center", ["--pretrain-steps", "0"], "`--pretrain-steps`"),
    ("finetune_center", ["--lr", "0"], "`--lr`"),
    ("modern_decay", ["--optimizers", "adamw,nope"], "`--optimizers`"),
    ("modern_decay", ["--grad-every", "0"], "`--grad-every`"),
    ("modern_decay", ["--width", "a"], "`--width`"),
    *[
        (name, ["--train-size", "-3"], "`--train-size` must be >= 1, got -3")
        for name in EXPERIMENTS
    ],
    *[(name, MISSING, "Fashion-MNIST not found in {empty}") for name in EXPERIMENTS],
]


@pytest.mark.parametrize(("script", "argv", "expected"), BAD_INPUT)
def test_bad_input_is_one_line(script, argv, expected, tmp_path, capsys):
    """Every script: a bad flag, value or data folder is one ``error:`` line and exit status 2."""
    empty, out = tmp_path / "empty", tmp_path / "out"
    empty.mkdir()
    module = importlib.import_module(f"examples.{script}")
    argv = [a.format(empty=empty) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        cli.run_cli(module.main, [*argv, "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected.format(empty=empty) in err, err
    assert "\n" not in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "command", [["-m", "examples.lr_wd_map"], [str(ROOT / "examples" / "lr_wd_map.py")]]
)
def test_a_script_runs_as_module_and_as_file(command, tmp_path):
    """From any folder: ``examples`` is importable without sys.path edits (examples/README.md)."""
    proc = subprocess.run(
        [sys.executable, *command, "--help"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, (
        f"{proc.stderr}\nscripts/venv.sh puts the repo root on the venv's sys.path with a .pth file"
    )
    assert "Learning rate x weight decay maps" in proc.stdout


def test_seed_spread_is_mean_and_sample_std():
    mean, std = reporting.spread([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]])
    np.testing.assert_allclose(mean, [2.0, 4.0])
    np.testing.assert_allclose(std, [1.0, 0.0])  # ddof=1: sqrt(((1-2)^2 + (3-2)^2) / 2)
    assert reporting.spread([0.5])[1] == 0.0  # one seed: no spread, not nan
    assert reporting.mean_pm([0.25, 0.75], ".2f") == "0.50 ± 0.35"

"""The experiments' shared parts: IDX loading, the vmapped grid trainer, CLI parsing."""

from __future__ import annotations

import gzip
import pathlib

import fashion_data
import grid_training
import jax
import jax.numpy as jnp
import nnx_models
import numpy as np
import optax
import pytest
import reporting
from flax import nnx
from helpers import load_script

import optax_decay

# ------------------------------------------------------------------------------------------
# IDX files
# ------------------------------------------------------------------------------------------


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
    for key, stem in fashion_data.FILES.items():
        raw = _idx_bytes(arrays[key])
        if gz:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_loader_reads_what_was_written(tmp_path, gz):
    arrays = _write_fake(tmp_path, 12, 5, gz)
    data = fashion_data.load_fashion_mnist(tmp_path)
    assert data.x_train.shape == (12, 28, 28, 1) and data.x_train.dtype == np.float32
    np.testing.assert_array_equal(
        data.x_train[..., 0], arrays["x_train"].astype(np.float32) / np.float32(255)
    )
    np.testing.assert_array_equal(data.y_test, arrays["y_test"])
    assert data.image_shape == (28, 28, 1)


def test_idx_subset_is_a_seeded_subset(tmp_path):
    arrays = _write_fake(tmp_path, 30, 5, True)
    a = fashion_data.load_fashion_mnist(tmp_path, train_size=10, seed=3)
    b = fashion_data.load_fashion_mnist(tmp_path, train_size=10, seed=3)
    assert len(a.x_train) == 10
    np.testing.assert_array_equal(a.x_train, b.x_train)
    rows = {
        r.tobytes()
        for r in (arrays["x_train"].astype(np.float32) / np.float32(255)).astype(np.float32)
    }
    assert all(x[..., 0].tobytes() in rows for x in a.x_train)


def test_truncated_idx_is_rejected(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(_idx_bytes(np.zeros((4, 3)))[:-2])
    with pytest.raises(ValueError, match="header says"):
        fashion_data.read_idx(path)


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(fashion_data.DatasetMissingError) as err:
        fashion_data.load_fashion_mnist(tmp_path)
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message
    assert str(tmp_path) in message


@pytest.mark.skipif(
    not (fashion_data.DEFAULT_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_fashion_mnist():
    data = fashion_data.load_fashion_mnist()
    assert data.x_train.shape == (60000, 28, 28, 1) and data.x_test.shape == (10000, 28, 28, 1)
    assert data.num_classes == 10
    np.testing.assert_array_equal(np.bincount(data.y_test), np.full(10, 1000))


# ------------------------------------------------------------------------------------------
# The grid trainer: each vmapped member is exactly the run it stands for
# ------------------------------------------------------------------------------------------


def _single_run(optimizer, lr, wd, data, model_fn, steps, batch_size, seed, loss_scale=1.0):
    """The reference: one plain nnx.Optimizer with the hyperparameters passed directly."""
    factory, fixed = grid_training.OPTIMIZERS[optimizer]
    tx = factory(
        lr,
        wd,
        schedule=optax.cosine_decay_schedule(1.0, steps),
        mask=optax_decay.weight_decay_mask,
        **fixed,
    )
    model = model_fn()
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)

    @nnx.jit
    def step(model, opt, idx):
        def loss(m):
            logits = m(x[idx])
            return (
                loss_scale * optax.softmax_cross_entropy_with_integer_labels(logits, y[idx]).mean()
            )

        grads = nnx.grad(loss)(model)
        opt.update(model, grads)

    for idx in grid_training.batch_indices(len(x), steps, batch_size, seed):
        step(model, opt, jnp.asarray(idx))
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize(
    ("optimizer", "model", "batchnorm"),
    [("adamw", "mlp", False), ("sgdw", "cnn", True), ("adamp", "mlp", True)],
)
def test_grid_member_equals_its_single_run(optimizer, model, batchnorm):
    data = fashion_data.load_digits()
    lrs, wds = [1e-3, 3e-3], [1e-2, 0.0]
    if optimizer == "sgdw":
        lrs = [0.05, 0.02]

    def model_fn():
        return nnx_models.make_model(
            model,
            data.image_shape,
            10,
            batchnorm=batchnorm,
            width=(8, 8) if model == "cnn" else (8,),
        )

    result = grid_training.train_grid(
        optimizer,
        {"learning_rate": lrs, "weight_decay": wds},
        data,
        model_fn,
        steps=12,
        batch_size=32,
        seed=1,
        progress=False,
    )
    for i, (lr, wd) in enumerate(zip(lrs, wds, strict=True)):
        expected = _single_run(optimizer, lr, wd, data, model_fn, 12, 32, 1)
        got = jax.tree.map(lambda a, i=i: a[i], result.params)
        if batchnorm:
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
    kernels = [
        v
        for path, v in jax.tree_util.tree_leaves_with_path(result.params)
        if "kernel" in jax.tree_util.keystr(path)
    ]
    norms = np.sqrt(sum(np.sum(np.square(k.reshape(len(lrs), -1)), axis=1) for k in kernels))
    np.testing.assert_allclose(result.weight_norm, norms, rtol=1e-5)
    assert result.test_accuracy.shape == (2,) and np.all(
        (0 <= result.test_accuracy) & (result.test_accuracy <= 1)
    )


def test_loss_scale_member_equals_scaled_single_run():
    data = fashion_data.load_digits()

    def model_fn():
        return nnx_models.make_model("mlp", data.image_shape, 10, width=(16,))

    result = grid_training.train_grid(
        "adam_l2",
        {"learning_rate": [1e-3, 1e-3], "weight_decay": [1e-2, 1e-2]},
        data,
        model_fn,
        steps=8,
        batch_size=32,
        seed=0,
        loss_scale=[1.0, 100.0],
        progress=False,
    )
    expected = _single_run("adam_l2", 1e-3, 1e-2, data, model_fn, 8, 32, 0, loss_scale=100.0)
    got = jax.tree.map(lambda a: a[1], result.params)
    jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=2e-5, atol=1e-5), got, expected)
    records = result.records(model="mlp")
    assert [r["loss_scale"] for r in records] == [1.0, 100.0]
    assert {"optimizer", "learning_rate", "weight_decay", "test_accuracy", "weight_norm"} <= set(
        records[0]
    )


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="unknown optimizer 'adamx'"):
        grid_training.train_grid(
            "adamx", {"learning_rate": [1.0]}, None, None, steps=1, batch_size=1, seed=0
        )


# ------------------------------------------------------------------------------------------
# CLI helpers
# ------------------------------------------------------------------------------------------


def test_parse_floats():
    assert reporting.parse_floats("--x", "1e-3, 0.5,") == [1e-3, 0.5]
    with pytest.raises(reporting.UsageError, match="`--x` is empty"):
        reporting.parse_floats("--x", " , ")
    with pytest.raises(reporting.UsageError, match="`--x`"):
        reporting.parse_floats("--x", "1e-3,abc")
    with pytest.raises(reporting.UsageError, match=">= 0"):
        reporting.parse_floats("--x", "-1")


def test_parse_names():
    assert reporting.parse_names("--o", "adamw,sgdw", ["adamw", "sgdw"]) == ["adamw", "sgdw"]
    with pytest.raises(reporting.UsageError, match="unknown 'adamx'; choose from adamw"):
        reporting.parse_names("--o", "adamx", ["adamw"])
    # a repeated name counts once (a second run would overwrite the first's history)
    assert reporting.parse_names("--o", "sgdw,adamw,sgdw", ["adamw", "sgdw"]) == ["sgdw", "adamw"]


@pytest.mark.parametrize(
    "script", ["lr_wd_map", "adamw_vs_adamp", "scale_freeness", "batchnorm_decay"]
)
def test_every_experiment_rejects_a_train_size_below_one(script, tmp_path, capsys):
    module = load_script(f"examples/{script}.py")
    with pytest.raises(SystemExit) as exit_info:
        reporting.run_cli(module.main, ["--quick", "--train-size", "-3", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "`--train-size` must be >= 1, got -3" in capsys.readouterr().err


def test_run_cli_turns_usage_errors_into_exit_2(capsys):
    def main(argv):
        raise reporting.UsageError("`--steps` must be >= 1")

    with pytest.raises(SystemExit) as exit_info:
        reporting.run_cli(main, [])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: `--steps` must be >= 1"

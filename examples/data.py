"""The examples' data: scikit-learn's digits, Fashion-MNIST from local IDX files, and batches.

Nothing is downloaded: Fashion-MNIST's four IDX files (gzipped or not) are read from
``--data-dir``, by default where the Debian package ``dataset-fashion-mnist`` puts them
(``scripts/setup_data.sh`` installs it). Images are ``float32`` ``(N, H, W, 1)`` in ``[0, 1]``,
labels ``int32``.
"""

from __future__ import annotations

import gzip
import pathlib
from dataclasses import dataclass

import numpy as np

DEFAULT_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
DATASETS = ("fashion_mnist", "digits")

MISSING_MSG = (
    "Fashion-MNIST not found in {folder}: no {missing}. "
    "Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; "
    "`bash scripts/setup_data.sh` does this), or put the four IDX files "
    "({names}) in a folder and pass it with `--data-dir`. "
    "`--dataset digits` runs on scikit-learn's bundled digits instead."
)


class DatasetMissingError(FileNotFoundError):
    """The IDX files are not where the loader was told to look."""


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # (N, H, W, 1) float32 in [0, 1]
    y_train: np.ndarray  # (N,) int32
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def read_idx(path: pathlib.Path) -> np.ndarray:
    """One IDX file (gzipped or not) as a uint8 array of the shape its header gives."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims}, file holds {data.size} bytes")
    return data.reshape(dims)


def load_fashion_mnist(data_dir=DEFAULT_DIR, *, train_size=None, test_size=None, seed=0) -> Dataset:
    """Fashion-MNIST, 60,000 train and 10,000 test 28x28 images; ``train_size`` and
    ``test_size`` keep a random subset (fixed by ``seed``) of the splits."""
    folder = pathlib.Path(data_dir)
    candidates = {key: (folder / f"{stem}.gz", folder / stem) for key, stem in FILES.items()}
    paths = {key: next((p for p in c if p.is_file()), None) for key, c in candidates.items()}
    if missing := [FILES[key] for key, path in paths.items() if path is None]:
        names = {"missing": ", ".join(missing), "names": ", ".join(FILES.values())}
        raise DatasetMissingError(MISSING_MSG.format(folder=folder, **names))
    arrays = {key: read_idx(path) for key, path in paths.items()}
    rng = np.random.default_rng(seed)
    out = {}
    for split, size in (("train", train_size), ("test", test_size)):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if size is not None and size < len(x):
            keep = np.sort(rng.permutation(len(x))[:size])
            x, y = x[keep], y[keep]
        out[f"x_{split}"] = (x.astype(np.float32) / 255.0)[..., None]
        out[f"y_{split}"] = y.astype(np.int32)
    return Dataset("fashion_mnist", **out)


def load_digits(seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """scikit-learn's 1797 8x8 digits, a stratified split fixed by ``seed``."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    digits = sk_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return Dataset("digits", x_train, y_train, x_test, y_test)


def load(name: str, data_dir=DEFAULT_DIR, *, train_size: int | None = None, seed=0) -> Dataset:
    """``load_fashion_mnist`` or ``load_digits`` by name (see ``DATASETS``)."""
    if name == "fashion_mnist":
        return load_fashion_mnist(data_dir, train_size=train_size, seed=seed)
    if name == "digits":
        return load_digits(seed)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def batch_indices(num_examples: int, steps: int, batch_size: int, seed: int) -> np.ndarray:
    """``(steps, batch_size)`` indices of shuffled epochs (the remainder of each is dropped),
    drawn from one generator seeded with ``seed``: the batch of step ``t`` depends on ``seed``
    and ``t`` only, whatever ``steps`` is (a resumed run sees the batches it missed)."""
    rng = np.random.default_rng(seed)
    per_epoch = num_examples // batch_size
    epochs = -(-steps // per_epoch)
    perms = [rng.permutation(num_examples)[: per_epoch * batch_size] for _ in range(epochs)]
    return np.concatenate(perms).reshape(-1, batch_size)[:steps]

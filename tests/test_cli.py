"""The inspect and infer command-line tools, and the statistics behind inspect."""

import json
import subprocess
import sys

import numpy as np
import pytest

from sbnn_hdl import infer as infer_cli, inspect as inspect_cli, save
from sbnn_hdl.model import Conv2d, Dense, InputSpec, Model
from sbnn_hdl.stats import binary_entropy, model_stats

EXAMPLE = "examples/digits.sbnn"


def _conv_model():
    # Four 2x2 kernels per (out, in) pair: Hamming weights [[0, 1], [4, 2]] -> K0 = K1 = 1/4, K>=2 = 1/2.
    mask = np.zeros((2, 2, 2, 2), np.uint8)
    mask[0, 0, 0, 1] = 1
    mask[1, :, :, 0] = 1
    mask[1, 0, :, 1] = 1
    conv = Conv2d("conv", (3, 3, 2), mask, [1, -2], [0, 3], [1, 0])
    out = Dense("out", np.ones((2, 8), np.uint8), [1, 1], [0, -1], [0, 5])
    return Model("convnet", InputSpec((3, 3, 2), 1), [conv, out], classes=["a", "b"])


def test_conv_statistics():
    stats = model_stats(_conv_model())
    conv, out = stats["layers"]
    assert conv["in_shape"] == [3, 3, 2] and conv["out_shape"] == [2, 2, 2]
    assert conv["weights"] == 16 and conv["connections"] == 7
    assert conv["density"] == pytest.approx(7 / 16)
    assert conv["entropy_bits_per_weight"] == pytest.approx(binary_entropy(7 / 16))
    assert conv["k0"] == 0.25 and conv["k1"] == 0.25 and conv["k2plus"] == 0.5
    assert conv["a_range"] == [-2, 1] and conv["b_range"] == [0, 3] and conv["t_range"] == [0, 1]
    # 4 output positions; BNN: 2 ops x 16 weights; SBNN: 7 connections + an 8-input window sum q.
    assert conv["bnn_ops"] == 2 * 16 * 4 and conv["sbnn_ops"] == (7 + 8) * 4
    assert out["bnn_ops"] == 32 and out["sbnn_ops"] == 16 + 8
    assert stats["totals"]["connections"] == 23 and stats["totals"]["weights"] == 32
    assert stats["totals"]["ops_reduction"] == pytest.approx((128 + 32) / (60 + 24))


def test_binary_entropy():
    assert binary_entropy(0) == 0 and binary_entropy(1) == 0
    assert binary_entropy(0.5) == 1
    assert binary_entropy(0.05) == pytest.approx(0.286397, abs=1e-6)


def test_inspect_report_on_example(capsys):
    assert inspect_cli.main([EXAMPLE]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model digits: input 64 x 4 bits, integer encoding, planes 3,2 (64 first-layer inputs)")
    assert "fc1    dense  64   64    752/4,096   18.36%   0.688" in out
    assert "total                  1,018/4,736   21.49%" in out


def test_inspect_report_of_a_conv_layer(tmp_path, capsys):
    save(_conv_model(), tmp_path / "c.sbnn")
    assert inspect_cli.main([str(tmp_path / "c.sbnn")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "density  bits/w     K0     K1   K>=2  BNN ops" in out[3]
    assert out[5] == ("conv   conv2d  3x3x2  2x2x2         7/16   43.75%   0.989  25.0%  25.0%  50.0%      128"
                      "        60    2.1x")


def test_inspect_json(tmp_path, capsys):
    save(_conv_model(), tmp_path / "c.sbnn")
    assert inspect_cli.main([str(tmp_path / "c.sbnn"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["name"] == "convnet" and stats["classes"] == ["a", "b"]
    assert [l["kind"] for l in stats["layers"]] == ["conv2d", "dense"]
    assert stats["layers"][0]["k1"] == 0.25 and stats["layers"][0]["k2plus"] == 0.5
    assert stats == json.loads(json.dumps(model_stats(_conv_model())))


def test_infer_writes_predictions_scores_and_accuracy(tmp_path, capsys):
    out, scores = tmp_path / "y.npy", tmp_path / "s.npy"
    status = infer_cli.main([EXAMPLE, "--inputs", "examples/digits_x.npy", "--out", str(out),
                             "--scores", str(scores), "--labels", "examples/digits_y.npy"])
    assert status == 0
    predictions, labels = np.load(out), np.load("examples/digits_y.npy")
    assert predictions.dtype == np.int64 and predictions.shape == labels.shape
    s = np.load(scores)
    assert s.shape == (len(labels), 10) and s.dtype == np.int64
    assert np.array_equal(np.argmax(s, axis=1), predictions)
    correct = int((predictions == labels).sum())
    assert f"accuracy: {correct}/{len(labels)} = {100 * correct / len(labels):.2f}%" in capsys.readouterr().out


@pytest.mark.parametrize("make,message", [
    (lambda p: np.save(p, np.zeros((3, 63), np.uint8)), "expected shape [N, 64], found shape [3, 63]"),
    (lambda p: np.save(p, np.full((3, 64), 16, np.uint8)), "expected values in [0, 15] (4-bit input), found 16 at sample 0"),
    (lambda p: np.save(p, np.zeros((3, 64), np.float64)), "expected unsigned integers, found dtype float64"),
    (lambda p: p.write_bytes(b"not numpy"), "expected a NumPy .npy array, found unreadable data"),
    (lambda p: np.save(p, np.array([{}], dtype=object), allow_pickle=True), "expected a NumPy .npy array, found unreadable data"),
    (lambda p: None, "expected a readable .npy file, found No such file or directory"),
])
def test_infer_refuses_bad_inputs_with_status_2(tmp_path, capsys, make, message):
    path = tmp_path / "x.npy"
    make(path)
    out = tmp_path / "y.npy"
    assert infer_cli.main([EXAMPLE, "--inputs", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sbnn_hdl.infer: error: inputs file '{path}': ") and message in err
    assert err.count("\n") == 1
    assert not out.exists()


def test_infer_refuses_mismatched_labels(tmp_path, capsys):
    np.save(tmp_path / "l.npy", np.zeros(5, np.int64))
    assert infer_cli.main([EXAMPLE, "--inputs", "examples/digits_x.npy", "--out", str(tmp_path / "y.npy"),
                           "--labels", str(tmp_path / "l.npy")]) == 2
    assert "expected 360 integer labels (shape [360]), found shape [5], dtype int64" in capsys.readouterr().err


def test_infer_unwritable_output_keeps_going_cleanly(tmp_path, capsys):
    target = tmp_path / "missing-dir" / "y.npy"
    assert infer_cli.main([EXAMPLE, "--inputs", "examples/digits_x.npy", "--out", str(target)]) == 2
    assert "sbnn_hdl.infer: error: cannot write" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["sbnn_hdl.inspect", "sbnn_hdl.infer"])
def test_help(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: python -m " + module in result.stdout


def test_infer_subprocess_no_traceback(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 5), np.uint8))
    result = subprocess.run([sys.executable, "-m", "sbnn_hdl.infer", EXAMPLE, "--inputs", str(tmp_path / "x.npy"),
                             "--out", str(tmp_path / "y.npy")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1

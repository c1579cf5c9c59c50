"""Streaming (convolutional) cores in the RTL simulators: bulk Verilator and Icarus runs, the
cocotb testbench, and files written from the spec alone, against the golden model and the spec's
plain-loop evaluation."""

import json
import sys

import numpy as np
import pytest

import spec_reference as ref
from sbnn_hdl import generate as generate_cli, golden, load, save, simulate as simulate_cli
from sbnn_hdl.hwplan import HardwareError
from sbnn_hdl.simulation.rtl import simulate
from sbnn_hdl.streamplan import is_streaming
from sbnn_hdl.testing import LayerPlan, random_inputs, random_model


@pytest.fixture(autouse=True)
def fresh_build_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SBNN_SIM_CACHE", str(tmp_path_factory.getbasetemp() / "streaming-rtl-cache"))


def _cnn(seed=1, shape=(8, 9, 2)):
    rng = np.random.default_rng(seed)
    return random_model(rng, shape=shape, bits=3, encoding="integer", planes=(2, 1), name="cnn",
                        layers=(LayerPlan("conv2d", 4, kernel=(3, 3), padding=(1, 1)),
                                LayerPlan("maxpool2d", kernel=(2, 2), stride=(2, 2)),
                                LayerPlan("conv2d", 3, kernel=(3, 3), padding=(1, 1), pad_value=1),
                                LayerPlan("dense", 3)))


@pytest.mark.parametrize("simulator, jobs", [("verilator", 3), ("icarus", 1)])
def test_bulk_run_matches_golden(simulator, jobs):
    """Also split between simulator processes: 301 images in slices of 100 and 101, each slice from
    a reset core, concatenated in order."""
    model = _cnn()
    x = random_inputs(np.random.default_rng(2), model.input, 301)
    predictions, scores = simulate(model, x, simulator=simulator, jobs=jobs)
    expected = golden.infer(model, x)
    np.testing.assert_array_equal(predictions, expected.predictions)
    np.testing.assert_array_equal(scores, expected.scores)


def test_cocotb_scoreboard_with_pauses():
    """The cocotb testbench drives pixels with random pauses; its scoreboard checks every image's
    prediction, scores and exact latency from the image's last pixel."""
    model = _cnn(seed=3, shape=(5, 7, 1))
    x = random_inputs(np.random.default_rng(4), model.input, 12)
    predictions, scores = simulate(model, x, simulator="icarus", mode="cocotb", idle=0.3, seed=5)
    expected = golden.infer(model, x)
    np.testing.assert_array_equal(scores, expected.scores)


def _starts_with_conv_or_pool(seed):
    manifest, _ = ref.random_description(np.random.default_rng(seed), conv=True)
    return manifest["layers"][0]["kind"] != "dense"


CONV_SEEDS = [seed for seed in range(40) if _starts_with_conv_or_pool(seed)][:6]


@pytest.mark.parametrize("seed", CONV_SEEDS)
def test_independent_conv_files_through_simulate(seed, tmp_path, capsys):
    """Conv models written by tests/spec_reference.py (from the spec alone) through
    ``python -m sbnn_hdl.simulate``: the scores of the spec's plain-loop evaluation."""
    rng = np.random.default_rng(seed)
    manifest, arrays = ref.random_description(rng, conv=True)
    path = tmp_path / "reference.sbnn"
    ref.write_sbnn(path, manifest, arrays)
    model = load(path)
    assert is_streaming(model)
    x = ref.random_inputs(rng, manifest, 200)
    np.save(tmp_path / "x.npy", x)
    argv = [str(path), "--inputs", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"),
            "--scores", str(tmp_path / "s.npy"), "--sim", "icarus", "--check", "--quiet"]
    status = simulate_cli.main(argv)
    text = capsys.readouterr()
    if status == 2 and "expected pad_value 0 when the integer input's lowest plane" in text.err:
        pytest.skip("a padding the streaming core refuses (tested in test_streaming.py)")
    assert status == 0, text.err
    predictions, scores = ref.evaluate(manifest, arrays, x)
    assert np.load(tmp_path / "y.npy").tolist() == predictions
    assert np.load(tmp_path / "s.npy").tolist() == scores


def test_generate_describes_the_streaming_interface(tmp_path, capsys):
    model = _cnn()
    save(model, tmp_path / "cnn.sbnn")
    assert generate_cli.main([str(tmp_path / "cnn.sbnn"), "--verilog", "-o", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "cnn.json").read_text())
    assert report["kind"] == "stream"
    assert report["input"]["pixel_width"] == 2 * 3
    assert report["input"]["pixels_per_sample"] == 8 * 9
    assert report["input"]["image_gap"] == 0
    assert report["input"]["packing"] == "pixel channel c in bits [c*3, (c+1)*3)"
    assert [s["name"] for s in report["stages"]] == ["conv2d0", "maxpool2d1", "conv2d2"]
    # The last conv sees 20 windows per 72 pixels: shared over 4 cycles (the estimate's choice).
    assert [s["share"] for s in report["stages"]] == [1, 1, 4] and report["generator"]["share"] == "auto"
    assert {p["name"]: p["width"] for p in report["ports"]}["pixel"] == 6
    assert "streaming core, 8x9 pixels of 6 bits in raster order" in capsys.readouterr().out


@pytest.mark.parametrize("option, message", [
    (["--arch", "xnor"], "--arch: expected sparse for a model with conv2d or maxpool2d layers (the streaming core "
                         "has no xnor datapath), found xnor"),
    (["--relay", "1"], "--relay: expected 0 for a model with conv2d or maxpool2d layers (the streaming core has "
                       "no relay stages), found 1"),
])
def test_generate_refuses_dense_only_options(option, message, tmp_path, capsys):
    save(_cnn(), tmp_path / "cnn.sbnn")
    assert generate_cli.main([str(tmp_path / "cnn.sbnn"), "--verilog", "-o", str(tmp_path), *option]) == 2
    assert capsys.readouterr().err == f"sbnn_hdl.generate: error: {message}\n"


@pytest.mark.parametrize("args, message", [
    (["examples/digits.sbnn", "--share", "off"], "sbnn_hdl.generate: error: --share: expected auto for a model "
     "without conv2d or maxpool2d layers (sharing is the streaming core's), found off"),
    (["examples/digits.sbnn", "--share", "0"], "python -m sbnn_hdl.generate: error: argument --share: expected "
     "auto, off or a number of cycles (1 or more), found '0'"),
])
def test_generate_share_option_errors(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(generate_cli.main([*args, "--verilog", "-o", str(tmp_path)]))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == message

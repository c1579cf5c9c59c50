"""Streaming cores with the serial head (the first dense layer's sums from
:class:`~sbnn_hdl.gateware.serial.SerialEngine`) against the golden model, in amaranth.sim and
Verilator: every score, the exact latency, back to back and with random pauses; the option's
errors."""

import json
import os

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from sbnn_hdl import generate as generate_cli, golden, save, simulate as simulate_cli
from sbnn_hdl.gateware.streaming import StreamingCore
from sbnn_hdl.gateware.verilog import build_core, estimate_model
from sbnn_hdl.hwplan import HardwareError
from sbnn_hdl.model import Conv2d, Dense, InputSpec, Model
from sbnn_hdl.simulation.pysim import check_core
from sbnn_hdl.simulation.rtl import simulate
from sbnn_hdl.streamplan import plan_stream
from sbnn_hdl.testing import LayerPlan, random_inputs, random_model
from sbnn_hdl.testing.strategies import stream_models

TOO_SHORT = "--head serial: expected a serial engine that finishes within"


def check_serial(model, x, *, every=2, idle=0.3, seed=0):
    return check_core(StreamingCore(model, every=every, head="serial"), x, idle=idle, seed=seed)


@settings(max_examples=int(os.environ.get("SBNN_SIM_EXAMPLES", "25")), deadline=None)
@given(model=stream_models(), every=st.integers(1, 3), idle=st.sampled_from([0.0, 0.0, 0.2, 0.6]),
       seed=st.integers(0, 2**16))
def test_random_conv_models_match_golden(model, every, idle, seed):
    try:
        StreamingCore(model, every=every, head="serial")
    except HardwareError as error:
        # Images of a few pixels leave the engine too little time; the core says so.
        assert str(error).startswith(TOO_SHORT)
        assume(False)
    rng = np.random.default_rng(seed)
    check_serial(model, random_inputs(rng, model.input, 5), every=every, idle=idle, seed=seed)


def _conv_model(shape, conv, dense, seed, density=0.5):
    rng = np.random.default_rng(seed)
    layers = (LayerPlan("conv2d", conv, kernel=(3, 3), padding=(1, 1)),) + tuple(LayerPlan("dense", n) for n in dense)
    return random_model(rng, shape=shape, bits=1, encoding="bitplanes", layers=layers, density=density)


@pytest.mark.parametrize("shape, conv, dense, seed, lanes, per_word", [
    ((5, 6, 1), 3, (12, 3), 1, 1, 10),   # several positions per map word
    ((3, 3, 1), 4, (7, 3), 4, 2, 3),     # two lanes, a first group with one unit
    ((6, 6, 1), 2, (20, 2), 3, 2, 9),     # two lanes over words of several positions
])
@pytest.mark.parametrize("idle", [0.0, 0.5])
def test_layouts_back_to_back_and_paused(shape, conv, dense, seed, lanes, per_word, idle):
    """Layouts that the chooser takes for these models (the test checks that it still does),
    so that lanes, partial groups and map words of several positions are all run."""
    model = _conv_model(shape, conv, dense, seed)
    core = check_serial(model, random_inputs(np.random.default_rng(seed), model.input, 7), idle=idle, seed=seed)
    assert (core.engine.lanes, core.engine.per_word) == (lanes, per_word)
    assert core.engine.steps <= core.pixels + core.image_gap


def _folded_model(hidden, b):
    """A conv layer with two identical channels (one stream channel, which the dense layer reads
    twice), then a first dense layer whose neurons include a duplicate, a constant and (with a
    hidden layer) one that no later layer reads."""
    rng = np.random.default_rng(11)
    spec = InputSpec(shape=(5, 4, 1), bits=2, encoding="integer")
    kernels, thresholds = rng.integers(0, 2, (3, 3, 3, 1)), rng.integers(-4, 5, 3)
    kernels[2], thresholds[2] = kernels[0], thresholds[0]
    conv = Conv2d("c", (5, 4, 1), kernels, np.full(3, 2), np.full(3, -1), thresholds, padding=(1, 1))
    n = 5 * 4 * 3
    mask = (rng.random((5, n)) < 0.3).astype(np.uint8)
    mask[1] = mask[0]                 # a duplicate of neuron 0
    mask[2] = 0                       # no connection: p is 0, a constant with b == 0
    a, bs = np.array([2, 2, 1, 3, 1]), np.array([b, b, 0, b, -b])
    t = np.array([5, 5, 1, 4, 2])
    first = Dense("d", mask, a, bs, t)
    if not hidden:
        return Model("folded", spec, [conv, first])
    out_mask = rng.integers(0, 2, (3, 5))
    out_mask[:, 3] = 0                # neuron 3 is read by nobody
    out_mask[:, 0] = 1
    return Model("folded", spec, [conv, first, Dense("out", out_mask, np.ones(3, np.int64), np.zeros(3, np.int64),
                                                     np.zeros(3, np.int64))])


@pytest.mark.parametrize("b", [0, -1])
@pytest.mark.parametrize("hidden", [True, False])
def test_duplicate_constant_and_unread_units_and_an_output_layer_first(hidden, b):
    """Only the built units that have connections get an engine slot; a first dense layer that
    is the output layer takes its p from the engine too (its scores are built as before); with
    b == 0 no q is held."""
    model = _folded_model(hidden, b)
    plan = plan_stream(model).dense[0]
    if hidden:
        assert plan.report["merged_neurons"] == 1 and plan.report["constant_neurons"] == 1
        assert plan.report["unread_neurons"] == 1
    else:
        assert len(plan.units) == 4   # the duplicate class is built once
    core = check_serial(model, random_inputs(np.random.default_rng(12), model.input, 8), idle=0.2)
    assert core.engine is not None and len(core.engine.units) == sum(1 for u in plan.units if u.sources)
    assert len(set(core.engine.columns)) < len(core.engine.columns)   # a stream channel in two columns
    assert bool(core.plan.q_channels) == (b != 0)
    check_serial(model, random_inputs(np.random.default_rng(13), model.input, 6), idle=0.0)


def test_a_first_layer_without_connections_is_built_unrolled():
    model = _conv_model((4, 4, 1), 2, (3, 2), 5, density=0.0)
    core = check_serial(model, random_inputs(np.random.default_rng(5), model.input, 4))
    assert core.engine is None and core.head == "serial"


def test_serial_head_is_smaller_than_unrolled_on_a_wide_layer():
    model = _conv_model((8, 8, 1), 8, (32, 4), 6, density=0.3)
    serial, unrolled = estimate_model(model, head="serial"), estimate_model(model, head="unrolled")
    assert serial["lut4"] < unrolled["lut4"]


def test_option_errors(tmp_path, capsys):
    dense = random_model(np.random.default_rng(1), shape=(6,), bits=1, encoding="bitplanes",
                         layers=(LayerPlan("dense", 3),))
    message = ("--head: expected unrolled for a model without conv2d or maxpool2d layers (the serial head is the "
               "streaming core's), found serial")
    with pytest.raises(HardwareError, match=f"^{message.replace('(', '[(]').replace(')', '[)]')}$"):
        build_core(dense, head="serial")
    save(dense, tmp_path / "dense.sbnn")
    assert generate_cli.main([str(tmp_path / "dense.sbnn"), "--verilog", "-o", str(tmp_path), "--head", "serial"]) == 2
    assert capsys.readouterr().err == f"sbnn_hdl.generate: error: {message}\n"
    np.save(tmp_path / "x.npy", random_inputs(np.random.default_rng(1), dense.input, 3))
    assert simulate_cli.main([str(tmp_path / "dense.sbnn"), "--inputs", str(tmp_path / "x.npy"), "--out",
                              str(tmp_path / "y.npy"), "--head", "serial", "--quiet"]) == 2
    assert capsys.readouterr().err == f"sbnn_hdl.simulate: error: {message}\n"
    conv = _conv_model((4, 4, 1), 2, (3,), 1)
    with pytest.raises(ValueError, match=r"^head: expected one of unrolled, serial, found 'fast'$"):
        StreamingCore(conv, head="fast")
    with pytest.raises(HardwareError, match=r"^--head: expected one of unrolled, serial, found 'fast'$"):
        build_core(conv, head="fast")
    # A board build takes the head too, and refuses the serial one for a dense model before any tool runs.
    assert generate_cli.main([str(tmp_path / "dense.sbnn"), "--board", "ulx3s", "--head", "serial", "-o",
                              str(tmp_path / "boards"), "--no-cache"]) == 2
    assert capsys.readouterr().err == f"sbnn_hdl.generate: error: {message}\n"
    assert not (tmp_path / "boards").exists()


def test_generate_reports_the_head(tmp_path, capsys):
    model = _conv_model((5, 6, 1), 3, (12, 3), 1)
    save(model, tmp_path / "cnn.sbnn")
    assert generate_cli.main([str(tmp_path / "cnn.sbnn"), "--verilog", "-o", str(tmp_path), "--head", "serial"]) == 0
    report = json.loads((tmp_path / f"{model.name}.json").read_text())
    assert report["generator"]["head"] == "serial"
    assert report["serial_engine"]["steps_per_image"] <= report["input"]["pixels_per_sample"]
    assert report["resources"]["memory_bits"] > 0
    rom = report["serial_engine"]["weights_rom"]  # what the board build counts as block RAM
    assert rom["depth"] == report["serial_engine"]["steps_per_image"] and rom["width"] > 0
    assert rom["depth"] * rom["width"] <= report["resources"]["memory_bits"]
    assert "first dense layer's sums from a serial engine" in capsys.readouterr().out


def test_verilator_bulk_run_matches_golden(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SBNN_SIM_CACHE", str(tmp_path_factory.getbasetemp() / "serial-head-rtl-cache"))
    model = _conv_model((3, 3, 1), 4, (7, 3), 4)
    x = random_inputs(np.random.default_rng(2), model.input, 200)
    predictions, scores = simulate(model, x, simulator="verilator", mode="bulk", head="serial")
    expected = golden.infer(model, x)
    np.testing.assert_array_equal(predictions, expected.predictions)
    np.testing.assert_array_equal(scores, expected.scores)

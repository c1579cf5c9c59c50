"""Gate-level simulation: the core after ``synth_ecp5``, simulated with Yosys's ECP5 cell models,
is still bit-exact against the golden model."""

import numpy as np
import pytest

from sbnn_hdl import golden, save, simulate as simulate_cli
from sbnn_hdl.simulation.netlist import ecp5_netlist
from sbnn_hdl.gateware.verilog import generate_verilog
from sbnn_hdl.simulation.bulk import BulkSimulator
from sbnn_hdl.testing import LayerPlan, random_inputs, random_model


@pytest.fixture(autouse=True)
def fresh_build_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SBNN_SIM_CACHE", str(tmp_path / "cache"))


def test_example_netlist_verilator(tmp_path, capsys):
    """The shipped example, through ``simulate --netlist ecp5`` on Verilator (the primary simulator)."""
    out = tmp_path / "y.npy"
    assert simulate_cli.main(["examples/digits.sbnn", "--inputs", "examples/digits_x.npy", "--out", str(out),
                              "--netlist", "ecp5", "--check", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "360 samples through the ecp5 netlist (verilator, bulk)" in text
    assert "check: all 360 predictions and scores bit-exact against the golden model" in text


def test_random_netlist_icarus():
    rng = np.random.default_rng(31)
    model = random_model(rng, shape=(12,), bits=4, encoding="integer", shared_ratio=True,
                         layers=(LayerPlan("dense", 10), LayerPlan("dense", 4)))
    generated = generate_verilog(model)
    sources, include, cells = ecp5_netlist(generated.verilog, generated.report["top"], simulator="icarus")
    assert cells["LUT4"] > 0 and cells["TRELLIS_FF"] > 0
    x = random_inputs(rng, model.input, 200)
    predictions, scores = BulkSimulator(generated.report, sources, include=include, simulator="icarus").run(model, x)
    expected = golden.infer(model, x)
    np.testing.assert_array_equal(predictions, expected.predictions)
    np.testing.assert_array_equal(scores, expected.scores)


def test_streaming_conv_netlist_verilator(tmp_path, capsys):
    """A convolutional model's streaming core after synthesis (line buffers mapped to ECP5 RAM
    cells), through ``simulate --netlist ecp5`` on Verilator."""
    rng = np.random.default_rng(33)
    model = random_model(rng, shape=(6, 7, 1), bits=3, encoding="integer", planes=(2, 1), name="cnn",
                         layers=(LayerPlan("conv2d", 4, kernel=(3, 3), padding=(1, 1)),
                                 LayerPlan("maxpool2d", kernel=(2, 2), stride=(2, 2)),
                                 LayerPlan("conv2d", 3, kernel=(3, 3), padding=(1, 1), pad_value=1),
                                 LayerPlan("dense", 3)))
    save(model, tmp_path / "cnn.sbnn")
    np.save(tmp_path / "x.npy", random_inputs(rng, model.input, 200))
    assert simulate_cli.main([str(tmp_path / "cnn.sbnn"), "--inputs", str(tmp_path / "x.npy"), "--out",
                              str(tmp_path / "y.npy"), "--netlist", "ecp5", "--check", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "200 samples through the ecp5 netlist (verilator, bulk)" in text
    assert "check: all 200 predictions and scores bit-exact against the golden model" in text

"""cocotb testbenches (sim/) on Verilator, and Icarus, against the golden model: a driver with
random idle cycles, a monitor, and a scoreboard that also checks each output's latency."""

import numpy as np
import pytest

from sbnn_hdl import golden, load
from sbnn_hdl.simulation.testbench import run_cocotb
from sbnn_hdl.gateware.verilog import generate_verilog
from sbnn_hdl.testing import LayerPlan, random_inputs, random_model

from rtl_faults import faulty


def check(model, x, generated, simulator, tmp_path, **options):
    result = run_cocotb(model, x, generated=generated, simulator=simulator, build_dir=tmp_path, **options)
    expected = golden.infer(model, x)
    assert result.passed, f"the scoreboard found mismatches; see {result.log}"
    # The scoreboard ran inside the simulator; check what came out here too.
    np.testing.assert_array_equal(result.predictions, expected.predictions)
    if result.scores is not None:
        np.testing.assert_array_equal(result.scores, expected.scores)
    assert set(result.latencies.tolist()) == {generated.report["latency"]}
    return result


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_example_model(simulator, tmp_path):
    model = load("examples/digits.sbnn")
    check(model, np.load("examples/digits_x.npy")[:150], generate_verilog(model), simulator, tmp_path)


@pytest.mark.parametrize("case", [
    dict(shape=(16,), bits=8, encoding="integer", planes=(7, 6, 3), every=1),
    dict(shape=(7,), bits=4, encoding="bitplanes", every=2, scores=False),
    dict(shape=(10,), bits=1, encoding="integer", every=3, shared_ratio=True),
], ids=["integer", "bitplanes-no-scores", "binary-shared-ratio"])
def test_random_models_verilator(case, tmp_path):
    case = dict(case)
    options = dict(every=case.pop("every"), scores=case.pop("scores", True))
    rng = np.random.default_rng(len(case["shape"]) * 31 + case["bits"])
    model = random_model(rng, layers=(LayerPlan("dense", 12), LayerPlan("dense", 6), LayerPlan("dense", 4)), **case)
    check(model, random_inputs(rng, model.input, 120), generate_verilog(model, **options), "verilator", tmp_path,
          idle=0.4, seed=3)


def test_back_to_back_without_idle_cycles(tmp_path):
    model = random_model(np.random.default_rng(11), shape=(8,), bits=2)
    x = random_inputs(np.random.default_rng(12), model.input, 60)
    check(model, x, generate_verilog(model), "icarus", tmp_path, idle=0.0)


@pytest.mark.parametrize("fault, what", [("prediction", "prediction"), ("latency", "latency (cycles)")])
def test_scoreboard_catches_wrong_hardware(fault, what, tmp_path):
    model = random_model(np.random.default_rng(9), shape=(6,), bits=2)
    x = random_inputs(np.random.default_rng(10), model.input, 40)
    x[:, 0] |= 1  # every sample triggers the prediction fault
    generated = faulty(generate_verilog(model), fault)
    result = run_cocotb(model, x, generated=generated, simulator="icarus", build_dir=tmp_path)
    assert not result.passed
    log = result.log.read_text()
    assert f"sample 0: {what}: expected" in log

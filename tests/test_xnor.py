"""``--arch xnor``: the conventional dense BNN datapath (an XNOR per weight, a popcount over all
inputs), the baseline the sparse datapath is measured against; exact like everything else."""

import json

import numpy as np
import pytest

from sbnn_hdl import generate as generate_cli, golden, save
from sbnn_hdl.gateware import NetworkCore
from sbnn_hdl.gateware.verilog import generate_verilog
from sbnn_hdl.hwplan import HardwareError, plan_network
from sbnn_hdl.model import Dense, Model
from sbnn_hdl.simulation.bulk import BulkSimulator
from sbnn_hdl.testing import LayerPlan, random_inputs, random_model
from sbnn_hdl.simulation.pysim import simulate_core

CASES = [
    dict(shape=(12,), bits=3, encoding="bitplanes", planes=(2, 0)),
    dict(shape=(16,), bits=1, encoding="integer"),
    dict(shape=(10,), bits=8, encoding="integer", planes=(5,)),  # one plane: binary after scaling
    dict(shape=(9,), bits=4, encoding="bitplanes", density=0.9),
]


def symmetric_model(seed, **case):
    rng = np.random.default_rng(seed)
    return rng, random_model(rng, symmetric=True, layers=(LayerPlan("dense", 9), LayerPlan("dense", 5),
                                                          LayerPlan("dense", 4)), **case)


@pytest.mark.parametrize("seed", range(len(CASES)))
@pytest.mark.parametrize("every", [1, 2])
def test_amaranth_sim_matches_golden(seed, every):
    rng, model = symmetric_model(seed, **CASES[seed])
    x = random_inputs(rng, model.input, 40)
    core = NetworkCore(model, every=every, arch="xnor")
    predictions, scores, latencies = simulate_core(core, x, rng=rng, idle=0.3)
    expected = golden.infer(model, x)
    assert predictions == expected.predictions.tolist() and scores == expected.scores.tolist()
    assert set(latencies) == {core.latency}


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_verilog_matches_golden(simulator):
    rng, model = symmetric_model(5, **CASES[0])
    x = random_inputs(rng, model.input, 300)
    generated = generate_verilog(model, arch="xnor")
    predictions, scores = BulkSimulator(generated.report, [("core.v", generated.verilog)],
                                        simulator=simulator).run(model, x)
    expected = golden.infer(model, x)
    np.testing.assert_array_equal(predictions, expected.predictions)
    np.testing.assert_array_equal(scores, expected.scores)


def test_every_input_is_wired_to_every_neuron():
    _, model = symmetric_model(6, shape=(20,), bits=1, encoding="integer", density=0.1, edge_cases=False)
    sparse, xnor = plan_network(model), plan_network(model, arch="xnor")
    first = xnor.layers[0]
    assert first.complements and not first.uses_q
    for unit in first.units:
        wired = {s % first.inputs for s, _ in unit.sources}
        assert wired == set(range(first.inputs))  # no input skipped, whatever the weight
    assert (sum(c for u in first.units for _, c in u.sources)
            > 3 * sum(c for u in sparse.layers[0].units for _, c in u.sources))


def _asymmetric(model):
    layer = model.layers[1]
    b = layer.b.copy()
    b[2] += 1
    layers = list(model.layers)
    layers[1] = Dense(layer.name, layer.mask, layer.a, b, layer.t)
    return Model(model.name, model.input, layers)


def test_refusals(tmp_path, capsys):
    _, model = symmetric_model(7, **CASES[0])
    bad = _asymmetric(model)
    a, b = int(bad.layers[1].a[2]), int(bad.layers[1].b[2])
    with pytest.raises(HardwareError, match=r"^layer 'dense1' neuron 2: expected the symmetric \+-1 domain"):
        plan_network(bad, arch="xnor")
    save(bad, tmp_path / "bad.sbnn")
    assert generate_cli.main([str(tmp_path / "bad.sbnn"), "--verilog", "-o", str(tmp_path), "--arch", "xnor"]) == 2
    assert capsys.readouterr().err == (
        f"sbnn_hdl.generate: error: layer 'dense1' neuron 2: expected the symmetric +-1 domain for --arch xnor "
        f"(2*b == -a), found a={a}, b={b}\n")
    multi = random_model(np.random.default_rng(8), shape=(6,), bits=4, encoding="integer", planes=(3, 1),
                         symmetric=True)
    with pytest.raises(HardwareError) as error:
        plan_network(multi, arch="xnor")
    assert str(error.value) == ("input: expected binary first-layer inputs for --arch xnor (bitplanes encoding, or "
                                "one plane), found 4-bit integer encoding of planes 3,1")
    assert not list(tmp_path.glob("*.v"))


def test_cli_writes_the_baseline(tmp_path, capsys):
    _, model = symmetric_model(9, **CASES[1])
    save(model, tmp_path / "m.sbnn")
    assert generate_cli.main([str(tmp_path / "m.sbnn"), "--verilog", "-o", str(tmp_path), "--arch", "xnor"]) == 0
    report = json.loads((tmp_path / "random.json").read_text())
    assert report["generator"]["arch"] == "xnor"
    assert not any(layer["uses_q"] for layer in report["layers"])

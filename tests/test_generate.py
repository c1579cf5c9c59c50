"""Verilog emission: the generate CLI, its report, determinism, and the shipped hw/ files."""

import json
import subprocess
import sys

import numpy as np
import pytest

from sbnn_hdl import load, save
from sbnn_hdl import generate as generate_cli
from sbnn_hdl.gateware.verilog import generate_verilog
from sbnn_hdl.model import Conv2d, Dense, InputSpec, Model
from sbnn_hdl.testing import LayerPlan, random_model

EXAMPLE = "examples/digits.sbnn"


def test_shipped_hw_is_up_to_date():
    """hw/ holds what `generate --verilog` writes for the example today; regenerate it with
    `./dev python -m sbnn_hdl.generate examples/digits.sbnn --verilog -o hw`."""
    generated = generate_verilog(load(EXAMPLE))
    with open("hw/digits.v") as file:
        assert file.read() == generated.verilog, "hw/digits.v is stale"
    with open("hw/digits.json") as file:
        assert json.load(file) == generated.report, "hw/digits.json is stale"


def test_cli_writes_verilog_and_report(tmp_path, capsys):
    assert generate_cli.main([EXAMPLE, "--verilog", "-o", str(tmp_path)]) == 0
    verilog = (tmp_path / "digits.v").read_text()
    report = json.loads((tmp_path / "digits.json").read_text())
    assert "module digits(" in verilog
    assert report["latency"] == generate_verilog(load(EXAMPLE)).core.latency
    ports = {p["name"]: p for p in report["ports"]}
    assert ports["sample"] == {"name": "sample", "direction": "in", "width": 64 * 4}
    assert ports["prediction"]["direction"] == "out" and ports["prediction"]["width"] == 4
    assert ports["scores"]["width"] == 10 * report["output"]["scores"]["width"]
    assert report["connections"]["model"] == 1018
    assert report["estimate_ecp5"]["lut4"] > 0 and report["estimate_ecp5"]["ff"] > 0
    # Every port in the report is a port of the Verilog module, with that width.
    for port in report["ports"]:
        declaration = f"{'input' if port['direction'] == 'in' else 'output'} " + \
                      (f"[{port['width'] - 1}:0] " if port["width"] > 1 else "") + port["name"] + ";"
        assert declaration in verilog
    out = capsys.readouterr().out
    assert "digits: latency" in out and "fc1" in out and "ECP5 estimate" in out


def test_same_model_same_bytes(tmp_path):
    model = random_model(np.random.default_rng(3), shape=(12,), bits=3)
    first = generate_verilog(model)
    second = generate_verilog(load_round_trip(model, tmp_path))
    assert first.verilog == second.verilog
    assert first.report == second.report


def load_round_trip(model, tmp_path):
    save(model, tmp_path / "m.sbnn")
    return load(tmp_path / "m.sbnn")


@pytest.mark.parametrize("seed", range(4))
def test_edge_case_models_convert(seed):
    rng = np.random.default_rng(seed)
    model = random_model(rng, shape=(6,), bits=int(rng.integers(1, 17)), encoding=("integer", "bitplanes")[seed % 2],
                         layers=(LayerPlan("dense", 1), LayerPlan("dense", 5), LayerPlan("dense", 1)))
    generated = generate_verilog(model, every=1 + seed % 3)
    assert f"module {model.name}(" in generated.verilog


def test_unbuildable_conv_models_are_refused_naming_the_layer(tmp_path):
    spec = InputSpec((4, 4, 1), 4, planes=(3, 2))
    conv = Conv2d("conv1", (4, 4, 1), np.ones((2, 3, 3, 1), np.uint8), [1, 1], [0, 0], [3, 3], padding=(1, 1),
                  pad_value=1)
    out = Dense("out", np.ones((2, 32), np.uint8), [1, 1], [0, 0], [0, 0])
    save(Model("cnn", spec, [conv, out]), tmp_path / "cnn.sbnn")
    result = subprocess.run([sys.executable, "-m", "sbnn_hdl.generate", str(tmp_path / "cnn.sbnn"), "--verilog",
                             "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == ("sbnn_hdl.generate: error: layer 'conv1': expected pad_value 0 when the integer input's "
                             "lowest plane read is above 0, found pad_value 1 with planes [3, 2]\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv,message", [
    (["--verilog", "--every", "0"], "--every: expected at least 1, found 0"),
    ([], "expected --verilog"),
    (["--verilog", "--router", "router2"], "--router: expected with --board (a place and route option), "
                                           "found --verilog alone"),
])
def test_bad_options(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        generate_cli.main([EXAMPLE, *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err

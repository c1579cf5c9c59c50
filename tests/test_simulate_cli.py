"""``python -m sbnn_hdl.simulate``: outputs as ``infer`` writes them, ``--check`` against the
golden model and against an independent implementation of the spec, its diff, and its errors."""

import numpy as np
import pytest

import spec_reference as ref
from sbnn_hdl import golden, load, save, simulate as simulate_cli
from sbnn_hdl.simulation import rtl
from sbnn_hdl.testing import random_inputs, random_model

from rtl_faults import faulty

EXAMPLE = "examples/digits.sbnn"


@pytest.fixture(autouse=True)
def fresh_build_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SBNN_SIM_CACHE", str(tmp_path_factory.getbasetemp() / "simulate-cli-cache"))


def test_example_check(tmp_path, capsys):
    out, scores = tmp_path / "y.npy", tmp_path / "s.npy"
    assert simulate_cli.main([EXAMPLE, "--inputs", "examples/digits_x.npy", "--out", str(out),
                              "--scores", str(scores), "--check", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "digits: 360 samples through the RTL (verilator, bulk)" in text
    assert "check: all 360 predictions and scores bit-exact against the golden model" in text
    expected = golden.infer(load(EXAMPLE), np.load("examples/digits_x.npy"))
    np.testing.assert_array_equal(np.load(out), expected.predictions)
    np.testing.assert_array_equal(np.load(scores), expected.scores)
    assert np.load(out).dtype == np.int64


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_independent_spec_implementation(seed, tmp_path, capsys):
    """A file written by tests/spec_reference.py, thousands of random inputs, the RTL against the
    reference's plain-loop evaluation of the spec (not the project's golden model)."""
    rng = np.random.default_rng(seed)
    manifest, arrays = ref.random_description(rng, encoding=["integer", "bitplanes"][seed % 2])
    path = tmp_path / "reference.sbnn"
    ref.write_sbnn(path, manifest, arrays)
    x = ref.random_inputs(rng, manifest, 3000)
    np.save(tmp_path / "x.npy", x)
    argv = [str(path), "--inputs", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"),
            "--scores", str(tmp_path / "s.npy"), "--check", "--quiet"]
    assert simulate_cli.main(argv) == 0
    assert "bit-exact against the golden model" in capsys.readouterr().out
    predictions, scores = ref.evaluate(manifest, arrays, x)
    assert np.load(tmp_path / "y.npy").tolist() == predictions
    assert np.load(tmp_path / "s.npy").tolist() == scores


def test_check_reports_the_first_mismatch(tmp_path, capsys, monkeypatch):
    model = random_model(np.random.default_rng(21), shape=(6,), bits=2)
    x = random_inputs(np.random.default_rng(22), model.input, 50)
    x[:7, 0] &= 2  # samples 0..6 even in element 0 (correct), the rest as they come
    x[7, 0] |= 1   # sample 7: the first that the fault corrupts
    model_path = tmp_path / "m.sbnn"
    save(model, model_path)
    np.save(tmp_path / "x.npy", x)
    generate = rtl.generated_core
    monkeypatch.setattr(rtl, "generated_core", lambda *a, **k: faulty(generate(*a, **k), "prediction"))
    status = simulate_cli.main([str(model_path), "--inputs", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"),
                                "--sim", "icarus", "--check", "--quiet"])
    text = capsys.readouterr().out
    assert status == 1
    odd = int((x[:, 0] % 2 == 1).sum())
    assert f"MISMATCH: {odd} of 50 samples differ from the golden model (samples 7," in text
    assert "first mismatch: sample 7\n  prediction: golden " in text
    assert "golden layer outputs for sample 7:\n    dense0: " in text


def test_cocotb_mode(tmp_path, capsys):
    model = random_model(np.random.default_rng(23), shape=(5,), bits=3)
    save(model, tmp_path / "m.sbnn")
    np.save(tmp_path / "x.npy", random_inputs(np.random.default_rng(24), model.input, 30))
    assert simulate_cli.main([str(tmp_path / "m.sbnn"), "--inputs", str(tmp_path / "x.npy"), "--out",
                              str(tmp_path / "y.npy"), "--sim", "icarus", "--mode", "cocotb", "--check",
                              "--quiet"]) == 0
    assert "through the RTL (icarus, cocotb)" in capsys.readouterr().out


@pytest.mark.parametrize("arch, relay", [("sparse", 2), ("xnor", 1)])
def test_relay_and_xnor_cores(arch, relay, tmp_path, capsys):
    """The variants of ``generate`` (relay stages, the dense baseline) checked end to end: the
    simulator's outputs against the golden model, and the report naming the core's latency."""
    model = random_model(np.random.default_rng(31), shape=(14,), bits=1, symmetric=arch == "xnor")
    save(model, tmp_path / "m.sbnn")
    x = random_inputs(np.random.default_rng(32), model.input, 200)
    np.save(tmp_path / "x.npy", x)
    assert simulate_cli.main([str(tmp_path / "m.sbnn"), "--inputs", str(tmp_path / "x.npy"), "--out",
                              str(tmp_path / "y.npy"), "--scores", str(tmp_path / "s.npy"), "--arch", arch,
                              "--relay", str(relay), "--sim", "icarus", "--check", "--quiet"]) == 0
    assert "bit-exact against the golden model" in capsys.readouterr().out
    expected = golden.infer(model, x)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected.predictions)
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), expected.scores)


def test_user_errors(tmp_path, capsys, monkeypatch):
    np.save(tmp_path / "bad.npy", np.zeros((3, 5), np.uint8))
    out = str(tmp_path / "y.npy")
    assert simulate_cli.main([EXAMPLE, "--inputs", str(tmp_path / "bad.npy"), "--out", out]) == 2
    assert capsys.readouterr().err == (
        f"sbnn_hdl.simulate: error: inputs file '{tmp_path / 'bad.npy'}': expected shape [N, 64], found shape [3, 5]\n")
    assert simulate_cli.main([str(tmp_path / "none.sbnn"), "--inputs", "examples/digits_x.npy", "--out", out]) == 2
    assert "none.sbnn" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit:
        simulate_cli.main([EXAMPLE, "--inputs", "examples/digits_x.npy", "--out", out, "--mode", "cocotb",
                           "--netlist", "ecp5"])
    assert exit.value.code == 2
    assert "--netlist and --waves: expected the bulk mode, found --mode cocotb" in capsys.readouterr().err
    for extra, found in ((["--jobs", "0"], "0"), (["--jobs", "2", "--mode", "cocotb"], "2 with --mode cocotb")):
        with pytest.raises(SystemExit) as exit:
            simulate_cli.main([EXAMPLE, "--inputs", "examples/digits_x.npy", "--out", out, *extra])
        assert exit.value.code == 2
        assert f"--jobs: expected at least 1, in bulk mode without --waves, found {found}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit:
        simulate_cli.main([EXAMPLE, "--inputs", "examples/digits_x.npy", "--out", out, "--relay", "-1"])
    assert exit.value.code == 2
    assert "--relay: expected 0 or more register stages, found -1" in capsys.readouterr().err
    assert simulate_cli.main([EXAMPLE, "--inputs", "examples/digits_x.npy", "--out", out, "--arch", "xnor"]) == 2
    assert capsys.readouterr().err == ("sbnn_hdl.simulate: error: input: expected binary first-layer inputs for "
                                       "--arch xnor (bitplanes encoding, or one plane), found 4-bit integer encoding "
                                       "of planes 3,2\n")
    monkeypatch.setenv("PATH", str(tmp_path))  # no simulator anywhere
    assert simulate_cli.main([EXAMPLE, "--inputs", "examples/digits_x.npy", "--out", out, "--sim", "icarus",
                              "--quiet"]) == 2
    assert capsys.readouterr().err == ("sbnn_hdl.simulate: error: iverilog: expected Icarus Verilog on PATH "
                                       "(Debian package iverilog; ./dev installs it), found nothing\n")
    assert not (tmp_path / "y.npy").exists()

"""Board in the loop: the host tool (python -m sbnn_hdl.board) against the board's complete top
level (host interface, UART RTL, the generated core) simulated in Verilator, over pyserial's
socket:// URL. Every prediction and score is checked against the golden model by the host tool
itself; this test checks what the tool reports and its exit status."""

import json
import re

import numpy as np
import pytest

from sbnn_hdl import golden, load
from sbnn_hdl.board import protocol as P
from sbnn_hdl.board.__main__ import main
from sbnn_hdl.board.client import open_port
from sbnn_hdl.board.dispatch import run_period
from sbnn_hdl.hwplan import pack_sample
from sbnn_hdl.simulation.board import SIM_BATCH, BoardSimulation
from sbnn_hdl.synth import ToolError

MODEL = "examples/digits.sbnn"

try:
    from sbnn_hdl.simulation.tools import configure
    configure("verilator")
except ToolError as error:
    pytest.skip(str(error), allow_module_level=True)


@pytest.fixture(scope="module")
def board():
    with BoardSimulation(MODEL) as sim:
        yield sim


def test_run_on_simulated_board_matches_golden(board, tmp_path, capsys):
    out = tmp_path / "run.json"
    status = main(["run", "--port", board.url, "--model", MODEL, "--inputs", "examples/digits_x.npy",
                   "--labels", "examples/digits_y.npy", "--limit", "80", "--scores", "--json", str(out)])
    text = capsys.readouterr().out
    assert status == 0, text
    result = json.loads(out.read_text())
    model = load(MODEL)
    x, y = np.load("examples/digits_x.npy")[:80], np.load("examples/digits_y.npy")[:80]
    expected = golden.infer(model, x).predictions
    assert result["agree"] == result["samples"] == 80 and result["scores_checked"]
    assert result["accuracy"] == {"correct": int((expected == y).sum()), "of": 80}
    latency = board.info.latency
    assert result["latency_cycles"] == [latency]
    # The batch ran back to back: one sample per 2 clocks once the pipeline is full (the 128
    # bits the core reads of a sample are two 72-bit words of the batch memory).
    assert run_period(board.info) == 2
    assert result["batch"] == {**result["batch"], "samples": SIM_BATCH, "agree": SIM_BATCH,
                               "cycles": (SIM_BATCH - 1) * 2 + latency, "samples_per_cycle": 0.5,
                               "cycles_per_sample": 2.0}
    assert "(one per 2 cycles, a word of the batch memory per clock)" in text
    assert re.search(r"digits: 80/80 predictions agree with the golden model \(scores too\)", text)
    assert f"on-chip latency: {latency} cycles = {latency * 10:g} ns at 100 MHz" in text


def test_protocol_robustness_with_garbage(board, capsys):
    status = main(["check", "--port", board.url, "--model", MODEL])
    text = capsys.readouterr().out
    assert status == 0, text
    for name in ("bad CRC", "bad length", "unknown type", "over-long length", "partial frame times out",
                 "garbage, then a valid request"):
        assert f"ok   {name}" in text


def test_random_garbage_never_hangs_the_board(board):
    """Bursts of random bytes, some containing sync patterns and plausible headers, each followed by
    a valid request that must be answered correctly."""
    model = load(MODEL)
    x = np.load("examples/digits_x.npy")[:6]
    expected = golden.infer(model, x).predictions
    rng = np.random.default_rng(7)
    with open_port(board.url, 3_000_000) as port:
        client = P.Client(port, timeout=3.0)
        client.drain()
        client.get_info()
        for n in range(6):
            noise = bytearray(rng.integers(0, 256, int(rng.integers(1, 120)), dtype=np.uint8))
            if n % 2:
                for at in rng.integers(0, len(noise), 3):
                    noise[at:at] = P.SYNC
                noise += P.SYNC + bytes([P.INFER, 0, 2])   # a header whose frame never ends
            port.write(bytes(noise))
            if n < 3:
                client.resync()   # zeros complete a partial frame at once
            else:
                # Or wait: a partial frame times out by itself; every reply the garbage provoked
                # ends. (The bridge runs the simulation at full speed while anything is pending.)
                _wait_for_silence(client)
            prediction, cycles, _ = client.infer(pack_sample(model.input, x[n]))
            assert (prediction, cycles) == (expected[n], board.info.latency)


def _wait_for_silence(client, quiet=2.0, limit=60):
    import time
    deadline = time.monotonic() + limit
    while client.drain(quiet=quiet) and time.monotonic() < deadline:
        pass


def test_wrong_model_is_refused(board, tmp_path, capsys):
    other = tmp_path / "other.sbnn"
    from sbnn_hdl import modelfile
    model = load(MODEL)
    modelfile.save(model.__class__(model.name + "2", model.input, model.layers), other)  # same weights, renamed
    status = main(["run", "--port", board.url, "--model", str(other), "--inputs", "examples/digits_x.npy",
                   "--limit", "2"])
    err = capsys.readouterr().err
    assert status == 2
    assert "sbnn_hdl.board: error: the board runs model 'digits'" in err and "program the matching bitstream" in err


def test_run_on_a_board_without_a_batch_memory(tmp_path, capsys):
    """``--batch-depth 0``: ``board run`` checks every sample one INFER at a time and skips the
    on-chip batch, which such a build does not have."""
    out = tmp_path / "run.json"
    with BoardSimulation(MODEL, batch_depth=0) as sim:
        status = main(["run", "--port", sim.url, "--model", MODEL, "--inputs", "examples/digits_x.npy",
                       "--limit", "12", "--json", str(out)])
    text = capsys.readouterr().out
    assert status == 0, text
    result = json.loads(out.read_text())
    assert result["agree"] == result["samples"] == 12 and result["ok"]
    assert "batch" not in result and "on-chip batch" not in text


@pytest.fixture(scope="module")
def conv_board(tmp_path_factory):
    """The board simulation of a small conv model (its streaming core behind the same host
    interface), with 40 inputs for it."""
    from sbnn_hdl import modelfile
    from sbnn_hdl.testing import LayerPlan, random_inputs, random_model
    folder = tmp_path_factory.mktemp("conv")
    rng = np.random.default_rng(1)
    model = random_model(rng, shape=(6, 5, 1), bits=3, encoding="integer", name="conv",
                         layers=(LayerPlan("conv2d", 3, kernel=(3, 3), padding=(1, 1)),
                                 LayerPlan("maxpool2d", kernel=(2, 2), stride=(2, 2)), LayerPlan("dense", 4)))
    path, inputs = folder / "conv.sbnn", folder / "conv_x.npy"
    modelfile.save(model, path)
    np.save(inputs, random_inputs(rng, model.input, 40))
    with BoardSimulation(str(path)) as sim:
        yield sim, str(path), str(inputs)


def test_conv_model_on_simulated_board_matches_golden(conv_board, tmp_path, capsys):
    """``board run`` and ``board check`` on a conv model as on an MLP: every prediction and score
    as the golden model's, the latency from a sample's last pixel, and the batch at one sample
    per ``pixels + image_gap`` clocks (30 pixels, no gap)."""
    sim, model_path, inputs = conv_board
    out = tmp_path / "run.json"
    status = main(["run", "--port", sim.url, "--model", model_path, "--inputs", inputs, "--scores",
                   "--json", str(out)])
    text = capsys.readouterr().out
    assert status == 0, text
    result = json.loads(out.read_text())
    info = sim.info
    assert info.streaming and (info.pixels, info.image_gap) == (30, 0)
    assert result["agree"] == result["samples"] == 40 and result["scores_checked"]
    assert result["latency_cycles"] == [info.latency]
    count = min(40, SIM_BATCH)
    assert result["batch"] == {**result["batch"], "samples": count, "agree": count, "streaming": True,
                               "cycles": (count - 1) * 30 + info.latency, "cycles_per_sample": 30.0}
    assert "conv: 40/40 predictions agree with the golden model (scores too)" in text
    assert "cycles from the first sample's last pixel in to the last prediction out" in text
    assert "(one per 30 cycles, pixel by pixel)" in text
    status = main(["check", "--port", sim.url, "--model", model_path])
    text = capsys.readouterr().out
    assert status == 0, text
    assert text.count("ok   ") == 6

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
from sbnn_hdl.simulation.board import SIM_BATCH, SIM_CLOCK_HZ, BoardSimulation
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
    assert result["batch"] == {"samples": SIM_BATCH, "agree": SIM_BATCH, "mismatches": []}
    # RUN feeds the core one sample per 2 clocks: the 128 bits the core reads of a sample are two
    # 72-bit words of the batch memory (docs/protocol.md).
    assert run_period(board.info) == 2
    assert re.search(r"digits: 80/80 predictions agree with the golden model \(scores too\)", text)
    assert f"on-chip batch (LOAD, RUN): {SIM_BATCH}/{SIM_BATCH} predictions agree" in text
    _check_figures(result["figures"], text, board.report, kind="INFER_SCORES", requests=80, batch=SIM_BATCH,
                   period=run_period(board.info), start="the sample into the core")


def _check_figures(figures, text, report, *, kind, requests, batch, period, start, streaming=False):
    """The on-board figures of a ``board run`` on the simulation, against what is documented:
    the counter of an INFER reads the core's latency (its generation report's ``latency``; the
    host interface adds no cycles to it, docs/protocol.md), a RUN of ``batch`` samples takes
    ``(batch - 1) * period + latency`` cycles, ``period`` as the report's ``throughput`` says for
    a streaming core and as :func:`~sbnn_hdl.board.dispatch.run_period` (a word per clock) for a dense one,
    and the simulation reports a 100 MHz clock (10 ns a cycle). The host's round trips are
    whatever the machine gives: only their form is checked."""
    latency = report["latency"]
    assert report["throughput"].startswith(f"one sample per {period} clocks" if streaming else "one sample per clock")
    assert figures["clock_hz"] == SIM_CLOCK_HZ == 100_000_000
    on_chip, host = figures["on_chip"], figures["host"]
    assert list(on_chip) == [kind, "RUN"] and list(host) == [kind, "LOAD", "RUN"]
    assert on_chip[kind] == {"latency_cycles": latency, "latency_ns": latency * 10.0,
                             "latency_cycles_seen": [latency], "info_latency_cycles": latency, "from": start}
    assert on_chip["RUN"] == {"samples": batch, "cycles": (batch - 1) * period + latency,
                              "cycles_per_sample": period, "samples_per_s": round(100e6 / period, 1),
                              "samples_per_s_with_fill": on_chip["RUN"]["samples_per_s_with_fill"]}
    if not streaming:   # a dense core: the count covers the whole batch, from its first sample in
        assert batch / on_chip["RUN"]["samples_per_s_with_fill"] == pytest.approx(on_chip["RUN"]["cycles"] * 10e-9)
    else:               # a streaming core's starts at the first sample's last pixel
        assert on_chip["RUN"]["samples_per_s_with_fill"] is None
    for name, count in ((kind, requests), ("LOAD", batch), ("RUN", 1)):
        f = host[name]
        r = f["round_trip_ms"]
        assert f["requests"] == count and 0 < r["min"] <= r["median"] <= r["p99"] <= r["max"], f
        assert 0 < f["uart_ms"] < r["min"]   # the simulated UART's bytes, at 12.5 Mbaud, and then some
    assert host[kind]["samples_per_s"] > 0 and host["RUN"]["samples_per_s"] > 0 and host["RUN"]["samples"] == batch
    assert "8 clocks per bit (12.5 Mbaud at the reported 100 MHz)" in figures["link"]
    # The table: which figures are exact, on chip, and which the host measured through the link.
    assert "on-board figures (clock 100 MHz, as INFO reports it):" in text
    assert re.search(rf"^latency +on chip +{kind} +{latency} cycles = {latency * 10} ns from {start}$", text, re.M)
    per = "1 cycle" if period == 1 else f"{period} cycles"
    assert re.search(rf"^throughput +on chip +RUN of {batch} +{per} per sample once full = "
                     rf"{100 / period:,.2f} M samples/s \({batch} samples in {(batch - 1) * period + latency:,} cycles"
                     + (" = " if not streaming else " from the first sample's last pixel\\)$"),
                     text, re.M)
    assert re.search(rf"^round trip +host +{kind} x {requests} +median [0-9.]+ ms, p99 [0-9.]+, min [0-9.]+, "
                     rf"max [0-9.]+ \(its bytes on the line: [0-9.]+ ms\)$", text, re.M)
    assert re.search(r"^end to end +host +LOAD each, then RUN +[0-9.,]+ samples/s$", text, re.M)
    assert "on chip: exact, from the board's cycle counters; ns and samples/s at the clock INFO reports." in text
    assert "host: this computer's clock around each request, one request at a time; includes a TCP socket" in text


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
    # INFER's figures only: no RUN, no LOAD.
    assert list(result["figures"]["on_chip"]) == list(result["figures"]["host"]) == ["INFER"]
    assert result["figures"]["on_chip"]["INFER"]["latency_cycles"] == sim.report["latency"]
    assert "RUN" not in text and "LOAD" not in text


@pytest.fixture(scope="module", params=["unrolled", "serial"])
def conv_board(tmp_path_factory, request):
    """The board simulation of a small conv model (its streaming core behind the same host
    interface, with either head: docs/hardware.md), with 40 inputs for it."""
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
    with BoardSimulation(str(path), head=request.param) as sim:
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
    assert (sim.report["serial_engine"] is not None) == (sim.report["generator"]["head"] == "serial")
    assert result["agree"] == result["samples"] == 40 and result["scores_checked"]
    count = min(40, SIM_BATCH)
    assert result["batch"] == {"samples": count, "agree": count, "mismatches": []}
    assert "conv: 40/40 predictions agree with the golden model (scores too)" in text
    assert sim.report["input"]["pixels_per_sample"] + sim.report["input"]["image_gap"] == 30
    _check_figures(result["figures"], text, sim.report, kind="INFER_SCORES", requests=40, batch=count, period=30,
                   start="the sample's last pixel into the core", streaming=True)
    status = main(["check", "--port", sim.url, "--model", model_path])
    text = capsys.readouterr().out
    assert status == 0, text
    assert text.count("ok   ") == 6


def test_simulate_stops_its_simulation_on_sigterm(board):
    """``board simulate`` terminated (as a service manager or ``kill`` does, not Ctrl-C) stops the
    simulation process it started: its port closes. (The build is the ``board`` fixture's, cached.)"""
    import os
    import signal
    import socket
    import subprocess
    import sys
    process = subprocess.Popen([sys.executable, "-m", "sbnn_hdl.board", "simulate", MODEL], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        url = process.stdout.readline().split(" on ")[1].split()[0]
        host, port = url.removeprefix("socket://").rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=5).close()   # served
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=5).close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

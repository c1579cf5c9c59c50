"""cocotb test of a generated network core against the golden model.

Started by :func:`sbnn_hdl.simulation.testbench.run_cocotb` (and through it by the pytest runners in
``tests/`` and by ``python -m sbnn_hdl.simulate --mode cocotb``), which passes a JSON file named by
the environment variable ``SBNN_COCOTB_CONFIG``:

``model``   the ``.sbnn`` file the core was generated from;
``report``  the generation report (``<name>.json``: ports, latency, output layout);
``inputs``  the samples, ``.npy``;
``outputs`` where to write what the core produced (``.npz``: ``predictions``, ``scores``, ``latencies``);
``idle``    probability of an idle cycle before each sample (a streaming core: each pixel); ``seed``
            for the idle pattern.

The test drives every sample, waits for the outputs, then checks with the scoreboard: each output
bit-exact with the golden model, exactly ``latency`` cycles after its sample, and no output that
no sample asked for (checked over ``latency + 8`` further cycles).
"""

import json
import os
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from sbnn_cocotb import OutputMonitor, PixelDriver, SampleDriver, Scoreboard
from sbnn_hdl import load

PERIOD_NS = 10


def _config():
    with open(os.environ["SBNN_COCOTB_CONFIG"]) as file:
        return json.load(file)


@cocotb.test()
async def golden_agreement(dut):
    config = _config()
    model = load(config["model"])
    with open(config["report"]) as file:
        report = json.load(file)
    x = np.load(config["inputs"])
    layout = report["output"]["scores"]

    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    dut.valid.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await RisingEdge(dut.clk)

    scoreboard = Scoreboard(model, x, report["latency"])
    monitor = OutputMonitor(dut, PERIOD_NS, score_width=layout["width"] if layout else None,
                            classes=layout["classes"] if layout else 0)
    rng = random.Random(config.get("seed", 0))
    if report.get("kind") == "stream":  # one pixel per clock; latency from a sample's last pixel
        driver = PixelDriver(dut, model.input, PERIOD_NS, idle=config.get("idle", 0.0), rng=rng,
                             gap=report["input"]["image_gap"])
    else:
        driver = SampleDriver(dut, model.input, PERIOD_NS, idle=config.get("idle", 0.0), rng=rng)
    started = time.perf_counter()
    for index, sample in enumerate(x):
        driver.send(index, sample)
    await driver.wait()
    await ClockCycles(dut.clk, report["latency"] + 8)
    elapsed = time.perf_counter() - started

    outputs = monitor.outputs
    latencies = [o.edge - e + 1 for (e, _), o in zip(driver.sent, outputs)]
    np.savez(config["outputs"], predictions=np.array([o.prediction for o in outputs], np.int64),
             scores=np.array([o.scores for o in outputs], np.int64).reshape(len(outputs), -1),
             latencies=np.array(latencies, np.int64), seconds=np.float64(elapsed))
    mismatches = scoreboard.check(driver.sent, outputs, scores=layout is not None)
    for m in mismatches[:10]:
        dut._log.error(f"sample {m.index}: {m.what}: expected {m.expected}, found {m.found}")
    assert not mismatches, f"{len(mismatches)} mismatches against the golden model (first: {mismatches[0]})"
    dut._log.info(f"{len(x)} samples bit-exact against the golden model in {elapsed:.2f} s")

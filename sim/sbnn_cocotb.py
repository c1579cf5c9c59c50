"""cocotb components for a generated network core: a driver, a monitor and a scoreboard.

They run inside the simulator (cocotb 2.x) against the Verilog that ``generate`` emits, whose
ports the generation report describes: ``clk``, ``rst``, ``sample`` and ``valid`` in,
``prediction``, ``scores`` (optional) and ``out_valid`` out, with a fixed ``latency`` in cycles.

- :class:`SampleDriver` packs samples onto ``sample`` and holds ``valid`` high for one cycle per
  sample, with random idle cycles between them;
- :class:`OutputMonitor` records every cycle in which ``out_valid`` is high;
- :class:`Scoreboard` holds what the golden model (:func:`sbnn_hdl.golden.infer`) says each sample
  gives, and checks each output against it, and that it came exactly ``latency`` cycles after
  its sample.
"""

import random
from collections import deque
from dataclasses import dataclass

import numpy as np

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from sbnn_hdl import golden
from sbnn_hdl.hwplan import pack_sample

__all__ = ["cycle", "SampleDriver", "PixelDriver", "OutputMonitor", "Output", "Scoreboard", "Mismatch"]


def cycle(period_ns):
    """The number of the clock edge at the current simulation time (clock period ``period_ns``)."""
    return int(get_sim_time(unit="ns") // period_ns)


class SampleDriver:
    """Feeds samples into the core.

    ``idle`` is the probability of an idle cycle (``valid`` low) before each sample, during which
    ``sample`` carries random garbage that the core must ignore; ``rng`` a :class:`random.Random`.
    :meth:`send` queues a sample; :meth:`wait` returns when all queued samples were driven.
    :attr:`sent` lists ``(edge, index)`` for each sample, ``edge`` numbering the clock edge that
    took it (see :func:`cycle`).
    """

    def __init__(self, dut, spec, period_ns, *, idle=0.0, rng=None):
        self.dut, self.spec, self.period_ns = dut, spec, period_ns
        self.idle = idle
        self.rng = rng or random.Random(0)
        self.sent = []
        self._queue = deque()
        self._task = None

    def send(self, index, sample):
        self._queue.append((index, pack_sample(self.spec, sample)))
        if self._task is None or self._task.done():
            self._task = cocotb.start_soon(self._run())

    async def wait(self):
        if self._task is not None:
            await self._task

    async def _run(self):
        dut = self.dut
        while self._queue:
            while self.rng.random() < self.idle:
                dut.valid.value = 0
                dut.sample.value = self.rng.getrandbits(len(dut.sample))
                await RisingEdge(dut.clk)
            index, packed = self._queue.popleft()
            dut.sample.value = packed
            dut.valid.value = 1
            await RisingEdge(dut.clk)
            self.sent.append((cycle(self.period_ns), index))
        dut.valid.value = 0


class PixelDriver(SampleDriver):
    """Feeds samples into a streaming core, one pixel per clock in raster order.

    ``idle`` is the probability of an idle cycle before each pixel (``pixel`` then carries
    garbage); after a sample's last pixel come at least ``gap`` idle cycles (the core's
    ``image_gap``). :attr:`sent` lists ``(edge, index)`` with the edge that took the sample's
    last pixel, from which the core's latency counts.
    """

    def __init__(self, dut, spec, period_ns, *, idle=0.0, rng=None, gap=0):
        super().__init__(dut, spec, period_ns, idle=idle, rng=rng)
        self.gap = gap

    def send(self, index, sample):
        h, w, c = self.spec.shape
        pixels = [pack_sample(self.spec, p) for p in np.asarray(sample).reshape(h * w, c)]
        self._queue.append((index, pixels))
        if self._task is None or self._task.done():
            self._task = cocotb.start_soon(self._run())

    async def _idle(self):
        self.dut.valid.value = 0
        self.dut.pixel.value = self.rng.getrandbits(len(self.dut.pixel))
        await RisingEdge(self.dut.clk)

    async def _run(self):
        dut = self.dut
        while self._queue:
            index, pixels = self._queue.popleft()
            for word in pixels:
                while self.rng.random() < self.idle:
                    await self._idle()
                dut.pixel.value = word
                dut.valid.value = 1
                await RisingEdge(dut.clk)
            self.sent.append((cycle(self.period_ns), index))
            for _ in range(self.gap):
                await self._idle()
        dut.valid.value = 0


@dataclass(frozen=True)
class Output:
    edge: int
    prediction: int
    scores: tuple  # empty without a scores port


class OutputMonitor:
    """Records ``prediction`` (and ``scores``) in every cycle where ``out_valid`` is high.

    ``score_width``/``classes`` unpack the ``scores`` port (two's complement, class 0 in the
    low bits); ``score_width=None`` for a core without one. :attr:`outputs` lists :class:`Output`,
    ``edge`` numbering the clock edge after which the output was presented.
    """

    def __init__(self, dut, period_ns, *, score_width=None, classes=0):
        self.dut, self.period_ns = dut, period_ns
        self.score_width, self.classes = score_width, classes
        self.outputs = []
        cocotb.start_soon(self._run())

    def _scores(self):
        if self.score_width is None:
            return ()
        w = self.score_width
        packed = self.dut.scores.value.to_unsigned()
        values = [(packed >> (j * w)) & ((1 << w) - 1) for j in range(self.classes)]
        return tuple(v - (1 << w) if v >> (w - 1) else v for v in values)

    async def _run(self):
        dut = self.dut
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            if dut.rst.value == 0 and dut.out_valid.value == 1:
                self.outputs.append(Output(cycle(self.period_ns), dut.prediction.value.to_unsigned(),
                                           self._scores()))


@dataclass(frozen=True)
class Mismatch:
    index: int
    what: str
    expected: object
    found: object


class Scoreboard:
    """What the golden model says, and the check of the core's outputs against it.

    ``model`` is the :class:`~sbnn_hdl.model.Model` the core was generated from, ``x`` the
    samples, ``latency`` the core's documented latency in cycles.
    """

    def __init__(self, model, x, latency):
        self.model, self.latency = model, latency
        self.expected = golden.infer(model, x)

    def check(self, sent, outputs, *, scores=True):
        """Pair ``sent`` ``(edge, index)`` with ``outputs`` in order; return the mismatches.

        Every sample must produce exactly one output, and no output may come without a sample.
        A core of latency L presents a sample's output after the (L-1)th edge following the one
        that took it (latency 1: the same edge registers the sample and the result).
        """
        mismatches = []
        if len(outputs) != len(sent):
            mismatches.append(Mismatch(-1, "output count", len(sent), len(outputs)))
        for (edge, index), output in zip(sent, outputs):
            if output.edge - edge + 1 != self.latency:
                mismatches.append(Mismatch(index, "latency (cycles)", self.latency, output.edge - edge + 1))
            if output.prediction != self.expected.predictions[index]:
                mismatches.append(Mismatch(index, "prediction", int(self.expected.predictions[index]),
                                           output.prediction))
            if scores and tuple(output.scores) != tuple(self.expected.scores[index].tolist()):
                mismatches.append(Mismatch(index, "scores", self.expected.scores[index].tolist(),
                                           list(output.scores)))
        return mismatches

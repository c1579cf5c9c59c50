"""The sparse accumulator: one neuron's sum over exactly the wires its mask selects."""

from amaranth.hdl import Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .pipeline import Pipeline, shape_for
from .shared import SharedModules

__all__ = ["SparseAccumulator"]


class SparseAccumulator(wiring.Component):
    """``sum = sum_k count[k] * inputs[k]``: an adder tree over exactly the selected wires.

    No logic exists for inputs that a neuron does not select: they are not ports of this
    component. For binary inputs this is a popcount; for the multi-bit elements of an
    ``integer``-encoded first layer, a sum of their values. An input selected twice (two merged
    neurons of the previous layer) is added twice.

    Parameters
    ----------
    input_max : list of int
        The largest value of each input (1 for a bit); input ``k`` is ``shape_for(0, input_max[k])``
        bits wide, packed into ``inputs`` from bit 0 up in order.
    counts : list of int, optional
        How often each input is added (default: once each).
    every : int
        Adder levels per register stage.
    latency : int, optional
        Pad the output to exactly this many cycles (at least :attr:`natural_latency`).

    Ports
    -----
    inputs : In(unsigned(sum of the input widths))
    sum : Out(unsigned(bits of max_value)) — valid ``latency`` cycles after ``inputs``.

    Attributes
    ----------
    max_value : int
        The largest possible sum (its width is the output's width).
    latency : int
        Cycles from ``inputs`` to ``sum``: ``ceil(ceil(log2(terms)) / every)`` for two terms or more,
        1 for a single term (registered), 0 for none (the output is the constant 0), or the
        requested ``latency``.
    """

    def __init__(self, input_max, counts=None, *, every=2, latency=None):
        self.input_max = list(input_max)
        self.counts = [1] * len(self.input_max) if counts is None else list(counts)
        self.every = every
        self.widths = [shape_for(0, v).width for v in self.input_max]
        self.max_value = sum(c * v for c, v in zip(self.counts, self.input_max))
        self.natural_latency = self.latency_for(self.input_max, self.counts, every=every)
        if latency is not None and latency < self.natural_latency:
            raise ValueError(f"latency: expected at least {self.natural_latency} cycles, found {latency}")
        self.latency = self.natural_latency if latency is None else latency
        super().__init__({
            "inputs": In(unsigned(max(sum(self.widths), 1))),
            "sum": Out(shape_for(0, self.max_value)),
        })

    @staticmethod
    def latency_for(input_max, counts, *, every):
        """The natural latency of an accumulator with these parameters (without building one)."""
        dry = Pipeline(None, every, "dry")
        return SparseAccumulator._build(dry, [dry.input(None, 0, v) for v in input_max], counts).stage or 0

    @staticmethod
    def _build(pipe, inputs, counts):
        return pipe.finish(pipe.sum([x for x, c in zip(inputs, counts) for _ in range(c)]))

    def elaborate(self, platform):
        if isinstance(platform, SharedModules):
            key = (tuple(self.input_max), tuple(self.counts), self.every, self.latency)
            return platform.instance(self, key, lambda: SparseAccumulator(
                self.input_max, self.counts, every=self.every, latency=self.latency))
        m = Module()
        pipe = Pipeline(m, self.every, "acc")
        inputs, offset = [], 0
        for width, top in zip(self.widths, self.input_max):
            inputs.append(pipe.input(self.inputs[offset:offset + width], 0, top))
            offset += width
        result = pipe.delay(self._build(pipe, inputs, self.counts), self.latency)
        m.d.comb += self.sum.eq(result.value)
        self.stats = pipe.stats
        return m

"""The sparse accumulator: one neuron's sum over exactly the wires its mask selects."""

from amaranth.hdl import Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..hwplan import DEFAULT_EVERY
from .pipeline import Pipeline, shape_for
from .shared import SharedModules

__all__ = ["SparseAccumulator"]


class SparseAccumulator(wiring.Component):
    """``sum = sum_k count[k] * inputs[k]``: an adder tree over exactly the selected wires.

    No logic exists for inputs that a neuron does not select: they are not ports of this
    component. For binary inputs this is a popcount; for the multi-bit elements of an
    ``integer``-encoded first layer, either an adder tree over the values or one popcount per bit
    position (bit plane) with the counts shifted into place and added, whichever builds fewer
    adder bits. An input selected twice (two merged neurons of the previous layer) is
    added twice.

    Parameters
    ----------
    input_max : list of int
        The largest value of each input (1 for a bit); input ``k`` is ``shape_for(0, input_max[k])``
        bits wide, packed into ``inputs`` from bit 0 up in order. Every value of an input must be a
        sub-mask of its ``input_max``: only the bits set in ``input_max`` are summed. This holds
        for bits and for the elements of an ``integer`` first layer, whose bits are the bit
        planes read (a plane that is not read is a 0 bit).
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
        Cycles from ``inputs`` to ``sum``: the adder levels of the tree divided by ``every``,
        rounded up (:meth:`latency_for`; a popcount of ``k >= 2`` bits has
        ``ceil(log2(k + 1)) - 1`` levels), 1 for a single bit (registered), 0 for no input (the
        output is the constant 0), or the requested ``latency``.
    """

    def __init__(self, input_max, counts=None, *, every=DEFAULT_EVERY, latency=None):
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

    @classmethod
    def latency_for(cls, input_max, counts, *, every):
        """The natural latency of an accumulator with these parameters (without building one)."""
        dry = Pipeline(None, every, "dry")
        return cls._build(dry, [dry.input(None, 0, v) for v in input_max], counts).stage or 0

    @classmethod
    def _build(cls, pipe, inputs, counts):
        """The registered sum: of bits, a popcount; of multi-bit inputs, whichever of
        :meth:`_by_word` and :meth:`_by_plane` builds fewer adder bits (then fewer levels)."""
        build = cls._by_word
        if any(x.hi > 1 for x in inputs):
            def cost(build):
                dry = Pipeline(None, pipe.every, "dry")
                result = build(dry, [dry.input(None, x.lo, x.hi, x.stage) for x in inputs], counts)
                return dry.stats["adder_bits"], result.stage or 0
            build = min((cls._by_word, cls._by_plane), key=cost)
        return pipe.finish(build(pipe, inputs, counts))

    @staticmethod
    def _by_word(pipe, inputs, counts):
        """An adder tree over the inputs (bits among them ride as carry-ins: :meth:`Pipeline.sum`)."""
        return pipe.sum([x for x, c in zip(inputs, counts) for _ in range(c)])

    @staticmethod
    def _by_plane(pipe, inputs, counts):
        """A popcount per bit position, shifted into place and added. For 2- and 3-bit inputs
        this is 7 to 16% smaller in synthesis than :meth:`_by_word`, whose first level adds values
        without a carry-in (``benchmarks/popcount_cost.py --input-max``), with more flip-flops."""
        columns = {}
        for x, count in zip(inputs, counts):
            for j in range(x.hi.bit_length()):
                if x.hi >> j & 1:
                    bit = x if x.hi == 1 else pipe.low_bits(pipe.shift_right(x, j), 1)
                    columns.setdefault(j, []).extend([bit] * count)
        if not columns:
            return pipe.const(0)
        low = min(columns)
        # The adders that join the columns take bits of the lowest column as their carry-ins.
        held = columns[low][:len(columns) - 1]
        columns[low] = columns[low][len(held):]
        terms = [pipe.shift(pipe.popcount(bits), j) for j, bits in sorted(columns.items())]
        return pipe.sum(terms + [pipe.shift(bit, low) for bit in held])

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

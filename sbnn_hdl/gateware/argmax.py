"""A pipelined argmax over signed scores; ties go to the lowest index."""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..hwplan import DEFAULT_EVERY

__all__ = ["Argmax", "SerialArgmax"]


class Argmax(wiring.Component):
    """``index`` of the largest of ``scores``; of equal scores, the lowest index wins.

    A tree of comparisons: each keeps its left (lower-index) candidate unless the right one is
    strictly larger. A register stage follows every ``every`` tree levels and the last level.

    Parameters
    ----------
    width : int
        Width of each signed score.
    count : int
        Number of scores (at least 1).
    every : int
        Comparison levels per register stage.

    Ports
    -----
    scores : In(ArrayLayout(signed(width), count))
    index : Out(unsigned(max(1, bits(count - 1)))) — valid ``latency`` cycles after ``scores``

    Attributes
    ----------
    latency : int
        ``ceil(ceil(log2(count)) / every)``; 0 for a single score (the index is the constant 0).
    """

    def __init__(self, width, count, *, every=DEFAULT_EVERY):
        if count < 1:
            raise ValueError(f"count: expected at least 1 score, found {count}")
        self.width, self.count, self.every = width, count, every
        levels = (count - 1).bit_length()
        self.latency = -(-levels // every)
        super().__init__({"scores": In(data.ArrayLayout(signed(width), count)),
                          "index": Out(unsigned(max(1, (count - 1).bit_length())))})

    def elaborate(self, platform):
        m = Module()
        index_shape = self.index.shape()
        candidates = [(self.scores[j], j) for j in range(self.count)]
        level, registers = 0, 0
        while len(candidates) > 1:
            merged = []
            for k in range(0, len(candidates) - 1, 2):
                (ls, li), (rs, ri) = candidates[k], candidates[k + 1]
                right = rs > ls
                merged.append((Mux(right, rs, ls), Mux(right, ri, li)))
            candidates = merged + candidates[len(merged) * 2:]
            level += 1
            if level % self.every == 0 or len(candidates) == 1:
                registered = []
                registers += len(candidates) * (self.width + index_shape.width)
                for n, (s, i) in enumerate(candidates):
                    rs = Signal(signed(self.width), name=f"max{level}_{n}", reset_less=True)
                    ri = Signal(index_shape, name=f"arg{level}_{n}", reset_less=True)
                    m.d.sync += [rs.eq(s), ri.eq(i)]
                    registered.append((rs, ri))
                candidates = registered
        m.d.comb += self.index.eq(candidates[0][1])
        self.stats = {"register_bits": registers}
        return m


class SerialArgmax(wiring.Component):
    """``index`` of the largest of ``scores``, one comparison every two cycles; of equal scores,
    the lowest index wins (as :class:`Argmax`).

    For cores whose samples are far apart (the streaming core: a sample every ``H x W`` cycles):
    one comparator and a shift register of the scores instead of a tree of ``count - 1``
    comparisons and multiplexers, so it is smaller, and its one comparison (into a register)
    drives nothing but the enables of the best score and its index.

    Parameters
    ----------
    width, count : as for :class:`Argmax`

    Ports
    -----
    scores : In(ArrayLayout(signed(width), count)) — read on the cycle ``start`` is high
    start : In(1) — start a search; another may start no earlier than :attr:`latency` cycles later
    index : Out(unsigned(max(1, bits(count - 1)))) — valid from ``latency`` cycles after
        ``start`` until the next search has started

    Attributes
    ----------
    latency : int
        ``2 * count - 1`` (the load, then two cycles for each of the other ``count - 1`` scores);
        0 for a single score (the index is the constant 0).
    """

    def __init__(self, width, count):
        if count < 1:
            raise ValueError(f"count: expected at least 1 score, found {count}")
        self.width, self.count = width, count
        self.latency = 2 * count - 1 if count > 1 else 0
        super().__init__({"scores": In(data.ArrayLayout(signed(width), count)), "start": In(1),
                          "index": Out(unsigned(max(1, (count - 1).bit_length())))})

    def elaborate(self, platform):
        m = Module()
        self.stats = {"register_bits": 0, "adder_bits": 0, "adders": 0}
        if self.count == 1:
            return m
        # The scores are kept as offset binary (the sign bit inverted), whose unsigned order is
        # the signed order: an unsigned comparison is one carry chain, without the sign logic.
        def offset(score):
            return Cat(score[:-1], ~score[-1])

        rest = Signal(data.ArrayLayout(unsigned(self.width), self.count - 1), name="rest", reset_less=True)
        best = Signal(unsigned(self.width), name="best", reset_less=True)
        index = Signal(self.index.shape(), name="best_index", reset_less=True)
        # The index of rest[0]; 0 when no search is running.
        k = Signal(range(self.count), name="k")
        # Two cycles per score: the comparison into a register, then the update it enables (in one
        # cycle, the comparison's carry chain and the enables' fan-out were the critical path).
        larger, update = Signal(name="larger"), Signal(name="update")
        with m.If(self.start):
            m.d.sync += [rest.eq(Cat(*[offset(self.scores[j]) for j in range(1, self.count)])),
                         best.eq(offset(self.scores[0])), index.eq(0), k.eq(1), update.eq(0)]
        with m.Elif(k != 0):
            m.d.sync += update.eq(~update)
            with m.If(~update):
                m.d.sync += larger.eq(rest[0] > best)   # strictly larger: a tie keeps the lower index
            with m.Else():
                with m.If(larger):
                    m.d.sync += [best.eq(rest[0]), index.eq(k)]
                m.d.sync += [rest.eq(rest.as_value() >> self.width), k.eq(Mux(k == self.count - 1, 0, k + 1))]
        m.d.comb += self.index.eq(index)
        self.stats = {"register_bits": len(rest.as_value()) + len(best) + len(index) + len(k) + 2,
                      "adder_bits": self.width + 1, "adders": 1}
        return m

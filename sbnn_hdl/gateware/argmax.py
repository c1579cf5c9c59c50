"""A pipelined argmax over signed scores; ties go to the lowest index."""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..hwplan import DEFAULT_EVERY

__all__ = ["Argmax"]


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

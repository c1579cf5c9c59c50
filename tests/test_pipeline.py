"""The pipelined arithmetic under the generated layers: exact sums, carry-in trees, latency."""

import pytest
from amaranth.hdl import Cat, ClockDomain, Module, Signal
from amaranth.sim import Simulator
from hypothesis import given, settings, strategies as st

from sbnn_hdl.gateware.pipeline import Pipeline, shape_for


def simulate_sum(bits, words, constant, every, samples):
    """Build ``sum(bits + words + [constant])`` and return ``(result, stage, stats, outputs)``
    for ``samples`` (lists of the bit values followed by the word values)."""
    m = Module()
    m.domains.sync = ClockDomain()  # a sum without registers has no clocked logic of its own
    pipe = Pipeline(m, every, "t")
    signals = [Signal(1) for _ in range(bits)] + [Signal(shape_for(0, hi)) for hi in words]
    terms = [pipe.input(s, 0, 1) for s in signals[:bits]] + [pipe.input(s, 0, hi) for s, hi in zip(signals[bits:], words)]
    if constant:
        terms.append(pipe.const(constant))
    result = pipe.finish(pipe.sum(terms))
    out = Signal(shape_for(min(result.lo, 0), result.hi))
    m.d.comb += out.eq(result.value)
    outputs = []

    async def testbench(ctx):
        for sample in samples:
            for signal, value in zip(signals, sample):
                ctx.set(signal, value)
            if result.stage:
                await ctx.tick().repeat(result.stage)
            outputs.append(ctx.get(out))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return result, pipe.stats, outputs


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(0, 12), words=st.lists(st.integers(2, 9), max_size=4), constant=st.integers(-5, 5),
       every=st.integers(1, 3), data=st.data())
def test_sum_is_exact(bits, words, constant, every, data):
    samples = data.draw(st.lists(st.tuples(*[st.integers(0, 1)] * bits, *[st.integers(0, hi) for hi in words]),
                                 min_size=1, max_size=6))
    result, _, outputs = simulate_sum(bits, words, constant, every, samples)
    assert outputs == [sum(sample) + constant for sample in samples]
    assert (result.lo, result.hi) == (constant, bits + sum(words) + constant)


@pytest.mark.parametrize("count", [3, 7, 15, 26, 100])
def test_popcount_takes_a_bit_as_every_adders_carry_in(count):
    """``k`` bits need ``k // 2`` adders (the fewest), not the ``k - 1`` of a plain tree."""
    pipe = Pipeline(None, 2, "dry")
    result = pipe.popcount([pipe.input(None, 0, 1) for _ in range(count)])
    assert (result.lo, result.hi) == (0, count)
    assert pipe.stats["adders"] == count // 2


def test_bits_beside_words_become_carry_ins():
    """Three words have two adders: two bits ride on them as carry-ins, with no adder of their own."""
    result, stats, outputs = simulate_sum(2, [5, 6, 7], 0, 2, [(1, 1, 5, 6, 7), (0, 1, 2, 0, 3)])
    assert outputs == [20, 6]
    assert stats["adders"] == 2


def test_carry_must_be_a_bit():
    pipe = Pipeline(None, 2, "dry")
    with pytest.raises(ValueError, match=r"^carry: expected a bit, found a value in \[0, 2\]$"):
        pipe.add(pipe.input(None, 0, 3), pipe.input(None, 0, 3), carry=pipe.input(None, 0, 2))


@pytest.mark.parametrize("lo, hi", [(0, 13), (0, 1), (-9, 6), (-20, -3), (5, 70)])
def test_comparisons_are_exact_for_every_value_constant_and_carry(lo, hi):
    """Every op, with and without a carry bit, against every constant from below the range to
    above it, for every value of the range: the comparison chain of 3-bit steps is exact."""
    m = Module()
    pipe = Pipeline(m, 1, "t")
    x, c = Signal(shape_for(lo, hi)), Signal()
    xt, ct = pipe.input(x, lo, hi), pipe.input(c, 0, 1)
    cases = [(op, k, carry) for op in (">=", ">", "<=", "<") for k in range(lo - 2, hi + 4)
             for carry in (None, ct, pipe.const(1))]
    results = [pipe.compare(xt, op, k, carry=carry) for op, k, carry in cases]
    assert {r.stage for r in results} == {1}
    outs = Signal(len(results))
    m.d.comb += outs.eq(Cat(*[r.value for r in results]))
    python = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b}
    wrong = []

    async def testbench(ctx):
        for value in range(lo, hi + 1):
            for bit in (0, 1):
                ctx.set(x, value)
                ctx.set(c, bit)
                await ctx.tick()
                got = ctx.get(outs)
                for n, (op, k, carry) in enumerate(cases):
                    added = 0 if carry is None else (bit if carry is ct else 1)
                    if (got >> n) & 1 != python[op](value + added, k):
                        wrong.append((value, bit, op, k, carry is not None))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert wrong == []


def test_comparison_op_must_be_known():
    pipe = Pipeline(None, 2, "dry")
    with pytest.raises(ValueError, match=r"^op: expected one of >=, >, <=, <, found '=='$"):
        pipe.compare(pipe.input(None, 0, 3), "==", 1)

"""The sparse accumulator: exact sums of bits and of bit-plane words, at its stated latency."""

from amaranth.sim import Simulator
from hypothesis import given, settings, strategies as st

from sbnn_hdl.gateware import SparseAccumulator
from sbnn_hdl.gateware.pipeline import Pipeline

# Input maxima as the first layer of an integer model has them: bit planes, contiguous or not
# (planes 7,6 -> 3; 3,2,0 -> 13; 7,6,3 -> 25).
MASKS = [1, 3, 7, 13, 25, 15]


def submask(mask):
    """Values whose bits are a subset of ``mask``'s."""
    return st.integers(0, mask).map(lambda v: v & mask)


def run(acc, samples):
    """``acc.sum`` for each sample, read ``acc.latency`` clocks after the inputs were set."""
    outputs = []

    async def testbench(ctx):
        for sample in samples:
            packed, offset = 0, 0
            for value, width in zip(sample, acc.widths):
                packed |= value << offset
                offset += width
            ctx.set(acc.inputs, packed)
            if acc.latency:
                await ctx.tick().repeat(acc.latency)
            outputs.append(ctx.get(acc.sum))

    sim = Simulator(acc)
    if acc.latency:
        sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return outputs


@settings(max_examples=30, deadline=None)
@given(inputs=st.lists(st.tuples(st.sampled_from(MASKS), st.integers(1, 3)), min_size=1, max_size=14),
       every=st.integers(1, 3), pad=st.integers(0, 2), data=st.data())
def test_sum_is_exact(inputs, every, pad, data):
    masks, counts = [m for m, _ in inputs], [c for _, c in inputs]
    samples = data.draw(st.lists(st.tuples(*[submask(m) for m in masks]), min_size=1, max_size=5))
    natural = SparseAccumulator.latency_for(masks, counts, every=every)
    acc = SparseAccumulator(masks, counts, every=every, latency=natural + pad)
    assert run(acc, samples) == [sum(c * v for c, v in zip(counts, s)) for s in samples]
    assert acc.max_value == sum(c * m for c, m in zip(counts, masks))


def test_words_are_summed_by_bit_plane():
    """Forty 2-bit inputs: a 20-adder popcount per plane and one adder joining them (41 adders),
    where an adder tree over the words took 39 wider ones."""
    acc = SparseAccumulator([3] * 40, every=2)
    assert run(acc, [(3,) * 40, (2, 1) * 20, (0,) * 40]) == [120, 60, 0]
    pipe = Pipeline(None, 2, "dry")
    SparseAccumulator._build(pipe, [pipe.input(None, 0, 3) for _ in range(40)], [1] * 40)
    # One bit of plane 0 is the joining adder's carry-in: 39 bits of it remain, 19 adders.
    assert pipe.stats["adders"] == 20 + 19 + 1


def test_wider_words_keep_the_word_tree():
    """4-bit inputs: 29 word adders (one per input but the first) build fewer adder bits than four
    popcounts of 30 bits and their joining adders."""
    pipe = Pipeline(None, 2, "dry")
    result = SparseAccumulator._build(pipe, [pipe.input(None, 0, 15) for _ in range(30)], [1] * 30)
    assert pipe.stats["adders"] == 29 and result.hi == 450


def test_no_inputs_is_the_constant_zero():
    acc = SparseAccumulator([], every=2)
    assert acc.latency == 0 and acc.max_value == 0
    assert run(acc, [()]) == [0]

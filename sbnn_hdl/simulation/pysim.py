"""Running a :class:`~sbnn_hdl.gateware.NetworkCore` in ``amaranth.sim`` (needs Amaranth)."""

import numpy as np
from amaranth.sim import Simulator

from ..hwplan import pack_sample

__all__ = ["simulate_core"]


def simulate_core(core, x, *, rng=None, idle=0.0):
    """Feed the samples ``x`` through ``core``, with idle cycles between them at random
    (probability ``idle`` per cycle), and return what came out.

    Returns ``(predictions, scores, latencies)``: one entry per sample in order, ``scores`` as a
    list of lists (``None`` without a scores port), and for each output the number of cycles
    between its ``valid`` and its ``out_valid``. Every output is checked to belong to exactly one
    input: the caller compares the values with the golden model and the latencies with
    ``core.latency``.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    spec = core.model.input
    schedule = []
    for sample in x:
        while rng.random() < idle:
            schedule.append(None)
        schedule.append(pack_sample(spec, sample))
    schedule += [None] * (core.latency + 2)
    has_scores = "scores" in core.signature.members
    sent, received = [], []

    async def testbench(ctx):
        for cycle, value in enumerate(schedule):
            ctx.set(core.valid, value is not None)
            # Idle cycles carry garbage on purpose: the core must ignore what valid does not mark.
            ctx.set(core.sample, value if value is not None else int(rng.integers(0, 2**62)) % (1 << len(core.sample)))
            if value is not None:
                sent.append(cycle)
            await ctx.tick()
            if ctx.get(core.out_valid):
                scores = [ctx.get(core.scores[j]) for j in range(core.output.classes)] if has_scores else None
                received.append((cycle, ctx.get(core.prediction), scores))

    simulator = Simulator(core)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    if len(received) != len(sent):
        raise AssertionError(f"expected {len(sent)} outputs, found {len(received)}")
    latencies = [r[0] - s + 1 for s, r in zip(sent, received)]
    return [r[1] for r in received], [r[2] for r in received] if has_scores else None, latencies

"""Running a generated core (:class:`~sbnn_hdl.gateware.NetworkCore` or
:class:`~sbnn_hdl.gateware.StreamingCore`) in ``amaranth.sim`` (needs Amaranth)."""

import numpy as np
from amaranth.sim import Simulator

from .. import golden
from ..hwplan import pack_sample

__all__ = ["simulate_core", "check_core", "pixel_words"]


def pixel_words(spec, sample):
    """One ``[H, W, C]`` sample as the words on a streaming core's ``pixel`` port, in raster
    order: channel ``c`` in bits ``[c*bits, (c+1)*bits)``."""
    h, w, c = spec.shape
    return [pack_sample(spec, pixel) for pixel in np.asarray(sample).reshape(h * w, c)]


def simulate_core(core, x, *, rng=None, idle=0.0):
    """Feed the samples ``x`` through ``core``, with idle cycles at random (probability ``idle``
    before each sample, or for a streaming core before each pixel, and at least
    ``core.image_gap`` idle cycles between a sample's last pixel and the next one's first), and return what came out.

    Returns ``(predictions, scores, latencies)``: one entry per sample in order, ``scores`` as a
    list of lists (``None`` without a scores port), and for each output the number of cycles
    between the ``valid`` of its sample (a streaming core: of its last pixel) and its
    ``out_valid``. Every output is checked to belong to exactly one input: the caller compares
    the values with the golden model and the latencies with ``core.latency``.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    spec = core.model.input
    streaming = "pixel" in core.signature.members
    port = core.pixel if streaming else core.sample
    schedule, ends = [], []
    for sample in x:
        words = pixel_words(spec, sample) if streaming else [pack_sample(spec, sample)]
        for index, word in enumerate(words):
            while rng.random() < idle:
                schedule.append(None)
            if streaming and index == 0 and ends:
                schedule += [None] * max(0, ends[-1] + 1 + core.image_gap - len(schedule))
            schedule.append(word)
        ends.append(len(schedule) - 1)
    schedule += [None] * (core.latency + 2)
    has_scores = "scores" in core.signature.members
    received = []

    async def testbench(ctx):
        for cycle, value in enumerate(schedule):
            ctx.set(core.valid, value is not None)
            # Idle cycles carry garbage on purpose: the core must ignore what valid does not mark.
            ctx.set(port, value if value is not None else int(rng.integers(0, 2**62)) % (1 << len(port)))
            await ctx.tick()
            if ctx.get(core.out_valid):
                scores = [ctx.get(core.scores[j]) for j in range(core.output.classes)] if has_scores else None
                received.append((cycle, ctx.get(core.prediction), scores))

    simulator = Simulator(core)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    if len(received) != len(ends):
        raise AssertionError(f"expected {len(ends)} outputs, found {len(received)}")
    latencies = [r[0] - s + 1 for s, r in zip(ends, received)]
    return [r[1] for r in received], [r[2] for r in received] if has_scores else None, latencies


def check_core(core, x, *, idle=0.3, seed=0):
    """Run ``x`` through ``core`` (:func:`simulate_core`, idle cycles at random with probability
    ``idle``, drawn from ``seed``) and assert that every prediction and score is the golden
    model's and every output comes exactly ``core.latency`` cycles after its sample. Returns ``core``."""
    predictions, scores, latencies = simulate_core(core, x, rng=np.random.default_rng(seed), idle=idle)
    expected = golden.infer(core.model, x)
    if scores is not None:   # (a core without a scores port gives the prediction only)
        assert scores == expected.scores.tolist()
    assert predictions == expected.predictions.tolist()
    assert set(latencies) == {core.latency}
    return core


"""The streaming core of a convolutional model: one pixel per clock in, one prediction per image out."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from ..hwplan import DEFAULT_EVERY
from ..streamplan import HEADS, MAX_SHARE, SHARES, is_share, plan_stream, stream_timing
from .argmax import Argmax, SerialArgmax
from .core import result_ports, total_stats
from .layer import DenseLayer, OutputLayer
from .phased import PhasedLayer
from .pipeline import Pipeline, delayed, shape_for
from .pool import PairPool
from .serial import SerialEngine
from .window import WindowStream

__all__ = ["StreamingCore"]


class StreamingCore(wiring.Component):
    """A convolutional SBNN (conv2d and maxpool2d layers, then dense layers) as a stream.

    Each conv or pool layer is a stage: a :class:`WindowStream` (line buffers and the window,
    padding included), then, for a conv layer, a :class:`DenseLayer` over the window's taps: per
    output channel a sparse accumulator over exactly the taps whose mask bit is 1 (nothing for a
    K0 kernel, a wire for a K1 kernel), the window sum ``q`` once for all channels, and the folded
    thresholds; for a pool layer, per channel the OR of the window, registered (a 2x2 pool of
    stride 2 over bits is a :class:`~sbnn_hdl.gateware.pool.PairPool` instead, with the same
    timing and no window generator). Each stage sends
    its output map on as pixels in raster order. The dense layers collect the bits of the last
    map that their neurons read and run, fully unrolled, once per image; the first dense layer's
    ``q`` (the sum of the whole last map) is a running sum over the positions as they pass
    (:mod:`sbnn_hdl.streamplan` plans what is built). With ``head="serial"`` the first dense
    layer's ``p`` of every neuron comes instead from a :class:`~sbnn_hdl.gateware.serial.SerialEngine`,
    which computes them over :attr:`SerialEngine.steps` cycles after each image from the last
    map's bits in RAM and the weights in ROM (the layer's thresholds, or the scores if it is the
    output layer, are built as before); ``q`` then waits for it in a register.

    Parameters
    ----------
    model : Model
        A model that :func:`~sbnn_hdl.streamplan.check_streamable` accepts.
    every : int
        Adder levels per register stage.
    scores : bool
        Also output every class's score.
    head : str
        ``"unrolled"`` (default): the first dense layer's sums as adder trees over the collected
        bits; ``"serial"``: from the serial engine. A first dense layer without connections
        (nothing to sum) is built unrolled either way.
    share : str or int
        ``"auto"`` (default): a conv stage that sees a window at most every ``k`` cycles on
        average (``k`` input pixels per output position, as after pools) computes each window's
        sums over up to ``k`` cycles (at most :data:`~sbnn_hdl.streamplan.MAX_SHARE`) with a
        :class:`~sbnn_hdl.gateware.phased.PhasedLayer`, as many as the estimate finds smallest
        (:meth:`PhasedLayer.best_share`); its window generator then fires at most every that
        many cycles. ``"off"``: every conv stage finishes a window per cycle. A number ``N``:
        every conv stage with binary inputs shares over ``min(N, k)`` cycles, whatever the
        estimate. Only conv stages with binary inputs are shared (not a first layer on an
        ``integer`` input).

    Ports
    -----
    pixel : In(unsigned(C * bits))
        One raw pixel of an ``[H, W, C]`` sample: channel ``c`` in bits ``[c*bits, (c+1)*bits)``.
        The pixels of a sample come in raster order (row by row, each row left to right), and
        the next sample's first pixel follows its last.
    valid : In(1)
        ``pixel`` holds the next pixel. It may be low on any cycle. A sample's first pixel may
        come on the cycle after the previous sample's last one, unless a stage has more output
        positions than input pixels: then at least :attr:`image_gap` cycles without ``valid``
        must lie between them.
    prediction, scores, out_valid
        As for :class:`~sbnn_hdl.gateware.NetworkCore`: ``out_valid`` is high for one cycle per
        sample, exactly :attr:`latency` cycles after the cycle on which the sample's last pixel
        had ``valid``.

    Attributes
    ----------
    latency : int
        ``1 + plan.stream_latency + 1 + head_latency``: the input register, the stages (from the
        last pixel to the last stage's last output, :func:`~sbnn_hdl.streamplan.stream_timing`),
        the collection register, then the dense layers, the output layer and the argmax; with the
        serial engine, ``head_latency`` starts with ``engine.latency - first.p_stage`` (the
        engine's run, less the stages in which the first dense layer works on ``q`` alone).
    engine : SerialEngine or None
        The serial engine, with ``head="serial"``.
    image_gap : int
        The fewest cycles without ``valid`` between a sample's last pixel and the next one's
        first: 0 (back to back) unless a stage has more output positions than input pixels.
        Throughput: one sample per ``pixels + image_gap`` cycles.
    pixels : int
        ``H * W``: the pixels of one sample.
    plan : StreamPlan

    Raises
    ------
    HardwareError
        A model that the streaming core cannot build, before anything is built; except a
        stream whose timing cannot be kept and, with ``head="serial"``, images too short for the
        serial engine (a few pixels), found once the layers that decide them exist.
    """

    def __new__(cls, model, *, every=DEFAULT_EVERY, scores=True, head="unrolled", share="auto"):
        if every < 1:
            raise ValueError(f"every: expected at least 1 adder level per stage, found {every}")
        if head not in HEADS:
            raise ValueError(f"head: expected one of {', '.join(HEADS)}, found {head!r}")
        if not is_share(share):
            raise ValueError(f"share: expected one of {', '.join(SHARES)} or a number of cycles, found {share!r}")
        plan_stream(model)  # refuses what it cannot build before the component exists
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, model, *, every=DEFAULT_EVERY, scores=True, head="unrolled", share="auto"):
        self.model, self.every, self.head, self.share = model, every, head, share
        self.plan = plan = plan_stream(model)
        self._build_stages(plan, every, share)
        self.q_latency = self._q_increment(Pipeline(None, every, "dry"), None).stage if plan.q_channels else 0
        # Only the first dense layer reads the stream's q.
        q_stages = [self.q_latency] + [0] * (len(plan.dense) - 1)
        serial = head == "serial" and any(u.sources for u in plan.dense[0].units)
        p_input = [serial] + [False] * (len(plan.dense) - 1)
        self.hidden = [DenseLayer(p, every=every, q_stage=s, p_input=i)
                       for p, s, i in zip(plan.dense[:-1], q_stages, p_input)]
        self.output = OutputLayer(plan.dense[-1], every=every, q_stage=q_stages[-1], p_input=p_input[-1])
        self.engine = self._engine(self.first) if serial else None
        # Samples come at least `pixels + image_gap` cycles apart: time enough, nearly always,
        # for a serial argmax.
        classes = self.output.classes
        if 2 * classes - 1 <= plan.pixels + plan.image_gap:
            self.argmax = SerialArgmax(self.output.score_width, classes)
        else:
            self.argmax = Argmax(self.output.score_width, classes, every=1)
        self.head_latency = sum(l.latency for l in self.hidden) + self.output.latency + self.argmax.latency
        if self.engine:
            self.head_latency += self.engine.latency - self.first.p_stage
        self.latency = 1 + plan.stream_latency + 1 + self.head_latency
        self.image_gap = plan.image_gap
        self.pixels = plan.pixels
        self.with_scores = scores
        spec = model.input
        super().__init__({"pixel": In(unsigned(spec.bits * spec.shape[2])), "valid": In(1),
                          **result_ports(self.output, self.argmax, scores)})

    def _build_stages(self, plan, every, share):
        """The conv stages' layers, each stage's ``share`` and the stream's timing. A stage is
        shared over at most ``pixels // positions`` cycles, so that it keeps up with images back
        to back (the Hypothesis tests check that the gap between images is the unshared
        stream's)."""
        for stage in plan.stages:
            fits = plan.pixels // stage.geometry.positions
            if share == "off" or not stage.is_conv or not PhasedLayer.shareable(stage.layer_plan):
                stage.share = 1
            elif share == "auto":
                stage.share = PhasedLayer.best_share(stage.layer_plan, min(MAX_SHARE, fits), every=every)
            else:
                stage.share = max(1, min(share, fits))
        self.convs, delays = {}, []
        for index, stage in enumerate(plan.stages):
            if stage.is_conv:
                layer = (PhasedLayer(stage.layer_plan, stage.share, every=every) if stage.share > 1
                         else DenseLayer(stage.layer_plan, every=every))
                self.convs[index] = layer
                delays.append(WindowStream.latency + layer.latency)
            elif self._pairs(stage):
                delays.append(PairPool.delay)
            else:
                delays.append(WindowStream.latency + 1)
        stream_timing(plan, delays)
        # A pool of pairs never falls behind its pixels, so its last window never waits longer.
        assert all(stage.hold == 0 for stage in plan.stages if self._pairs(stage))
        self.stage_delays = delays

    @staticmethod
    def _pairs(stage):
        """Whether a pool stage is built as a :class:`PairPool`: 2x2 windows of stride 2 over bits
        (at least one: a pool of no channel is the window generator's, which passes only timing)."""
        return (not stage.is_conv and PairPool.fits(stage.geometry) and len(stage.channels) > 0
                and all(c.kind == "stream" and c.max == 1 for c in stage.channels))

    @property
    def first(self):
        """The first dense layer (the output layer when there is no hidden one)."""
        return (self.hidden or [self.output])[0]

    def _engine(self, first):
        """The serial engine of ``first``, its ``ready`` when the layer may read ``p`` at its
        ``p_stage``: ``q`` is read ``p_stage`` cycles earlier from a register written
        :attr:`q_latency` cycles after :attr:`_head_valid` and rewritten as much after the next
        image's (at least ``pixels + image_gap`` cycles later)."""
        plan, period = self.plan, self.plan.pixels + self.plan.image_gap
        if plan.q_channels:
            window = (self.q_latency + 1 + first.p_stage, period + self.q_latency + first.p_stage)
        else:
            window = (0, float("inf"))
        return SerialEngine(plan.dense[0], plan.collect, plan.stages[-1].geometry.positions, period, window,
                            every=self.every)

    def _features(self, m):
        """The first stage's input stream from the registered raw pixel (wiring only): an
        ``integer`` channel rebuilt from the planes read, divided by 2**(lowest plane); a
        ``bitplanes`` channel one plane's bit."""
        bits = self.model.input.bits
        pixel = Signal(len(self.pixel), name="pixel_reg", reset_less=True)
        valid = Signal(name="pixel_valid")
        m.d.sync += [pixel.eq(self.pixel), valid.eq(self.valid)]
        self.stats["register_bits"] += len(pixel) + 1
        values = []
        for channel, planes in self.plan.features:
            low = min(planes)
            value = [Const(0, 1)] * (max(planes) + 1 - low)
            for k in planes:
                value[k - low] = pixel[channel * bits + k]
            values.append(Cat(*value))
        return Cat(*values), valid, [len(v) for v in values]

    def _pool(self, m, index, window, valid, stage):
        """Per channel the OR of the window's taps, registered."""
        n, taps = len(stage.channels), stage.geometry.kernel[0] * stage.geometry.kernel[1]
        out = Signal(max(n, 1), name=f"pool{index}_out", reset_less=True)
        out_valid = Signal(name=f"pool{index}_valid")
        if n:
            m.d.sync += out.eq(Cat(*[Cat(*[window[t * n + c] for t in range(taps)]).any() for c in range(n)]))
        m.d.sync += out_valid.eq(valid)
        self.stats["register_bits"] += len(out) + 1
        return out, out_valid

    def _delayed(self, m, signal, cycles, name):
        return delayed(m, signal, cycles, name, self.stats)

    def resources(self):
        """What the last elaboration built (as :meth:`NetworkCore.resources`), with the line
        buffers' bits as ``memory_bits``."""
        return total_stats(self.stats, [*self.convs.values(), *self.hidden], self.output,
                           [self.argmax, *self.windows, *([self.engine] if self.engine else [])])

    def elaborate(self, platform):
        m = Module()
        width = self.output.score_width
        tree = isinstance(self.argmax, Argmax)
        self.stats = {"register_bits": 0, "argmax_bits": max(self.output.classes - 1, 0) * width if tree else 0,
                      "adder_bits": 0, "compare_bits": 0, "adders": 0, "memory_bits": 0}
        stream, valid, widths = self._features(m)
        self.windows = []
        for index, stage in enumerate(self.plan.stages):
            if self._pairs(stage):
                pool = PairPool(stage.geometry, len(stage.channels))
                self.windows.append(pool)
                m.submodules[f"pool{index}"] = pool
                offsets = [sum(widths[:k]) for k in range(len(widths))]
                m.d.comb += [pool.pixel.eq(Cat(*[stream[offsets[c.index]] for c in stage.channels])),
                             pool.valid.eq(valid)]
                stream, valid = pool.pooled, pool.out_valid
                widths = [1] * len(stage.channels)
                continue
            window = WindowStream(stage.geometry, stage.channels, widths, stage.rows, stage.hold, stage.share)
            self.windows.append(window)
            m.submodules[f"window{index}"] = window
            m.d.comb += [window.pixel.eq(stream), window.valid.eq(valid)]
            if stage.is_conv:
                layer = self.convs[index]
                m.submodules[f"conv{index}"] = layer
                m.d.comb += layer.inputs.eq(window.window)
                if stage.share > 1:
                    m.d.comb += layer.start.eq(window.out_valid)
                stream = layer.outputs
                valid = self._delayed(m, window.out_valid, layer.latency, f"conv{index}_valid")
            else:
                stream, valid = self._pool(m, index, window.window, window.out_valid, stage)
            widths = [shape_for(0, v).width for v in stage.stream_out]
        source = self._collect(m, stream, valid)
        start, wait = self._head_valid, self.head_latency - self.argmax.latency
        if self.plan.q_channels:
            q = self._stream_q(m, stream, valid)
            m.d.comb += self.first.q.eq(self._held_q(m, q) if self.engine else q)
        if self.engine:
            m.submodules.engine = self.engine
            m.d.comb += [self.engine.bits.eq(Cat(*[stream[c] for c in self.engine.columns])),
                         self.engine.valid.eq(valid),
                         self.first.p.eq(self.engine.p)]
            start, wait = self.engine.ready, wait - self.engine.latency
        for n, layer in enumerate(self.hidden):
            m.submodules[f"layer{n}"] = layer
            if not layer.p_input:
                m.d.comb += layer.inputs.eq(source)
            source = layer.outputs
        m.submodules.output = self.output
        if not self.output.p_input:
            m.d.comb += self.output.inputs.eq(source)
        m.submodules.argmax = self.argmax
        m.d.comb += [self.argmax.scores.eq(self.output.scores), self.prediction.eq(self.argmax.index)]
        scores_valid = self._delayed(m, start, wait, "scores_valid")
        if isinstance(self.argmax, SerialArgmax):
            m.d.comb += self.argmax.start.eq(scores_valid)
        if self.with_scores:
            m.d.comb += self.scores.eq(self._held_scores(m, scores_valid))
        m.d.comb += self.out_valid.eq(self._delayed(m, scores_valid, self.argmax.latency, "valid"))
        return m

    def _held_scores(self, m, scores_valid):
        """The scores as the argmax's result comes out. Samples are at least ``pixels +
        image_gap`` cycles apart, so when that is at least the argmax's latency one register, written
        when the scores are valid, holds them until then (instead of a pipeline of that depth)."""
        scores = self.output.scores.as_value()
        if self.argmax.latency == 0 or self.pixels + self.image_gap < self.argmax.latency:
            return self._delayed(m, scores, self.argmax.latency, "scores")
        held = Signal(len(scores), name="scores_held", reset_less=True)
        with m.If(scores_valid):
            m.d.sync += held.eq(scores)
        self.stats["register_bits"] += len(held)
        return held

    def _q_increment(self, pipe, stream):
        """The sum of the ``q`` channels of one position of the last map, registered."""
        stage = self.plan.stages[-1]
        widths = [shape_for(0, v).width for v in stage.stream_out]
        offsets = [sum(widths[:k]) for k in range(len(widths))]
        terms = [pipe.input(None if pipe.dry else stream[offsets[c]:offsets[c] + widths[c]], 0, stage.stream_out[c])
                 for c in self.plan.q_channels]
        return pipe.finish(pipe.sum(terms))

    def _stream_q(self, m, stream, valid):
        """The first dense layer's ``q`` (:attr:`StreamPlan.q_channels`): a running sum over the
        positions of the last map, restarted at each image's first position. It holds an image's
        whole sum :attr:`q_latency` cycles after :attr:`_head_valid` (the first dense layer's
        ``q_stage``), for one cycle at least: the next image's first position reaches the sum
        no earlier than that cycle's end."""
        pipe = Pipeline(m, self.every, "qsum")
        increment = self._q_increment(pipe, stream)
        first = self._delayed(m, valid & (self._position == 0), self.q_latency, "qsum_first")
        add = self._delayed(m, valid, self.q_latency, "qsum_valid")
        total = Signal(range(self.plan.dense[0].q_max + 1), name="qsum")
        with m.If(add):
            m.d.sync += total.eq(Mux(first, 0, total) + increment.value)
        for key, value in pipe.stats.items():
            self.stats[key] += value
        self.stats["register_bits"] += len(total)
        self.stats["adder_bits"] += len(total)
        self.stats["adders"] += 1
        return total

    def _held_q(self, m, q):
        """``q`` of the last image, held for the serial engine's run: written on the cycle that
        :meth:`_stream_q` holds the whole sum, until the next image's."""
        held = Signal(len(q), name="q_held", reset_less=True)
        with m.If(self._delayed(m, self._head_valid, self.q_latency, "q_done")):
            m.d.sync += held.eq(q)
        self.stats["register_bits"] += len(held)
        return held

    def _collect(self, m, stream, valid):
        """The last map's bits that the dense layers read, each in a register written when its
        position passes (none with the serial engine, which keeps them in RAM);
        :attr:`_head_valid` is high on the cycle after an image's last position, when every
        register holds that image (a position of the next image is written only at the end of
        that cycle)."""
        geometry = self.plan.stages[-1].geometry
        self._position = position = Signal(range(geometry.positions), name="position")
        with m.If(valid):
            m.d.sync += position.eq(Mux(position == geometry.positions - 1, 0, position + 1))
        self._head_valid = Signal(name="head_valid")
        m.d.sync += self._head_valid.eq(valid & (position == geometry.positions - 1))
        self.stats["register_bits"] += len(position) + 1
        if self.engine:
            return None
        by_position = {}
        for n, (where, channel) in enumerate(self.plan.collect):
            by_position.setdefault(where, []).append((n, channel))
        bits = Signal(max(len(self.plan.collect), 1), name="collected", reset_less=True)
        for where, entries in by_position.items():
            with m.If(valid & (position == where)):
                m.d.sync += [bits[n].eq(stream[channel]) for n, channel in entries]
        self.stats["register_bits"] += len(bits)
        return bits

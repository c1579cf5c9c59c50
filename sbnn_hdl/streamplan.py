"""From a convolutional model to the structure of its streaming hardware, and its timing.

A model whose layers start with ``conv2d`` and ``maxpool2d`` layers (then dense layers) is built
as a stream: the sample enters one pixel per clock in raster order, each conv or pool layer is a
*stage* that reads the pixels of its input map as they arrive and sends the pixels of its output
map on, and the dense layers after the last stage read the collected last feature map
(:mod:`sbnn_hdl.gateware.streaming`). :func:`plan_stream` decides everything known at generation
time:

- a conv layer is a dense layer over its window: the ``kh x kw x Cin`` taps are its sources, and
  :mod:`sbnn_hdl.hwplan` folds each output channel's threshold, turns constant channels into
  constants, and builds duplicate channels once; so a channel's sum has exactly the taps whose
  mask bit is 1 (none for a K0 kernel, one wire for a K1 kernel);
- a channel that no later layer reads is not built, and a stage stores only the channels that
  its layer reads; a constant channel costs no storage (it equals its constant inside the image
  and ``pad_value`` in the padding);
- the dense layers are planned as :func:`~sbnn_hdl.hwplan.plan_network` plans them, over the
  feature-map bits that they read, which are all the dense part collects.

:func:`schedule` is the cycle model of the stages (the same rules as the gateware's window
generator, :class:`~sbnn_hdl.gateware.window.WindowStream`), from which the plan takes each
stage's line-buffer rows, the core's latency and the spacing of images it accepts. The
gateware's tests check the RTL against it, cycle for cycle, through the latency.

This module needs NumPy only.
"""

import bisect
from dataclasses import dataclass, field

from .hwplan import HardwareError, plan_layer, remove_unused, input_scale
from .model import Conv2d, Dense, MaxPool2d

__all__ = ["HEADS", "SHARES", "is_share", "MAX_SHARE", "MAX_STREAM_WIDTH", "Geometry", "StageChannel", "StagePlan", "StreamPlan",
           "is_streaming", "check_streamable", "plan_stream", "stream_timing", "schedule"]

#: How a streaming core computes its first dense layer's sums: adder trees over the collected
#: map (``"unrolled"``) or a serial engine over it (``"serial"``, see
#: :class:`~sbnn_hdl.gateware.streaming.StreamingCore`).
HEADS = ("unrolled", "serial")

#: Whether conv stages may compute a window's sums over several cycles (``"auto"``) or not
#: (``"off"``); see :class:`~sbnn_hdl.gateware.streaming.StreamingCore`.
SHARES = ("auto", "off")

def is_share(value):
    """Whether ``value`` is a ``share`` option: one of :data:`SHARES` or a number of cycles (1 or more)."""
    return value in SHARES or (isinstance(value, int) and value >= 1)


#: The most cycles over which a shared conv stage computes one window's sums (a documented
#: limit: each popcount input selects among up to this many window bits).
MAX_SHARE = 16

#: The most pixels a stage's input row may have, and the most rows (a documented limit: the
#: window generator's counters and look-up tables grow with them).
MAX_STREAM_WIDTH = 4096


def is_streaming(model):
    """Whether ``model`` is built as a stream (it has a conv or pool layer)."""
    return any(not isinstance(layer, Dense) for layer in model.layers)


def check_streamable(model):
    """Raise :class:`~sbnn_hdl.hwplan.HardwareError` naming the first layer that the streaming
    core cannot build."""
    seen_dense = None
    spec = model.input
    for index, layer in enumerate(model.layers):
        if isinstance(layer, Dense):
            seen_dense = seen_dense or layer
            continue
        if seen_dense is not None:
            raise HardwareError(f"layer '{layer.name}': expected conv2d and maxpool2d layers before the first dense "
                                f"layer in a streaming core, found a {layer.kind} layer after dense layer "
                                f"'{seen_dense.name}'")
        h, w, _ = layer.in_shape
        if h > MAX_STREAM_WIDTH or w > MAX_STREAM_WIDTH:
            raise HardwareError(f"layer '{layer.name}': expected an input of at most {MAX_STREAM_WIDTH} x "
                                f"{MAX_STREAM_WIDTH} pixels for a streaming stage, found {h} x {w}")
        first_weights = all(isinstance(before, MaxPool2d) for before in model.layers[:index])
        if first_weights and isinstance(layer, Conv2d) and layer.pad_value and layer.padding != (0, 0) \
                and input_scale(spec) > 1:
            # The first layer with weights (pools pass the elements on) sums each element divided
            # by 2**(lowest plane read); a padding value of 1 is not a multiple of it.
            raise HardwareError(f"layer '{layer.name}': expected pad_value 0 when the integer input's lowest plane "
                                f"read is above 0, found pad_value 1 with planes {list(spec.planes)}")
    if not isinstance(model.layers[-1], Dense):
        raise HardwareError(f"layer '{model.layers[-1].name}': expected a dense last layer, "
                            f"found a {model.layers[-1].kind} layer")


@dataclass(frozen=True)
class Geometry:
    """Where a stage's windows lie on its input map (``in_h x in_w`` pixels): ``kernel``,
    ``stride``, ``padding`` (rows and columns of ``pad_value`` on each side)."""

    in_h: int
    in_w: int
    kernel: tuple
    stride: tuple
    padding: tuple = (0, 0)
    pad_value: int = 0

    @property
    def out_h(self):
        return (self.in_h + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1

    @property
    def out_w(self):
        return (self.in_w + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1

    @property
    def pixels(self):
        return self.in_h * self.in_w

    @property
    def positions(self):
        return self.out_h * self.out_w

    def rows(self, oy):
        """Input rows of the windows of output row ``oy`` (some may lie in the padding)."""
        top = oy * self.stride[0] - self.padding[0]
        return range(top, top + self.kernel[0])

    def cols(self, ox):
        left = ox * self.stride[1] - self.padding[1]
        return range(left, left + self.kernel[1])

    def need(self, oy, ox):
        """``(row, col)`` of the input pixel that window ``(oy, ox)`` waits for: the last one in
        raster order that it reads, clipped into the image (a window that reads no pixel waits
        for the first one). The image's last window waits for its last pixel, even when it does
        not read it (a stride that skips the last rows or columns): so every image's output
        comes a fixed number of cycles after its last pixel."""
        if (oy, ox) == (self.out_h - 1, self.out_w - 1):
            return (self.in_h - 1, self.in_w - 1)
        return (self.last_row(oy), self.last_col(ox))

    def last_row(self, oy):
        """The last image row that the windows of output row ``oy`` read, clipped into the image."""
        return min(max(self.rows(oy)[-1], 0), self.in_h - 1)

    def last_col(self, ox):
        return min(max(self.cols(ox)[-1], 0), self.in_w - 1)


@dataclass(frozen=True)
class StageChannel:
    """One channel of a stage's window: ``("stream", k, max)``: channel ``k`` of the stage's
    input stream, values up to ``max``; or ``("const", v, 1)``: the constant bit ``v`` inside
    the image (a constant channel of the previous conv layer that is not ``pad_value``)."""

    kind: str
    index: int
    max: int


@dataclass
class StagePlan:
    """One conv or pool layer as a streaming stage.

    ``channels``: the window's channels (:class:`StageChannel`); a window's sources are numbered
    ``(dy*kw + dx)*len(channels) + c``. ``layer_plan``: for a conv layer, the :class:`~sbnn_hdl.hwplan.LayerPlan` over
    those sources, whose units are the output stream's channels. For a pool layer the output
    stream's channel ``k`` is the OR of input channel ``k`` over the window. ``outputs[j]`` says
    what the model's output channel ``j`` became: ``("const", v)``, ``("stream", k)`` or
    ``("unread", None)``. ``rows`` (the line buffer's rows) and ``hold`` (the cycles an image's
    last window waits after its last pixel) are set by :func:`stream_timing`. ``share``: the
    fewest cycles between two windows of the stage; a conv stage with ``share > 1`` computes each
    window's sums over that many cycles (:class:`~sbnn_hdl.gateware.phased.PhasedLayer`).
    """

    layer: object
    geometry: Geometry
    channels: list
    outputs: list
    layer_plan: object = None
    rows: int = 2
    hold: int = 0
    share: int = 1
    report: dict = field(default_factory=dict)

    @property
    def is_conv(self):
        return self.layer_plan is not None

    @property
    def stream_out(self):
        """The largest value of each channel of the output stream."""
        if self.is_conv:
            return [1] * len(self.layer_plan.units)
        return [ch.max for ch in self.channels]


@dataclass
class StreamPlan:
    """The whole streaming network. ``features``: the first stage's input stream, one
    ``(pixel channel, planes)`` per channel (the planes' bits of that channel of the raw pixel,
    as the first layer reads them; only the channels in ``stages[0].channels`` are built);
    ``collect``: the ``(position, stream channel)`` bits of the
    last stage's output that the dense layers' units read, in the order of their first layer's
    sources; ``q_channels``: the last stage's output channels (repeated where the first dense layer
    reads a channel twice) whose sum over every position is the first dense layer's ``q`` (its plan's ``q_input``), summed as the positions pass instead of
    collected (empty when that layer needs no ``q``);
    ``dense``: the dense layers' :class:`~sbnn_hdl.hwplan.LayerPlan`; ``image_gap``: the fewest
    cycles without ``valid`` between an image's last pixel and the next image's first that keep
    the latency (0: images may follow back to back); ``stream_latency``: cycles from an image's
    last pixel (its ``valid`` cycle) to the last stage's last output (its ``valid`` cycle). Both
    are set by :func:`stream_timing`."""

    model: object
    features: list
    stages: list
    collect: list
    dense: list
    q_channels: list = field(default_factory=list)
    image_gap: int = 0
    stream_latency: int = 0

    @property
    def pixels(self):
        return self.stages[0].geometry.pixels


def _first_channels(spec):
    """The first stage's input stream: one channel per feature the first layer reads, with the
    raw pixel's ``(channel, planes)`` it is made of, and its largest value."""
    c = spec.shape[2]
    scale = input_scale(spec)
    if spec.encoding == "integer":
        return [(ch, spec.planes) for ch in range(c)], [spec.plane_mask // scale] * c
    return [(ch, (k,)) for k in spec.planes for ch in range(c)], [1] * (c * len(spec.planes))


def _plan_conv(layer, model_channels, stream_max, scale):
    """The stage of conv ``layer`` whose input channel ``j`` is ``model_channels[j]``:
    ``("stream", k)`` or ``("const", v)``."""
    kh, kw = layer.kernel
    channels, column = [], {}
    for kind, value in model_channels:
        if kind == "stream" and ("stream", value) not in column:
            column[("stream", value)] = len(channels)
            channels.append(StageChannel("stream", value, stream_max[value]))
        elif kind == "const" and value != layer.pad_value and ("const", value) not in column:
            column[("const", value)] = len(channels)
            channels.append(StageChannel("const", value, 1))
    n = len(channels)
    incoming = []
    for tap in range(kh * kw):
        for kind, value in model_channels:
            if kind == "const" and value == layer.pad_value:
                incoming.append(("const", value))   # the same value inside the image and in the padding
            else:
                incoming.append(("source", tap * n + column[(kind, value)]))
    source_max = [ch.max for _ in range(kh * kw) for ch in channels]
    dense = Dense(layer.name, layer.mask.reshape(layer.out_channels, -1), layer.a, layer.b, layer.t)
    plan = plan_layer(dense, incoming, source_max, False, scale)
    geometry = Geometry(*layer.in_shape[:2], layer.kernel, layer.stride, layer.padding, layer.pad_value)
    outputs = [("const", v) if kind == "const" else ("stream", v) for kind, v in plan.outputs]
    return StagePlan(layer, geometry, channels, outputs, plan)


def _plan_pool(layer, model_channels, stream_max):
    geometry = Geometry(*layer.in_shape[:2], layer.kernel, layer.stride)
    channels = [StageChannel("stream", k, m) for k, m in enumerate(stream_max)]
    # OR over a window of a constant is that constant (a pool has no padding).
    return StagePlan(layer, geometry, channels, list(model_channels))


def plan_stream(model):
    """Plan the streaming hardware of ``model``; raises :class:`~sbnn_hdl.hwplan.HardwareError`
    for a model the streaming core cannot build (:func:`check_streamable`)."""
    check_streamable(model)
    spec = model.input
    features, stream_max = _first_channels(spec)
    model_channels = [("stream", k) for k in range(len(features))]
    stages = []
    dense_layers = [layer for layer in model.layers if isinstance(layer, Dense)]
    # The stream carries integer inputs divided by 2**(lowest plane) (pools pass them on as they
    # are): the first layer with weights takes the factor into its coefficients.
    scale = input_scale(spec)
    for layer in model.layers[:len(model.layers) - len(dense_layers)]:
        if isinstance(layer, Conv2d):
            stage = _plan_conv(layer, model_channels, stream_max, scale)
            scale = 1
        else:
            stage = _plan_pool(layer, model_channels, stream_max)
        stages.append(stage)
        model_channels, stream_max = stage.outputs, stage.stream_out
    # The dense part reads the last map flattened in (y, x, channel) order.
    last = stages[-1].geometry
    collect, incoming, source_max = [], [], []
    for position in range(last.positions):
        for kind, value in model_channels:
            if kind == "const":
                incoming.append(("const", value))
            else:
                incoming.append(("source", len(collect)))
                collect.append((position, value))
                source_max.append(stream_max[value])
    dense = []
    for index, layer in enumerate(dense_layers):
        plan = plan_layer(layer, incoming, source_max, index == len(dense_layers) - 1, scale if index == 0 else 1)
        dense.append(plan)
        incoming = [("const", o[1]) if o[0] == "const" else ("source", o[1]) for o in plan.outputs]
        source_max = [1] * len(plan.units)
    q_channels = _stream_q(dense[0], collect, model_channels)
    remove_unused(dense, collect)
    read = {k for _, k in collect} | set(q_channels)
    for index in range(len(stages) - 1, -1, -1):
        renumber, read = _keep_read(stages[index], read)
        if index == len(stages) - 1:
            collect[:] = [(position, renumber[k]) for position, k in collect]
            q_channels = [renumber[k] for k in q_channels]
        else:
            consumer = stages[index + 1]
            consumer.channels = [StageChannel(ch.kind, renumber[ch.index], ch.max) if ch.kind == "stream" else ch
                                 for ch in consumer.channels]
    return StreamPlan(model, features, stages, collect, dense, q_channels)


def _stream_q(plan, collect, model_channels):
    """Move the ``q`` of the first dense layer ``plan`` out of the layer: ``q`` sums every
    variable input once, i.e. every stream channel of the last map at every position, so a
    running sum over the positions as they pass gives it, without collecting the map's bits or
    building an adder tree over all of them. Returns the stream channels summed (empty when the
    layer needs no ``q``), a channel as often as the layer's inputs read it (duplicate channels
    of the last conv layer are one stream channel)."""
    if not plan.q_sources:
        return []
    # plan_layer's q is each variable source once; only then is it the same sum at every position.
    assert plan.q_sources == tuple((s, 1) for s in range(len(collect)))
    plan.q_input, plan.q_sources = plan.q_max, ()
    return [value for kind, value in model_channels if kind == "stream"]


def _keep_read(stage, read):
    """Keep only the output stream channels ``read`` of ``stage``; return ``(renumber, reads)``:
    the new number of each kept channel, and the input stream channels that the stage reads in
    turn (numbered as its input stream is before it is renumbered likewise)."""
    old_out = len(stage.stream_out)
    keep = sorted(read)
    renumber = {old: new for new, old in enumerate(keep)}
    stage.report["unread_channels"] = old_out - len(keep)
    stage.outputs = [("stream", renumber[v]) if kind == "stream" and v in renumber else
                     ("unread", None) if kind == "stream" else (kind, v) for kind, v in stage.outputs]
    if not stage.is_conv:
        stage.channels = [stage.channels[k] for k in keep]  # output channel k is input channel k's OR
        return renumber, {ch.index for ch in stage.channels}
    plan = stage.layer_plan
    plan.units = [plan.units[k] for k in keep]
    plan.report["unread_neurons"] = old_out - len(keep)
    plan.outputs = [("unit", renumber[v]) if kind == "unit" and v in renumber else
                    ("unread", None) if kind == "unit" else (kind, v) for kind, v in plan.outputs]
    n = len(stage.channels)
    used = {s % n for s, _ in plan.q_sources}
    for unit in plan.units:
        used.update(s % n for s, _ in unit.sources)
    kept = sorted(used)
    column = {old: new for new, old in enumerate(kept)}
    taps = stage.geometry.kernel[0] * stage.geometry.kernel[1]
    fix = lambda multiset: tuple(sorted(((s // n) * len(kept) + column[s % n], c) for s, c in multiset))
    plan.units = [type(u)(fix(u.sources), u.comparison, u.a, u.b, u.t) for u in plan.units]
    plan.q_sources = fix(plan.q_sources)
    plan.source_max = [stage.channels[c].max for _ in range(taps) for c in kept]
    plan.report["unwired_inputs"] = (n - len(kept)) * taps
    stage.channels = [stage.channels[c] for c in kept]
    return renumber, {ch.index for ch in stage.channels if ch.kind == "stream"}


def stream_timing(plan, delays):
    """Fill in ``plan.image_gap``, ``plan.stream_latency``, and each stage's line-buffer
    ``rows`` and ``hold`` from :func:`schedule`, given ``delays[s]``: the cycles from stage
    ``s``'s window generator firing to its output pixel's ``valid`` (the gateware knows them).

    How long a stage takes after an image's last pixel depends on how far behind it was when
    the pixel came, which depends on the pauses in the input. So each stage's last window of an
    image waits ``hold`` cycles after the image's last pixel: the longest it can take, which is
    when pixels and images come back to back. With that, every image's output comes the same
    number of cycles after its last pixel, whatever the pauses. The gap between images is the
    smallest, from none (or enough for one position per cycle, if a stage has more output
    positions than input pixels), at which six images in a row each keep the latency of a lone
    image and every writer stays within one image of its reader. Pauses only give the stages
    more time, so neither the latency nor the line buffers' need grows with them (the tests run
    random pauses against this)."""
    geometries = [s.geometry for s in plan.stages]
    spacings = [s.share for s in plan.stages]
    pixels = geometries[0].pixels
    period = max([pixels] + [g.positions * k for g, k in zip(geometries, spacings)])
    for _ in range(4 * period + 64):  # a gap of period - pixels cycles
        images = [list(range(n * period, n * period + pixels)) for n in range(6)]
        holds = [0] * len(geometries)
        for _ in range(len(geometries) + 1):
            run = schedule(geometries, delays, images, holds, spacings)
            if run.waits == holds:
                break
            holds = run.waits
        single = schedule(geometries, delays, [images[0]], holds, spacings)
        latency = single.last_out[0] - (pixels - 1)
        if run.ok and run.waits == holds and all(out - image[-1] == latency
                                                 for out, image in zip(run.last_out, images)):
            for stage, rows, hold in zip(plan.stages, run.rows, holds):
                stage.rows, stage.hold = max(2, 1 << (max(rows, 1) - 1).bit_length()), hold
            plan.image_gap, plan.stream_latency = period - pixels, latency
            return plan
        period += 1
    raise HardwareError(f"layer '{plan.stages[0].layer.name}': no gap between images up to {period - pixels} "
                        f"cycles keeps the stream's latency constant")


@dataclass
class Schedule:
    """What :func:`schedule` found: ``fires[s]``, per stage the cycles its window generator
    fires; ``last_out``, per image the cycle of the last stage's last output; ``rows[s]`` the
    line-buffer rows stage ``s`` needs; ``waits[s]`` the most cycles that stage ``s``'s last
    window of an image fired after one cycle past the image's last pixel; ``ok`` whether every
    stage's writer stayed within one image of its reader (the gateware counts images modulo 4)."""

    fires: list
    last_out: list
    rows: list
    waits: list
    ok: bool


def schedule(geometries, delays, images, holds=None, spacings=None):
    """The cycle model of a chain of stages fed the input pixels whose ``valid`` cycles are
    ``images`` (one sorted list of cycles per image, each of ``geometries[0].pixels`` cycles).

    Stage ``s`` receives pixels at cycles ``c``; the window of position ``k`` fires at the first
    cycle at least ``spacings[s]`` (default 1) after the previous one's at which its pixel
    (:meth:`Geometry.need`) was received on an earlier cycle, and an image's last window no
    earlier than ``holds[s] + 1`` cycles after the image's last pixel; its output pixel is valid
    ``delays[s]`` cycles later, which is when the next stage receives it.
    """
    holds = holds or [0] * len(geometries)
    spacings = spacings or [1] * len(geometries)
    arrivals = [c for image in images for c in image]
    fires_all, rows_all, waits, ok = [], [], [], True
    for g, delay, hold, spacing in zip(geometries, delays, holds, spacings):
        hw = g.pixels
        needs = [g.need(oy, ox) for oy in range(g.out_h) for ox in range(g.out_w)]
        need_index = [r * g.in_w + c for r, c in needs]
        first_row = [max(min(g.rows(oy)[0], g.in_h - 1), 0) for oy in range(g.out_h) for ox in range(g.out_w)]
        first_col = [max(min(g.cols(ox)[0], g.in_w - 1), 0) for oy in range(g.out_h) for ox in range(g.out_w)]
        count = len(arrivals) // hw
        fires, t, rows, wait = [], -spacing, 1, 0
        for n in range(count):
            for k in range(g.positions):
                pixel = n * hw + need_index[k]
                t = max(t + spacing, arrivals[pixel] + 1)
                if k == g.positions - 1:
                    t = max(t, arrivals[pixel] + 1 + hold)
                    wait = max(wait, t - arrivals[pixel] - 1)
                fires.append(t)
                written = _count_before(arrivals, t)
                ok &= written < (n + 2) * hw
                # The writer must not have overwritten the oldest row this window reads.
                row = n * g.in_h + first_row[k]
                rows = max(rows, -(-(written - first_col[k]) // g.in_w) - row)
        fires_all.append(fires)
        rows_all.append(rows)
        waits.append(wait)
        arrivals = [f + delay for f in fires]
    positions = geometries[-1].positions
    last_out = [arrivals[(n + 1) * positions - 1] for n in range(len(images))]
    return Schedule(fires_all, last_out, rows_all, waits, ok)


def _count_before(arrivals, t):
    """How many of the sorted ``arrivals`` are before cycle ``t``."""
    return bisect.bisect_left(arrivals, t)

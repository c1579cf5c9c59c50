"""What the host interface does with a request (``docs/protocol.md``): the sample bits it keeps
(:class:`SampleShifter`) and the requests it serves on the core and the batch memory
(:class:`Dispatcher`). The framing on either side is :mod:`sbnn_hdl.board.frames`."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import protocol as P
from .frames import PayloadByte, Request, reply_layout
from .tunable import tunable_value

__all__ = ["CoreInfo", "StreamCoreInfo", "core_signature", "SampleShifter", "Dispatcher"]


class CoreInfo:
    """What the host interface needs to know about a core (from a generation report).

    ``sample_bits`` (the ``sample`` port's width), ``classes``, ``score_width`` (0 without a
    ``scores`` port), ``latency``, ``prediction_width``, and ``read_bits``: the bits of
    ``sample`` the core reads, ascending (default: all of them). A streaming core (a conv
    model) is described by :class:`StreamCoreInfo`.
    """

    #: The core takes a whole sample on one clock (a :class:`~sbnn_hdl.gateware.NetworkCore`).
    streaming = False

    def __init__(self, *, sample_bits, classes, score_width, latency, prediction_width, read_bits=None):
        self.sample_bits, self.classes, self.score_width = sample_bits, classes, score_width
        self.latency, self.prediction_width = latency, prediction_width
        self.read_bits = tuple(range(sample_bits)) if read_bits is None else tuple(read_bits)
        if list(self.read_bits) != sorted(set(self.read_bits)) or any(not 0 <= b < sample_bits for b in self.read_bits):
            raise ValueError(f"read_bits: expected ascending distinct bit positions below {sample_bits}, "
                             f"found {list(self.read_bits)[:8]}...")

    @classmethod
    def from_report(cls, report):
        scores = report["output"]["scores"]
        width = next(p["width"] for p in report["ports"] if p["name"] == "sample")
        return cls(sample_bits=width, classes=len(report["classes"] or []) or _classes(report),
                   score_width=scores["width"] if scores else 0, latency=report["latency"],
                   prediction_width=report["output"]["prediction"]["width"],
                   read_bits=report["input"]["read_bits"])

    @classmethod
    def from_core(cls, core):
        """From a :class:`~sbnn_hdl.gateware.NetworkCore`, or a
        :class:`~sbnn_hdl.gateware.streaming.StreamingCore` (a :class:`StreamCoreInfo`)."""
        if "pixel" in core.signature.members:
            return StreamCoreInfo.from_core(core)
        return cls(sample_bits=len(core.sample), classes=core.output.classes,
                   score_width=core.output.score_width if core.with_scores else 0, latency=core.latency,
                   prediction_width=len(core.prediction), read_bits=core.read_bits)

    @classmethod
    def from_generated(cls, generated):
        """From a :class:`~sbnn_hdl.gateware.verilog.GeneratedCore`: its report, or for a
        streaming core the core itself (what the host needs of it is not in the report)."""
        if "pixel" in generated.core.signature.members:
            return StreamCoreInfo.from_core(generated.core)
        return cls.from_report(generated.report)

    @property
    def sample_bytes(self):
        return (self.sample_bits + 7) // 8

    @property
    def score_bytes(self):
        return (self.score_width + 7) // 8

    @property
    def feature_bits(self):
        """How many bits the host interface keeps of a sample (at least 1)."""
        return max(len(self.read_bits), 1)

    def byte_masks(self):
        """For each byte of a sample as it arrives (the first byte holds the highest bits): the
        bits of it that the core reads."""
        read = set(self.read_bits)
        top = self.sample_bytes - 1
        return [sum(1 << b for b in range(8) if (top - k) * 8 + b in read) for k in range(self.sample_bytes)]


def _classes(report):
    return report["layers"][-1]["neurons"]


class StreamCoreInfo(CoreInfo):
    """What the host interface needs to know about a streaming core
    (:class:`~sbnn_hdl.gateware.streaming.StreamingCore`, a conv model): its ``pixel`` port is
    ``pixel_bits`` wide (``C * bits``), a sample is ``pixels`` pixels (``H * W``) in raster
    order, ``image_gap`` idle cycles must follow an image's last pixel, and ``latency`` counts
    from an image's last pixel. ``pixel_read_bits``: the bits of ``pixel`` the core reads,
    ascending (default: all). ``read_bits`` (of the whole sample) follows from them.
    """

    streaming = True

    def __init__(self, *, pixels, pixel_bits, classes, score_width, latency, prediction_width, image_gap=0,
                 pixel_read_bits=None):
        self.pixels, self.pixel_bits, self.image_gap = pixels, pixel_bits, image_gap
        self.pixel_read_bits = tuple(range(pixel_bits)) if pixel_read_bits is None else tuple(pixel_read_bits)
        if list(self.pixel_read_bits) != sorted(set(self.pixel_read_bits)) \
                or any(not 0 <= b < pixel_bits for b in self.pixel_read_bits):
            raise ValueError(f"pixel_read_bits: expected ascending distinct bit positions below {pixel_bits}, "
                             f"found {list(self.pixel_read_bits)[:8]}...")
        if pixels < 1 or image_gap < 0:
            raise ValueError(f"expected at least 1 pixel and a gap of at least 0, found {pixels} and {image_gap}")
        super().__init__(sample_bits=pixels * pixel_bits, classes=classes, score_width=score_width,
                         latency=latency, prediction_width=prediction_width,
                         read_bits=[p * pixel_bits + b for p in range(pixels) for b in self.pixel_read_bits])

    @classmethod
    def from_core(cls, core):
        """From a :class:`~sbnn_hdl.gateware.streaming.StreamingCore`: the bits it reads of a
        pixel are the planes of the pixel channels that its first stage reads."""
        bits = core.model.input.bits
        first = core.plan.stages[0]
        read = sorted({channel * bits + k
                       for index in {ch.index for ch in first.channels if ch.kind == "stream"}
                       for channel, planes in [core.plan.features[index]] for k in planes})
        return cls(pixels=core.pixels, pixel_bits=len(core.pixel), classes=core.output.classes,
                   score_width=core.output.score_width if core.with_scores else 0, latency=core.latency,
                   prediction_width=len(core.prediction), image_gap=core.image_gap, pixel_read_bits=read)

    @classmethod
    def from_report(cls, report):
        raise ValueError("a streaming core's CoreInfo comes from the core (CoreInfo.from_generated), "
                         "not from its report")

    @property
    def word_bits(self):
        """Bits the host interface keeps of each pixel (at least 1): a word of its pixel memory."""
        return max(len(self.pixel_read_bits), 1)

    @property
    def period(self):
        """Cycles per sample when samples follow each other as fast as the core takes them."""
        return self.pixels + self.image_gap

    def byte_masks(self):
        raise ValueError("a streaming core's samples are kept pixel by pixel (PixelShifter), not by byte masks")


def core_signature(info):
    """The signature of a :class:`~sbnn_hdl.gateware.NetworkCore` described by ``info``, or of a
    :class:`~sbnn_hdl.gateware.streaming.StreamingCore` (port ``pixel`` instead of ``sample``)
    for a :class:`StreamCoreInfo`."""
    first = {"pixel": In(unsigned(info.pixel_bits))} if info.streaming else {"sample": In(unsigned(info.sample_bits))}
    ports = {**first, "valid": In(1),
             "prediction": Out(unsigned(info.prediction_width)), "out_valid": Out(1)}
    if info.score_width:
        ports["scores"] = Out(data.ArrayLayout(signed(info.score_width), info.classes))
    return wiring.Signature(ports)


class SampleShifter(wiring.Component):
    """The bits of a sample that the core reads (``info.read_bits``), from a request's payload.

    The sample is the payload from its first byte, or from its third in a LOAD (after the
    index); its first byte holds its highest bits. Of each sample byte, the bits the core reads
    are shifted into ``features`` one per clock, while the next byte is on its way: ``features``
    holds ``info.feature_bits`` bits, not the whole sample (a model that reads 3 of the 8 bit
    planes of a pixel needs 3/8 of the flip-flops).

    Ports
    -----
    payload : In(stream.Signature(PayloadByte))
        A request's payload bytes. A byte is taken once the previous one's bits are in: at most
        10 clocks after it (a byte takes 10 UART bits of at least 4 clocks to arrive, so a
        UART is never held up). Bytes after the sample are taken and ignored.
    features : Out(info.feature_bits)
        Bit ``n`` is bit ``info.read_bits[n]`` of the sample, once ``busy`` is low after its
        last byte was taken.
    prefix : Out(16)
        The payload's first two bytes, big-endian (a LOAD's index, a RUN's count), from the
        clock after the second was taken.
    busy : Out(1)
        Bits of a taken byte are still to go into ``features``.
    """

    def __init__(self, info):
        self.info = info
        super().__init__({"payload": In(stream.Signature(PayloadByte)), "features": Out(info.feature_bits),
                          "prefix": Out(16), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        S = self.info.sample_bytes
        byte = self.payload.payload
        m.submodules.masks = masks = Memory(shape=unsigned(8), depth=S, init=self.info.byte_masks())
        mask_r = masks.read_port()

        # A frame's first byte restarts the count of the prefix and of the sample bytes.
        prefix_taken, taken_before = Signal(range(3)), Signal(range(3))
        sample_byte, sample_before = Signal(range(S + 1)), Signal(range(S + 1))   # sample bytes taken
        m.d.comb += [taken_before.eq(Mux(byte.first, 0, prefix_taken)),
                     sample_before.eq(Mux(byte.first, 0, sample_byte))]
        cur_byte, cur_mask = Signal(8), Signal(8)
        loading = Signal()         # the mask of cur_byte arrives from the mask memory
        # The shift register's enable reaches every one of its flip-flops, which sit beside the
        # core's first layer all over the chip: it comes straight from a register (with the bit
        # it shifts in), one clock after the mask says so. Decoded from the mask by a LUT instead,
        # that one net takes 9.9 ns of the 16.6 ns clock period of a 60 MHz board build.
        shift_en, shift_bit = Signal(), Signal()
        m.d.comb += [mask_r.addr.eq(sample_before),
                     self.busy.eq(loading | (cur_mask != 0) | shift_en),
                     self.payload.ready.eq(~self.busy)]

        with m.If(self.payload.valid & self.payload.ready):
            m.d.sync += [prefix_taken.eq(taken_before), sample_byte.eq(sample_before)]
            with m.If(taken_before != 2):
                m.d.sync += [self.prefix.eq(Cat(byte.data, self.prefix[:8])), prefix_taken.eq(taken_before + 1)]
            with m.If(~((byte.kind == P.LOAD) & (taken_before != 2)) & (sample_before != S)):
                m.d.sync += [cur_byte.eq(byte.data), loading.eq(1), sample_byte.eq(sample_before + 1)]

        m.d.sync += shift_en.eq(0)
        with m.If(loading):
            m.d.sync += [cur_mask.eq(mask_r.data), loading.eq(0)]
        with m.Elif(cur_mask != 0):
            # Highest bit first: the bits enter in descending order, so the lowest ends in bit 0.
            m.d.sync += [cur_mask.eq(cur_mask << 1), cur_byte.eq(cur_byte << 1)]
            with m.If(cur_mask[7]):
                m.d.sync += [shift_en.eq(1), shift_bit.eq(cur_byte[7])]
        with m.If(shift_en):
            m.d.sync += self.features.eq(Cat(shift_bit, self.features[:-1]))
        return m


class Dispatcher(wiring.Component):
    """Serves requests (INFO, INFER, INFER_SCORES, LOAD, RUN) on a core and the batch memory,
    and says what to reply.

    Parameters
    ----------
    info : CoreInfo
    info_payload : bytes
        The INFO reply's payload.
    info_clock : Tunable or None
        With a :class:`~sbnn_hdl.board.tunable.Tunable`, the INFO reply's clock field
        (:data:`~sbnn_hdl.board.protocol.INFO_CLOCK_OFFSET`) is that tunable, not the bytes of
        ``info_payload`` there (a board build sets it after synthesis).
    batch_depth : int
        Samples the batch memory holds. 0 builds no batch memory: LOAD and RUN are answered
        "out of range", and the core reads its sample straight from the shift register that
        assembles it (no block RAMs, and no multiplexer in front of the core: the 85%
        Fashion-MNIST model's board build routes without them and not with them;
        docs/results.md).

    Ports
    -----
    payload : In(stream.Signature(PayloadByte))
        The payload bytes of the request being received (into a :class:`SampleShifter`).
    request : In(stream.Signature(Request))
        The end of a request frame. The request is served while ``valid`` and taken once its
        reply has been taken by ``reply``; the payload of the next request must not begin
        before then (the sample and the prefix are read until then).
    core : In(core_signature(info))
        The core's ports, from this side: ``sample`` and ``valid`` are driven here.
    reply : Out(stream.Signature(reply_layout(max_fixed)))
        The reply to the request being served, stable while ``valid``. A request with an error
        from the framing, a bad length for its type, an unknown type (INFER_SCORES too, without
        scores), a LOAD index ``>= batch_depth`` or a RUN count of 0 or ``> batch_depth`` is
        answered with the error reply ``code, type`` and has no other effect.
    tail : Out(stream.Signature(8))
        A RUN reply's predictions, in order, while ``reply`` is valid; each one 3 clocks after
        the previous one was taken.

    Latency: ``reply`` is valid 2 clocks after ``request.valid`` rises (or after the last
    sample byte's bits are in, if later), plus the core's latency for INFER, plus
    ``count + latency + 2`` for RUN. The ``cycles`` a reply carries are the core's, as
    ``docs/protocol.md`` defines them.
    """

    #: The memories whose read data is never used in a cycle that writes them (LOAD writes the
    #: batch memory and RUN reads it; RUN writes the results and its reply reads them; each in
    #: its own state): what a read returns when it meets a write to the same address does not
    #: matter, and the board build tells yosys so (:func:`sbnn_hdl.board.build.yosys_after_read`).
    #: Amaranth 0.5 cannot say it, and without it yosys emulates read-first behaviour for the
    #: batch memory with two registers and a multiplexer as wide as a sample.
    NO_COLLISIONS = ("batch", "results")

    def __init__(self, info, *, info_payload, batch_depth, info_clock=None):
        self.info, self.info_payload, self.batch_depth = info, bytes(info_payload), batch_depth
        self.info_clock = info_clock
        self.max_fixed = max(len(self.info_payload), 5 + info.classes * info.score_bytes, 6, 2)
        super().__init__({"payload": In(stream.Signature(PayloadByte)), "request": In(stream.Signature(Request)),
                          "core": In(core_signature(info)),
                          "reply": Out(stream.Signature(reply_layout(self.max_fixed))),
                          "tail": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        info, depth = self.info, self.batch_depth
        S, F = info.sample_bytes, info.feature_bits
        core, request = self.core, self.request.payload

        m.submodules.shifter = shifter = SampleShifter(info)
        wiring.connect(m, wiring.flipped(self.payload), shifter.payload)
        sample_index, run_request = shifter.prefix, shifter.prefix   # what the prefix is, for a LOAD and a RUN

        if depth:
            # Named as in NO_COLLISIONS.
            m.submodules.batch = batch = Memory(shape=unsigned(F), depth=depth, init=[])
            m.submodules.results = results = Memory(shape=unsigned(8), depth=depth, init=[])
            batch_w, batch_r = batch.write_port(), batch.read_port()
            results_w, results_r = results.write_port(), results.read_port()

        cycles = Signal(32)
        sample_from_batch = Signal()
        issue = Signal(16)        # next batch entry to read
        issuing = Signal()
        run_count = Signal(16)
        collected = Signal(16)    # predictions written back in a RUN
        issue_left = Signal(16)   # down-counters: compared with 1, not with run_count
        collect_left = Signal(16)
        started = Signal()
        # A signal, not an expression: each slice of a Mux expression would be a whole Mux of
        # its own in RTLIL (2,352 multiplexers of 2,352 bits, and 50 minutes of synthesis).
        selected = Signal(F)
        if depth:
            # Block RAM outputs are slow on ECP5 (yosys maps them without the output register:
            # 5.8 ns from clock to data on speed grade 6), so every memory read is registered
            # before it goes anywhere else (here and in ``tail``).
            batch_data = Signal(F)
            m.d.sync += batch_data.eq(batch_r.data)
            m.d.comb += selected.eq(Mux(sample_from_batch, batch_data, shifter.features))
        else:
            # Without a batch memory the core reads the shift register itself: no multiplexer,
            # and no wires from block RAMs to the core's first layer.
            m.d.comb += selected.eq(shifter.features)
        sample_wires = [Const(0, 1)] * info.sample_bits   # the bits the core does not read: 0
        for n, bit in enumerate(info.read_bits):
            sample_wires[bit] = selected[n]
        m.d.comb += core.sample.eq(Cat(*sample_wires))

        # The reply is chosen in two steps: a decision only sets ``reply_sel`` (and captures
        # what the reply carries); ``reply`` is a multiplexer on ``reply_sel``, which the sender
        # loads into its wide shift register on a clock of its own. That keeps the decision
        # logic (CRC check, type and length comparisons) away from that register's enables.
        R_INFO, R_INFER, R_SCORES, R_LOAD, R_RUN, R_ERROR = range(6)   # as self.R_INFO, ...
        reply_sel = Signal(range(6))
        err_code = Signal(8)
        pred_r = Signal(8)
        scores_r = Signal(info.classes * info.score_width)
        result_cycles = Signal(32)

        def error(code):
            return [reply_sel.eq(R_ERROR), err_code.eq(code)]

        kind = request.kind
        f_ok, f_info, f_infer, f_load, f_run, f_len0, f_len_sample, f_len_load, f_len2, f_index, f_count = \
            self._flags(m, sample_index, run_request)

        with m.FSM(name="dispatcher") as fsm:
            with m.State("IDLE"):
                with m.If(self.request.valid & ~shifter.busy):   # and the last sample byte's bits are in
                    m.next = "DISPATCH"
            with m.State("DISPATCH"):
                with m.If(~f_ok):
                    m.d.sync += error(request.error)
                    m.next = "REPLY"
                with m.Elif(f_info):
                    m.d.sync += [reply_sel.eq(Mux(f_len0, R_INFO, R_ERROR)), err_code.eq(P.ERR_LENGTH)]
                    m.next = "REPLY"
                with m.Elif(f_infer):
                    with m.If(f_len_sample):
                        m.d.comb += core.valid.eq(1)
                        m.d.sync += cycles.eq(1)
                        m.next = "INFER"
                    with m.Else():
                        m.d.sync += error(P.ERR_LENGTH)
                        m.next = "REPLY"
                with m.Elif(f_load):
                    with m.If(~f_len_load):
                        m.d.sync += error(P.ERR_LENGTH)
                    with m.Elif(~f_index):
                        m.d.sync += error(P.ERR_RANGE)
                    with m.Else():   # (never, without a batch memory: f_index is 0)
                        if depth:
                            m.d.comb += batch_w.en.eq(1)
                        m.d.sync += reply_sel.eq(R_LOAD)
                    m.next = "REPLY"
                with m.Elif(f_run):
                    with m.If(~f_len2):
                        m.d.sync += error(P.ERR_LENGTH)
                        m.next = "REPLY"
                    with m.Elif(~f_count):
                        m.d.sync += error(P.ERR_RANGE)
                        m.next = "REPLY"
                    with m.Else():   # (never, without a batch memory: f_count is 0)
                        if depth:
                            m.d.sync += [run_count.eq(run_request), issue.eq(0), issuing.eq(1), collected.eq(0),
                                         issue_left.eq(run_request), collect_left.eq(run_request),
                                         started.eq(0), sample_from_batch.eq(1)]
                            m.next = "RUN"
                with m.Else():
                    m.d.sync += error(P.ERR_TYPE)
                    m.next = "REPLY"
            with m.State("INFER"):
                m.d.sync += cycles.eq(cycles + 1)
                with m.If(core.out_valid):
                    m.d.sync += [pred_r.eq(core.prediction), result_cycles.eq(cycles),
                                 reply_sel.eq(Mux(kind == P.INFER_SCORES, R_SCORES, R_INFER))]
                    if info.score_width:
                        m.d.sync += scores_r.eq(core.scores.as_value())
                    m.next = "REPLY"
            if depth:   # RUN needs the batch memory; without one, DISPATCH never comes here
                with m.State("RUN"):
                    # Entry `issue` is read this cycle; it enters the core on the next one.
                    with m.If(issuing):
                        m.d.sync += [issue.eq(issue + 1), issue_left.eq(issue_left - 1)]
                        with m.If(issue_left == 1):
                            m.d.sync += issuing.eq(0)
                    read, valid = Signal(), Signal()   # entry on the read port, in batch_data
                    m.d.sync += [read.eq(issuing), valid.eq(read)]
                    m.d.comb += core.valid.eq(valid)
                    with m.If(valid & ~started):
                        m.d.sync += [started.eq(1), cycles.eq(1)]
                    with m.Else():
                        m.d.sync += cycles.eq(cycles + 1)
                    with m.If(core.out_valid):
                        m.d.comb += results_w.en.eq(1)
                        m.d.sync += [collected.eq(collected + 1), collect_left.eq(collect_left - 1)]
                        with m.If(collect_left == 1):
                            m.d.sync += [reply_sel.eq(R_RUN), result_cycles.eq(cycles), sample_from_batch.eq(0)]
                            m.next = "REPLY"
            with m.State("REPLY"):
                m.d.comb += self.reply.valid.eq(1)
                with m.If(self.reply.ready):
                    m.d.comb += self.request.ready.eq(1)
                    m.next = "IDLE"

        self._replies(m, reply_sel, platform=platform, err_code=err_code, kind=kind, pred_r=pred_r, scores_r=scores_r,
                      result_cycles=result_cycles, sample_index=sample_index, run_count=run_count)

        if depth:
            m.d.comb += [batch_w.addr.eq(sample_index), batch_w.data.eq(shifter.features),
                         batch_r.addr.eq(issue), batch_r.en.eq(1),
                         results_w.addr.eq(collected), results_w.data.eq(core.prediction)]
            self._tail(m, fsm, results_r)
        return m

    # The replies: ``reply_sel`` chooses one of these (as ``Dispatcher.elaborate`` numbers them).
    R_INFO, R_INFER, R_SCORES, R_LOAD, R_RUN, R_ERROR = range(6)

    def _flags(self, m, sample_index, run_request):
        """Every test the dispatch needs, registered, so that DISPATCH decides from single bits:
        ``f_ok, f_info, f_infer, f_load, f_run, f_len0, f_len_sample, f_len_load, f_len2,
        f_index, f_count``."""
        info, depth, S = self.info, self.batch_depth, self.info.sample_bytes
        request = self.request.payload
        f_ok, f_info, f_infer, f_load, f_run = Signal(), Signal(), Signal(), Signal(), Signal()
        f_len0, f_len_sample, f_len_load, f_len2, f_index, f_count = (Signal() for _ in range(6))
        kind, length = request.kind, request.length
        m.d.sync += [f_ok.eq(request.error == 0),
                     f_info.eq(kind == P.INFO), f_load.eq(kind == P.LOAD), f_run.eq(kind == P.RUN),
                     f_infer.eq((kind == P.INFER) | ((kind == P.INFER_SCORES) & bool(info.score_width))),
                     f_len0.eq(length == 0), f_len_sample.eq(length == S), f_len_load.eq(length == S + 2),
                     f_len2.eq(length == 2), f_index.eq(sample_index < depth),
                     f_count.eq((run_request != 0) & (run_request <= depth))]
        return f_ok, f_info, f_infer, f_load, f_run, f_len0, f_len_sample, f_len_load, f_len2, f_index, f_count

    def _replies(self, m, reply_sel, *, platform=None, err_code, kind, pred_r, scores_r, result_cycles, sample_index, run_count):
        """``reply`` as ``reply_sel`` chooses it."""
        info = self.info
        with m.Switch(reply_sel):
            with m.Case(self.R_INFO):
                m.d.comb += self._reply(P.INFO | 0x80, self._info_fields(m, platform))
            with m.Case(self.R_INFER):
                m.d.comb += self._reply(P.INFER | 0x80, [(pred_r, 1), (result_cycles, 4)])
            with m.Case(self.R_SCORES):
                w = info.score_width
                scores = [(scores_r[j * w:(j + 1) * w].as_signed(), info.score_bytes)
                          for j in range(info.classes)] if w else []
                m.d.comb += self._reply(P.INFER_SCORES | 0x80, [(pred_r, 1), (result_cycles, 4)] + scores)
            with m.Case(self.R_LOAD):
                m.d.comb += self._reply(P.LOAD | 0x80, [(sample_index, 2)])
            with m.Case(self.R_RUN):
                m.d.comb += self._reply(P.RUN | 0x80, [(run_count, 2), (result_cycles, 4)], tail=run_count)
            with m.Default():
                m.d.comb += self._reply(P.ERROR, [(err_code, 1), (kind, 1)])

    def _tail(self, m, fsm, results_r):
        """The tail of a RUN reply from the results memory's read port ``results_r``: the result
        at ``tail_addr`` is registered (``tail.payload``) two clocks after the address is set;
        ``settle`` counts those clocks down."""
        tail_addr, settle = Signal(16), Signal(range(3))
        m.d.comb += [results_r.en.eq(1), results_r.addr.eq(tail_addr),
                     self.tail.valid.eq(fsm.ongoing("REPLY") & (settle == 0))]
        m.d.sync += self.tail.payload.eq(results_r.data)
        with m.If(~fsm.ongoing("REPLY")):
            m.d.sync += [tail_addr.eq(0), settle.eq(2)]
        with m.Elif(self.tail.valid & self.tail.ready):
            m.d.sync += [tail_addr.eq(tail_addr + 1), settle.eq(2)]
        with m.Elif(settle != 0):
            m.d.sync += settle.eq(settle - 1)

    def _info_fields(self, m, platform):
        """The INFO reply's fixed part as :meth:`_reply`'s fields."""
        payload = self.info_payload
        if self.info_clock is None:
            return [(int.from_bytes(payload, "big"), len(payload))]
        start, end = P.INFO_CLOCK_OFFSET, P.INFO_CLOCK_OFFSET + 4
        fields = [(int.from_bytes(payload[:start], "big"), start), (tunable_value(m, self.info_clock, platform), 4),
                  (int.from_bytes(payload[end:], "big"), len(payload) - end)]
        return [(value, n) for value, n in fields if n]

    def _reply(self, kind, fields, tail=0):
        """Statements that set ``reply`` to a reply of type ``kind`` whose fixed part is
        ``fields``, a list of (value, bytes), each sent as a big-endian integer of that many
        bytes (signed values sign-extended), and ``tail`` bytes from ``tail``."""
        size = sum(n for _, n in fields)
        parts = []
        for value, n in reversed(fields):
            value = Const(value, 8 * n) if isinstance(value, int) else Value.cast(value)
            extra = 8 * n - len(value)
            if extra > 0:
                fill = value[-1].replicate(extra) if value.shape().signed else Const(0, extra)
                value = Cat(value, fill)
            parts.append(value.as_unsigned()[:8 * n])
        if size < self.max_fixed:
            parts.insert(0, Const(0, 8 * (self.max_fixed - size)))
        reply = self.reply.payload
        return [reply.kind.eq(kind), reply.fixed.eq(Cat(*parts)), reply.fixed_length.eq(size),
                reply.tail_length.eq(tail)]

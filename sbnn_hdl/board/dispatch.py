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

__all__ = ["CoreInfo", "StreamCoreInfo", "core_signature", "WORD_BITS", "BANK_WORDS", "sample_words", "word_width",
           "run_period", "SampleShifter", "Dispatcher"]


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


#: The widest word of the batch memory: what RUN moves from block RAM into the sample register
#: per clock (four DP16KD side by side, 1,024 x 18 each). A sample of ``F`` kept bits is
#: ``ceil(F / WORD_BITS)`` words, so RUN feeds the core one sample per that many clocks
#: (:func:`run_period`); 72 rather than 36 halves that for the same block RAMs.
WORD_BITS = 72

#: The DP16KD's shapes (depth, width) for a memory with one write and one read port.
DP16KD_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))

#: Words per bank of the batch memory: one DP16KD deep (1,024 x 18), so that yosys puts no
#: multiplexer between a block's output and the bank's output register (a deeper memory is
#: mapped as rows of blocks whose outputs a LUT multiplexer chooses from, after the block RAM's
#: own 5.8 ns from clock to data).
BANK_WORDS = 1024


def sample_words(info, word_bits=WORD_BITS):
    """Words of at most ``word_bits`` in which the host keeps a dense core's sample (its kept bits)."""
    return -(-info.feature_bits // word_bits)


def word_width(info, word_bits=WORD_BITS):
    """Bits of each of those words: the kept bits spread over them evenly (fewer than
    ``sample_words`` bits of the last word unused)."""
    return -(-info.feature_bits // sample_words(info, word_bits))


def run_period(info, word_bits=WORD_BITS):
    """Clocks per sample of a RUN once the core's pipeline is full: one word of the batch memory
    per clock into the sample register (a dense core), or one pixel per clock plus the image
    gap (a streaming core)."""
    return info.period if info.streaming else sample_words(info, word_bits)


class SampleShifter(wiring.Component):
    """The sample register: the bits of a sample that the core reads (``info.read_bits``), from
    a request's payload or, a word per clock, from the batch memory; and the words of it for a
    copy into the batch memory. It is the only register as wide as a sample in the host.

    The register is ``words`` words of ``word_bits`` bits (``words = ceil(F / max_word)`` for
    ``F = info.feature_bits``, ``word_bits = ceil(F / words)``, the top ``words * word_bits - F``
    bits unused) and moves a whole word at a time, from word ``g`` into word ``g + 1`` and the
    new word into word 0: every flip-flop takes the flip-flop ``word_bits`` below it or one bit
    of the new word, so no flip-flop has a multiplexer in front of it (only the new word,
    ``word_bits`` wide, is chosen from three sources). Its enable is one register per word
    (``words`` copies, each driving the clock enables of its word's ``word_bits`` flip-flops and
    nothing else; all set from one decision a clock ahead, whose net reaches the ``words``
    copies): one net to every flip-flop of a sample, which sit beside the core's first layer all
    over the chip, would be the slowest net of the design (9.9 ns of routing alone at 62.5 MHz,
    docs/results.md). The build keeps the copies apart
    (:func:`sbnn_hdl.board.build.yosys_after_read`; yosys would merge them into one register).
    For the 85% Fashion-MNIST model: 33 copies of 72 flip-flops each.

    From the payload: the sample is the payload from its first byte, or from its third in a
    LOAD (after the index); its first byte holds its highest bits. Of each sample byte, the bits
    the core reads go one per clock into a word register, while the next byte is on its way;
    each full word enters the sample register on the clock after its last bit (the first word
    is short by the unused bits, so the last bit of the sample completes a word).

    Parameters
    ----------
    info : CoreInfo
    max_word : int
        The most bits of a word (:data:`WORD_BITS`).

    Ports
    -----
    payload : In(stream.Signature(PayloadByte))
        A request's payload bytes. A byte is taken once the previous one's bits are in: at most
        11 clocks after it (a byte takes 10 UART bits of at least 4 clocks to arrive, so a
        UART is never held up). Bytes after the sample are taken and ignored.
    features : Out(info.feature_bits)
        Bit ``n`` is bit ``info.read_bits[n]`` of the sample, once ``busy`` is low after its
        last byte was taken (or on the clock after a fill's last word went in).
    prefix : Out(16)
        The payload's first two bytes, big-endian (a LOAD's index, a RUN's count), from the
        clock after the second was taken.
    busy : Out(1)
        Bits of a taken byte are still to go into the sample register.
    fill_next : In(1)
        On the next clock, ``fill_data`` (as it is on that clock) enters the register as word 0.
    fill_data : In(word_bits)
    rotate_next : In(1)
        On the next clock, ``top`` moves into word 0 (``words`` rotations leave the register as
        it was, having shown every word in ``top``, the highest first).
    top : Out(word_bits)
        The register's highest word.
    rotating : Out(1)
        ``top`` moves this clock (``rotate_next`` was high on the clock before).

    The payload, ``fill_next`` and ``rotate_next`` must not meet: the dispatcher fills and
    rotates only while no payload arrives (between a request's end and its reply's).
    """

    def __init__(self, info, max_word=WORD_BITS):
        self.info, self.words = info, sample_words(info, max_word)
        self.word_bits = word_bits = word_width(info, max_word)
        super().__init__({"payload": In(stream.Signature(PayloadByte)), "features": Out(info.feature_bits),
                          "prefix": Out(16), "busy": Out(1),
                          "fill_next": In(1), "fill_data": In(word_bits), "rotate_next": In(1),
                          "top": Out(word_bits), "rotating": Out(1)})

    def elaborate(self, platform):
        m = Module()
        S, F, K, W = self.info.sample_bytes, self.info.feature_bits, self.word_bits, self.words
        byte = self.payload.payload
        m.submodules.masks = masks = Memory(shape=unsigned(8), depth=S, init=self.info.byte_masks())
        mask_r = masks.read_port()

        # No reset: what the register holds before a whole sample is in is never read.
        sample = Signal(W * K, reset_less=True)
        m.d.comb += [self.features.eq(sample[:F]), self.top.eq(sample[-K:])]

        # A frame's first byte restarts the count of the prefix and of the sample bytes.
        prefix_taken, taken_before = Signal(range(3)), Signal(range(3))
        sample_byte, sample_before = Signal(range(S + 1)), Signal(range(S + 1))   # sample bytes taken
        m.d.comb += [taken_before.eq(Mux(byte.first, 0, prefix_taken)),
                     sample_before.eq(Mux(byte.first, 0, sample_byte))]
        cur_byte, cur_mask = Signal(8), Signal(8)
        loading = Signal()         # the mask of cur_byte arrives from the mask memory
        # The bit to shift into the word comes from a register (with its enable), one clock after
        # the mask says so, rather than decoded from the mask by LUTs on the same clock.
        shift_en, shift_bit = Signal(), Signal()
        word = Signal(K, reset_less=True)     # the bits of the word being assembled, the last in bit 0
        word_bits = Signal(range(K))          # bits in it
        push = Signal()                       # the word enters the sample register this clock
        m.d.comb += [mask_r.addr.eq(sample_before),
                     self.busy.eq(loading | (cur_mask != 0) | shift_en | push),
                     self.payload.ready.eq(~self.busy)]

        with m.If(self.payload.valid & self.payload.ready):
            m.d.sync += [prefix_taken.eq(taken_before), sample_byte.eq(sample_before)]
            with m.If(taken_before != 2):
                m.d.sync += [self.prefix.eq(Cat(byte.data, self.prefix[:8])), prefix_taken.eq(taken_before + 1)]
            with m.If(~((byte.kind == P.LOAD) & (taken_before != 2)) & (sample_before != S)):
                m.d.sync += [cur_byte.eq(byte.data), loading.eq(1), sample_byte.eq(sample_before + 1)]
                with m.If(sample_before == 0):
                    # The first word holds the unused top bits of the register.
                    m.d.sync += word_bits.eq(W * K - F)

        m.d.sync += shift_en.eq(0)
        with m.If(loading):
            m.d.sync += [cur_mask.eq(mask_r.data), loading.eq(0)]
        with m.Elif(cur_mask != 0):
            # Highest bit first: the bits enter in descending order, so the lowest ends in bit 0.
            m.d.sync += [cur_mask.eq(cur_mask << 1), cur_byte.eq(cur_byte << 1)]
            with m.If(cur_mask[7]):
                m.d.sync += [shift_en.eq(1), shift_bit.eq(cur_byte[7])]
        push_next = Signal()
        m.d.comb += push_next.eq(shift_en & (word_bits == K - 1))
        with m.If(shift_en):
            m.d.sync += [word.eq(Cat(shift_bit, word[:-1])), word_bits.eq(Mux(word_bits == K - 1, 0, word_bits + 1))]
        m.d.sync += [push.eq(push_next), self.rotating.eq(self.rotate_next)]

        # The new word's source, set a clock ahead as the enables are.
        FROM_WORD, FROM_FILL, FROM_TOP = range(3)
        source, incoming = Signal(range(3)), Signal(K)
        m.d.sync += source.eq(Mux(self.fill_next, FROM_FILL, Mux(self.rotate_next, FROM_TOP, FROM_WORD)))
        with m.Switch(source):
            with m.Case(FROM_FILL):
                m.d.comb += incoming.eq(self.fill_data)
            with m.Case(FROM_TOP):
                m.d.comb += incoming.eq(self.top)
            with m.Default():
                m.d.comb += incoming.eq(word)

        move_next = Signal()
        m.d.comb += move_next.eq(push_next | self.fill_next | self.rotate_next)
        for g in range(W):
            # Named as yosys_after_read finds them.
            enable = Signal(name=f"sample_en{g}")
            m.d.sync += enable.eq(move_next)
            with m.If(enable):
                m.d.sync += sample[g * K:(g + 1) * K].eq(incoming if g == 0 else sample[(g - 1) * K:g * K])
        return m


class Dispatcher(wiring.Component):
    """Serves requests (INFO, INFER, INFER_SCORES, LOAD, RUN) on a core and the batch memory,
    and says what to reply.

    The core reads its sample from the sample register of a :class:`SampleShifter`, and only
    from there: INFER's sample is assembled in it from the payload; a LOAD's too, and a good
    LOAD then copies it into its batch entry a word per clock (so a refused LOAD changes
    nothing); RUN fills it from the batch memory a word per clock and feeds the core one
    sample per ``words`` clocks (:func:`run_period`). Nothing as wide as a sample runs between
    the block RAMs and the core: a word is read per clock, registered at its bank's output
    (each bank one block RAM deep, so nothing stands between a block and its register), chosen
    from the banks by an OR of those registers (the others hold 0), registered again, and
    shifted into the register's lowest word.

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
        Samples the batch memory holds: ``batch_depth * words`` words
        (``words = ceil(info.feature_bits / max_word)``, of ``ceil(info.feature_bits / words)``
        bits), entry ``n`` in words ``n * words ..``, its highest word first, in banks of
        :data:`BANK_WORDS` words (bank ``a // BANK_WORDS`` holds word ``a``). 0 builds no
        batch memory: LOAD and RUN are answered "out of range".
    max_word : int
        The most bits moved between the batch memory and the sample register per clock
        (:data:`WORD_BITS`).
    bank_words : int
        Words per bank, a power of 2 (:data:`BANK_WORDS`; smaller in tests, for many banks).

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
    ``index_bits + words + 3`` for a good LOAD (``index_bits`` the bits of a batch index: the
    entry's address is computed by shift and add), plus ``(count - 1) * words + latency + 5``
    for RUN. The ``cycles`` a reply carries are the core's, as ``docs/protocol.md`` defines
    them: a RUN's are ``(count - 1) * words + latency``.
    """

    #: The memories whose read data is never used in a cycle that writes them (LOAD writes the
    #: batch memory and RUN reads it; RUN writes the results and its reply reads them; each in
    #: its own state): what a read returns when it meets a write to the same address does not
    #: matter, and the board build tells yosys so (:func:`sbnn_hdl.board.build.yosys_after_read`).
    #: Amaranth 0.5 cannot say it, and without it yosys emulates read-first behaviour for the
    #: batch memory with two registers and a multiplexer as wide as its word. (Name patterns:
    #: the batch memory is banks ``batch0``, ``batch1``, ...)
    NO_COLLISIONS = ("batch*", "results")

    def __init__(self, info, *, info_payload, batch_depth, info_clock=None, max_word=WORD_BITS,
                 bank_words=BANK_WORDS):
        if bank_words < 1 or bank_words & (bank_words - 1):
            raise ValueError(f"bank_words: expected a power of 2, found {bank_words}")
        self.info, self.info_payload, self.batch_depth = info, bytes(info_payload), batch_depth
        self.info_clock = info_clock
        self.bank_words = bank_words
        self.max_word, self.word_bits, self.words = max_word, word_width(info, max_word), sample_words(info, max_word)
        self.max_fixed = max(len(self.info_payload), 5 + info.classes * info.score_bytes, 6, 2)
        super().__init__({"payload": In(stream.Signature(PayloadByte)), "request": In(stream.Signature(Request)),
                          "core": In(core_signature(info)),
                          "reply": Out(stream.Signature(reply_layout(self.max_fixed))),
                          "tail": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        info, depth, K, W = self.info, self.batch_depth, self.word_bits, self.words
        core, request = self.core, self.request.payload

        m.submodules.shifter = shifter = SampleShifter(info, self.max_word)
        wiring.connect(m, wiring.flipped(self.payload), shifter.payload)
        sample_index, run_request = shifter.prefix, shifter.prefix   # what the prefix is, for a LOAD and a RUN

        # The core reads the sample register itself: no multiplexer in front of it.
        sample_wires = [Const(0, 1)] * info.sample_bits   # the bits the core does not read: 0
        for n, bit in enumerate(info.read_bits):
            sample_wires[bit] = shifter.features[n]
        m.d.comb += core.sample.eq(Cat(*sample_wires))

        if depth:
            # Named as in NO_COLLISIONS.
            total = depth * W
            banks = []
            for b in range(-(-total // self.bank_words)):
                m.submodules[f"batch{b}"] = bank = Memory(shape=unsigned(K), init=[],
                                                          depth=min(self.bank_words, total - b * self.bank_words))
                banks.append(bank)
            m.submodules.results = results = Memory(shape=unsigned(8), depth=depth, init=[])
            results_w, results_r = results.write_port(), results.read_port()
            index_bits = len(Signal(range(max(depth, 2))))
            low_bits = (self.bank_words - 1).bit_length() if total > self.bank_words \
                else len(Signal(range(total)))   # bits of a word's address in its bank

        cycles = Signal(32)
        run_count = Signal(16)
        collected = Signal(16)    # predictions written back in a RUN
        collect_left = Signal(16)   # down-counters: compared with 1, not with run_count
        started = Signal()

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

        if depth:
            # RUN: words are read from `read_addr` on the clocks `reading` is high, the last word
            # of a sample when `word_left` is 0; each word is on its bank's read port a clock
            # later, in that bank's output register the clock after (the other banks' registers
            # hold 0), ORed into `batch_data` the clock after that, and enters the sample
            # register at the end of that clock (`fill_next` is the read of two clocks before);
            # the clock after a sample's last word went in, the core takes the sample (`feed`).
            # Block RAM outputs are slow on ECP5 (yosys maps them without the output register:
            # 5.8 ns from clock to data on speed grade 6), so every memory read is registered
            # before it goes anywhere else (here and in ``tail``); registering each bank's
            # output apart puts no logic on that path, and its 0 when not chosen (the
            # flip-flops' synchronous reset) leaves an OR of registers instead of a
            # multiplexer to choose the bank.
            read_addr = Signal(range(total))
            word_left = Signal(range(W))
            issue_left = Signal(16)
            reading, read1, read2, last1, last2, last3, feed = (Signal() for _ in range(7))
            m.d.sync += [read1.eq(reading), read2.eq(read1), last1.eq(reading & (word_left == 0)),
                         last2.eq(last1), last3.eq(last2), feed.eq(last3)]
            batch_data, chosen = Signal(K), Const(0, K)
            for b, bank in enumerate(banks):
                port, hit, bank_data = bank.read_port(), Signal(name=f"bank_hit{b}"), Signal(K, name=f"bank_data{b}")
                m.d.comb += port.addr.eq(read_addr[:low_bits])
                m.d.sync += [hit.eq(read_addr[low_bits:] == b), bank_data.eq(Mux(hit, port.data, 0))]
                chosen = chosen | bank_data
            m.d.sync += batch_data.eq(chosen)
            m.d.comb += [shifter.fill_next.eq(read2), shifter.fill_data.eq(batch_data), core.valid.eq(feed)]
            # LOAD: the entry's first word address (`write_addr = index * W`) by shift and add,
            # a bit of the index per clock from the highest, then `words` rotations of the sample
            # register write its words there, the highest first.
            write_addr = Signal(range(total))
            index_left = Signal(index_bits)       # bits of the index still to add, at the top
            steps_left = Signal(range(index_bits + 1))
            copy_left = Signal(range(W + 1))
            for b, bank in enumerate(banks):
                port = bank.write_port()
                m.d.comb += [port.addr.eq(write_addr[:low_bits]), port.data.eq(shifter.top),
                             port.en.eq(shifter.rotating & (write_addr[low_bits:] == b))]
            with m.If(shifter.rotating):
                m.d.sync += write_addr.eq(write_addr + 1)

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
                        m.next = "REPLY"
                    with m.Elif(~f_index):
                        m.d.sync += error(P.ERR_RANGE)
                        m.next = "REPLY"
                    with m.Else():   # (never, without a batch memory: f_index is 0)
                        if depth:
                            m.d.sync += [write_addr.eq(0), index_left.eq(sample_index[:index_bits]),
                                         steps_left.eq(index_bits), copy_left.eq(W)]
                            m.next = "ADDRESS"
                with m.Elif(f_run):
                    with m.If(~f_len2):
                        m.d.sync += error(P.ERR_LENGTH)
                        m.next = "REPLY"
                    with m.Elif(~f_count):
                        m.d.sync += error(P.ERR_RANGE)
                        m.next = "REPLY"
                    with m.Else():   # (never, without a batch memory: f_count is 0)
                        if depth:
                            m.d.sync += [run_count.eq(run_request), read_addr.eq(0), word_left.eq(W - 1),
                                         reading.eq(1), issue_left.eq(run_request), collected.eq(0),
                                         collect_left.eq(run_request), started.eq(0)]
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
            if depth:   # LOAD and RUN need the batch memory; without one, DISPATCH never comes here
                with m.State("ADDRESS"):
                    with m.If(steps_left != 0):
                        m.d.sync += [write_addr.eq((write_addr << 1) + Mux(index_left[-1], W, 0)),
                                     index_left.eq(index_left << 1), steps_left.eq(steps_left - 1)]
                    with m.Else():
                        m.next = "COPY"
                with m.State("COPY"):
                    with m.If(copy_left != 0):
                        m.d.comb += shifter.rotate_next.eq(1)
                        m.d.sync += copy_left.eq(copy_left - 1)
                    with m.Elif(~shifter.rotating):   # the last word is written
                        m.d.sync += reply_sel.eq(R_LOAD)
                        m.next = "REPLY"
                with m.State("RUN"):
                    with m.If(reading):
                        m.d.sync += read_addr.eq(read_addr + 1)
                        with m.If(word_left == 0):
                            m.d.sync += [word_left.eq(W - 1), issue_left.eq(issue_left - 1)]
                            with m.If(issue_left == 1):
                                m.d.sync += reading.eq(0)
                        with m.Else():
                            m.d.sync += word_left.eq(word_left - 1)
                    with m.If(feed & ~started):
                        m.d.sync += [started.eq(1), cycles.eq(1)]
                    with m.Else():
                        m.d.sync += cycles.eq(cycles + 1)
                    with m.If(core.out_valid):
                        m.d.comb += results_w.en.eq(1)
                        m.d.sync += [collected.eq(collected + 1), collect_left.eq(collect_left - 1)]
                        with m.If(collect_left == 1):
                            m.d.sync += [reply_sel.eq(R_RUN), result_cycles.eq(cycles)]
                            m.next = "REPLY"
            with m.State("REPLY"):
                m.d.comb += self.reply.valid.eq(1)
                with m.If(self.reply.ready):
                    m.d.comb += self.request.ready.eq(1)
                    m.next = "IDLE"

        self._replies(m, reply_sel, platform=platform, err_code=err_code, kind=kind, pred_r=pred_r, scores_r=scores_r,
                      result_cycles=result_cycles, sample_index=sample_index, run_count=run_count)

        if depth:
            m.d.comb += [results_w.addr.eq(collected), results_w.data.eq(core.prediction)]
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
                reply.tail_length.eq(tail), reply.length.eq(size + tail)]

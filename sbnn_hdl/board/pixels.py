"""The host interface's side of a streaming core (a conv model,
:class:`~sbnn_hdl.gateware.streaming.StreamingCore`): samples kept pixel by pixel in block RAM
and streamed into the core one pixel per clock (``docs/protocol.md``, "Conv models").

The protocol is the same as for a dense core, byte for byte: a sample arrives as one big-endian
integer, so its *last* pixel comes first. The core needs its pixels in raster order, so no pixel
can go to the core before the sample's last byte is in; instead :class:`PixelShifter` writes each
pixel, as soon as its bits are in, into a pixel memory (one pixel per word, only the bits of a
pixel that the core reads), and :class:`PixelDispatcher` streams the sample from there into the
core, one pixel per clock, when the request has been checked. No register holds a whole sample:
the host's registers are a pixel wide; the sample is in block RAM.

The pixel memory (``batch``) holds ``batch_depth + 1`` samples of ``pixels`` words each: the batch
entries 0 to ``batch_depth - 1`` (entry ``i`` at words ``i*pixels ...``), then the *staging*
sample, into which every request's sample bytes go as they arrive. INFER streams the staging
sample into the core; LOAD, once the frame is checked, copies it into its batch entry (so a LOAD
with a bad CRC changes nothing); RUN streams entries ``0 .. count-1`` back to back, one pixel per
clock, ``image_gap`` idle cycles after each sample.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..gateware.pipeline import delayed
from . import protocol as P
from .dispatch import DP16KD_SHAPES, Dispatcher
from .frames import PayloadByte

__all__ = ["PixelShifter", "PixelDispatcher", "pixel_bank_words"]


def pixel_bank_words(word_bits):
    """Words per bank of the pixel memory: the depth of the deepest ``DP16KD`` shape as wide as
    a word (2,048 x 9 for up to 9 bits; wider words, 512-word banks of blocks side by side), so
    that every block's read has a register of its own to fold into it."""
    return max([d for d, w in DP16KD_SHAPES if w >= word_bits], default=DP16KD_SHAPES[-1][0])


class PixelShifter(wiring.Component):
    """The pixels of a sample from a request's payload, each written into the pixel memory as
    soon as its bits are in.

    The sample is the payload from its first byte, or from its third in a LOAD (after the
    index), ``info.sample_bytes`` big-endian bytes: the first byte's highest ``8 * sample_bytes
    - sample_bits`` bits are padding, then come the last pixel's bits, highest first, and so on
    down to the first pixel's. The bits of each byte are taken one per clock while the next byte
    is on its way (as in :class:`~sbnn_hdl.board.dispatch.SampleShifter`); those of a pixel that
    the core reads (``info.pixel_read_bits``) are shifted into a word of ``info.word_bits``
    bits, which is written at ``base + p`` for pixel ``p`` on the clock after its last bit.

    Parameters
    ----------
    info : StreamCoreInfo
    base : int
        The pixel memory's word of the sample's first pixel.

    Ports
    -----
    payload : In(stream.Signature(PayloadByte))
        The payload bytes of the request being received. A byte is taken only when the bits of
        the previous one are all in (``busy`` low). Bytes after the sample are taken and ignored.
    prefix : Out(16)
        The payload's first two bytes, big-endian (a LOAD's index, a RUN's count).
    write_en, write_addr, write_data : Out
        A write of the pixel memory: word ``write_addr`` (pixel ``write_addr - base``) is
        ``write_data``, bit ``n`` of it bit ``info.pixel_read_bits[n]`` of the pixel.
    busy : Out(1)
        Bits of a taken byte are still to go, or a pixel still to be written.
    """

    def __init__(self, info, *, base):
        self.info, self.base = info, base
        super().__init__({"payload": In(stream.Signature(PayloadByte)), "prefix": Out(16),
                          "write_en": Out(1), "write_addr": Out(range(base + info.pixels)),
                          "write_data": Out(info.word_bits), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        info = self.info
        S, N, B = info.sample_bytes, info.pixels, info.pixel_bits
        pad = 8 * S - info.sample_bits
        byte = self.payload.payload

        prefix_taken, taken_before = Signal(range(3)), Signal(range(3))
        sample_byte, sample_before = Signal(range(S + 1)), Signal(range(S + 1))   # sample bytes taken
        m.d.comb += [taken_before.eq(Mux(byte.first, 0, prefix_taken)),
                     sample_before.eq(Mux(byte.first, 0, sample_byte))]
        cur_byte, bits_left = Signal(8), Signal(range(9))
        skip = Signal(range(8))                 # padding bits still to skip
        position = Signal(range(max(B, 2)))     # the pixel bit that the next sample bit is
        address = Signal.like(self.write_addr)  # where the pixel being assembled goes
        word = self.write_data
        m.d.comb += [self.busy.eq((bits_left != 0) | self.write_en), self.payload.ready.eq(~self.busy)]

        with m.If(self.payload.valid & self.payload.ready):
            m.d.sync += [prefix_taken.eq(taken_before), sample_byte.eq(sample_before)]
            with m.If(taken_before != 2):
                m.d.sync += [self.prefix.eq(Cat(byte.data, self.prefix[:8])), prefix_taken.eq(taken_before + 1)]
            with m.If(~((byte.kind == P.LOAD) & (taken_before != 2)) & (sample_before != S)):
                m.d.sync += [cur_byte.eq(byte.data), bits_left.eq(8), sample_byte.eq(sample_before + 1)]
                with m.If(sample_before == 0):   # the sample's first byte: its last pixel's bits come first
                    m.d.sync += [skip.eq(pad), position.eq(B - 1), address.eq(self.base + N - 1)]

        read = sum(1 << b for b in info.pixel_read_bits)
        bit = cur_byte[7]
        m.d.sync += self.write_en.eq(0)
        with m.If(bits_left != 0):
            m.d.sync += [cur_byte.eq(cur_byte << 1), bits_left.eq(bits_left - 1)]
            with m.If(skip != 0):
                m.d.sync += skip.eq(skip - 1)
            with m.Else():
                if read:
                    # Highest bit first: the lowest read bit of the pixel ends in bit 0.
                    with m.If(Const(read, B).bit_select(position, 1)):
                        m.d.sync += word.eq(Cat(bit, word[:-1]))
                with m.If(position == 0):
                    m.d.sync += [position.eq(B - 1), self.write_en.eq(1), self.write_addr.eq(address),
                                 address.eq(address - 1)]
                with m.Else():
                    m.d.sync += position.eq(position - 1)
        return m


def _times(m, value, factor, name):
    """``value * factor`` (``factor`` a constant) as a sum of shifted copies of ``value``, added
    in a tree with a register after each level: correct ``ceil(log2(ones of factor))`` clocks
    after ``value`` settles (a LOAD's index settles long before its frame ends)."""
    terms = [value << k for k in range(factor.bit_length()) if factor >> k & 1] or [Const(0, 1)]
    level = 0
    while len(terms) > 1:
        summed = []
        for n in range(0, len(terms), 2):
            part = terms[n] + terms[n + 1] if n + 1 < len(terms) else terms[n]
            reg = Signal(len(part), name=f"{name}_l{level}_{n // 2}")
            m.d.sync += reg.eq(part)
            summed.append(reg)
        terms, level = summed, level + 1
    return terms[0]


class PixelDispatcher(Dispatcher):
    """Serves requests (INFO, INFER, INFER_SCORES, LOAD, RUN) on a streaming core, with the
    samples in a pixel memory (the module's description); what it replies is exactly what
    :class:`~sbnn_hdl.board.dispatch.Dispatcher` replies, and its ports are the same, with the
    core's ``pixel`` port for ``sample``.

    ``cycles`` in an INFER reply count from the clock on which the sample's last pixel entered
    the core to the one on which its result came out: the core's ``latency``. In a RUN reply,
    from the first sample's last pixel to the last result: ``(count - 1) * (pixels + image_gap)
    + latency``, so ``(count - 1) / (cycles - latency)`` is the core's throughput in samples
    per clock, as for a dense core. ``batch_depth`` 0: the pixel memory holds the staging sample
    only, and LOAD and RUN are answered "out of range".

    Latency: ``reply`` is valid ``pixels + 2 + read_latency + latency`` clocks after
    ``request.valid`` rises (or after the sample's last pixel is written, if later) for INFER,
    ``pixels + 2 + read_latency`` for LOAD, ``count * (pixels + image_gap) - image_gap + 2 +
    read_latency + latency`` for RUN, 2 for the rest. ``read_latency`` is the pixel memory's:
    2 clocks (the block RAM and its output register) and one per level of 4:1 selection between
    its banks (:func:`pixel_bank_words`).
    """

    #: The memories whose read data is never used in a cycle that writes them (the pixel memory
    #: is read only to stream a sample into the core or into a batch entry, and written only by
    #: the sample bytes of a request or by that copy, at another address).
    NO_COLLISIONS = Dispatcher.NO_COLLISIONS

    def __init__(self, info, *, info_payload, batch_depth, info_clock=None, bank_words=None):
        if not info.streaming:
            raise ValueError("PixelDispatcher: expected a streaming core's StreamCoreInfo, found a CoreInfo")
        # (Not ``bank_words``: the dense dispatcher's attribute, which its __init__ sets.)
        self.bank_size = pixel_bank_words(info.word_bits) if bank_words is None else bank_words
        if self.bank_size < 1 or self.bank_size & (self.bank_size - 1):
            raise ValueError(f"bank_words: expected a power of 2, found {self.bank_size}")
        banks, self.read_latency = -(-(batch_depth + 1) * info.pixels // self.bank_size), 2
        while banks > 1:   # the levels of 4:1 selection
            banks, self.read_latency = -(-banks // 4), self.read_latency + 1
        super().__init__(info, info_payload=info_payload, batch_depth=batch_depth, info_clock=info_clock)

    def elaborate(self, platform):
        m = Module()
        info, depth = self.info, self.batch_depth
        N, gap_cycles = info.pixels, info.image_gap
        core, request = self.core, self.request.payload
        staging, words = depth * N, (depth + 1) * N

        m.submodules.shifter = shifter = PixelShifter(info, base=staging)
        wiring.connect(m, wiring.flipped(self.payload), shifter.payload)
        sample_index, run_request = shifter.prefix, shifter.prefix

        # The pixel memory, in banks of one block RAM each (named as in NO_COLLISIONS).
        size = self.bank_size
        banks, low = [], (size - 1).bit_length()
        for b in range(-(-words // size)):
            m.submodules[f"batch{b}"] = bank = Memory(shape=unsigned(info.word_bits), init=[],
                                                      depth=min(size, words - b * size))
            banks.append(bank)
        # A write reaches its bank a clock later, from registers: the bank's own enable (decoded
        # before the register) and the shared address and data, so that the route to a bank
        # across the chip is all the clock holds (the 100 MHz build's critical path otherwise).
        write_en, write_addr, write_data = Signal(), Signal(range(words)), Signal(info.word_bits)
        bank_addr = Signal(max(low, 1), name="bank_write_addr", reset_less=True)
        bank_data = Signal(info.word_bits, name="bank_write_data", reset_less=True)
        m.d.sync += [bank_addr.eq(write_addr[:low]), bank_data.eq(write_data)]
        for b, bank in enumerate(banks):
            port, enable = bank.write_port(), Signal(name=f"bank_write{b}")
            m.d.sync += enable.eq(write_en & (write_addr[low:] == b))
            m.d.comb += [port.addr.eq(bank_addr), port.data.eq(bank_data), port.en.eq(enable)]
        if depth:
            m.submodules.results = results = Memory(shape=unsigned(8), depth=depth, init=[])
            results_w, results_r = results.write_port(), results.read_port()

        # The stream out of the pixel memory: ``read_addr`` is read on every clock on which
        # ``issue`` is high; ``images_left`` samples of ``N`` pixels, ``gap_cycles`` idle clocks
        # after each.
        read_addr = Signal(range(words))
        pixel_n = Signal(range(N))           # the pixel of its sample that read_addr holds
        gap = Signal(range(gap_cycles + 1))  # idle clocks still to wait
        images_left = Signal(16)
        issuing = Signal()
        issue = Signal()
        issue_last = Signal()                # issue of a sample's last pixel
        m.d.comb += [issue.eq(issuing & (gap == 0)), issue_last.eq(issue & (pixel_n == N - 1))]
        with m.If(issue):
            m.d.sync += [read_addr.eq(read_addr + 1), pixel_n.eq(Mux(issue_last, 0, pixel_n + 1))]
            with m.If(issue_last):
                m.d.sync += [images_left.eq(images_left - 1), gap.eq(gap_cycles)]
                with m.If(images_left == 1):
                    m.d.sync += issuing.eq(0)
        with m.Elif(gap != 0):
            m.d.sync += gap.eq(gap - 1)

        def start(address, count):
            return [read_addr.eq(address), pixel_n.eq(0), gap.eq(0), images_left.eq(count), issuing.eq(1)]

        # Block RAM outputs are slow on ECP5 (docs/boards.md): each bank's word is registered
        # (a plain register, which sbnn_hdl.outreg folds into the block RAM), then chosen by a
        # tree of registered 4:1 selections, so that no clock carries both a route from a block
        # RAM across the chip and a wide multiplexer (one memory of 115 cascaded blocks held the
        # shipped CNN's 85F build to 66.5 MHz). ``pixel_valid``/``pixel_last`` go with
        # ``pixel_data``, ``self.read_latency`` clocks after the read was issued.
        level, bank = [], read_addr[low:]
        for b, memory in enumerate(banks):
            port = memory.read_port()
            word = Signal(info.word_bits, name=f"bank_word{b}", reset_less=True)
            m.d.comb += port.addr.eq(read_addr[:low])
            m.d.sync += word.eq(port.data)
            level.append(word)
        unused = {"register_bits": 0}   # (the host keeps no resource figures)
        bank, levels = delayed(m, bank, 2, "bank", unused), 0
        while len(level) > 1:
            chosen = []
            for g in range(0, len(level), 4):
                group, word = level[g:g + 4], Signal(info.word_bits, name=f"pixel_word{len(level)}_{g // 4}",
                                                     reset_less=True)
                m.d.sync += word.eq(Array(group)[bank[:2]] if len(group) > 1 else group[0])
                chosen.append(word)
            level, bank, levels = chosen, delayed(m, bank[2:], 1, f"bank{levels + 1}", unused), levels + 1
        assert 2 + levels == self.read_latency
        pixel_data = level[0]
        pixel_valid = delayed(m, issue, self.read_latency, "pixel_valid", unused)
        pixel_last = delayed(m, issue_last, self.read_latency, "pixel_last", unused)
        pixel_wires = [Const(0, 1)] * info.pixel_bits   # the bits the core does not read: 0
        for n, bit in enumerate(info.pixel_read_bits):
            pixel_wires[bit] = pixel_data[n]
        m.d.comb += core.pixel.eq(Cat(*pixel_wires))

        reply_sel = Signal(range(6))
        err_code = Signal(8)
        pred_r = Signal(8)
        scores_r = Signal(info.classes * info.score_width)
        result_cycles = Signal(32)
        cycles = Signal(32)
        started = Signal()        # the first sample's last pixel has entered the core
        run_mode = Signal()       # a RUN (results to the results memory), not an INFER
        run_count = Signal(16)
        collected = Signal(16)    # results written back in a RUN
        collect_left = Signal(16)
        copying = Signal()
        copy_addr = Signal(range(words))
        load_base = _times(m, sample_index, N, "load_base") if depth else None

        def error(code):
            return [reply_sel.eq(self.R_ERROR), err_code.eq(code)]

        kind = request.kind
        f_ok, f_info, f_infer, f_load, f_run, f_len0, f_len_sample, f_len_load, f_len2, f_index, f_count = \
            self._flags(m, sample_index, run_request)

        with m.FSM(name="dispatcher") as fsm:
            with m.State("IDLE"):
                with m.If(self.request.valid & ~shifter.busy):   # and the sample's last pixel is written
                    m.next = "DISPATCH"
            with m.State("DISPATCH"):
                with m.If(~f_ok):
                    m.d.sync += error(request.error)
                    m.next = "REPLY"
                with m.Elif(f_info):
                    m.d.sync += [reply_sel.eq(Mux(f_len0, self.R_INFO, self.R_ERROR)), err_code.eq(P.ERR_LENGTH)]
                    m.next = "REPLY"
                with m.Elif(f_infer):
                    with m.If(f_len_sample):
                        m.d.sync += [*start(staging, 1), run_mode.eq(0), collect_left.eq(1), started.eq(0)]
                        m.next = "STREAM"
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
                            m.d.sync += [*start(staging, 1), copy_addr.eq(load_base)]
                            m.next = "COPY"
                with m.Elif(f_run):
                    with m.If(~f_len2):
                        m.d.sync += error(P.ERR_LENGTH)
                        m.next = "REPLY"
                    with m.Elif(~f_count):
                        m.d.sync += error(P.ERR_RANGE)
                        m.next = "REPLY"
                    with m.Else():   # (never, without a batch memory: f_count is 0)
                        if depth:
                            m.d.sync += [*start(0, run_request), run_mode.eq(1), run_count.eq(run_request),
                                         collected.eq(0), collect_left.eq(run_request), started.eq(0)]
                            m.next = "STREAM"
                with m.Else():
                    m.d.sync += error(P.ERR_TYPE)
                    m.next = "REPLY"
            with m.State("STREAM"):
                m.d.comb += core.valid.eq(pixel_valid)
                with m.If(pixel_valid & pixel_last & ~started):
                    m.d.sync += [started.eq(1), cycles.eq(1)]
                with m.Else():
                    m.d.sync += cycles.eq(cycles + 1)
                with m.If(core.out_valid):
                    if depth:
                        m.d.comb += results_w.en.eq(run_mode)
                    m.d.sync += [collected.eq(collected + 1), collect_left.eq(collect_left - 1)]
                    with m.If(collect_left == 1):
                        m.d.sync += [pred_r.eq(core.prediction), result_cycles.eq(cycles),
                                     reply_sel.eq(Mux(run_mode, self.R_RUN,
                                                      Mux(kind == P.INFER_SCORES, self.R_SCORES, self.R_INFER)))]
                        if info.score_width:
                            m.d.sync += scores_r.eq(core.scores.as_value())
                        m.next = "REPLY"
            if depth:   # LOAD needs the batch memory; without one, DISPATCH never comes here
                with m.State("COPY"):
                    # The staging sample, as it is streamed out, into batch entry ``sample_index``.
                    m.d.comb += copying.eq(pixel_valid)
                    with m.If(pixel_valid):
                        m.d.sync += copy_addr.eq(copy_addr + 1)
                        with m.If(pixel_last):
                            m.d.sync += reply_sel.eq(self.R_LOAD)
                            m.next = "REPLY"
            with m.State("REPLY"):
                m.d.comb += self.reply.valid.eq(1)
                with m.If(self.reply.ready):
                    m.d.comb += self.request.ready.eq(1)
                    m.next = "IDLE"

        self._replies(m, reply_sel, platform=platform, err_code=err_code, kind=kind, pred_r=pred_r, scores_r=scores_r,
                      result_cycles=result_cycles, sample_index=sample_index, run_count=run_count)

        # The shifter writes while a request arrives, the copy while a LOAD is served: never both.
        m.d.comb += [write_en.eq(shifter.write_en | copying),
                     write_addr.eq(Mux(copying, copy_addr, shifter.write_addr)),
                     write_data.eq(Mux(copying, pixel_data, shifter.write_data))]
        if depth:
            m.d.comb += [results_w.addr.eq(collected), results_w.data.eq(core.prediction)]
            self._tail(m, fsm, results_r)
        return m

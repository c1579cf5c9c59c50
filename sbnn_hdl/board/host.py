"""The host interface of a board build: UART, protocol engine, batch memory and cycle counters
around a network core (``docs/protocol.md``).

Everything runs in one clock domain (``sync``, the core's clock): the UART divides that clock,
so there is no clock-domain crossing; the only asynchronous input, the UART's ``rx`` pin, goes
through a two-flip-flop synchroniser inside :class:`~sbnn_hdl.board.uart.UARTRx`.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.crc import catalog
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import protocol as P
from .uart import UARTRx, UARTTx

__all__ = ["CoreInfo", "HostInterface", "core_signature"]


class CoreInfo:
    """What the host interface needs to know about a core (from a generation report).

    ``sample_bits`` (the ``sample`` port's width), ``classes``, ``score_width`` (0 without a
    ``scores`` port), ``latency``, ``prediction_width``, and ``read_bits``: the bits of
    ``sample`` the core reads, ascending (default: all of them).
    """

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
        """From a :class:`~sbnn_hdl.gateware.NetworkCore` (for simulation)."""
        return cls(sample_bits=len(core.sample), classes=core.output.classes,
                   score_width=core.output.score_width if core.with_scores else 0, latency=core.latency,
                   prediction_width=len(core.prediction), read_bits=core.read_bits)

    @property
    def sample_bytes(self):
        return (self.sample_bits + 7) // 8

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


def core_signature(info):
    """The signature of a :class:`~sbnn_hdl.gateware.NetworkCore` described by ``info``."""
    ports = {"sample": In(unsigned(info.sample_bits)), "valid": In(1),
             "prediction": Out(unsigned(info.prediction_width)), "out_valid": Out(1)}
    if info.score_width:
        ports["scores"] = Out(data.ArrayLayout(signed(info.score_width), info.classes))
    return wiring.Signature(ports)


class HostInterface(wiring.Component):
    """Serves the protocol of ``docs/protocol.md`` on a UART for ``core``.

    Of each sample that arrives, only the bits the core reads (``info.read_bits``) are kept, one
    bit per clock while the next byte is on its way: the payload register and each batch memory
    entry hold ``info.feature_bits`` bits, not the whole sample (a model that reads 3 of the 8
    bit planes of a pixel needs 3/8 of the flip-flops and memory).

    Parameters
    ----------
    core : wiring.Component
        A network core (or a stand-in with the same ports, such as an ``Instance`` wrapper);
        it becomes a submodule.
    info : CoreInfo
    divisor : int
        Clocks per UART bit (``clock / baud``, rounded).
    clock_hz, baud : int
        Reported by the INFO request (the host converts cycles to time with ``clock_hz``).
    digest : bytes
        8 bytes identifying the model (:func:`sbnn_hdl.board.protocol.model_digest`).
    name : str
        The model's name (at most 32 ASCII characters are reported).
    batch_depth : int
        Samples the on-chip batch memory holds (LOAD and RUN). 0 builds no batch memory: LOAD
        and RUN are answered "out of range", and the core reads its sample straight from the
        shift register that assembles it (no block RAMs, and no multiplexer in front of the core:
        the 85% Fashion-MNIST model's board build routes without them and did not with them;
        docs/results.md).
    timeout : int
        Clocks without a byte after which a partial request frame is abandoned (and an error
        reply sent): nothing the host sends can leave the engine waiting forever.

    Ports
    -----
    rx : In(1), tx : Out(1)
        The UART lines (``rx`` may come straight from a pin).
    busy : Out(1)
        High while a request is being served (for an LED).
    """

    #: The memories whose read data is never used in a cycle that writes them (LOAD writes the
    #: batch memory and RUN reads it; RUN writes the results and its reply reads them; each in
    #: its own state): what a read returns when it meets a write to the same address does not
    #: matter, and the board build tells yosys so (:func:`sbnn_hdl.board.build.yosys_after_read`).
    #: Amaranth 0.5 cannot say it, and without it yosys emulates read-first behaviour for the
    #: batch memory with two registers and a multiplexer as wide as a sample.
    NO_COLLISIONS = ("batch", "results")

    def __init__(self, core, info, *, divisor, clock_hz, baud, digest, name, batch_depth=256,
                 timeout=1_000_000):
        if info.classes > 256:
            self._MustUse__silence = True   # refused, so never meant to be elaborated: no warning
            raise ValueError(f"host interface: expected at most 256 classes (one byte per prediction), "
                             f"found {info.classes}")
        self.core, self.info = core, info
        self.divisor, self.clock_hz, self.baud = divisor, clock_hz, baud
        self.digest, self.name = bytes(digest), name
        self.batch_depth, self.timeout = batch_depth, timeout
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1)})

    # Payload layouts (big-endian integers, first byte most significant).

    def info_payload(self):
        return P.Info(P.VERSION, bool(self.info.score_width), self.info.sample_bits, self.info.sample_bytes,
                      self.info.classes, self.info.score_width, self.info.latency, self.clock_hz, self.baud,
                      self.batch_depth, self.digest, self.name).encode()

    def elaborate(self, platform):
        m = Module()
        info = self.info
        S = info.sample_bytes
        score_bytes = (info.score_width + 7) // 8
        max_request = S + 2
        info_bytes = self.info_payload()
        max_reply = max(len(info_bytes), 5 + info.classes * score_bytes, 6, 2)

        m.submodules.core = core = self.core
        m.submodules.uart_rx = rx = UARTRx(self.divisor)
        m.submodules.uart_tx = tx = UARTTx(self.divisor)
        # Bytes that arrive while a reply is going out wait here (the host may send the next
        # request before the reply has ended).
        m.submodules.rx_fifo = fifo = SyncFIFO(width=8, depth=64)
        m.submodules.crc_rx = crc_rx = catalog.CRC16_IBM_3740(data_width=8).create()
        m.submodules.crc_tx = crc_tx = catalog.CRC16_IBM_3740(data_width=8).create()
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx),
                     fifo.w_data.eq(rx.data.payload), fifo.w_en.eq(rx.data.valid)]
        overflow = Signal(16)  # bytes lost to a full FIFO (only visible in simulation)
        with m.If(rx.data.valid & ~fifo.w_rdy):
            m.d.sync += overflow.eq(overflow + 1)

        # --- sample bits: each arriving sample byte's read bits, shifted in one per clock -------
        F = info.feature_bits
        features = Signal(F)       # the read bits of the sample, bit n = info.read_bits[n]
        m.submodules.masks = masks = Memory(shape=unsigned(8), depth=S, init=info.byte_masks())
        mask_r = masks.read_port()
        sample_byte = Signal(range(S + 1))   # the sample byte being received
        cur_byte, cur_mask = Signal(8), Signal(8)
        loading = Signal()         # the mask of cur_byte arrives from the mask memory
        # The shift register's enable reaches every one of its F flip-flops, which sit beside
        # the core's first layer all over the chip: it comes straight from a register (with the
        # bit it shifts in), one clock after the mask says so. Decoded from the mask by a LUT,
        # it set the board build's clock (60.3 MHz, 9.9 ns of its 16.6 ns in that one net).
        shift_en, shift_bit = Signal(), Signal()
        shifting = Signal()        # bits of cur_byte still to go into ``features``
        m.d.comb += [mask_r.addr.eq(sample_byte), shifting.eq(loading | (cur_mask != 0) | shift_en)]
        m.d.sync += shift_en.eq(0)
        with m.If(loading):
            m.d.sync += [cur_mask.eq(mask_r.data), loading.eq(0)]
        with m.Elif(cur_mask != 0):
            # Highest bit first: the bits enter in descending order, so the lowest ends in bit 0.
            m.d.sync += [cur_mask.eq(cur_mask << 1), cur_byte.eq(cur_byte << 1)]
            with m.If(cur_mask[7]):
                m.d.sync += [shift_en.eq(1), shift_bit.eq(cur_byte[7])]
        with m.If(shift_en):
            m.d.sync += features.eq(Cat(shift_bit, features[:-1]))

        depth = self.batch_depth
        if depth:
            # Named as in NO_COLLISIONS.
            m.submodules.batch = batch = Memory(shape=unsigned(F), depth=depth, init=[])
            m.submodules.results = results = Memory(shape=unsigned(8), depth=depth, init=[])
            batch_w, batch_r = batch.write_port(), batch.read_port()
            results_w, results_r = results.write_port(), results.read_port()

        # --- request parser ---------------------------------------------------------------
        kind = Signal(8)
        length = Signal(16)
        count = Signal(16)         # payload bytes still to come
        prefix = Signal(16)        # the payload's first two bytes, big-endian (LOAD index, RUN count)
        prefix_taken = Signal(range(3))
        after_index = Signal()     # a LOAD: the sample starts after the two index bytes
        idle_timer = Signal(range(self.timeout + 1))
        # The parser reads a registered copy of the FIFO's head (``byte`` valid when ``have``):
        # the FIFO's memory read stays out of the parser's decisions, which feed the wide reply
        # register's enables (that path set the first working build's fmax at 94 MHz).
        byte = Signal(8)
        have = Signal()
        take = Signal()
        m.d.comb += fifo.r_en.eq(~have | take)
        with m.If(~have | take):
            m.d.sync += [have.eq(fifo.r_rdy), byte.eq(fifo.r_data)]
        m.d.comb += [crc_rx.data.eq(byte)]

        # --- reply sender ------------------------------------------------------------------
        # Everything the sender decides is a counter compared with zero or a shift: no wide
        # arithmetic between registers (an earlier version indexed the frame by a byte position
        # and missed 125 MHz on the ULX3S through its subtractions and comparisons).
        head = 5 + max_reply
        reply_buf = Signal(8 * head)                 # sync, type, length, fixed payload; next byte on top
        fixed_left = Signal(range(head + 1))         # bytes still to send from reply_buf
        mem_left = Signal(16)                        # then bytes from the result memory
        mem_addr = Signal(16)
        crc_left = Signal(2)                         # then the two CRC bytes
        lead = Signal(2)                             # sync bytes sent (the CRC starts after them)
        out_byte = Signal(8)
        out_crc = Signal()                           # out_byte counts in the CRC
        out_last = Signal()

        # --- core and counters -------------------------------------------------------------
        cycles = Signal(32)
        sample_from_batch = Signal()
        issue = Signal(16)        # next batch entry to read
        issuing = Signal()
        run_count = Signal(16)
        collected = Signal(16)    # predictions written back in a RUN
        issue_left = Signal(16)   # down-counters: compared with 1, not with run_count
        collect_left = Signal(16)
        started = Signal()
        # Block RAM outputs are slow on ECP5 (yosys maps them without the output register:
        # 5.8 ns from clock to data on speed grade 6), so every memory read is registered
        # before it goes anywhere else.
        mem_byte = Signal(8)
        # A signal, not an expression: each slice of a Mux expression would be a whole Mux of
        # its own in RTLIL (2,352 multiplexers of 2,352 bits, and 50 minutes of synthesis).
        selected = Signal(F)
        if depth:
            batch_data = Signal(F)
            m.d.sync += batch_data.eq(batch_r.data)
            m.d.comb += selected.eq(Mux(sample_from_batch, batch_data, features))
        else:
            # Without a batch memory the core reads the shift register itself: no multiplexer,
            # and no wires from block RAMs to the core's first layer.
            m.d.comb += selected.eq(features)
        sample_wires = [Const(0, 1)] * info.sample_bits   # the bits the core does not read: 0
        for n, bit in enumerate(info.read_bits):
            sample_wires[bit] = selected[n]
        m.d.comb += core.sample.eq(Cat(*sample_wires))
        sample_index, run_request = prefix, prefix   # what the prefix is, for a LOAD and a RUN
        if depth:
            m.d.comb += [batch_w.addr.eq(sample_index), batch_w.data.eq(features),
                         batch_r.addr.eq(issue), batch_r.en.eq(1),
                         results_w.addr.eq(collected), results_w.data.eq(core.prediction),
                         results_r.en.eq(1), results_r.addr.eq(mem_addr)]

        def reply(kind_value, payload, memory=None):
            """Statements that start a reply: ``payload`` is a list of (value, bytes) fields, each
            sent as a big-endian integer of that many bytes (signed values sign-extended)."""
            size = sum(n for _, n in payload)
            length_value = size if memory is None else size + memory
            header = [(P.SYNC[0], 1), (P.SYNC[1], 1), (kind_value, 1), (length_value, 2)]
            parts = []
            for value, n in reversed(header + payload):
                value = Const(value, 8 * n) if isinstance(value, int) else Value.cast(value)
                extra = 8 * n - len(value)
                if extra > 0:
                    fill = value[-1].replicate(extra) if value.shape().signed else Const(0, extra)
                    value = Cat(value, fill)
                parts.append(value.as_unsigned()[:8 * n])
            if size < max_reply:
                parts.insert(0, Const(0, 8 * (max_reply - size)))
            return [reply_buf.eq(Cat(*parts)), fixed_left.eq(5 + size), mem_left.eq(0 if memory is None else memory),
                    mem_addr.eq(0), crc_left.eq(2), lead.eq(0)]

        # Replies are composed in two steps: the engine's decision only sets ``reply_sel`` (and
        # captures what the reply carries); the COMPOSE state then loads ``reply_buf`` from it.
        # That keeps the decision logic (CRC check, type and length comparisons) away from the
        # enables of the wide reply register.
        R_INFO, R_INFER, R_SCORES, R_LOAD, R_RUN, R_ERROR = range(6)
        reply_sel = Signal(range(6))
        err_code = Signal(8)
        pred_r = Signal(8)
        scores_r = Signal(info.classes * info.score_width)
        result_cycles = Signal(32)
        f_crc, f_info, f_infer, f_load, f_run = Signal(), Signal(), Signal(), Signal(), Signal()
        f_len0, f_len_sample, f_len_load, f_len2, f_index, f_count = (Signal() for _ in range(6))

        def error(code):
            return [reply_sel.eq(R_ERROR), err_code.eq(code)]

        in_frame = Signal()
        timed_out = Signal()     # registered: idle_timer reached the timeout

        def frame_timeout():
            # Called inside a frame state's Elif: abandon the partial frame.
            m.d.sync += error(P.ERR_TIMEOUT)
            m.next = "COMPOSE"

        with m.FSM(name="engine") as fsm:
            m.d.comb += in_frame.eq(fsm.ongoing("TYPE") | fsm.ongoing("LEN_H") | fsm.ongoing("LEN_L") |
                                    fsm.ongoing("PAYLOAD") | fsm.ongoing("CRC_H") | fsm.ongoing("CRC_L"))
            with m.State("IDLE"):
                # Every reply is sent after the engine has been here: its CRC starts afresh.
                m.d.comb += [take.eq(have), crc_tx.start.eq(1)]
                with m.If(have & (byte == P.SYNC[0])):
                    m.next = "SYNC"
            with m.State("SYNC"):
                m.d.comb += take.eq(have)
                with m.If(have):
                    with m.If(byte == P.SYNC[1]):
                        m.d.sync += kind.eq(0)
                        m.next = "TYPE"
                    with m.Elif(byte != P.SYNC[0]):
                        m.next = "IDLE"
            with m.State("TYPE"):
                m.d.comb += [take.eq(have), crc_rx.valid.eq(have), crc_rx.start.eq(1)]
                with m.If(have):
                    m.d.sync += kind.eq(byte)
                    m.next = "LEN_H"
                with m.Elif(timed_out):
                    frame_timeout()
            with m.State("LEN_H"):
                m.d.comb += [take.eq(have), crc_rx.valid.eq(have)]
                with m.If(have):
                    m.d.sync += length[8:].eq(byte)
                    m.next = "LEN_L"
                with m.Elif(timed_out):
                    frame_timeout()
            with m.State("LEN_L"):
                m.d.comb += [take.eq(have), crc_rx.valid.eq(have)]
                with m.If(have):
                    m.d.sync += [length[:8].eq(byte), count.eq(Cat(byte, length[8:16])), prefix_taken.eq(0),
                                 sample_byte.eq(0), after_index.eq(kind == P.LOAD)]
                    m.next = "LENGTH"
                with m.Elif(timed_out):
                    frame_timeout()
            with m.State("LENGTH"):
                with m.If(length > max_request):
                    # Too long for any request: say so now rather than wait for its end.
                    m.d.sync += error(P.ERR_LENGTH)
                    m.next = "COMPOSE"
                with m.Elif(length == 0):
                    m.next = "CRC_H"
                with m.Else():
                    m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                # A byte is taken once the previous one's bits are in (at most 10 clocks; a byte
                # takes 10 UART bits of at least 4 clocks to arrive).
                m.d.comb += [take.eq(have & ~shifting), crc_rx.valid.eq(have & ~shifting)]
                with m.If(have & ~shifting):
                    m.d.sync += count.eq(count - 1)
                    with m.If(prefix_taken != 2):
                        m.d.sync += [prefix.eq(Cat(byte, prefix[:8])), prefix_taken.eq(prefix_taken + 1)]
                    with m.If(~(after_index & (prefix_taken != 2)) & (sample_byte != S)):
                        m.d.sync += [cur_byte.eq(byte), loading.eq(1), sample_byte.eq(sample_byte + 1)]
                    with m.If(count == 1):
                        m.next = "CRC_H"
                with m.Elif(timed_out):
                    frame_timeout()
            with m.State("CRC_H"):
                m.d.comb += [take.eq(have), crc_rx.valid.eq(have)]
                with m.If(have):
                    m.next = "CRC_L"
                with m.Elif(timed_out):
                    frame_timeout()
            with m.State("CRC_L"):
                m.d.comb += [take.eq(have), crc_rx.valid.eq(have)]
                with m.If(have):
                    m.next = "CHECK"
                with m.Elif(timed_out):
                    frame_timeout()
            with m.State("CHECK"):
                # The CRC register has taken the last byte: a whole frame leaves the residue 0.
                # Every test the dispatch needs is registered here, so that DISPATCH decides
                # from single bits.
                m.d.sync += [f_crc.eq(crc_rx.match_detected),
                             f_info.eq(kind == P.INFO), f_load.eq(kind == P.LOAD), f_run.eq(kind == P.RUN),
                             f_infer.eq((kind == P.INFER) | ((kind == P.INFER_SCORES) & bool(info.score_width))),
                             f_len0.eq(length == 0), f_len_sample.eq(length == S), f_len_load.eq(length == S + 2),
                             f_len2.eq(length == 2), f_index.eq(sample_index < depth),
                             f_count.eq((run_request != 0) & (run_request <= depth))]
                with m.If(~shifting):   # the last sample byte's bits are in
                    m.next = "DISPATCH"
            with m.State("DISPATCH"):
                with m.If(~f_crc):
                    m.d.sync += error(P.ERR_CRC)
                    m.next = "COMPOSE"
                with m.Elif(f_info):
                    m.d.sync += reply_sel.eq(Mux(f_len0, R_INFO, R_ERROR))
                    m.d.sync += err_code.eq(P.ERR_LENGTH)
                    m.next = "COMPOSE"
                with m.Elif(f_infer):
                    with m.If(f_len_sample):
                        m.d.comb += core.valid.eq(1)
                        m.d.sync += cycles.eq(1)
                        m.next = "INFER"
                    with m.Else():
                        m.d.sync += error(P.ERR_LENGTH)
                        m.next = "COMPOSE"
                with m.Elif(f_load):
                    with m.If(~f_len_load):
                        m.d.sync += error(P.ERR_LENGTH)
                    with m.Elif(~f_index):
                        m.d.sync += error(P.ERR_RANGE)
                    with m.Else():   # (never, without a batch memory: f_index is 0)
                        if depth:
                            m.d.comb += batch_w.en.eq(1)
                        m.d.sync += reply_sel.eq(R_LOAD)
                    m.next = "COMPOSE"
                with m.Elif(f_run):
                    with m.If(~f_len2):
                        m.d.sync += error(P.ERR_LENGTH)
                        m.next = "COMPOSE"
                    with m.Elif(~f_count):
                        m.d.sync += error(P.ERR_RANGE)
                        m.next = "COMPOSE"
                    with m.Else():   # (never, without a batch memory: f_count is 0)
                        if depth:
                            m.d.sync += [run_count.eq(run_request), issue.eq(0), issuing.eq(1), collected.eq(0),
                                         issue_left.eq(run_request), collect_left.eq(run_request),
                                         started.eq(0), sample_from_batch.eq(1)]
                            m.next = "RUN"
                with m.Else():
                    m.d.sync += error(P.ERR_TYPE)
                    m.next = "COMPOSE"
            with m.State("INFER"):
                m.d.sync += cycles.eq(cycles + 1)
                with m.If(core.out_valid):
                    m.d.sync += [pred_r.eq(core.prediction), result_cycles.eq(cycles),
                                 reply_sel.eq(Mux(kind == P.INFER_SCORES, R_SCORES, R_INFER))]
                    if info.score_width:
                        m.d.sync += scores_r.eq(core.scores.as_value())
                    m.next = "COMPOSE"
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
                            m.next = "COMPOSE"
            with m.State("COMPOSE"):
                with m.Switch(reply_sel):
                    with m.Case(R_INFO):
                        m.d.sync += reply(P.INFO | 0x80, [(int.from_bytes(info_bytes, "big"), len(info_bytes))])
                    with m.Case(R_INFER):
                        m.d.sync += reply(P.INFER | 0x80, [(pred_r, 1), (result_cycles, 4)])
                    with m.Case(R_SCORES):
                        w = info.score_width
                        scores = [(scores_r[j * w:(j + 1) * w].as_signed(), score_bytes) for j in range(info.classes)] \
                            if w else []
                        m.d.sync += reply(P.INFER_SCORES | 0x80, [(pred_r, 1), (result_cycles, 4)] + scores)
                    with m.Case(R_LOAD):
                        m.d.sync += reply(P.LOAD | 0x80, [(sample_index, 2)])
                    with m.Case(R_RUN):
                        m.d.sync += reply(P.RUN | 0x80, [(run_count, 2), (result_cycles, 4)], memory=run_count)
                    with m.Default():
                        m.d.sync += reply(P.ERROR, [(err_code, 1), (kind, 1)])
                m.next = "FETCH"
            # Sending a reply: FETCH registers the result memory's byte at ``mem_addr`` (the
            # address has been stable since the previous byte), LATCH picks the next byte, SEND
            # hands it to the UART.
            with m.State("FETCH"):
                if depth:   # (without one, no reply reads the result memory)
                    m.d.sync += mem_byte.eq(results_r.data)
                m.next = "LATCH"
            with m.State("LATCH"):
                m.d.sync += out_last.eq(0)
                with m.If(fixed_left != 0):
                    m.d.sync += [out_byte.eq(reply_buf[-8:]), reply_buf.eq(reply_buf << 8),
                                 fixed_left.eq(fixed_left - 1), out_crc.eq(lead == 2)]
                    with m.If(lead != 2):
                        m.d.sync += lead.eq(lead + 1)
                with m.Elif(mem_left != 0):
                    m.d.sync += [out_byte.eq(mem_byte), mem_left.eq(mem_left - 1), mem_addr.eq(mem_addr + 1),
                                 out_crc.eq(1)]
                with m.Elif(crc_left == 2):
                    m.d.sync += [out_byte.eq(crc_tx.crc[8:]), crc_left.eq(1), out_crc.eq(0)]
                with m.Else():
                    m.d.sync += [out_byte.eq(crc_tx.crc[:8]), crc_left.eq(0), out_crc.eq(0), out_last.eq(1)]
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [tx.data.valid.eq(1), tx.data.payload.eq(out_byte), crc_tx.data.eq(out_byte)]
                with m.If(tx.data.ready):
                    m.d.comb += crc_tx.valid.eq(out_crc)
                    with m.If(out_last):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "FETCH"

        # A partial frame times out; waiting between frames does not.
        with m.If(~in_frame | have | timed_out):
            m.d.sync += [idle_timer.eq(0), timed_out.eq(0)]
        with m.Else():
            m.d.sync += [idle_timer.eq(idle_timer + 1), timed_out.eq(idle_timer == self.timeout - 1)]
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m

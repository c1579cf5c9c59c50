"""The framing of ``docs/protocol.md`` in gateware: request frames in (:class:`FrameReceiver`),
reply frames out (:class:`ReplySender`).

Both sides use CRC-16/IBM-3740 (``amaranth.lib.crc.catalog.CRC16_IBM_3740``, 8 bits per clock),
the CRC of :func:`sbnn_hdl.board.protocol.crc16`, and take the sync pattern from
:mod:`sbnn_hdl.board.protocol`. Neither knows what a request means: that is the dispatcher's
(:mod:`sbnn_hdl.board.dispatch`).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.crc import catalog
from amaranth.lib.wiring import In, Out

from . import protocol as P
from .tunable import bound, derive, tunable_value
from .uart import last_clock

__all__ = ["PayloadByte", "Request", "FrameReceiver", "reply_layout", "ReplySender"]


class PayloadByte(data.Struct):
    """A byte of a request's payload, as :class:`FrameReceiver` hands it on."""

    data: 8
    first: 1    # the frame's first payload byte (a consumer starts afresh on it)
    kind: 8     # the frame's type (what the payload means)


class Request(data.Struct):
    """The end of a request frame, as :class:`FrameReceiver` hands it on."""

    kind: 8     # 0 if the frame ended before its type byte
    length: 16
    error: 8    # 0: a whole frame with a good CRC; else P.ERR_CRC, P.ERR_LENGTH or P.ERR_TIMEOUT


class FrameReceiver(wiring.Component):
    """Request frames from a stream of received bytes.

    Bytes before ``A5 5A`` are skipped (an ``A5`` followed by another ``A5`` still waits for the
    ``5A``). A frame's payload bytes go out on ``payload`` as they arrive; its end goes out on
    ``request``, with an error code when the frame is not whole and good.

    One frame at a time: after a frame has ended, at most one byte is taken from ``bytes`` (into
    the register at the input) until ``request`` has been taken, so a consumer that takes a
    request only once it has answered it leaves the host's next request waiting in front of
    ``bytes`` meanwhile.

    Parameters
    ----------
    max_length : int
        The longest payload of any request. A longer length field ends the frame at once with
        ``P.ERR_LENGTH`` (its payload is not awaited).
    timeout : int or Tunable
        Clocks without a byte, inside a frame (after ``A5 5A``), after which the frame ends with
        ``P.ERR_TIMEOUT``: nothing the host sends can leave the receiver waiting forever.
        Waiting between frames, or for ``payload`` to be taken, does not count.

    Ports
    -----
    bytes : In(stream.Signature(8))
        The received bytes. The receiver registers each before it decides anything on it, so
        the path from the byte's source (a FIFO's memory) ends at that register.
    payload : Out(stream.Signature(PayloadByte))
        The payload bytes, in order, one clock or more after each arrives. ``first`` marks a
        frame's first payload byte; ``kind`` is the frame's type.
    request : Out(stream.Signature(Request))
        One transfer per frame, valid two clocks after its last CRC byte was taken (with
        ``error`` ``P.ERR_LENGTH``, after its length field; with ``P.ERR_TIMEOUT``, one clock
        after the timeout). ``error`` is 0 exactly when the CRC of the type, length, payload and
        CRC bytes leaves the residue 0. The type and length are not checked against each other.
    busy : Out(1)
        High from a frame's first sync byte until its request has been taken.
    """

    bytes: In(stream.Signature(8))
    payload: Out(stream.Signature(PayloadByte))
    request: Out(stream.Signature(Request))
    busy: Out(1)

    def __init__(self, *, max_length, timeout):
        self.max_length, self.timeout = max_length, timeout
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = catalog.CRC16_IBM_3740(data_width=8).create()

        # The head of the byte stream, registered (``byte`` valid while ``have``): the source's
        # read data stays out of the decisions below.
        byte, have, take = Signal(8), Signal(), Signal()
        m.d.comb += self.bytes.ready.eq(~have | take)
        with m.If(~have | take):
            m.d.sync += [have.eq(self.bytes.valid), byte.eq(self.bytes.payload)]
        m.d.comb += crc.data.eq(byte)

        kind, length, error = Signal(8), Signal(16), Signal(8)
        count = Signal(16)       # payload bytes still to come
        first = Signal()         # no payload byte of this frame handed on yet
        m.d.comb += [self.request.payload.kind.eq(kind), self.request.payload.length.eq(length),
                     self.request.payload.error.eq(error),
                     self.payload.payload.data.eq(byte), self.payload.payload.first.eq(first),
                     self.payload.payload.kind.eq(kind)]

        timer = Signal(range(bound(self.timeout) + 1))
        timeout_last = tunable_value(m, derive(self.timeout, "_last", last_clock), platform)
        timed_out = Signal()     # registered: the timer reached the timeout
        in_frame = Signal()

        def end(code):
            m.d.sync += error.eq(code)
            m.next = "END"

        def header_byte(next_state, *statements):
            # A header or CRC byte: into the CRC; the frame ends if none comes in time.
            m.d.comb += [take.eq(have), crc.valid.eq(have)]
            with m.If(have):
                m.d.sync += statements
                m.next = next_state
            with m.Elif(timed_out):
                end(P.ERR_TIMEOUT)

        with m.FSM(name="receiver") as fsm:
            m.d.comb += in_frame.eq(fsm.ongoing("TYPE") | fsm.ongoing("LEN_H") | fsm.ongoing("LEN_L") |
                                    fsm.ongoing("PAYLOAD") | fsm.ongoing("CRC_H") | fsm.ongoing("CRC_L"))
            with m.State("IDLE"):
                m.d.comb += take.eq(have)
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
                m.d.comb += crc.start.eq(1)
                header_byte("LEN_H", kind.eq(byte))
            with m.State("LEN_H"):
                header_byte("LEN_L", length[8:].eq(byte))
            with m.State("LEN_L"):
                header_byte("LENGTH", length[:8].eq(byte), count.eq(Cat(byte, length[8:16])), first.eq(1))
            with m.State("LENGTH"):
                with m.If(length > self.max_length):
                    end(P.ERR_LENGTH)   # too long for any request: said now, not after the payload
                with m.Elif(length == 0):
                    m.next = "CRC_H"
                with m.Else():
                    m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += [self.payload.valid.eq(have), take.eq(have & self.payload.ready),
                             crc.valid.eq(have & self.payload.ready)]
                with m.If(have & self.payload.ready):
                    m.d.sync += [count.eq(count - 1), first.eq(0)]
                    with m.If(count == 1):
                        m.next = "CRC_H"
                with m.Elif(timed_out):
                    end(P.ERR_TIMEOUT)
            with m.State("CRC_H"):
                header_byte("CRC_L")
            with m.State("CRC_L"):
                header_byte("CHECK")
            with m.State("CHECK"):
                # The CRC register has taken the last byte: a whole frame leaves the residue 0.
                end(Mux(crc.match_detected, 0, P.ERR_CRC))
            with m.State("END"):
                m.d.comb += self.request.valid.eq(1)
                with m.If(self.request.ready):
                    m.next = "IDLE"

        # A partial frame times out; waiting between frames does not. The restart is a register
        # (so the timer starts a cycle after a byte): the timer's reset decoded from the receiver's
        # state was the critical path of the shipped CNN's 85F bitstream (92.5 MHz for 100). The
        # timer stops at the timeout: the frame ends then, and the restart follows.
        restart = Signal(init=1)
        m.d.sync += restart.eq(~in_frame | have)
        with m.If(restart):
            m.d.sync += [timer.eq(0), timed_out.eq(0)]
        with m.Elif(~timed_out):
            m.d.sync += [timer.eq(timer + 1), timed_out.eq(timer == timeout_last)]
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m


def reply_layout(max_fixed):
    """What :class:`ReplySender` sends: a frame of type ``kind`` whose payload is the first
    ``fixed_length`` bytes of ``fixed`` (the first byte in its top 8 bits), then ``tail_length``
    bytes from the sender's ``tail`` stream; ``length`` is their sum, the frame's length field
    (the producer adds them before choosing a reply: a sum after the choice was the critical
    path of a 25F build at 150 MHz)."""
    return data.StructLayout({"kind": 8, "fixed": 8 * max_fixed, "fixed_length": range(max_fixed + 1),
                              "tail_length": 16, "length": 16})


class ReplySender(wiring.Component):
    """Reply frames: ``A5 5A``, type, length, payload and CRC, as a stream of bytes.

    Parameters
    ----------
    max_fixed : int
        The longest fixed part of any reply (bytes).

    Ports
    -----
    reply : In(stream.Signature(reply_layout(max_fixed)))
        A reply is read on the first clock of ``valid`` and must stay as it is until it is
        taken; it is taken (``ready``) on the clock its last byte is taken by ``bytes``, so a
        producer that waits for the transfer knows the reply is out.
    tail : In(stream.Signature(8))
        The bytes after the fixed part, ``tail_length`` of them per reply, each taken when it
        is the next byte to send (the producer may take clocks to fetch each one).
    bytes : Out(stream.Signature(8))
        The frame, one byte at a time; the sender waits for each to be taken. A byte goes out
        two clocks after the previous one was taken (the first, two clocks after
        ``reply.valid`` rises), later if ``tail`` is not valid.

    Everything the sender decides per byte is a counter compared with zero or a shift: no wide
    arithmetic between its registers, which the 125 MHz of a ULX3S build leaves no time for
    (indexing the frame by a byte position takes subtractions and comparisons).
    """

    def __init__(self, max_fixed):
        self.max_fixed = max_fixed
        super().__init__({"reply": In(stream.Signature(reply_layout(max_fixed))), "tail": In(stream.Signature(8)),
                          "bytes": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = catalog.CRC16_IBM_3740(data_width=8).create()
        reply = self.reply.payload
        head = 5 + self.max_fixed
        buffer = Signal(8 * head)                # sync, type, length, fixed part; next byte on top
        fixed_left = Signal(range(head + 1))     # bytes still to send from the buffer
        tail_left = Signal(16)                   # then bytes from ``tail``
        crc_left = Signal(2)                     # then the two CRC bytes
        lead = Signal(2)                         # sync bytes sent (the CRC starts after them)
        out_byte, out_crc, out_last = Signal(8), Signal(), Signal()   # out_crc: out_byte counts in the CRC
        m.d.comb += [self.bytes.payload.eq(out_byte), crc.data.eq(out_byte)]

        with m.FSM(name="sender"):
            with m.State("IDLE"):
                m.d.comb += crc.start.eq(1)
                with m.If(self.reply.valid):
                    m.d.sync += [buffer.eq(Cat(reply.fixed, reply.length, reply.kind,
                                               Const(P.SYNC[1], 8), Const(P.SYNC[0], 8))),
                                 fixed_left.eq(5 + reply.fixed_length), tail_left.eq(reply.tail_length),
                                 crc_left.eq(2), lead.eq(0)]
                    m.next = "LATCH"
            # LATCH picks the next byte, SEND hands it on.
            with m.State("LATCH"):
                m.d.sync += out_last.eq(0)
                with m.If(fixed_left != 0):
                    m.d.sync += [out_byte.eq(buffer[-8:]), buffer.eq(buffer << 8),
                                 fixed_left.eq(fixed_left - 1), out_crc.eq(lead == 2)]
                    with m.If(lead != 2):
                        m.d.sync += lead.eq(lead + 1)
                    m.next = "SEND"
                with m.Elif(tail_left != 0):
                    m.d.comb += self.tail.ready.eq(1)
                    with m.If(self.tail.valid):
                        m.d.sync += [out_byte.eq(self.tail.payload), tail_left.eq(tail_left - 1), out_crc.eq(1)]
                        m.next = "SEND"
                with m.Elif(crc_left == 2):
                    m.d.sync += [out_byte.eq(crc.crc[8:]), crc_left.eq(1), out_crc.eq(0)]
                    m.next = "SEND"
                with m.Else():
                    m.d.sync += [out_byte.eq(crc.crc[:8]), crc_left.eq(0), out_crc.eq(0), out_last.eq(1)]
                    m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += self.bytes.valid.eq(1)
                with m.If(self.bytes.ready):
                    m.d.comb += crc.valid.eq(out_crc)
                    with m.If(out_last):
                        m.d.comb += self.reply.ready.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "LATCH"
        return m

"""A plain 8N1 UART: one start bit, 8 data bits (least significant first), one stop bit."""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from .tunable import Tunable, bound, derive, tunable_value

__all__ = ["UARTRx", "UARTTx", "half_bit", "last_clock"]


def half_bit(divisor):
    """What the receiver's timer starts from at a start bit: half a bit time, less one clock."""
    return divisor // 2 - 1


def last_clock(clocks):
    """What a timer of ``clocks`` clocks starts from (counting down to 0) or stops at (counting up)."""
    return clocks - 1


def _check(divisor):
    if (divisor.value if isinstance(divisor, Tunable) else divisor) < 4:
        raise ValueError(f"UART divisor: expected at least 4 clocks per bit, found {divisor}")


class UARTRx(wiring.Component):
    """Receiver: ``divisor`` clocks per bit (an ``int``, or a
    :class:`~sbnn_hdl.board.tunable.Tunable` that a board build sets after synthesis).

    Ports
    -----
    rx : In(1)
        The line (idle high). It is synchronised here (two flip-flops), so it may come straight
        from a pin.
    data : Out(stream.Signature(8, always_ready=True))
        One byte per ``valid`` pulse, 1.5 bit times after the start bit's falling edge plus
        8 bit times, i.e. in the middle of the stop bit, and two clocks: the receiver sits by its
        pin and its consumer may be across the chip, so the byte and ``valid`` are registers
        loaded from registers beside the receiver's timer. Nothing can stall the line, so there
        is no ``ready``: the consumer must take every byte (a FIFO does).
    error : Out(1)
        Pulses, a clock after the middle of the stop bit, for a byte whose stop bit was low
        (framing error, or a break); the byte is dropped and the receiver waits for the line to
        go high again.

    A start bit shorter than half a bit time is taken as a glitch and ignored.
    """

    def __init__(self, divisor):
        _check(divisor)
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "data": Out(stream.Signature(8, always_ready=True)),
                          "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        line = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, line, init=1)
        timer = Signal(range(bound(self.divisor) * 3 // 2 + 1))
        half = tunable_value(m, derive(self.divisor, "_half", half_bit), platform)
        last = tunable_value(m, derive(self.divisor, "_last", last_clock), platform)
        bits = Signal(range(9))
        shift = Signal(8)
        # The stop bit's outcome, then the byte out: at 150 MHz on a 25F the timer's decode
        # reached neither the FIFO's level (8.3 ns) nor a shift register placed by the FIFO (7.8 ns).
        valid, error, byte, out_valid = Signal(), Signal(), Signal(8), Signal()
        m.d.sync += [valid.eq(0), error.eq(0), out_valid.eq(valid)]
        with m.If(valid):
            m.d.sync += byte.eq(shift)
        m.d.comb += [self.data.payload.eq(byte), self.data.valid.eq(out_valid), self.error.eq(error)]
        # `zero` is "the timer is 0", kept as a register beside it, so that the bit sampling's
        # enables start from one flip-flop (the shift register may be placed far from the timer).
        zero = Signal(init=1)

        def count_down():
            m.d.sync += [timer.eq(timer - 1), zero.eq(timer == 1)]

        def load(value):
            m.d.sync += [timer.eq(value), zero.eq(0)]   # the values are at least 1 (divisor >= 4)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    load(half)
                    m.next = "START"
            with m.State("START"):
                with m.If(~zero):
                    count_down()
                with m.Elif(line):
                    m.next = "IDLE"  # a glitch, not a start bit
                with m.Else():
                    load(last)
                    m.d.sync += bits.eq(0)
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(~zero):
                    count_down()
                with m.Else():
                    load(last)
                    m.d.sync += [shift.eq((shift >> 1) | (line << 7)), bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(~zero):
                    count_down()
                with m.Elif(line):
                    m.d.sync += valid.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += error.eq(1)
                    m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """Transmitter: ``divisor`` clocks per bit (an ``int`` or a
    :class:`~sbnn_hdl.board.tunable.Tunable`).

    Ports
    -----
    data : In(stream.Signature(8))
        A byte is taken when ``valid`` and ``ready``; ``ready`` is high only while the line is
        idle, so a byte takes ``10 * divisor`` clocks plus one.
    tx : Out(1)
        The line (idle high), registered.
    """

    def __init__(self, divisor):
        _check(divisor)
        self.divisor = divisor
        super().__init__({"data": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(bound(self.divisor)))
        last = tunable_value(m, derive(self.divisor, "_last", last_clock), platform)
        shift = Signal(9)   # data bits then the stop bit
        bits = Signal(range(10))
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.data.ready.eq(1)
                with m.If(self.data.valid):
                    m.d.sync += [self.tx.eq(0), shift.eq(self.data.payload | (1 << 8)), bits.eq(0),
                                 timer.eq(last)]
                    m.next = "SEND"
            with m.State("SEND"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(bits == 9):
                    m.next = "IDLE"   # the stop bit has lasted a whole bit time
                with m.Else():
                    m.d.sync += [self.tx.eq(shift[0]), shift.eq(shift >> 1), bits.eq(bits + 1),
                                 timer.eq(last)]
        return m

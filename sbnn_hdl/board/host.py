"""The host interface of a board build: UART, protocol engine, batch memory and cycle counters
around a network core (``docs/protocol.md``).

Everything runs in one clock domain (``sync``, the core's clock): the UART divides that clock,
so there is no clock-domain crossing; the only asynchronous input, the UART's ``rx`` pin, goes
through a two-flip-flop synchroniser inside :class:`~sbnn_hdl.board.uart.UARTRx`.

The engine is three components joined by streams: :class:`~sbnn_hdl.board.frames.FrameReceiver`
(bytes to request frames), :class:`~sbnn_hdl.board.dispatch.Dispatcher` (a request served on the
core and the batch memory, and the reply to it) and :class:`~sbnn_hdl.board.frames.ReplySender`
(a reply to framed bytes).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from . import protocol as P
from .dispatch import CoreInfo, Dispatcher, StreamCoreInfo, core_signature
from .frames import FrameReceiver, ReplySender
from .tunable import Tunable
from .pixels import PixelDispatcher
from .uart import UARTRx, UARTTx

__all__ = ["CoreInfo", "StreamCoreInfo", "HostInterface", "core_signature"]


class HostInterface(wiring.Component):
    """Serves the protocol of ``docs/protocol.md`` on a UART for ``core``.

    Of each sample that arrives, only the bits the core reads (``info.read_bits``) are kept, one
    bit per clock while the next byte is on its way: the sample register and each batch memory
    entry hold ``info.feature_bits`` bits (rounded up to whole 72-bit words), not the whole
    sample (a model that reads 3 of the 8 bit planes of a pixel needs 3/8 of the flip-flops and
    memory). The sample register is the only register as wide as a sample: the core reads it,
    INFER assembles its sample in it, and the batch memory reaches it one 72-bit word per clock
    (LOAD copies it into an entry, RUN fills it from one; RUN feeds the core one sample per
    ``ceil(feature_bits / 72)`` clocks; :class:`~sbnn_hdl.board.dispatch.Dispatcher`).

    A streaming core (a conv model; ``info`` a :class:`StreamCoreInfo`) is served by a
    :class:`~sbnn_hdl.board.pixels.PixelDispatcher` instead: the samples are kept pixel by pixel
    in block RAM (the bits of each pixel that the core reads) and streamed into the core one
    pixel per clock; no register is as wide as a sample.

    Parameters
    ----------
    core : wiring.Component
        A network core or a streaming core (or a stand-in with the same ports, such as an
        ``Instance`` wrapper); it becomes a submodule.
    info : CoreInfo
    divisor : int or Tunable
        Clocks per UART bit (``clock / baud``, rounded).
    clock_hz : int or Tunable
        Reported by the INFO request (the host converts cycles to time with ``clock_hz``).
    baud : int
        Reported by the INFO request.
    digest : bytes
        8 bytes identifying the model (:func:`sbnn_hdl.board.protocol.model_digest`).
    name : str
        The model's name (at most 32 ASCII characters are reported).
    batch_depth : int
        Samples the on-chip batch memory holds (LOAD and RUN). 0 builds no batch memory (no
        block RAMs): LOAD and RUN are answered "out of range".
    timeout : int or Tunable
        Clocks without a byte after which a partial request frame is abandoned (and an error
        reply sent): nothing the host sends can leave the engine waiting forever.

    ``divisor``, ``clock_hz`` and ``timeout`` depend on the clock: a board build gives them as
    :class:`~sbnn_hdl.board.tunable.Tunable` constants, which it sets again in the synthesised
    netlist to place and route at another clock; a simulation gives plain integers.

    Ports
    -----
    rx : In(1), tx : Out(1)
        The UART lines (``rx`` may come straight from a pin).
    busy : Out(1)
        High from a request's first sync byte until its reply is out (for an LED).
    """

    #: The memories whose read data is never used on a clock that writes them
    #: (:data:`Dispatcher.NO_COLLISIONS <sbnn_hdl.board.dispatch.Dispatcher.NO_COLLISIONS>`,
    #: for :func:`sbnn_hdl.board.build.yosys_after_read`).
    NO_COLLISIONS = Dispatcher.NO_COLLISIONS

    def __new__(cls, core, info, **kwargs):
        # Refused here, before Amaranth's ``Elaboratable.__new__`` records the object as one that
        # must be elaborated: a refused host interface leaves no UnusedElaboratable warning.
        if info.classes > 256:
            raise ValueError(f"host interface: expected at most 256 classes (one byte per prediction), "
                             f"found {info.classes}")
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, core, info, *, divisor, clock_hz, baud, digest, name, batch_depth=256,
                 timeout=1_000_000):
        self.core, self.info = core, info
        self.divisor, self.clock_hz, self.baud = divisor, clock_hz, baud
        self.digest, self.name = bytes(digest), name
        self.batch_depth, self.timeout = batch_depth, timeout
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1)})

    def info_payload(self):
        """The INFO reply's payload."""
        return P.Info(P.VERSION, bool(self.info.score_width), self.info.sample_bits, self.info.sample_bytes,
                      self.info.classes, self.info.score_width, self.info.latency, _value(self.clock_hz), self.baud,
                      self.batch_depth, self.digest, self.name, streaming=self.info.streaming).encode()

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        m.submodules.uart_rx = rx = UARTRx(self.divisor)
        m.submodules.uart_tx = tx = UARTTx(self.divisor)
        # Bytes that arrive while a reply is going out wait here (the host may send the next
        # request before the reply has ended).
        m.submodules.rx_fifo = fifo = SyncFIFO(width=8, depth=64)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx),
                     fifo.w_data.eq(rx.data.payload), fifo.w_en.eq(rx.data.valid)]
        overflow = Signal(16)  # bytes lost to a full FIFO (only visible in simulation)
        with m.If(rx.data.valid & ~fifo.w_rdy):
            m.d.sync += overflow.eq(overflow + 1)

        m.submodules.receiver = receiver = FrameReceiver(max_length=self.info.sample_bytes + 2,
                                                         timeout=self.timeout)
        serve = PixelDispatcher if self.info.streaming else Dispatcher
        clock = self.clock_hz if isinstance(self.clock_hz, Tunable) else None
        m.submodules.dispatcher = dispatcher = serve(self.info, info_payload=self.info_payload(),
                                                     batch_depth=self.batch_depth, info_clock=clock)
        m.submodules.sender = sender = ReplySender(dispatcher.max_fixed)
        wiring.connect(m, fifo.r_stream, receiver.bytes)
        wiring.connect(m, receiver.payload, dispatcher.payload)
        # The receiver takes at most one byte from the FIFO until the dispatcher takes the
        # request, which it does once the sender has taken its reply (after the reply's last
        # byte): one request at a time, the next one waiting in the FIFO.
        wiring.connect(m, receiver.request, dispatcher.request)
        wiring.connect(m, dispatcher.reply, sender.reply)
        wiring.connect(m, dispatcher.tail, sender.tail)
        wiring.connect(m, sender.bytes, tx.data)
        wiring.connect(m, dispatcher.core, core)
        m.d.comb += self.busy.eq(receiver.busy)
        return m


def _value(x):
    """A constant's value now: an ``int`` or a :class:`Tunable`'s value."""
    return x.value if isinstance(x, Tunable) else x

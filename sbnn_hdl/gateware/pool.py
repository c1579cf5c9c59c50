"""A 2x2 max-pool of stride 2 on a stream of binary pixels, with one row of pair ORs."""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out


__all__ = ["PairPool"]


class PairPool(wiring.Component):
    """The max-pool of a stage whose windows are 2x2 with stride 2 and no padding, over binary
    channels: the OR of each window, with none of a general window generator's line buffers
    and row selection.

    Each even column's pixel waits in a register for the odd column's, and the pair's OR of an
    even row is kept in a memory of one word per output column (:class:`~amaranth.lib.memory.Memory`,
    so that yosys maps it as it sees fit) until the odd row's pair completes the window. Rows
    and columns beyond the last full window (odd sizes) are read and dropped.

    The output comes exactly when :class:`~sbnn_hdl.gateware.window.WindowStream` would fire the
    window (the cycle after its last pixel) and the stage's delay is 0 (see
    :func:`~sbnn_hdl.streamplan.stream_timing`): such windows never lag behind their pixels (two
    pixels apart at least), so the cycle model's firing cycle is exact. As there, the image's
    last window waits for the image's last pixel, which it does not read when a size is odd: it
    is kept in a register until then.

    Parameters
    ----------
    geometry : Geometry
        Kernel and stride (2, 2), padding (0, 0) (:meth:`fits`).
    channels : int
        Binary channels per pixel.

    Ports
    -----
    pixel : In(channels)
        One input pixel, channel ``c`` in bit ``c``.
    valid : In(1)
        ``pixel`` holds the next pixel of the input map.
    pooled : Out(channels)
        The window's OR per channel, valid with ``out_valid``.
    out_valid : Out(1)
        High for one cycle, the cycle after the pixel that completes a window (for an image's
        last window, after the image's last pixel).
    """

    #: Cycles from the scanner's firing (the cycle after the window's last pixel) to ``out_valid``.
    delay = 0

    def __init__(self, geometry, channels):
        if not self.fits(geometry):
            raise ValueError(f"geometry: expected a 2x2 window of stride 2 without padding, found kernel "
                             f"{geometry.kernel}, stride {geometry.stride}, padding {geometry.padding}")
        if channels < 1:
            raise ValueError(f"channels: expected at least 1, found {channels}")
        self.geometry, self.channels = geometry, channels
        #: Rows of windows kept: the pair ORs of one row.
        self.rows = 1
        super().__init__({"pixel": In(unsigned(channels)), "valid": In(1),
                          "pooled": Out(unsigned(channels)), "out_valid": Out(1)})

    @staticmethod
    def fits(geometry):
        """Whether a pool of ``geometry`` can be built as pairs."""
        return geometry.kernel == (2, 2) and geometry.stride == (2, 2) and tuple(geometry.padding) == (0, 0)

    def elaborate(self, platform):
        m = Module()
        g, n = self.geometry, self.channels
        h, w = g.in_h, g.in_w
        row, col = Signal(range(h), name="w_row"), Signal(range(w), name="w_col")
        with m.If(self.valid):
            with m.If(col == w - 1):
                m.d.sync += [col.eq(0), row.eq(Mux(row == h - 1, 0, row + 1))]
            with m.Else():
                m.d.sync += col.eq(col + 1)

        # The even column's pixel, and the even row's pair ORs by output column.
        first = Signal(n, name="pair_first", reset_less=True)
        with m.If(self.valid & ~col[0]):
            m.d.sync += first.eq(self.pixel)
        pair = first | self.pixel
        pairs = Memory(shape=unsigned(n), depth=g.out_w, init=[])
        m.submodules.pairs = pairs
        write, read = pairs.write_port(), pairs.read_port()
        # The read address is the pair's column from the even pixel on, so the word is there when
        # the odd pixel comes, however long the pause between them.
        m.d.comb += [write.addr.eq(col >> 1), write.data.eq(pair), write.en.eq(self.valid & col[0] & ~row[0]),
                     read.addr.eq(col >> 1)]

        done = self.valid & col[0] & row[0]   # an odd pixel of an odd row completes a window
        image_end = self.valid & (row == h - 1) & (col == w - 1)
        pooled = Signal(n, name="pooled", reset_less=True)
        out_valid = Signal(name="pooled_valid")
        window = read.data | pair
        held = None
        if h % 2 or w % 2:
            # The image's last window is complete before the image's last pixel, which it waits for.
            held = Signal(n, name="last_window", reset_less=True)
            last = (row == 2 * g.out_h - 1) & (col == 2 * g.out_w - 1)
            with m.If(done & last):
                m.d.sync += held.eq(window)
            m.d.sync += [pooled.eq(Mux(image_end, held, window)), out_valid.eq((done & ~last) | image_end)]
        else:
            m.d.sync += [pooled.eq(window), out_valid.eq(done)]
        m.d.comb += [self.pooled.eq(pooled), self.out_valid.eq(out_valid)]
        counters = [row, col, first, pooled, out_valid, *([held] if held is not None else [])]
        self.stats = {
            "register_bits": sum(len(c) for c in counters),
            # Per channel the OR of three bits, and with odd sizes the choice of the kept window.
            "select_bits": n * (3 if held is not None else 2),
            "memory_bits": n * g.out_w,
            "memory_read_bits": n * g.out_w,
        }
        return m

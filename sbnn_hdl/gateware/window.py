"""The window generator of a streaming stage: line buffers and the ``kh x kw`` window with padding."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out


__all__ = ["WindowStream"]


class WindowStream(wiring.Component):
    """Reads a map's pixels as they arrive in raster order and presents every window of a
    stage, in raster order of the output positions, with the padding filled in.

    The input pixels are written into ``rows`` line buffers (one :class:`~amaranth.lib.memory.Memory`
    of ``in_w`` words, a word holding one pixel per buffered row, so that yosys maps it to block
    or LUT RAM as it sees fit). A scanner walks the output positions; position ``(oy, ox)`` fires
    on the first cycle after the previous one's on which the last pixel its window reads
    (:meth:`~sbnn_hdl.streamplan.Geometry.need`) was written on an earlier cycle. Firing reads
    the window's ``kw`` columns (one read port each), and the window's rows are chosen from the
    buffered rows; taps in the padding hold ``pad_value``, and a constant channel holds its
    constant inside the image. The scanner may fall behind the writer (by up to the rows that
    :func:`~sbnn_hdl.streamplan.stream_timing` sized the buffers for), so the writer may start the
    next image while the scanner finishes this one; and the scanner may finish an image before the
    writer does (its last windows need not read the last rows). Both count images modulo 4 to
    tell these apart.

    Parameters
    ----------
    geometry : Geometry
    channels : list of StageChannel
        The window's channels, in the order of the window's sources.
    widths : list of int
        The bit width of each channel of the input stream.
    rows : int
        Line-buffer rows, a power of two, at least 2.
    hold : int
        An image's last window fires no earlier than ``hold + 1`` cycles after the image's last
        pixel was written (see :func:`~sbnn_hdl.streamplan.stream_timing`).
    spacing : int
        A window fires no earlier than ``spacing`` cycles after the previous one (1: on any
        cycle). With ``spacing > 1``, ``window`` holds each window until the next one, so for
        ``spacing`` cycles at least from ``out_valid`` on (otherwise for that cycle only).

    Ports
    -----
    pixel : In(unsigned(sum(widths)))
        One input pixel: stream channel ``k`` in its own bits, channel 0 from bit 0 up.
    valid : In(1)
        ``pixel`` holds the next pixel of the input map.
    window : Out(unsigned)
        The window: source ``(dy*kw + dx)*len(channels) + c`` (channel ``c`` at tap ``dy, dx``)
        in bits of its channel's width, packed from bit 0 up.
    out_valid : Out(1)
        ``window`` holds the window of the next output position; :attr:`latency` cycles
        after the scanner fired.
    """

    #: Cycles from the scanner firing to ``out_valid``: the read, then the selection.
    latency = 2
    #: Window bits per copy of the register that enables a held window (``spacing > 1``).
    HOLD_GROUP = 64

    def __init__(self, geometry, channels, widths, rows, hold=0, spacing=1):
        if rows < 2 or rows & (rows - 1):
            raise ValueError(f"rows: expected a power of two, at least 2, found {rows}")
        if spacing < 1:
            raise ValueError(f"spacing: expected at least 1 cycle, found {spacing}")
        self.spacing = spacing
        self.geometry, self.channels, self.widths, self.rows = geometry, list(channels), list(widths), rows
        self.hold = hold
        self.offsets = [sum(self.widths[:k]) for k in range(len(self.widths))]
        self.channel_widths = [self.widths[c.index] if c.kind == "stream" else 1 for c in self.channels]
        kh, kw = geometry.kernel
        super().__init__({
            "pixel": In(unsigned(max(sum(self.widths), 1))),
            "valid": In(1),
            "window": Out(unsigned(max(kh * kw * sum(self.channel_widths), 1))),
            "out_valid": Out(1),
        })

    @staticmethod
    def _table(m, name, layout, index, rows):
        rom = Memory(shape=layout, depth=len(rows), init=rows)
        m.submodules[name] = rom
        port = rom.read_port(domain="comb")
        m.d.comb += port.addr.eq(index)
        return port.data

    def elaborate(self, platform):
        m = Module()
        g = self.geometry
        (kh, kw), (h, w) = g.kernel, (g.in_h, g.in_w)
        slot_bits = self.rows.bit_length() - 1
        stored = [c.index for c in self.channels if c.kind == "stream"]
        stored_width = sum(self.widths[k] for k in stored)

        # The writer: the next pixel's row and column, the buffer row it goes to, its image's parity.
        w_row, w_col = Signal(range(h), name="w_row"), Signal(range(w), name="w_col")
        w_slot, w_img = Signal(slot_bits, name="w_slot"), Signal(2, name="w_img")
        # The readiness below reads copies of the writer's row and column, and a flag for "the
        # next pixel is the image's last": the writer's own column also addresses every line
        # buffer's writes, and its fan-out into the readiness comparisons was the critical path
        # of a 25F-sized core (143 MHz).
        r_row, r_col = Signal(range(h), name="ready_w_row"), Signal(range(w), name="ready_w_col")
        end_row, end_col = divmod(h * w - 2, w) if h * w > 1 else (0, 0)
        at_end = Signal(name="w_at_end", init=h * w == 1)
        with m.If(self.valid):
            if h * w > 1:
                m.d.sync += at_end.eq((w_row == end_row) & (w_col == end_col))
            with m.If(w_col == w - 1):
                m.d.sync += [w_col.eq(0), r_col.eq(0), w_slot.eq(w_slot + 1)]
                with m.If(w_row == h - 1):
                    m.d.sync += [w_row.eq(0), r_row.eq(0), w_img.eq(w_img + 1)]
                with m.Else():
                    m.d.sync += [w_row.eq(w_row + 1), r_row.eq(r_row + 1)]
            with m.Else():
                m.d.sync += [w_col.eq(w_col + 1), r_col.eq(r_col + 1)]

        # The scanner: the position it waits to fire, its image's parity and the buffer row of
        # that image's row 0. Per output row and column, the window's geometry is a table.
        oy, ox = Signal(range(g.out_h), name="oy"), Signal(range(g.out_w), name="ox")
        s_img, s_slot0 = Signal(2, name="s_img"), Signal(slot_bits, name="s_slot0")
        # Whether the position is the last of its row, and its row the last of the image, are
        # flags kept beside `ox` and `oy`: compared on the firing, `ox` and `oy` were the critical
        # path into the scanner's image count (147.6 MHz on a 25F-sized core).
        x_end = Signal(name="ox_last", init=g.out_w == 1)
        y_end = Signal(name="oy_last", init=g.out_h == 1)
        # Per output row and column, what its windows need, as tables (ROMs: continuous reads,
        # which simulators also evaluate at time 0, unlike case statements).
        by_row = self._table(m, "by_row", data.StructLayout({"inside": kh, "top": slot_bits}), oy, [
            {"inside": sum(1 << dy for dy, r in enumerate(g.rows(y)) if 0 <= r < h),
             "top": g.rows(y)[0] % self.rows} for y in range(g.out_h)])
        by_col = self._table(m, "by_col", data.StructLayout({"inside": kw}), ox, [
            {"inside": sum(1 << dx for dx, c in enumerate(g.cols(x)) if 0 <= c < w)} for x in range(g.out_w)])
        # The line buffers' read addresses, per window column, of the position waiting to fire
        # are registers, loaded on a firing from a table of the next column's: a table between
        # `ox` and the buffers' reads was the critical path of a whole CNN core.
        def addresses(x):
            return [min(max(c, 0), w - 1) for c in g.cols(x)]

        address_layout = data.ArrayLayout(range(max(w, 2)), kw)   # a table has at least one bit
        next_address = self._table(m, "next_address", address_layout, ox,
                                   [addresses((x + 1) % g.out_w) for x in range(g.out_w)])
        address = Signal(address_layout, name="read_address", init=addresses(0))
        # What the position waiting to fire needs, and what the one after it needs, are kept in
        # registers; when a position fires, the first take the second and the second are loaded
        # from tables of what the position two after each one needs (indexed by the current
        # position: no arithmetic before a table, and the tables are off the paths to `fire`).
        def needs(y, x):
            last = y == g.out_h - 1 and x == g.out_w - 1
            return (h - 1 if last else g.last_row(y), w - 1 if last else g.last_col(x), last)

        steps = range(3)   # rows moved on by two positions: 0, 1 or 2
        col_two = self._table(m, "col_two", data.StructLayout({"col": range(max(g.out_w, 2)), "rows": 2}), ox, [
            {"col": (x + 2) % g.out_w, "rows": (x + 2) // g.out_w} for x in range(g.out_w)])
        col_need = self._table(m, "col_need", range(max(w, 2)), col_two.col, [g.last_col(x) for x in range(g.out_w)])
        row_two = self._table(m, "row_two", data.StructLayout({
            "need": data.ArrayLayout(range(max(h, 2)), len(steps)), "last": len(steps)}), oy, [
            {"need": [g.last_row((y + k) % g.out_h) for k in steps],
             "last": sum(1 << k for k in steps if (y + k) % g.out_h == g.out_h - 1)} for y in range(g.out_h)])
        two_last = (col_two.col == g.out_w - 1) & row_two.last.bit_select(col_two.rows, 1)
        two_row = Mux(two_last, h - 1, row_two.need[col_two.rows])
        two_col = Mux(two_last, w - 1, col_need)
        # The last window waits for the image's last pixel (Geometry.need).
        first, second = needs(0, 0), needs(*divmod(1 % (g.out_h * g.out_w), g.out_w))
        need_r = Signal(range(h), name="need_row", init=first[0])
        need_c = Signal(range(w), name="need_col", init=first[1])
        last = Signal(name="last", init=first[2])
        next_row = Signal(range(h), name="next_need_row", init=second[0])
        next_col = Signal(range(w), name="next_need_col", init=second[1])
        next_last = Signal(name="next_last", init=second[2])
        timer = Signal(range(self.hold + 1), name="hold") if self.hold else None
        image_end = self.valid & at_end
        if timer is not None:
            with m.If(image_end):
                m.d.sync += timer.eq(self.hold)
            with m.Elif(timer != 0):
                m.d.sync += timer.eq(timer - 1)

        # Whether a position fires is decided a cycle ahead, for both positions the scanner may
        # wait at on the next cycle (this one, or the next if this one fires), from the writer's
        # state on the next cycle: `fire` is then a choice between two registers, and the
        # comparisons are off its path to the scanner's enables (the critical path otherwise).
        # The writer moves one pixel in raster order when `valid`, so "written before the next
        # cycle" is "written before this one, or written on this one".
        held1 = Const(0, 1)
        if timer is not None:
            held1 = image_end | (timer > 1)

        # Row above column, a pixel's place in raster order is one number, so that whether a
        # pixel was written is two carry chains side by side (written after it, or not before
        # it) and `valid` chooses between them: comparisons of rows and columns apart, with
        # equalities, took a carry chain and three LUT levels (140 to 148 MHz on a 25F core).
        written = Cat(r_col, r_row)

        def ready(need_row, need_col, is_last, image):
            # A position fires once the last pixel it reads was written on an earlier cycle.
            ahead = (w_img - image)[:2]   # the writer's image less the scanner's: -1, 0 or 1 (mod 4)
            need = Cat(need_col, need_row)
            done = Mux(self.valid, ~(need > written), written > need)
            arrived = (ahead == 1) | ((ahead == 0) & done)
            return arrived & ~(is_last & held1)

        stay, advance, fired = Signal(name="ready_stay"), Signal(name="ready_next"), Signal(name="fired_last")
        m.d.sync += [stay.eq(ready(need_r, need_c, last, s_img)),
                     advance.eq(ready(next_row, next_col, next_last, (s_img + last)[:2]))]
        fire = Signal(name="fire")
        spaced = []
        if self.spacing > 1:
            # `rested` is high on the cycles at least `spacing` after the last firing (a register,
            # like the readiness, so that `fire` stays a choice between registers and one gate).
            since = Signal(range(self.spacing), name="since_fire")
            rested = Signal(name="rested", init=1)
            with m.If(fire):
                m.d.sync += [since.eq(self.spacing - 1), rested.eq(0)]
            with m.Elif(since != 0):
                m.d.sync += [since.eq(since - 1), rested.eq(since == 1)]
            m.d.comb += fire.eq(Mux(fired, advance, stay) & rested)
            spaced = [since, rested]
        else:
            m.d.comb += fire.eq(Mux(fired, advance, stay))
        m.d.sync += fired.eq(fire)
        with m.If(fire):
            m.d.sync += [address.eq(next_address), need_r.eq(next_row), need_c.eq(next_col), last.eq(next_last),
                         next_row.eq(two_row), next_col.eq(two_col), next_last.eq(two_last)]
            with m.If(x_end):
                m.d.sync += [ox.eq(0), x_end.eq(g.out_w == 1)]
                with m.If(y_end):
                    m.d.sync += [oy.eq(0), y_end.eq(g.out_h == 1), s_img.eq(s_img + 1),
                                 s_slot0.eq(s_slot0 + h % self.rows)]
                with m.Else():
                    m.d.sync += [oy.eq(oy + 1), y_end.eq(oy == g.out_h - 2)]
            with m.Else():
                m.d.sync += [ox.eq(ox + 1), x_end.eq(ox == g.out_w - 2)]

        # What the fired window needs: per row its buffer row and whether it is in the image,
        # per column its address and whether it is in the image.
        row_in, col_in, top = by_row.inside, by_col.inside, by_row.top
        v1 = Signal(name="fired")
        rows_ok, cols_ok = Signal(kh, name="rows_in"), Signal(kw, name="cols_in")
        slots = [Signal(slot_bits, name=f"slot{dy}") for dy in range(kh)]
        m.d.sync += [v1.eq(fire), rows_ok.eq(row_in), cols_ok.eq(col_in)]
        m.d.sync += [slot.eq(s_slot0 + top + dy) for dy, slot in enumerate(slots)]

        columns = []
        if stored_width:
            memory = Memory(shape=unsigned(self.rows * stored_width), depth=w, init=[])
            m.submodules.lines = memory
            write = memory.write_port(granularity=stored_width)
            pixel = Cat(*[self.pixel[self.offsets[k]:self.offsets[k] + self.widths[k]] for k in stored])
            m.d.comb += [write.addr.eq(w_col), write.data.eq(Cat(*[pixel] * self.rows)),
                         write.en.eq(Mux(self.valid, Const(1, self.rows) << w_slot, 0))]
            for dx in range(kw):
                port = memory.read_port()
                m.d.comb += port.addr.eq(address[dx])
                columns.append(port.data)

        offsets = {k: sum(self.widths[j] for j in stored[:n]) for n, k in enumerate(stored)}
        taps = []
        pad = g.pad_value
        for dy in range(kh):
            for dx in range(kw):
                inside = rows_ok[dy] & cols_ok[dx]
                word = columns[dx].word_select(slots[dy], stored_width) if stored_width else None
                for channel, width in zip(self.channels, self.channel_widths):
                    if channel.kind == "const":
                        taps.append(Mux(inside, channel.index, pad))
                    else:
                        offset = offsets[channel.index]
                        taps.append(Mux(inside, word[offset:offset + width], Const(pad, width)))
        window = Signal(len(self.window), name="window_reg")
        holds = []
        if taps and self.spacing > 1:
            # Held until the next window: the reads move on to the next position after a firing.
            # Each HOLD_GROUP bits read an enable register of their own, a copy of `fired`: the
            # window of a wide stage feeds selections all over the chip, and one enable driving
            # all of it was the critical path of the shipped CNN out of context on the 85F (8.5
            # ns of routing, 111 MHz). The taps go through one signal first: slices of their
            # expression under separate enables gave 2.6 times the Verilog, and yosys ran out of
            # its 4 GB in `check`.
            bits = Signal(len(window), name="window_taps")
            m.d.comb += bits.eq(Cat(*taps))
            for start in range(0, len(bits), self.HOLD_GROUP):
                hold = Signal(name=f"fired_w{len(holds)}")
                m.d.sync += hold.eq(fire)
                holds.append(hold)
                with m.If(hold):
                    m.d.sync += window[start:start + self.HOLD_GROUP].eq(bits[start:start + self.HOLD_GROUP])
        elif taps:
            m.d.sync += window.eq(Cat(*taps))
        v2 = Signal(name="window_valid")
        m.d.sync += v2.eq(v1)
        counters = [w_row, w_col, r_row, r_col, at_end, w_slot, w_img, oy, ox, x_end, y_end, address, s_img, s_slot0,
                    last, need_r, need_c, next_last, next_row, next_col, stay, advance, fired,
                    v1, rows_ok, cols_ok, *slots, v2, *spaced, *holds]
        self.stats = {
            "register_bits": sum(len(c) for c in counters) + len(window) + (len(timer) if timer is not None else 0),
            # Each stored tap bit is chosen from `rows` buffered rows, then from the padding.
            "select_bits": kh * kw * stored_width * self.rows,
            "memory_bits": self.rows * stored_width * w,
            "memory_read_bits": kw * self.rows * stored_width * w,
        }
        m.d.comb += [self.window.eq(window), self.out_valid.eq(v2)]
        return m

"""The serial engine: the first dense layer's ``p`` of every unit over many cycles, from block RAM."""

from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..estimate import estimate_ecp5
from ..hwplan import DEFAULT_EVERY, HardwareError
from .pipeline import Pipeline, shape_for

__all__ = ["SerialEngine"]


@dataclass(frozen=True)
class _Layout:
    """One way to cut the work: ``lanes`` units at a time, ``per_word`` positions per map word
    (so ``words`` words per image), ``steps = groups * words`` cycles per image; unit
    ``order[i]`` is lane ``i % lanes`` of group ``i // lanes`` (``None``: no unit, only in the
    first group, so that every lane's last chain register holds a unit); ``slots[l]`` are the
    map word's bits that lane ``l`` reads (those that some unit of the lane has a connection to)."""

    lanes: int
    per_word: int
    words: int
    groups: int
    order: tuple
    slots: tuple

    @property
    def steps(self):
        return self.groups * self.words

    @property
    def rom_width(self):
        """Bits per word of the weight ROM: every lane's slots side by side."""
        return sum(len(s) for s in self.slots)


class SerialEngine(wiring.Component):
    """Every unit's ``p`` of a streaming core's first dense layer, computed in :attr:`steps`
    cycles per image instead of by one adder tree per unit.

    The bits of the last feature map that the layer reads are written, as their positions
    pass, into a map RAM (``per_word`` positions per word, two images: the next image's
    positions arrive while the engine reads this one's). After an image's last position the
    engine reads one map word per cycle together with one ROM word (``init=``: the weights, a
    bit per unit of the group and map bit read); each of :attr:`lanes` lanes ANDs the map word
    with its unit's weights, counts the ones (a pipelined popcount) and adds the count to its
    accumulator; after a group's last word the lanes' sums shift into per-lane register chains,
    which hold every unit's ``p`` when the run ends.

    Why this cut: the work is ``units x map bits`` AND-and-count operations per image, and
    images come ``period`` cycles apart, so at least ``units * bits / period`` of them are
    needed per cycle whatever the cut. Reading whole map words (one position's channels, or
    several positions') with a few units at a time keeps the count per cycle near that minimum
    with no selection logic: the RAM's and the ROM's read ports select, for free in block RAM.
    Taking one map bit per cycle for all units instead would need an accumulator per unit
    (``units x width`` adder bits, more than the popcounts of a few lanes), and all units with a
    popcount over the whole map, one unit per cycle, needs a popcount as wide as the map. Of the
    cuts that finish in time, :func:`_choose` takes the one with the smallest estimate
    (:func:`~sbnn_hdl.estimate.estimate_ecp5`, then flip-flops): the fewest lanes for each
    number of positions per word. Units are ordered by their largest ``p``, so that each
    chain register is as wide as the units that pass through it.

    Parameters
    ----------
    plan : LayerPlan
        The first dense layer (binary sources: the collected bits; each read once).
    collect : list of (position, channel)
        Source ``s`` of ``plan`` is bit ``channel`` of the stream at ``position``
        (:attr:`StreamPlan.collect`).
    positions : int
        Positions of the last map per image.
    period : int
        The fewest cycles between two images' last positions.
    window : (int, int)
        The earliest and latest :attr:`latency` the caller can take (from when the caller's
        other inputs of the layer, ``q``, are valid and held).
    every : int
        Adder levels per register stage.

    Ports
    -----
    bits : In(unsigned(len(columns)))
        The stream's bits at one position, column ``c`` being stream channel ``columns[c]``.
    valid : In(1)
        ``bits`` is the next position's, in raster order; an image's positions follow each
        other, then the next image's.
    p : Out(unsigned)
        Unit ``u``'s ``p`` in ``shape_for(0, plan.p_max(u))`` bits, packed from bit 0 up (0 for
        a unit without sources), valid on the cycle of ``ready`` and until the next image's
        first group is done (at least ``words`` cycles after the next image's ``ready`` would be
        due, so well after the layer has read it).
    ready : Out(1)
        High for one cycle, :attr:`latency` cycles after the cycle after an image's last position.

    Attributes
    ----------
    latency : int
        ``steps + popcount stages + 1``: the map and ROM reads and their second registers (the
        ROM's is the block RAM's output register once :mod:`sbnn_hdl.outreg` has folded it), the
        registered ANDs and the popcount, the accumulator and chain; or ``window[0]`` if that
        is later.
    steps, lanes, per_word : int
        Cycles per image that the engine reads; units per cycle; positions per map word.
    columns : list of int
        The stream channels kept in the map, a channel as often as one position's sources
        read it.

    Raises
    ------
    HardwareError
        A layer whose sources are not bits, or no cut that finishes within ``period`` and the
        ``window``.
    """

    def __init__(self, plan, collect, positions, period, window, *, every=DEFAULT_EVERY):
        if any(v != 1 for v in plan.source_max):
            raise HardwareError(f"--head serial: expected a binary last feature map (values 0 and 1), found values "
                                f"up to {max(plan.source_max)}")
        self.plan, self.every, self.positions = plan, every, positions
        # Column of each source: its channel, and which occurrence of that channel at its position
        # (the last conv layer's duplicate channels are one stream channel, read twice).
        seen, column_of = {}, []
        for position, channel in collect:
            seen[(position, channel)] = seen.get((position, channel), 0) + 1
            column_of.append((channel, seen[(position, channel)] - 1))
        keys = sorted(set(column_of))
        self.columns = [channel for channel, _ in keys]
        index = {key: c for c, key in enumerate(keys)}
        self._where = [(position, index[key]) for (position, _), key in zip(collect, column_of)]
        units = [k for k, u in enumerate(plan.units) if u.sources]
        self.units = sorted(units, key=lambda k: plan.p_max(plan.units[k]))
        for k in self.units:
            # The first dense layer's sources are distinct inputs: each is read once.
            assert all(count == 1 for _, count in plan.units[k].sources)
        self.layout, self.natural_latency = _choose(self, period, window)
        self.lanes, self.per_word, self.steps = self.layout.lanes, self.layout.per_word, self.layout.steps
        self.latency = max(self.natural_latency, window[0])
        self.p_widths = [shape_for(0, plan.p_max(u)).width for u in plan.units]
        super().__init__({"bits": In(unsigned(len(self.columns))), "valid": In(1),
                          "p": Out(unsigned(sum(self.p_widths))), "ready": Out(1)})

    def _layout(self, lanes, per_word):
        words = -(-self.positions // per_word)
        groups = -(-len(self.units) // lanes)
        order = [None] * (groups * lanes - len(self.units)) + self.units
        slots = [set() for _ in range(lanes)]
        for i, k in enumerate(order):
            if k is not None:
                slots[i % lanes].update(self._bit(s, per_word)[1] for s, _ in self.plan.units[k].sources)
        return _Layout(lanes, per_word, words, groups, tuple(order), tuple(tuple(sorted(s)) for s in slots))

    def _bit(self, source, per_word):
        """``(word, bit)`` of a source in the map RAM."""
        position, column = self._where[source]
        return position // per_word, (position % per_word) * len(self.columns) + column

    @staticmethod
    def _members(layout, lane):
        """The units of ``lane``, group by group."""
        return [k for k in layout.order[lane::layout.lanes] if k is not None]

    def _lane_max(self, layout, lane):
        return max(self.plan.p_max(self.plan.units[k]) for k in self._members(layout, lane))

    def _lanes(self, pipe, layout, word, weights):
        """The lanes' counts of one step (:class:`Timed`, aligned), from the map word and the
        ROM word (``None`` in a dry run)."""
        counts, offset = [], 0
        for lane, slots in enumerate(layout.slots):
            # The ANDs registered before the popcount, on reads registered once more (stage 1):
            # the ROM's second register is the block RAM's own output register
            # (sbnn_hdl.outreg folds it for ECP5), without which its data come late in the cycle.
            bits = [pipe.register(pipe.input(None if pipe.dry else word[b] & weights[offset + n], 0, 1, stage=1))
                    for n, b in enumerate(slots)]
            pipe.stats["select_bits"] = pipe.stats.get("select_bits", 0) + len(slots)
            offset += len(slots)
            counts.append(pipe.finish(pipe.popcount(bits)))
        stage = max(c.stage for c in counts)
        return [pipe.delay(c, stage) for c in counts]

    def _cost(self, layout):
        """``(natural latency, estimate)`` of a layout, from a dry run of its lanes, plus the
        map's read register, the accumulators and the chains."""
        dry = Pipeline(None, self.every, "dry")
        counts = self._lanes(dry, layout, None, None)
        stats = dict(dry.stats, argmax_bits=0)
        stats["register_bits"] += 2 * layout.per_word * len(self.columns)   # the map's read registers
        for lane in range(layout.lanes):
            width = shape_for(0, self._lane_max(layout, lane)).width
            if layout.words > 1:
                stats["adder_bits"] += width
                stats["register_bits"] += width
            stats["register_bits"] += width * layout.groups
        return layout.steps + counts[0].stage + 1, estimate_ecp5(stats)

    def elaborate(self, platform):
        m = Module()
        layout = self.layout
        stats = {"register_bits": 0, "adder_bits": 0, "adders": 0, "compare_bits": 0, "select_bits": 0,
                 "memory_bits": 0}
        self.stats = stats

        # The map RAM: word `waddr` of buffer `wpar` holds positions waddr*per_word onwards.
        width = layout.per_word * len(self.columns)
        waddr = Signal(range(layout.words), name="map_waddr")
        wslot = Signal(range(layout.per_word), name="map_wslot")
        wpar = Signal(name="map_wpar")
        depth = 2 << len(waddr)
        m.submodules.map = ram = Memory(shape=unsigned(width), depth=depth, init=[])
        write = ram.write_port(granularity=len(self.columns))
        read = ram.read_port()
        last_position = (waddr == layout.words - 1) & (wslot == (self.positions - 1) % layout.per_word)
        m.d.comb += [write.addr.eq(Cat(waddr, wpar)), write.data.eq(Cat(*[self.bits] * layout.per_word)),
                     write.en.eq(Mux(self.valid, Const(1, layout.per_word) << wslot, 0))]
        busy = Signal(name="engine_busy")
        raddr = Signal(range(layout.words), name="engine_word")
        step = Signal(range(layout.steps), name="engine_step")
        with m.If(busy):
            m.d.sync += [raddr.eq(Mux(raddr == layout.words - 1, 0, raddr + 1)), step.eq(step + 1)]
            with m.If(step == layout.steps - 1):
                m.d.sync += busy.eq(0)
        # After the run's block: a run that starts on the previous run's last step wins.
        with m.If(self.valid):
            with m.If(last_position):
                # The next image writes the other buffer; this one's run starts.
                m.d.sync += [waddr.eq(0), wslot.eq(0), wpar.eq(~wpar), busy.eq(1), raddr.eq(0), step.eq(0)]
            with m.Elif(wslot == layout.per_word - 1):
                m.d.sync += [wslot.eq(0), waddr.eq(waddr + 1)]
            with m.Else():
                m.d.sync += wslot.eq(wslot + 1)
        # The buffer that the last image was written to (the writer has moved to the other one).
        m.d.comb += read.addr.eq(Cat(raddr, ~wpar))
        stats["memory_bits"] += depth * width
        # The map has a few dozen words: yosys builds it in LUT RAM, whose reads are asynchronous,
        # and the read port's register in flip-flops (the cnnC_s90_s1 engine synthesised alone).
        stats["register_bits"] += width + len(waddr) + len(wslot) + 1 + 1 + len(raddr) + len(step)

        # The weights: ROM word `step` holds, per lane, one bit per slot the lane reads.
        words = []
        for step_index in range(layout.steps):
            group, word = divmod(step_index, layout.words)
            value, offset = 0, 0
            for lane, slots in enumerate(layout.slots):
                unit = layout.order[group * layout.lanes + lane]
                if unit is not None:
                    read_bits = {self._bit(s, layout.per_word) for s, _ in self.plan.units[unit].sources}
                    for n, b in enumerate(slots):
                        value |= ((word, b) in read_bits) << (offset + n)
                offset += len(slots)
            words.append(value)
        rom_width = layout.rom_width
        m.submodules.weights = rom = Memory(shape=unsigned(rom_width), depth=layout.steps, init=words)
        weights = rom.read_port()
        m.d.comb += weights.addr.eq(step)
        stats["memory_bits"] += rom_width * layout.steps

        # Both reads registered once more, reset-less and always enabled: for the ROM, where it is
        # block RAM, this is the register sbnn_hdl.outreg folds into the DP16KD; the map's keeps
        # the two in step.
        map_word = Signal(width, name="engine_map_word", reset_less=True)
        rom_word = Signal(rom_width, name="engine_rom_word", reset_less=True)
        m.d.sync += [map_word.eq(read.data), rom_word.eq(weights.data)]
        stats["register_bits"] += width

        pipe = Pipeline(m, self.every, "engine")
        counts = self._lanes(pipe, layout, map_word, rom_word)
        # The step's flags, registered with the reads, then as long as the popcounts take.
        first, shift, final = raddr == 0, busy & (raddr == layout.words - 1), busy & (step == layout.steps - 1)
        for stage in range(counts[0].stage + 1):
            flags = Signal(3, name=f"engine_flags{stage}")
            m.d.sync += flags.eq(Cat(first, shift, final))
            stats["register_bits"] += 3
            first, shift, final = flags[0], flags[1], flags[2]

        p = [Const(0, w) for w in self.p_widths]
        for lane, count in enumerate(counts):
            top = self._lane_max(layout, lane)
            if layout.words > 1:
                acc = Signal(shape_for(0, top), name=f"engine_acc{lane}", reset_less=True)
                total = Signal(shape_for(0, top), name=f"engine_sum{lane}")
                m.d.comb += total.eq(Mux(first, 0, acc) + count.value)
                m.d.sync += acc.eq(total)
                stats["adder_bits"] += len(total)
                stats["adders"] += 1
                stats["select_bits"] += len(total)
                stats["register_bits"] += len(acc)
            else:
                total = count.value
            # The lane's last register ends up holding the last group's sum, the one before it
            # the group before, and so on; a register passes only the sums of units before it.
            members = self._members(layout, lane)
            chain = [Signal(shape_for(0, self.plan.p_max(self.plan.units[k])), name=f"engine_p{lane}_{g}",
                            reset_less=True) for g, k in enumerate(members)]
            with m.If(shift):
                m.d.sync += [reg.eq(nxt) for reg, nxt in zip(chain, chain[1:] + [total])]
            stats["register_bits"] += sum(len(reg) for reg in chain)
            for k, reg in zip(members, chain):
                p[k] = reg
        m.d.comb += self.p.eq(Cat(*p))

        ready = final
        for stage in range(self.latency - self.natural_latency + 1):
            delayed = Signal(name=f"engine_ready{stage}")
            m.d.sync += delayed.eq(ready)
            stats["register_bits"] += 1
            ready = delayed
        m.d.comb += self.ready.eq(ready)
        stats.update({key: stats[key] + value for key, value in pipe.stats.items()})
        return m


def _choose(engine, period, window):
    """The cheapest :class:`_Layout` whose run fits: at most ``period`` steps (the next image's
    run may start then), natural latency at most ``window[1]``, and the latency, padded to
    ``window[0]``, before the next image's first group overwrites the chains."""
    units, best = len(engine.units), None
    for per_word in sorted({-(-engine.positions // words) for words in range(1, engine.positions + 1)}):
        words = -(-engine.positions // per_word)
        if words > period:
            continue
        lanes = -(-units // (period // words))
        while lanes <= units:
            layout = engine._layout(lanes, per_word)
            natural, estimate = engine._cost(layout)
            stages = natural - layout.steps - 1
            if (layout.steps <= period and natural <= window[1]
                    and max(natural, window[0]) <= period + layout.words + stages):
                key = (estimate["lut4"], estimate["ff"], layout.steps)
                if best is None or key < best[0]:
                    best = (key, layout, natural)
                break
            lanes += 1
    if best is None:
        raise HardwareError(f"--head serial: expected a serial engine that finishes within {period} cycles per image, "
                            f"found none for {units} units over {engine.positions} positions")
    return best[1], best[2]

"""A conv stage's sums over several cycles, for stages that see a window only every few cycles."""

from dataclasses import replace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..estimate import LUT_PER_ADDER_BIT, LUT_PER_SELECT_BIT
from ..hwplan import DEFAULT_EVERY
from .accumulator import SparseAccumulator
from .layer import FANOUT, DenseLayer
from .pipeline import Pipeline, delayed, shape_for

__all__ = ["PhasedLayer", "WAYS"]

#: The most window bits one registered selection step chooses from: a 4:1 selection is two LUT4
#: levels, a 16:1 one four or five, which was the critical path at 148 MHz on the 12F.
WAYS = 4


class PhasedLayer(wiring.Component):
    """A conv stage's layer that takes ``share`` cycles per window, with about ``1/share`` of the
    adders of a :class:`~sbnn_hdl.gateware.layer.DenseLayer`.

    After a pool of stride 2 a conv stage sees a new window at most every 4 cycles, after two
    pools every 16: a layer that finishes every window in one cycle is idle most of the time.
    Here each unit's connections (its sources, each as often as it counts) are dealt out over
    ``share`` *phases*: input ``i`` of the unit's popcount takes the unit's source
    ``i*share + phase`` on the cycle of that phase (a selection among at most ``share`` window
    bits, or 0), so the popcount has ``ceil(connections / share)`` inputs. A running total adds
    the popcounts of the phases. ``q`` is summed the same way. Then the
    thresholds are those of a :class:`DenseLayer` that takes ``p`` and ``q`` from these totals
    (``p_input``): the comparisons are built exactly as in the unshared layer. A unit with no
    connection still costs nothing but its threshold (none for K0 kernels), and only the
    1-valued taps are wired, now through a selection.

    Only for layers whose sources are bits (every conv layer after the first: its window holds
    the previous layer's output bits).

    Parameters
    ----------
    plan : LayerPlan
        The stage's layer (:attr:`StagePlan.layer_plan <sbnn_hdl.streamplan.StagePlan>`).
    share : int
        Cycles per window, at least 2.
    every : int
        Adder levels per register stage.

    Ports
    -----
    inputs : In(unsigned)
        The window, as :class:`DenseLayer`'s ``inputs``; it must hold still for ``share`` cycles
        from ``start`` on (:class:`~sbnn_hdl.gateware.window.WindowStream` with ``spacing=share``).
    start : In(1)
        High for one cycle when ``inputs`` holds a new window; at least ``share`` cycles apart.
    outputs : Out(len(plan.units))
        Bit ``u`` is unit ``u``'s output, valid :attr:`latency` cycles after ``start`` (for at
        least that cycle).

    Attributes
    ----------
    latency : int
        ``select_stages + acc_latency + share`` (the selection's registers, the slowest popcount
        and the phases: then the totals hold the window's sums), plus one cycle when ``p`` waits
        in registers while the thresholds work on ``q`` (when their ``p_stage`` is not 0), plus
        the comparisons' :attr:`DenseLayer.latency`.
    share : int
    select_stages : int
        1, or 2 for a share above :data:`WAYS`: the selection then takes two registered steps.
    latches : int
        The registers per unit in which ``p`` waits for the thresholds' work on ``q``, each
        written once per window: ``p_stage // share + 1`` (0 when ``p_stage`` is 0).
    comparisons : DenseLayer
        The thresholds (``p_input``).

    Raises
    ------
    ValueError
        For ``share < 2`` or a source that is not a bit.
    """

    def __init__(self, plan, share, *, every=DEFAULT_EVERY):
        if share < 2:
            raise ValueError(f"share: expected at least 2 cycles per window, found {share}")
        if not self.shareable(plan):
            raise ValueError(f"layer '{plan.name}': expected binary sources for a shared layer, found largest "
                             f"values up to {max(plan.source_max)}")
        self.plan, self.share, self.every = plan, share, every
        lists = [_expand(u.sources) for u in plan.units]
        if plan.q_sources:
            lists.append(_expand(plan.q_sources))
        self.lists = lists
        self.inputs_per_sum = [-(-len(sources) // share) for sources in lists]
        self.acc_latency = max((SparseAccumulator.latency_for([1] * n, [1] * n, every=every)
                                for n in self.inputs_per_sum), default=0)
        self.select_stages = 1 if share <= WAYS else 2
        self.sums_ready = self.select_stages + self.acc_latency + share
        q_input = plan.q_max if plan.q_sources else 0
        self.comparisons = DenseLayer(replace(plan, q_sources=(), q_input=q_input), every=every, p_input=True)
        p_stage = self.comparisons.p_stage
        # p must reach the thresholds p_stage cycles after q. The totals are rewritten as soon as
        # the next window's first popcount arrives (on the cycle after sums_ready at the
        # earliest), so p waits in registers written once per window: the first on sums_ready,
        # each next one `share` cycles after the one before, so that the j-th (from 0) holds p
        # from j*share + 1 to (j+1)*share cycles after sums_ready (the next window's writes come
        # `share` cycles later at the earliest). A chain of p_stage registers would cost up to
        # share times as many bits.
        self.latches = p_stage // share + 1 if p_stage else 0
        self.q_stage = self.sums_ready + bool(self.latches)
        self.latency = self.q_stage + self.comparisons.latency
        self.p_accumulators = []   # built in elaborate()
        super().__init__({"inputs": In(unsigned(max(plan.inputs, 1))), "start": In(1),
                          "outputs": Out(len(plan.units))})

    @staticmethod
    def shareable(plan):
        """Whether the layer of ``plan`` can be shared: all its sources are bits."""
        return all(v == 1 for v in plan.source_max)

    @staticmethod
    def best_share(plan, most, *, every=DEFAULT_EVERY):
        """The cycles per window, from 1 (not shared) to ``most``, for which the estimate of the
        layer's popcounts, totals and selections is smallest (the thresholds are the same
        either way); 1 for a layer whose sources are not all bits."""
        if most < 2 or not PhasedLayer.shareable(plan):
            return 1
        sizes = [len(_expand(u.sources)) for u in plan.units] + [len(_expand(plan.q_sources))]

        def cost(share):
            if share == 1:
                return LUT_PER_ADDER_BIT * sum(_popcount_bits(n, every) for n in sizes)
            return sum(LUT_PER_ADDER_BIT * (_popcount_bits(-(-n // share), every) + shape_for(0, n).width)
                       + LUT_PER_SELECT_BIT * n for n in sizes if n)

        return min(range(1, most + 1), key=lambda share: (cost(share), share))

    @property
    def parts(self):
        """The components inside the layer whose counts a core's ``resources()`` adds."""
        return [*self.p_accumulators, self.comparisons, *self.comparisons.parts]

    def elaborate(self, platform):
        m = Module()
        share, plan = self.share, self.plan
        stats = {"register_bits": 0, "adder_bits": 0, "adders": 0, "compare_bits": 0, "select_bits": 0}
        # The phase and the running totals' enables go to every sum: each group of FANOUT sums
        # reads register copies of its own (one register driving a whole layer was the critical
        # path of the unshared layers' shared values, see DenseLayer).
        groups = -(-len(self.lists) // FANOUT)
        phase = Signal(range(share), name="phase")
        active = self.start | (phase != 0)
        phase_next = Signal(range(share), name="phase_next")
        m.d.comb += phase_next.eq(Mux(active, Mux(phase == share - 1, 0, phase + 1), phase))
        m.d.sync += phase.eq(phase_next)
        phases = [Signal(range(share), name=f"phase_g{g}") for g in range(groups)]
        m.d.sync += [copy.eq(phase_next) for copy in phases]
        late = phases   # the phase a cycle later, for the second step of two-step selections
        if self.select_stages == 2:
            late = [Signal(range(share), name=f"phase_late_g{g}") for g in range(groups)]
            m.d.sync += [copy.eq(now) for copy, now in zip(late, phases)]
            stats["register_bits"] += len(phase) * groups
        sources = self.inputs
        if plan.complements:
            sources = Signal(2 * len(self.inputs), name="sources")
            m.d.comb += sources.eq(Cat(self.inputs, ~self.inputs))
        delay = self.select_stages + self.acc_latency   # >= 1: the last delay is the groups' copies
        add_before = delayed(m, active, delay - 1, "add", stats)
        first_before = delayed(m, self.start, delay - 1, "first", stats)
        adds = [Signal(name=f"add_g{g}") for g in range(groups)]
        firsts = [Signal(name=f"first_g{g}") for g in range(groups)]
        m.d.sync += [signal.eq(add_before) for signal in adds] + [signal.eq(first_before) for signal in firsts]
        stats["register_bits"] += len(phase) * (1 + groups) + 2 * groups

        totals = []
        self.p_accumulators = []
        for k, (connections, n) in enumerate(zip(self.lists, self.inputs_per_sum)):
            total = Signal(shape_for(0, len(connections)), name=f"total{k}")
            totals.append(total)
            if not n:
                continue
            chosen = []
            phase_now, phase_late = phases[k // FANOUT], late[k // FANOUT]
            for i in range(n):
                choices = [sources[connections[i * share + j]] if i * share + j < len(connections) else Const(0, 1)
                           for j in range(share)]
                stats["select_bits"] += sum(i * share + j < len(connections) for j in range(share))
                if self.select_stages == 1:
                    chosen.append(Cat(*choices).bit_select(phase_now, 1))
                    continue
                # Two steps of at most WAYS: each a LUT level or two instead of four or five.
                partial = Signal(-(-share // WAYS), name=f"partial{k}_{i}", reset_less=True)
                m.d.sync += partial.eq(Cat(*[Cat(*choices[h * WAYS:(h + 1) * WAYS]).bit_select(phase_now[:2], 1)
                                             for h in range(len(partial))]))
                chosen.append(partial.bit_select(phase_late[2:], 1))
                stats["register_bits"] += len(partial)
            selected = Signal(n, name=f"selected{k}", reset_less=True)
            m.d.sync += selected.eq(Cat(*chosen))
            acc = SparseAccumulator([1] * n, every=self.every, latency=self.acc_latency)
            self.p_accumulators.append(acc)
            m.submodules[f"sum{k}"] = acc
            m.d.comb += acc.inputs.eq(selected)
            with m.If(adds[k // FANOUT]):
                m.d.sync += total.eq(Mux(firsts[k // FANOUT], 0, total) + acc.sum)
            stats["register_bits"] += n + len(total)
            stats["adder_bits"] += len(total)
            stats["adders"] += 1

        units = len(plan.units)
        p_totals, q_total = totals[:units], (totals[units] if plan.q_sources else None)
        layer = self.comparisons
        m.submodules.thresholds = layer
        if self.latches:
            # The first registers take every total (q's too), the later ones p's alone.
            held, write = totals, delayed(m, self.start, self.sums_ready, "ready", stats)
            for j in range(self.latches):
                if j:
                    write = delayed(m, write, share, f"ready{j}", stats)
                source = held if j == 0 else held[:units]
                held = [Signal(len(t), name=f"held{j}_{k}", reset_less=True) for k, t in enumerate(source)]
                with m.If(write):
                    m.d.sync += [h.eq(t) for h, t in zip(held, source)]
                stats["register_bits"] += sum(len(h) for h in held)
                if j == 0:
                    q_total = held[units] if plan.q_sources else None
            p_totals = held[:units]
        if units:
            m.d.comb += layer.p.eq(Cat(*p_totals))
        if q_total is not None:
            m.d.comb += layer.q.eq(q_total)
        m.d.comb += self.outputs.eq(layer.outputs)
        self.stats = stats
        return m


_POPCOUNT_BITS = {}


def _popcount_bits(n, every):
    """The adder bits of a popcount of ``n`` bits."""
    if (n, every) not in _POPCOUNT_BITS:
        dry = Pipeline(None, every, "dry")
        SparseAccumulator._build(dry, [dry.input(None, 0, 1) for _ in range(n)], [1] * n)
        _POPCOUNT_BITS[n, every] = dry.stats["adder_bits"]
    return _POPCOUNT_BITS[n, every]


def _expand(multiset):
    """Each source of ``(source, count)`` pairs as often as it counts."""
    return [s for s, c in multiset for _ in range(c)]

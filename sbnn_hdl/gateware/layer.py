"""A dense layer as hardware: sparse accumulators, the shared input sum, thresholds or scores."""

from amaranth.hdl import Cat, Module, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .accumulator import SparseAccumulator
from ..hwplan import DEFAULT_EVERY
from .pipeline import Pipeline, delayed, shape_for
from .threshold import Threshold

__all__ = ["DenseLayer", "OutputLayer"]


def _source_widths(plan):
    return [shape_for(0, v).width for v in plan.source_max]


class _LayerBase(wiring.Component):
    """What hidden and output layers share: ports for the sources, one accumulator per unit and
    one for ``q`` (or a ``q`` port, with ``plan.q_input``), all padded to the same latency
    ``acc_latency``; or, with ``p_input``, no accumulators: a ``p`` port that carries every
    unit's ``p`` from outside (a serial engine, :class:`~sbnn_hdl.gateware.serial.SerialEngine`),
    valid at stage :attr:`p_stage`, and ``q`` from the ``q`` port at stage 0 (``acc_latency`` is 0).
    ``p_stage`` is then the stage at which the layer's own work on ``q`` is done, so that ``p``
    waits in no register: the engine holds it."""

    def _make_accumulators(self, plan, every, q_stage, p_input=False):
        self.plan = plan
        self.every = every
        if q_stage < 0:
            raise ValueError(f"q_stage: expected 0 or more cycles, found {q_stage}")
        if p_input and plan.q_sources:
            raise ValueError("p_input: expected q from the q port (plan.q_input), found a summed q_sources")
        self.q_stage = q_stage
        self.p_input = p_input
        self.p_widths = [shape_for(0, plan.p_max(u)).width for u in plan.units]
        self.widths = _source_widths(plan)
        self.offsets = [sum(self.widths[:k]) for k in range(len(self.widths))]
        # The inputs port: the sources without the complements of the xnor datapath.
        self.input_width = max(sum(self.widths[:plan.inputs]), 1)

        def accumulator(multiset, latency=None):
            return SparseAccumulator([plan.source_max[s] for s, _ in multiset], [c for _, c in multiset],
                                     every=every, latency=latency)

        def natural_latency(multiset):
            return SparseAccumulator.latency_for([plan.source_max[s] for s, _ in multiset],
                                                 [c for _, c in multiset], every=every)

        if p_input:
            self.acc_latency, self.p_accumulators, self.q_accumulator = 0, [], None
            return
        natural = [natural_latency(u.sources) for u in plan.units]
        if plan.q_input:
            natural.append(q_stage)
        elif plan.uses_q:
            natural.append(natural_latency(plan.q_sources))
        self.acc_latency = max(natural, default=0)
        self.p_accumulators = [accumulator(u.sources, self.acc_latency) for u in plan.units]
        self.q_accumulator = accumulator(plan.q_sources, self.acc_latency) if plan.q_sources else None

    @property
    def parts(self):
        """The components inside the layer whose counts a core's ``resources()`` adds."""
        return [*self.p_accumulators, *([self.q_accumulator] if self.q_accumulator else [])]

    def _ports(self, **ports):
        if self.p_input:
            del ports["inputs"]
            ports["p"] = In(unsigned(max(sum(self.p_widths), 1)))
        if self.plan.q_input:
            ports["q"] = In(shape_for(0, self.plan.q_max))
        return ports

    def _connect_accumulators(self, m, pipe, late=(), delay=0):
        """``(p, q)`` as pipeline values: each unit's sum and ``q``. The accumulators of the units
        in ``late`` read the inputs ``delay`` cycles late (their ``p`` is then ``delay`` stages
        later), the others and ``q``'s on time."""
        if self.p_input:
            offsets = [sum(self.p_widths[:k]) for k in range(len(self.p_widths))]
            p = [pipe.input(self.p[o:o + w], 0, self.plan.p_max(u), self.p_stage)
                 for u, o, w in zip(self.plan.units, offsets, self.p_widths)]
            q = pipe.input(self.q, 0, self.plan.q_max) if self.plan.q_input else None
            return p, q

        def with_complements(inputs):
            if not self.plan.complements:
                return inputs
            # A signal of its own: slices of an expression are converted as the whole expression
            # per slice (the first layer of a dense BNN took over 16 GB).
            sources = Signal(2 * len(inputs))
            m.d.comb += sources.eq(Cat(inputs, ~inputs))
            return sources

        on_time = with_complements(self.inputs)
        late_sources = with_complements(delayed(m, self.inputs, delay, "late_inputs", pipe.stats)) if late else None

        def wire(acc, multiset, name, sources=on_time, stage=self.acc_latency):
            m.submodules[name] = acc
            m.d.comb += acc.inputs.eq(Cat(*[sources[self.offsets[s]:self.offsets[s] + self.widths[s]]
                                             for s, _ in multiset]))
            return pipe.input(acc.sum, 0, acc.max_value, stage)

        p = [wire(acc, u.sources, f"p{k}", *((late_sources, self.acc_latency + delay) if k in late else ()))
             for k, (acc, u) in enumerate(zip(self.p_accumulators, self.plan.units))]
        if self.q_accumulator:
            q = wire(self.q_accumulator, self.plan.q_sources, "q")
        elif self.plan.q_input:
            q = pipe.delay(pipe.input(self.q, 0, self.plan.q_max, self.q_stage), self.acc_latency)
        else:
            q = None
        return p, q



def split_product(pipe, q, a, b):
    """``(s, r)`` with ``b*q == a*s + r`` and ``0 <= r < a``: ``s = floor(b*q / a)``, exactly.

    A power-of-two ``a`` is wiring. Otherwise ``s`` is a multiplication by ``M = ceil(2**N / a)``
    and a shift by ``N``, with ``N`` large enough that ``floor(x*M / 2**N) == floor(x / a)`` for
    every ``x`` in range (the error ``x*(M*a - 2**N) / (a*2**N)`` stays below ``1/a``), applied
    to ``x = b*q - L``, shifted by a multiple ``L`` of ``a`` so that it is never negative.
    """
    product = pipe.multiply(q, b)
    if a & (a - 1) == 0:
        shift = a.bit_length() - 1
        return pipe.shift_right(product, shift), pipe.low_bits(product, shift)
    offset = a * (product.lo // a)
    x = pipe.add(product, pipe.const(offset), subtract=True) if offset else product
    n = max((x.hi * (a - 1)).bit_length(), 1)
    quotient = pipe.shift_right(pipe.multiply(x, -(-(1 << n) // a)), n)
    remainder = pipe.assume(pipe.add(x, pipe.multiply(quotient, a), subtract=True), 0, a - 1)
    if offset:
        quotient = pipe.add(quotient, pipe.const(offset // a))
    return quotient, remainder


def _carry_known(c, r):
    """The carry of a ``"pq"`` comparison when the range of ``r`` decides it, else ``None``."""
    _, v = Threshold.split(c)
    if (c.op == ">=" and v <= r.lo) or (c.op != ">=" and v < r.lo):
        return 1
    if (c.op == ">=" and v > r.hi) or (c.op != ">=" and v >= r.hi):
        return 0
    return None


def _carry(c, pipe, r):
    """The bit that completes a ``"pq"`` comparison (see :class:`Threshold`) from the remainder
    ``r``, or a constant: ``r >= v`` for ``>=``, ``r > v`` for ``<=``."""
    known = _carry_known(c, r)
    if known is not None:
        return pipe.const(known)
    return pipe.compare(r, ">=" if c.op == ">=" else ">", Threshold.split(c)[1])


#: Neurons that read one register copy of a layer-shared value (see :meth:`Pipeline.fanout`).
FANOUT = 16


class DenseLayer(_LayerBase):
    """A hidden dense layer: input sources in, one bit per built neuron out.

    Built from a :class:`~sbnn_hdl.hwplan.LayerPlan`: a :class:`SparseAccumulator` per neuron and
    one for ``q`` (only when a neuron needs it); for the neurons that compare ``a'*p + b'*q``,
    the split of ``b'*q`` by ``a'`` (:func:`split_product`) once per distinct ``(a', b')`` and the
    remainder comparisons once per distinct constant; a :class:`Threshold` per neuron.
    Everything is aligned so that all outputs are valid together.

    Ports
    -----
    inputs : In(unsigned) — the layer's sources packed from bit 0 up (source ``k`` is
        ``shape_for(0, plan.source_max[k])`` bits wide)
    q : In(unsigned) — only with ``plan.q_input``: the layer's ``q``, summed outside, valid
        ``q_stage`` cycles after ``inputs``
    p : In(unsigned) — with ``p_input``, instead of ``inputs``: unit ``u``'s ``p`` in
        ``p_widths[u]`` bits, packed from bit 0 up, valid :attr:`p_stage` cycles after ``q``
    outputs : Out(len(plan.units)) — bit ``u`` is unit ``u``'s output

    Attributes
    ----------
    latency : int
        ``acc_latency + shared_latency + threshold_latency``: the slowest accumulator, the
        slowest shared split and remainder comparison (0 without one), with one more register
        stage when more than :data:`FANOUT` neurons read the split (each group of
        :data:`FANOUT` neurons then reads its own copy of it, and with ``neuron_copies`` one
        more for each neuron's own copy), and the slowest comparison.
    neuron_copies : bool
        Whether the neurons read copies of their own (the parameter, where there are groups).
    late_units : frozenset of int
        The units whose accumulators read the inputs :attr:`shared_latency` cycles late, so that
        their sums need not wait for the split of ``q`` in registers of their own: the units
        that compare ``a'*p + b'*q``, when the inputs are fewer bits than their sums (else none).

    Parameters
    ----------
    plan : LayerPlan
    every : int
        Adder levels per register stage.
    q_stage : int
        With ``plan.q_input``: the cycles by which ``q`` follows ``inputs`` (the accumulators
        then take at least as long).
    neuron_copies : bool
        When the split is copied per group of :data:`FANOUT` neurons, also give every neuron
        register copies of its group's ``r`` (which it then compares itself) and ``s``: the
        neurons of one group are spread over the chip (each sits near the inputs it reads), and
        the route from a group's copy to its farthest neuron, then from a copy of ``r`` to a far
        comparison, were the critical paths at one adder level per stage. Costs one cycle and
        ``width(r) + width(s)`` flip-flops per neuron; no LUTs.
    p_input : bool
        Take every unit's ``p`` from the ``p`` port (see :class:`_LayerBase`): then
        :attr:`p_stage` is :attr:`shared_latency`, and ``latency`` counts from ``q``.
    """

    def __init__(self, plan, *, every=DEFAULT_EVERY, q_stage=0, neuron_copies=False, p_input=False):
        self._make_accumulators(plan, every, q_stage, p_input)
        units = plan.units
        dry = Pipeline(None, every, "dry")
        # A register copy of s and r per FANOUT neurons: one register driving a whole layer's
        # adders and comparisons was the critical path after place and route (routing, not logic).
        readers = [k for k, u in enumerate(units) if u.comparison.kind == "pq"]
        self.groups = {k: n // FANOUT for n, k in enumerate(readers)} if len(readers) > FANOUT else None
        self.neuron_copies = neuron_copies and self.groups is not None
        per_unit = self._per_unit(dry, dry.input(None, 0, plan.q_max))
        self.shared_latency = max((x.stage for pair in per_unit for x in pair if x is not None and not x.is_const),
                                  default=0)
        if self.neuron_copies:
            # Room for the neurons' own copies of s, at the end (see elaborate()).
            self.shared_latency = max([self.shared_latency] + [s.stage + 1 for s, _ in per_unit if s is not None])
        q_range = (0, plan.q_max)
        self.s_ranges = {unit: (s.lo, s.hi) for unit, (s, _) in zip(units, per_unit) if s is not None}

        def s_range(u):
            return self.s_ranges[u] if u.comparison.kind == "pq" else q_range

        self.p_stage = self.shared_latency if p_input else self.acc_latency

        def slack(u):
            """The stages between the unit's own input and the comparisons of ``"pq"`` units."""
            start = self.acc_latency + self.shared_latency
            return {"pq": 0, "q": self.shared_latency, "p": start - self.p_stage}[u.comparison.kind]

        def natural(u):
            own = Threshold.latency_for(u.comparison, p_max=plan.p_max(u), s_range=s_range(u), every=every)
            return own - slack(u)

        self.threshold_latency = max((natural(u) for u in units), default=0)
        self.thresholds = [
            Threshold(u.comparison, p_max=plan.p_max(u), s_range=s_range(u), every=every,
                      latency=self.threshold_latency + slack(u))
            for u in units]
        self.latency = self.acc_latency + self.shared_latency + self.threshold_latency
        # The sums of the "pq" units wait shared_latency cycles for the split of q: in registers
        # after their accumulators, or, when the inputs are fewer bits (a first conv layer: a
        # window of a few integers, read by many channels), in registers before them.
        waiting = [k for k, u in enumerate(units) if u.comparison.kind == "pq"]
        late = not p_input and self.input_width < sum(self.p_widths[k] for k in waiting)
        self.late_units = frozenset(waiting) if late and self.shared_latency else frozenset()
        super().__init__(self._ports(inputs=In(unsigned(self.input_width)), outputs=Out(len(units))))

    @property
    def parts(self):
        return [*super().parts, *self.thresholds]

    def _splits(self, pipe, q):
        pairs = sorted({(u.comparison.a, u.comparison.b) for u in self.plan.units if u.comparison.kind == "pq"})
        return {pair: split_product(pipe, q, *pair) for pair in pairs}

    def _per_unit(self, pipe, q):
        """For each unit: ``(s, carry)`` of a ``"pq"`` comparison, ``(None, None)`` otherwise.
        With :attr:`groups`, each group of neurons gets its own register copy of ``s`` and ``r``
        and compares its own copy of ``r``; with :attr:`neuron_copies`, each neuron copies its
        group's ``r`` and compares that (the copies of ``s`` are made in :meth:`elaborate`)."""
        splits = self._splits(pipe, q)
        copied = max((x.stage for sr in splits.values() for x in sr if not x.is_const), default=0) + 1
        carries, result = {}, []
        for k, unit in enumerate(self.plan.units):
            c = unit.comparison
            if c.kind != "pq":
                result.append((None, None))
                continue
            s, r = splits[(c.a, c.b)]
            group = self.groups[k] if self.groups else None
            if group is not None:
                s, r = pipe.fanout(s, copied, group), pipe.fanout(r, copied, group)
                if self.neuron_copies and _carry_known(c, r) is None:
                    group = ("neuron", k)
                    r = pipe.fanout(r, copied + 1, group)
            key = (c.a, c.b, c.op, Threshold.split(c)[1], group)
            if key not in carries:
                carries[key] = _carry(c, pipe, r)
            result.append((s, carries[key]))
        return result

    def elaborate(self, platform):
        m = Module()
        pipe = Pipeline(m, self.every, "layer")
        p, q = self._connect_accumulators(m, pipe, self.late_units, self.shared_latency)
        per_unit = self._per_unit(pipe, q) if q is not None else [(None, None)] * len(self.plan.units)
        start = self.acc_latency + self.shared_latency
        fires = []
        for k, (unit, thr, (s, carry)) in enumerate(zip(self.plan.units, self.thresholds, per_unit)):
            m.submodules[f"t{k}"] = thr
            c = unit.comparison
            if c.kind == "p":
                m.d.comb += thr.p.eq(p[k].value)
            elif c.kind == "q":
                m.d.comb += thr.s.eq(pipe.delay(q, self.acc_latency).value)
            else:
                if self.neuron_copies:
                    s = pipe.fanout(pipe.delay(s, start - 1), start, ("neuron", k))
                m.d.comb += [thr.p.eq(pipe.delay(p[k], start).value), thr.s.eq(pipe.delay(s, start).value),
                             thr.carry.eq(pipe.delay(carry, start).value)]
            fires.append(thr.fire)
        if fires:
            m.d.comb += self.outputs.eq(Cat(*fires))
        self.stats = pipe.stats
        return m


class OutputLayer(_LayerBase):
    """The last layer: integer scores ``a*p + b*q - t`` for every class.

    Ports
    -----
    inputs, q : as for :class:`DenseLayer`
    scores : Out(ArrayLayout(signed(score_width), classes)) — class ``j``'s exact score

    Attributes
    ----------
    latency : int
        ``acc_latency`` plus the slowest score computation (constant multiplications built from
        canonical signed digits, shared ``b*q`` products, the subtraction of ``t``), registered.
    score_width : int
        Wide enough for every class's exact score range.

    Parameters
    ----------
    plan, every, q_stage : as for :class:`DenseLayer`
    p_input : bool
        As for :class:`DenseLayer`: :attr:`p_stage` is then the stage of the ``b*q`` products,
        and ``latency`` counts from ``q``.
    """

    def __init__(self, plan, *, every=DEFAULT_EVERY, q_stage=0, p_input=False):
        self._make_accumulators(plan, every, q_stage, p_input)
        dry = Pipeline(None, every, "dry")
        q = dry.input(None, 0, plan.q_max, self.acc_latency)
        self.p_stage = (max((x.stage or 0 for x in self._products(dry, q).values()), default=0) if p_input
                        else self.acc_latency)
        p = [dry.input(None, 0, plan.p_max(u), self.p_stage) for u in plan.units]
        scores = self._scores(dry, p, q)
        self.latency = max((s.stage or 0 for s in scores), default=0)
        self.score_ranges = [(s.lo, s.hi) for s in scores]
        self.score_width = max(shape_for(min(lo, -1), hi).width for lo, hi in self.score_ranges)
        self.classes = len(plan.outputs)
        super().__init__(self._ports(inputs=In(unsigned(self.input_width)),
                                     scores=Out(data.ArrayLayout(signed(self.score_width), self.classes))))

    def _products(self, pipe, q):
        """``b*q`` once per distinct ``b``."""
        factors = sorted({u.b for u in self.plan.units if u.b}) if q is not None else []
        return {b: pipe.multiply(q, b) for b in factors}

    def _scores(self, pipe, p, q):
        products = self._products(pipe, q)
        scores = []
        for unit, pk in zip(self.plan.units, p):
            terms = [pipe.multiply(pk, unit.a), pipe.const(-unit.t)]
            if unit.b:
                terms.append(products[unit.b])
            scores.append(pipe.finish(pipe.sum(terms)))
        return scores

    def elaborate(self, platform):
        m = Module()
        pipe = Pipeline(m, self.every, "score")
        p, q = self._connect_accumulators(m, pipe)
        scores = [pipe.delay(s, self.latency) for s in self._scores(pipe, p, q)]
        self.stats = pipe.stats
        for j, (_, unit) in enumerate(self.plan.outputs):
            m.d.comb += self.scores[j].eq(scores[unit].value)
        return m

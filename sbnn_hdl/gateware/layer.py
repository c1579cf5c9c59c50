"""A dense layer as hardware: sparse accumulators, the shared input sum, thresholds or scores."""

from amaranth.hdl import Cat, Module, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .accumulator import SparseAccumulator
from .pipeline import Pipeline, shape_for
from .threshold import Threshold

__all__ = ["DenseLayer", "OutputLayer"]


def _source_widths(plan):
    return [shape_for(0, v).width for v in plan.source_max]


class _LayerBase(wiring.Component):
    """What hidden and output layers share: ports for the sources, one accumulator per unit and
    one for ``q``, all padded to the same latency ``acc_latency``."""

    def _make_accumulators(self, plan, every):
        self.plan = plan
        self.every = every
        self.widths = _source_widths(plan)
        self.offsets = [sum(self.widths[:k]) for k in range(len(self.widths))]

        def accumulator(multiset, latency=None):
            return SparseAccumulator([plan.source_max[s] for s, _ in multiset], [c for _, c in multiset],
                                     every=every, latency=latency)

        def natural_latency(multiset):
            return SparseAccumulator.latency_for([plan.source_max[s] for s, _ in multiset],
                                                 [c for _, c in multiset], every=every)

        natural = [natural_latency(u.sources) for u in plan.units]
        if plan.uses_q:
            natural.append(natural_latency(plan.q_sources))
        self.acc_latency = max(natural, default=0)
        self.p_accumulators = [accumulator(u.sources, self.acc_latency) for u in plan.units]
        self.q_accumulator = accumulator(plan.q_sources, self.acc_latency) if plan.uses_q else None

    def _connect_accumulators(self, m, pipe):
        def wire(acc, multiset, name):
            m.submodules[name] = acc
            m.d.comb += acc.inputs.eq(Cat(*[self.inputs[self.offsets[s]:self.offsets[s] + self.widths[s]]
                                             for s, _ in multiset]))
            return pipe.input(acc.sum, 0, acc.max_value, self.acc_latency)

        p = [wire(acc, u.sources, f"p{k}") for k, (acc, u) in enumerate(zip(self.p_accumulators, self.plan.units))]
        q = wire(self.q_accumulator, self.plan.q_sources, "q") if self.q_accumulator else None
        return p, q

    @staticmethod
    def _products(pipe, q, factors):
        """``b * q`` once for each distinct ``b``, all registered."""
        return {b: pipe.finish(pipe.multiply(q, b)) for b in sorted(set(factors))}


class DenseLayer(_LayerBase):
    """A hidden dense layer: input sources in, one bit per built neuron out.

    Built from a :class:`~sbnn_hdl.hwplan.LayerPlan`: a :class:`SparseAccumulator` per neuron and
    one for ``q`` (only when a neuron needs it), the products ``b'*q`` once per distinct ``b'``,
    and a :class:`Threshold` per neuron. Everything is aligned so that all outputs are valid
    together.

    Ports
    -----
    inputs : In(unsigned) — the layer's sources packed from bit 0 up (source ``k`` is
        ``shape_for(0, plan.source_max[k])`` bits wide)
    outputs : Out(len(plan.units)) — bit ``u`` is unit ``u``'s output

    Attributes
    ----------
    latency : int
        ``acc_latency + product_latency + threshold_latency``: the slowest accumulator, the
        slowest shared product (0 without one), the slowest comparison.
    """

    def __init__(self, plan, *, every=2):
        self._make_accumulators(plan, every)
        units = plan.units
        factors = [u.comparison.b for u in units if u.comparison.kind == "pq"]
        q_range = (0, plan.q_max)
        dry = Pipeline(None, every, "dry")
        q = dry.input(None, *q_range)
        products = self._products(dry, q, factors)
        self.product_latency = max((p.stage for p in products.values()), default=0)
        self.product_range = {b: (p.lo, p.hi) for b, p in products.items()}

        def s_range(c):
            return self.product_range[c.b] if c.kind == "pq" else q_range

        def threshold(u, latency):
            c = u.comparison
            return Threshold(c, p_max=plan.p_max(u), s_range=s_range(c), every=every, latency=latency)

        natural = [Threshold.latency_for(u.comparison, p_max=plan.p_max(u), s_range=s_range(u.comparison),
                                         every=every)
                   + (0 if u.comparison.kind == "pq" else -self.product_latency) for u in units]
        self.threshold_latency = max(natural, default=0)
        self.thresholds = [threshold(u, self.threshold_latency + (0 if u.comparison.kind == "pq"
                                                                   else self.product_latency))
                           for u in units]
        self.latency = self.acc_latency + self.product_latency + self.threshold_latency
        super().__init__({"inputs": In(unsigned(max(sum(self.widths), 1))), "outputs": Out(len(units))})

    def elaborate(self, platform):
        m = Module()
        pipe = Pipeline(m, self.every, "layer")
        p, q = self._connect_accumulators(m, pipe)
        factors = [u.comparison.b for u in self.plan.units if u.comparison.kind == "pq"]
        products = self._products(pipe, q, factors) if factors else {}
        start = self.acc_latency + self.product_latency
        fires = []
        for k, (unit, thr) in enumerate(zip(self.plan.units, self.thresholds)):
            m.submodules[f"t{k}"] = thr
            c = unit.comparison
            if c.kind in ("p", "pq"):
                m.d.comb += thr.p.eq(pipe.delay(p[k], start if c.kind == "pq" else self.acc_latency).value)
            if c.kind == "q":
                m.d.comb += thr.s.eq(q.value)
            if c.kind == "pq":
                m.d.comb += thr.s.eq(pipe.delay(products[c.b], start).value)
            fires.append(thr.fire)
        if fires:
            m.d.comb += self.outputs.eq(Cat(*fires))
        return m


class OutputLayer(_LayerBase):
    """The last layer: integer scores ``a*p + b*q - t`` for every class.

    Ports
    -----
    inputs : In(unsigned) — as for :class:`DenseLayer`
    scores : Out(ArrayLayout(signed(score_width), classes)) — class ``j``'s exact score

    Attributes
    ----------
    latency : int
        ``acc_latency`` plus the slowest score computation (constant multiplications built from
        canonical signed digits, shared ``b*q`` products, the subtraction of ``t``), registered.
    score_width : int
        Wide enough for every class's exact score range.
    """

    def __init__(self, plan, *, every=2):
        self._make_accumulators(plan, every)
        dry = Pipeline(None, every, "dry")
        p = [dry.input(None, 0, plan.p_max(u), self.acc_latency) for u in plan.units]
        q = dry.input(None, 0, plan.q_max, self.acc_latency)
        scores = self._scores(dry, p, q)
        self.latency = max((s.stage or 0 for s in scores), default=0)
        self.score_ranges = [(s.lo, s.hi) for s in scores]
        self.score_width = max(shape_for(min(lo, -1), hi).width for lo, hi in self.score_ranges)
        self.classes = len(plan.outputs)
        super().__init__({"inputs": In(unsigned(max(sum(self.widths), 1))),
                          "scores": Out(data.ArrayLayout(signed(self.score_width), self.classes))})

    def _scores(self, pipe, p, q):
        units = self.plan.units
        products = self._products(pipe, q, [u.b for u in units if u.b]) if q is not None else {}
        scores = []
        for unit, pk in zip(units, p):
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
        for j, (_, unit) in enumerate(self.plan.outputs):
            m.d.comb += self.scores[j].eq(scores[unit].value)
        return m

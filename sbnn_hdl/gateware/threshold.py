"""The threshold comparator: one hidden neuron's output bit, folded at generation time."""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .pipeline import Pipeline, shape_for

__all__ = ["Threshold"]


class Threshold(wiring.Component):
    """``fire = a*p + b*q >= t`` in the exact folded form of a :class:`~sbnn_hdl.hwplan.Comparison`.

    - ``"p"``: ``p >= k`` or ``p <= k``: one comparison with a constant;
    - ``"q"``: ``q >= k`` or ``q <= k`` (``a == 0``);
    - ``"pq"``: ``a'*p + s >= k`` (or ``<=``) where ``s = b'*q`` comes from the layer, which
      computes each distinct product once for all its neurons; ``a'*p`` is built from the canonical
      signed digits of ``a'`` (shifts and adders, no multiplier).

    (Constant neurons never reach the hardware: the planner folds them into the next layer.)

    Parameters
    ----------
    comparison : Comparison
    p_max, s_range : int, (int, int)
        The largest ``p``; the range of ``s`` (``"pq"``) or of ``q`` (``"q"``).
    every : int
        Adder levels per register stage.
    latency : int, optional
        Pad to exactly this many cycles (at least :attr:`natural_latency`).

    Ports
    -----
    p : In(unsigned) — ``"p"`` and ``"pq"`` only
    s : In(signed or unsigned) — ``q`` for ``"q"``, ``b'*q`` for ``"pq"``
    fire : Out(1) — valid ``latency`` cycles after ``p`` and ``s``; the comparison's result
    """

    def __init__(self, comparison, *, p_max=0, s_range=(0, 0), every=2, latency=None):
        if comparison.kind not in ("p", "q", "pq"):
            raise ValueError(f"comparison: expected kind 'p', 'q' or 'pq', found {comparison.kind!r}")
        self.comparison = comparison
        self.p_max = p_max
        self.s_range = tuple(s_range)
        self.every = every
        self.natural_latency = self.latency_for(comparison, p_max=p_max, s_range=s_range, every=every)
        self.latency = self.natural_latency if latency is None else latency
        if self.latency < self.natural_latency:
            raise ValueError(f"latency: expected at least {self.natural_latency} cycles, found {latency}")
        ports = {"fire": Out(1)}
        if comparison.kind in ("p", "pq"):
            ports["p"] = In(shape_for(0, p_max))
        if comparison.kind in ("q", "pq"):
            ports["s"] = In(shape_for(*self.s_range))
        super().__init__(ports)

    @staticmethod
    def latency_for(comparison, *, p_max, s_range, every):
        """The natural latency of a comparator with these parameters (without building one)."""
        dry = Pipeline(None, every, "dry")
        return Threshold._build(dry, comparison, dry.input(None, 0, p_max), dry.input(None, *s_range)).stage

    @staticmethod
    def _build(pipe, c, p, s):
        x = {"p": lambda: p, "q": lambda: s, "pq": lambda: pipe.add(pipe.multiply(p, c.a), s)}[c.kind]()
        x = pipe.register(x) if x.depth else x
        if pipe.dry:
            fire = None
        else:
            fire = x.value >= c.k if c.op == ">=" else x.value <= c.k
        return pipe.register(pipe.input(fire, 0, 1, x.stage))

    def elaborate(self, platform):
        m = Module()
        pipe = Pipeline(m, self.every, "thr")
        p = pipe.input(self.p, 0, self.p_max) if "p" in self.signature.members else None
        s = pipe.input(self.s, *self.s_range) if "s" in self.signature.members else None
        fire = pipe.delay(self._build(pipe, self.comparison, p, s), self.latency)
        m.d.comb += self.fire.eq(fire.value)
        self.stats = pipe.stats
        return m

"""The threshold comparator: one hidden neuron's output bit, folded at generation time."""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..hwplan import DEFAULT_EVERY
from .pipeline import Pipeline, shape_for

__all__ = ["Threshold"]


class Threshold(wiring.Component):
    """One hidden neuron's output bit, in the exact folded form of a
    :class:`~sbnn_hdl.hwplan.Comparison` (constant neurons never reach the hardware).

    - ``"p"``: ``p >= k`` or ``p <= k``: one comparison with a constant;
    - ``"q"``: ``q >= k`` or ``q <= k`` (``a == 0``; ``q`` arrives on ``s``);
    - ``"pq"``: ``a'*p + b'*q >= k`` (or ``<= k``). The layer splits the shared product into
      ``b'*q = a'*s + r`` (``s = floor(b'*q / a')``, ``0 <= r < a'``) once for all its neurons with
      the same ``a', b'``. With ``k = a'*u + v`` (``0 <= v < a'``) the comparison is exactly
      ``p + s + carry >= u + 1`` where ``carry = (r >= v)`` (for ``<=``: ``p + s + carry <= u``
      with ``carry = (r > v)``), which the layer also computes once per distinct ``v`` (and per
      group of neurons that reads its own copy of ``r``, see :class:`DenseLayer`). So each
      neuron needs one narrow adder and one comparison, which takes ``carry`` as its lowest
      input (:meth:`Pipeline.compare`), whatever ``a'`` and ``b'`` are.

    Parameters
    ----------
    comparison : Comparison
    p_max : int
        The largest ``p``.
    s_range : (int, int)
        The range of ``q`` (``"q"``) or of ``s`` (``"pq"``).
    every : int
        Adder levels per register stage.
    latency : int, optional
        Pad to exactly this many cycles (at least :attr:`natural_latency`).

    Ports
    -----
    p : In(unsigned) — ``"p"`` and ``"pq"`` only
    s : In(shape of s_range) — ``"q"`` and ``"pq"`` only
    carry : In(1) — ``"pq"`` only
    fire : Out(1) — valid ``latency`` cycles after the inputs
    """

    def __init__(self, comparison, *, p_max=0, s_range=(0, 0), every=DEFAULT_EVERY, latency=None):
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
        if comparison.kind == "pq":
            ports["carry"] = In(1)
        super().__init__(ports)

    @staticmethod
    def split(comparison):
        """``(u, v)`` with ``k = a'*u + v``, ``0 <= v < a'`` (``"pq"`` only)."""
        return divmod(comparison.k, comparison.a)

    @staticmethod
    def latency_for(comparison, *, p_max, s_range, every):
        """The natural latency of a comparator with these parameters (without building one)."""
        dry = Pipeline(None, every, "dry")
        return Threshold._build(dry, comparison, dry.input(None, 0, p_max), dry.input(None, *s_range),
                                dry.input(None, 0, 1)).stage

    @staticmethod
    def _build(pipe, c, p, s, carry):
        if c.kind == "p":
            return pipe.compare(p, c.op, c.k)
        if c.kind == "q":
            return pipe.compare(s, c.op, c.k)
        u, _ = Threshold.split(c)
        # a'p + b'q >= a'u + v  <=>  p + s + r/a' >= u + v/a'  <=>  p + s + (r >= v) >= u + 1.
        # The carry enters the comparison, not the adder: an adder's carry-in from logic costs
        # nextpnr a carry cell of its own to feed it in.
        return pipe.compare(pipe.add(p, s), c.op, u + 1 if c.op == ">=" else u, carry=carry)

    def elaborate(self, platform):
        m = Module()
        pipe = Pipeline(m, self.every, "thr")
        members = self.signature.members
        p = pipe.input(self.p, 0, self.p_max) if "p" in members else None
        s = pipe.input(self.s, *self.s_range) if "s" in members else None
        carry = pipe.input(self.carry, 0, 1) if "carry" in members else None
        fire = pipe.delay(self._build(pipe, self.comparison, p, s, carry), self.latency)
        m.d.comb += self.fire.eq(fire.value)
        self.stats = pipe.stats
        return m

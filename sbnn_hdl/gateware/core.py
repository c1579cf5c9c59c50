"""The network core: one raw input sample per clock in, one prediction per clock out."""

from amaranth.hdl import Cat, Const, Module, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..hwplan import DEFAULT_EVERY, check_buildable, plan_network
from .argmax import Argmax
from .layer import DenseLayer, OutputLayer

__all__ = ["NetworkCore", "result_ports", "total_stats", "sum_stats"]


def sum_stats(parts):
    """The counts (``stats``) of the elaborated ``parts`` added up, key by key."""
    totals = {}
    for part in parts:
        for key, value in getattr(part, "stats", {}).items():
            totals[key] = totals.get(key, 0) + value
    return totals


def total_stats(own, hidden, output, others=()):
    """``own`` counts plus those of every part of the layers ``hidden`` (which compare) and
    ``output`` (which scores), their accumulators and thresholds, and of ``others``."""
    parts = [*hidden, output, *others]
    for layer in [*hidden, output]:
        parts += layer.parts
    totals = dict(own)
    for key, value in sum_stats(parts).items():
        totals[key] = totals.get(key, 0) + value
    return totals


def result_ports(output, argmax, scores):
    """The ports by which a core gives its results (``prediction``, ``out_valid`` and, with
    ``scores``, ``scores``), for its :class:`OutputLayer` ``output`` and :class:`Argmax` ``argmax``."""
    ports = {"prediction": Out(argmax.index.shape()), "out_valid": Out(1)}
    if scores:
        ports["scores"] = Out(data.ArrayLayout(output.signature.members["scores"].shape.elem_shape, output.classes))
    return ports


class NetworkCore(wiring.Component):
    """A whole SBNN as a fully pipelined core: a new sample may enter on every clock.

    The input encoding and plane selection are wiring: only the bits of the planes that the
    network reads, of the elements that some neuron reads, are registered and used.

    Parameters
    ----------
    model : Model
        A model of dense layers (see :func:`~sbnn_hdl.hwplan.plan_network`).
    every : int
        Adder (and comparison) levels per register stage; smaller is faster and uses more
        flip-flops. Layers are always separated by registers.
    relay : int
        Extra register stages on every layer's inputs (default 0). A layer's inputs come from
        neurons all over the chip; with a relay register the long route from the neuron that
        computes a bit to the adders that read it has a clock period of its own instead of
        sharing it with the first adder levels (the critical path after place and route).
        With ``relay`` > 0, each neuron of a hidden layer also reads its own register copy of the
        layer's shared split (:class:`DenseLayer`'s ``neuron_copies``; one more cycle per layer
        whose split is copied per group).
    scores : bool
        Also output every class's score.
    arch : str
        ``"sparse"`` (default): popcounts over the 1-valued connections only, and the shared
        input sum. ``"xnor"``: the conventional dense BNN datapath, for comparison: an XNOR of
        every input with its weight bit and a popcount over all inputs per neuron; only for
        models in the symmetric +-1 domain with binary inputs (:func:`~sbnn_hdl.hwplan.check_xnor`).

    Ports
    -----
    sample : In(unsigned(input.bits * input.size))
        One raw sample: element ``i`` (flattened in C order) in bits ``[i*bits, (i+1)*bits)``.
    valid : In(1)
        ``sample`` holds a sample on this clock.
    prediction : Out(unsigned(max(1, bits(classes - 1))))
        The smallest index of the largest score.
    scores : Out(ArrayLayout(signed(score_width), classes)), with ``scores=True``
        The exact scores ``a*p + b*q - t`` of the last layer.
    out_valid : Out(1)
        ``prediction`` (and ``scores``) belong to the sample that had ``valid`` exactly
        :attr:`latency` cycles earlier.

    Attributes
    ----------
    latency : int
        ``1 + relay * layers + sum(layer.latency for hidden layers) + output_layer.latency +
        argmax.latency``: the input register, the relay stages, each hidden layer (accumulators,
        shared products, comparisons), the output layer's scores and the argmax tree.
    plan : NetworkPlan
        What the generator built (see :mod:`sbnn_hdl.hwplan`).
    read_bits : tuple of int
        The bits of ``sample`` that the core reads, in ascending order; the others may hold
        anything (a host interface need not store them).

    Raises
    ------
    ValueError
        ``relay`` below 0 or ``every`` below 1.
    HardwareError
        A model that the datapath ``arch`` cannot build (:func:`~sbnn_hdl.hwplan.check_buildable`).

    Both are raised before the core exists, so a refused core is never half-built.
    """

    def __new__(cls, model, *, every=DEFAULT_EVERY, relay=0, scores=True, arch="sparse"):
        # The arguments are checked before the core exists: a refused core is never half-built
        # (Amaranth warns of an elaboratable that is created and never elaborated).
        if relay < 0:
            raise ValueError(f"relay: expected 0 or more register stages, found {relay}")
        if every < 1:
            raise ValueError(f"every: expected at least 1 adder level per stage, found {every}")
        check_buildable(model, arch)
        # src_loc_at=1: Amaranth's unused-elaboratable warning names the caller, not this line.
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, model, *, every=DEFAULT_EVERY, relay=0, scores=True, arch="sparse"):
        self.model = model
        self.every = every
        self.relay = relay
        self.arch = arch
        self.plan = plan_network(model, arch=arch)
        bits = model.input.bits
        self.read_bits = tuple(sorted(element * bits + k for element, planes in self.plan.features for k in planes))
        self.hidden = [DenseLayer(p, every=every, neuron_copies=relay > 0) for p in self.plan.layers[:-1]]
        self.output = OutputLayer(self.plan.layers[-1], every=every)
        # One comparison (a wide subtraction and a multiplexer) per stage: the argmax is short,
        # and two levels in one stage were the slowest path of the whole core.
        self.argmax = Argmax(self.output.score_width, self.output.classes, every=1)
        self.latency = (1 + relay * (len(self.hidden) + 1) + sum(l.latency for l in self.hidden)
                        + self.output.latency + self.argmax.latency)
        self.with_scores = scores
        spec = model.input
        super().__init__({"sample": In(unsigned(spec.bits * spec.size)), "valid": In(1),
                          **result_ports(self.output, self.argmax, scores)})

    def _features(self, m):
        """The first layer's sources from the raw sample: only the bits of the planes read, of
        the elements read, are registered (stage 1); an ``integer`` element is rebuilt from its
        plane bits with the other bits 0."""
        bits = self.model.input.bits
        values = []
        for element, planes in self.plan.features:
            reg = Signal(len(planes), name=f"x{element}_p{'_'.join(map(str, planes))}", reset_less=True)
            m.d.sync += reg.eq(Cat(*[self.sample[element * bits + k] for k in planes]))
            self.stats["register_bits"] += len(planes)
            if self.model.input.encoding == "integer":
                # The element divided by 2**lowest plane (see hwplan.input_scale).
                low = min(planes)
                value = [Const(0, 1)] * (max(planes) + 1 - low)
                for n, k in enumerate(planes):
                    value[k - low] = reg[n]
                values.append(Cat(*value))
            else:
                values.append(reg)
        return Cat(*values)

    def _relayed(self, m, source, name):
        """``source`` through :attr:`relay` register stages."""
        for stage in range(self.relay):
            reg = Signal(len(source), name=f"{name}_relay{stage + 1}", reset_less=True)
            m.d.sync += reg.eq(source)
            self.stats["register_bits"] += len(source)
            source = reg
        return source

    def resources(self):
        """What the last elaboration built: register bits (flip-flops), adder output bits,
        comparison bits and argmax bits, summed over every component."""
        return total_stats(self.stats, self.hidden, self.output, [self.argmax])

    def elaborate(self, platform):
        m = Module()
        width = self.output.score_width
        self.stats = {"register_bits": 0, "argmax_bits": max(self.output.classes - 1, 0) * width,
                      "adder_bits": 0, "compare_bits": 0, "adders": 0}
        source = self._features(m)
        for n, layer in enumerate(self.hidden):
            m.submodules[f"layer{n}"] = layer
            m.d.comb += layer.inputs.eq(self._relayed(m, source, f"layer{n}"))
            source = layer.outputs
        m.submodules.output = self.output
        m.d.comb += self.output.inputs.eq(self._relayed(m, source, "output"))
        m.submodules.argmax = self.argmax
        m.d.comb += [self.argmax.scores.eq(self.output.scores), self.prediction.eq(self.argmax.index)]
        if self.with_scores:
            scores = self.output.scores.as_value()
            for stage in range(self.argmax.latency):
                delayed = Signal(len(scores), name=f"scores_d{stage + 1}", reset_less=True)
                m.d.sync += delayed.eq(scores)
                self.stats["register_bits"] += len(scores)
                scores = delayed
            m.d.comb += self.scores.eq(scores)
        valid = self.valid
        for stage in range(self.latency):
            delayed = Signal(name=f"valid_d{stage + 1}")
            m.d.sync += delayed.eq(valid)
            self.stats["register_bits"] += 1
            valid = delayed
        m.d.comb += self.out_valid.eq(valid)
        return m

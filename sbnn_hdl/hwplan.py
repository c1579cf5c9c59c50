"""From a model to the structure of its hardware: what is computed, and from which wires.

:func:`plan_network` turns a :class:`~sbnn_hdl.model.Model` of dense layers into a
:class:`NetworkPlan`. It decides everything that is known at generation time, so that the
gateware (:mod:`sbnn_hdl.gateware`) only has to build what is left:

- every neuron's comparison ``a*p + b*q >= t`` is folded into its cheapest exact form
  (:class:`Comparison`): a constant, ``p`` against a constant, ``q`` against a constant, or
  ``a'*p + b'*q`` against a constant with ``a', b'`` divided by their common factor, then
  replaced by the simplest pair that is still exact on every input (:func:`narrow_comparisons`);
- a neuron whose output is the same for every input the layer can receive becomes a constant,
  and constants are folded into the next layer's thresholds (so they cost no wiring at all);
- neurons with the same inputs and comparison are built once;
- a neuron whose output no later layer reads is not built, and an input element or bit plane that
  feeds nothing is not wired;
- the layer-shared sum ``q`` exists only where some remaining neuron needs it.

Sums are over *sources*: the variable values that reach a layer (input features for the first
layer, the previous layer's built neurons after that), each with a multiplicity (two merged
neurons feeding one layer count twice). Everything here is exact integer arithmetic on Python
ints; this module needs NumPy only.
"""

import math
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from .errors import SbnnError
from .model import Dense

__all__ = ["ARCHS", "DEFAULT_EVERY", "HardwareError", "Comparison", "Unit", "LayerPlan", "NetworkPlan", "check_supported",
           "check_xnor", "check_buildable", "plan_network", "plan_layer", "remove_unused", "pack_sample", "ceil_div"]

#: The datapaths: ``"sparse"`` (popcounts over the 1-valued connections, the shared ``q``) and
#: ``"xnor"``, the conventional dense BNN baseline (an XNOR per weight, a popcount over all inputs).
ARCHS = ("sparse", "xnor")

#: Adder levels per register stage by default: the choice that meets 150 MHz on an ECP5-85F
#: (speed grade 6); see docs/hardware.md for the measurement.
DEFAULT_EVERY = 2


class HardwareError(SbnnError):
    """A model that the hardware generator cannot (yet) build."""


def ceil_div(x, y):
    """``ceil(x / y)`` for integers, ``y > 0``."""
    return -((-x) // y)


@dataclass(frozen=True)
class Comparison:
    """The exact folded form of one hidden neuron's ``a*p + b*q >= t``.

    ``kind`` is one of:

    - ``"const"``: the output is ``value`` for every reachable input;
    - ``"p"``: ``p >= k`` (``op == ">="``) or ``p <= k`` (``op == "<="``);
    - ``"q"``: ``q >= k`` or ``q <= k``;
    - ``"pq"``: ``a*p + b*q >= k`` or ``<= k`` with ``a > 0``, ``b != 0``, ``gcd(a, |b|) == 1``.
    """

    kind: str
    op: str = ">="
    k: int = 0
    a: int = 0
    b: int = 0
    value: int = 0

    def __call__(self, p, q):
        """Evaluate on integers (used by tests and the planner's own checks)."""
        if self.kind == "const":
            return self.value
        x = {"p": p, "q": q, "pq": self.a * p + self.b * q}[self.kind]
        return int(x >= self.k) if self.op == ">=" else int(x <= self.k)


def fold_comparison(a, b, t, p_max, r_max):
    """The :class:`Comparison` equal to ``a*p + b*q >= t`` for ``p`` in ``[0, p_max]`` and
    ``q = p + r`` with ``r`` in ``[0, r_max]``."""
    # acc = (a + b)*p + b*r over the box: its extremes are at the corners.
    corners = [(a + b) * p + b * r for p in (0, p_max) for r in (0, r_max)]
    if min(corners) >= t:
        return Comparison("const", value=1)
    if max(corners) < t:
        return Comparison("const", value=0)
    if b == 0:
        return Comparison("p", ">=", ceil_div(t, a)) if a > 0 else Comparison("p", "<=", (-t) // (-a))
    if a == 0:
        return Comparison("q", ">=", ceil_div(t, b)) if b > 0 else Comparison("q", "<=", (-t) // (-b))
    g = math.gcd(a, b)
    if a > 0:
        return Comparison("pq", ">=", ceil_div(t, g), a // g, b // g)
    return Comparison("pq", "<=", (-t) // g, -a // g, -b // g)


def _reachable(p_max, q_max):
    """For each ``q`` in ``[0, q_max]``: the range ``[lo, hi]`` of ``p`` that can occur with it
    (``0 <= p <= p_max`` and ``0 <= q - p <= q_max - p_max``, as in :func:`fold_comparison`)."""
    q = np.arange(q_max + 1, dtype=np.int64)
    return q, np.maximum(q - (q_max - p_max), 0), np.minimum(q, p_max)


def _thresholds(c, q, lo, hi):
    """For each ``q``: the threshold on ``p`` at which ``c`` (a ``"pq"`` comparison) changes,
    clipped to the reachable ``p``: ``c`` fires for ``p >= T`` (``">="``, ``T`` in
    ``[lo, hi + 1]``) or for ``p <= T`` (``"<="``, ``T`` in ``[lo - 1, hi]``); at the ends of
    those ranges it fires for every reachable ``p``, or for none."""
    if c.op == ">=":
        return np.clip(-((c.b * q - c.k) // c.a), lo, hi + 1)  # ceil((k - b*q) / a)
    return np.clip((c.k - c.b * q) // c.a, lo - 1, hi)


def _fit_k(op, a, b, T, q, lo, hi):
    """The constant ``k`` for which ``a*p + b*q`` against ``k`` has the thresholds ``T`` (see
    :func:`_thresholds`) on every ``q``, or None if there is none. Of the possible ``k``, one whose
    remainder ``k mod a`` makes the carry constant (see :class:`~sbnn_hdl.gateware.Threshold`)
    if there is one."""
    bq = b * q
    # Each q bounds k from below and from above: (bound, where it applies).
    if op == ">=":
        inner = (T > lo) & (T <= hi)
        lows = [(a * (T - 1) + bq + 1, inner), (a * hi + bq + 1, T > hi)]   # fires at T, not below; never
        highs = [(a * T + bq, inner), (a * lo + bq, T <= lo)]               # ...; always
        free = 0   # carry = (r >= 0) = 1
    else:
        inner = (T >= lo) & (T < hi)
        lows = [(a * T + bq, inner), (a * hi + bq, T >= hi)]                # fires at T, not above; always
        highs = [(a * (T + 1) + bq - 1, inner), (a * lo + bq - 1, T < lo)]  # ...; never
        free = a - 1   # carry = (r > a - 1) = 0
    low = max((int(x[m].max()) for x, m in lows if m.any()), default=None)
    high = min((int(x[m].min()) for x, m in highs if m.any()), default=None)
    if low is None or high is None or low > high:
        return None
    k = low + (free - low) % a
    return k if k <= high else low


def _simplest_pair(group, p_maxes, q_max):
    """The first ``(a', b')`` with the sign of the group's ``b`` for which every comparison in
    ``group`` (all ``"pq"`` with the same ``a, b``) has a ``k'`` that decides every ``(p, q)`` it
    can reach (:func:`_reachable`) the same way; and those ``k'``. The fractions ``|b'|/a'`` are
    tried along the Stern-Brocot path to ``|b|/a``, simplest first; the path ends at ``(a, b)``
    itself, which always passes."""
    a, b = group[0].a, group[0].b
    sign = 1 if b > 0 else -1
    boxes = [_reachable(p_max, q_max) for p_max in p_maxes]
    targets = [_thresholds(c, *box) for c, box in zip(group, boxes)]
    (ln, ld), (rn, rd) = (0, 1), (1, 0)
    while True:
        n, d = ln + rn, ld + rd
        ks = []
        for c, box, T in zip(group, boxes, targets):
            k = _fit_k(c.op, d, sign * n, T, *box)
            if k is None:
                break
            ks.append(k)
        else:
            return d, sign * n, ks
        if n * a < abs(b) * d:   # n/d < |b|/a: go right
            ln, ld = n, d
        else:
            rn, rd = n, d


def narrow_comparisons(comparisons, p_maxes, q_max):
    """``comparisons`` of one layer with their coefficients made as small as exactness allows.

    Every neuron that compares ``a*p + b*q`` pays for the width of ``a`` (its remainder
    comparison, see :class:`~sbnn_hdl.gateware.Threshold`), and the layer splits ``b*q`` by ``a``
    once per distinct ``(a, b)``. The exported ``a`` and ``b`` are large (up to ``2**16``), but
    ``q`` takes only ``q_max + 1`` values: neurons that share ``(a, b)`` are given the simplest
    common ``(a', b')`` (and each its own ``k'``) that decides every ``(p, q)`` the neuron can
    reach (``p`` up to its ``p_maxes`` entry, ``q`` up to ``q_max``) the same way, which is
    checked exhaustively. Other comparisons are returned as they are."""
    result = list(comparisons)
    groups = {}
    for index, c in enumerate(comparisons):
        if c.kind == "pq":
            groups.setdefault((c.a, c.b), []).append(index)
    for members in groups.values():
        a, b, ks = _simplest_pair([comparisons[i] for i in members], [p_maxes[i] for i in members], q_max)
        for i, k in zip(members, ks):
            result[i] = Comparison("pq", comparisons[i].op, k, a, b)
    return result


@dataclass(frozen=True)
class Unit:
    """One neuron that is built: ``sources`` is the multiset (source index, count) that ``p`` sums."""

    sources: tuple
    comparison: Comparison = None  # hidden layers
    a: int = 0                     # last layer: score = a*p + b*q - t
    b: int = 0
    t: int = 0


@dataclass
class LayerPlan:
    """One dense layer as hardware.

    ``source_max[s]`` is the largest value of source ``s`` (the layer's variable inputs);
    ``q_sources`` the multiset that ``q`` sums (empty when no unit needs ``q``, or when ``q`` comes
    summed from outside); ``q_input`` the largest ``q`` when the layer receives ``q`` already
    summed (the streaming core sums it over the positions of the last map as they pass), else 0;
    ``units`` the
    neurons that are built; ``outputs[j]`` says what original neuron ``j`` became:
    ``("const", 0 or 1)``, ``("unit", index)``, or ``("unread", None)`` when no later layer reads
    it (in the last layer, always a unit).

    With ``complements`` (the ``xnor`` datapath) the layer has ``n = len(source_max) // 2`` binary
    inputs and its sources are the inputs ``0..n-1`` followed by their complements ``n..2n-1``.
    """

    name: str
    source_max: list
    units: list
    outputs: list
    q_sources: tuple = ()
    q_input: int = 0
    last: bool = False
    report: dict = field(default_factory=dict)
    complements: bool = False

    @property
    def inputs(self):
        """How many inputs the layer receives (sources without the complements)."""
        return len(self.source_max) // 2 if self.complements else len(self.source_max)

    @property
    def uses_q(self):
        return bool(self.q_sources) or self.q_input > 0

    def p_max(self, unit):
        return _max_sum(unit.sources, self.source_max)

    @property
    def q_max(self):
        return self.q_input or _max_sum(self.q_sources, self.source_max)


@dataclass
class NetworkPlan:
    """The whole network as hardware: the first layer's sources are input *features*."""

    model: object
    features: list   # per first-layer source: (element index, planes tuple) it is built from
    layers: list

    @property
    def classes(self):
        return self.model.outputs


def _max_sum(multiset, source_max):
    """The largest value of a sum over ``multiset`` (source index, count) of sources whose largest
    values are ``source_max``."""
    return sum(source_max[s] * c for s, c in multiset)


def _multiset(indices):
    return tuple(sorted(Counter(indices).items()))


def pack_sample(spec, sample):
    """One sample as the integer on a core's ``sample`` port: element ``i`` (C order) in bits
    ``[i*bits, (i+1)*bits)``."""
    value = 0
    for i, element in enumerate(np.asarray(sample).reshape(-1).tolist()):
        value |= int(element) << (i * spec.bits)
    return value


def input_scale(spec):
    """``2**m`` for the lowest plane ``m`` that an ``integer`` input reads (1 for ``bitplanes``):
    every element the first layer reads is a multiple of it, so the hardware sums the elements
    divided by it (their bits from plane ``m`` up) and multiplies ``a`` and ``b`` by it instead."""
    return 1 << min(spec.planes) if spec.encoding == "integer" else 1


def _input_features(model):
    """Every feature the first layer can read: (element, planes) with its largest value (after
    the division by :func:`input_scale`)."""
    spec = model.input
    if spec.encoding == "integer":
        return [(i, spec.planes) for i in range(spec.size)], [spec.plane_mask // input_scale(spec)] * spec.size
    return [(i, (k,)) for k in spec.planes for i in range(spec.size)], [1] * (spec.size * len(spec.planes))


def check_supported(model):
    """Raise :class:`HardwareError` naming the first layer that the unrolled core
    (:class:`~sbnn_hdl.gateware.NetworkCore`) cannot build: conv and pool layers are the
    streaming core's (:mod:`sbnn_hdl.streamplan`)."""
    for layer in model.layers:
        if not isinstance(layer, Dense):
            raise HardwareError(f"layer '{layer.name}': expected a dense layer in an unrolled core (conv2d and "
                                f"maxpool2d layers are built by the streaming core), found a {layer.kind} layer")


def check_xnor(model):
    """Raise :class:`HardwareError` unless the ``xnor`` datapath can compute ``model``: binary
    first-layer inputs and every neuron in the symmetric +-1 domain, ``2*b == -a``."""
    spec = model.input
    if spec.encoding == "integer" and len(spec.planes) > 1:
        raise HardwareError(f"input: expected binary first-layer inputs for --arch xnor (bitplanes encoding, or "
                            f"one plane), found {spec.bits}-bit integer encoding of planes "
                            f"{','.join(map(str, spec.planes))}")
    for layer in model.layers:
        bad = np.flatnonzero(2 * layer.b.astype(np.int64) != -layer.a.astype(np.int64))
        if len(bad):
            j = int(bad[0])
            raise HardwareError(f"layer '{layer.name}' neuron {j}: expected the symmetric +-1 domain for --arch xnor "
                                f"(2*b == -a), found a={int(layer.a[j])}, b={int(layer.b[j])}")


def check_buildable(model, arch="sparse"):
    """Raise :class:`HardwareError` unless the datapath ``arch`` (:data:`ARCHS`) can build
    ``model`` (:func:`check_supported`, and :func:`check_xnor` for ``"xnor"``)."""
    check_supported(model)
    if arch not in ARCHS:
        raise HardwareError(f"--arch: expected one of {', '.join(ARCHS)}, found {arch!r}")
    if arch == "xnor":
        check_xnor(model)


def plan_network(model, *, arch="sparse", narrow=True):
    """Plan the hardware of ``model`` for the datapath ``arch`` (:data:`ARCHS`); raises
    :class:`HardwareError` for a model that datapath cannot build (:func:`check_buildable`).
    ``narrow=False`` keeps the exported coefficients of every comparison (see
    :func:`narrow_comparisons`), for comparison."""
    check_buildable(model, arch)
    features, feature_max = _input_features(model)
    # incoming[i]: what input i of the current layer is: ("const", v) or ("source", s).
    incoming = [("source", i) for i in range(len(features))]
    source_max = feature_max
    plans = []
    scale = input_scale(model.input)
    for index, layer in enumerate(model.layers):
        last = index == len(model.layers) - 1
        layer_scale = scale if index == 0 else 1
        if arch == "xnor":
            plan = _plan_xnor_layer(layer, incoming, source_max, last, layer_scale)
        else:
            plan = plan_layer(layer, incoming, source_max, last, layer_scale, narrow)
        plans.append(plan)
        incoming = [("const", o[1]) if o[0] == "const" else ("source", o[1]) for o in plan.outputs]
        source_max = [1] * len(plan.units)
    remove_unused(plans, features)
    return NetworkPlan(model=model, features=features, layers=plans)


def plan_layer(layer, incoming, source_max, last, scale=1, narrow=True):
    """The :class:`LayerPlan` of dense ``layer`` (anything with ``mask [outputs, inputs]``, ``a``,
    ``b``, ``t`` and ``outputs``) whose input ``i`` is ``incoming[i]``: ``("const", v)`` or
    ``("source", s)`` with source ``s``'s largest value ``source_max[s]``; ``last`` for the output
    layer; ``scale`` multiplies ``a`` and ``b`` (:func:`input_scale`); ``narrow`` as in
    :func:`plan_network`. Also plans a conv layer over its window (:mod:`sbnn_hdl.streamplan`)."""
    const_value = np.array([v if kind == "const" else 0 for kind, v in incoming], dtype=np.int64)
    variable = np.array([kind == "source" for kind, _ in incoming])
    source_of = np.array([s if kind == "source" else -1 for kind, s in incoming], dtype=np.int64)
    q_all = _multiset(source_of[variable].tolist())
    q_const = int(const_value.sum())
    total_max = _max_sum(q_all, source_max)
    units, keys, outputs = [], {}, []
    constants = 0
    for j in range(layer.outputs):
        row = layer.mask[j].astype(bool)
        a, b = int(layer.a[j]) * scale, int(layer.b[j]) * scale  # sources are values / scale
        p_const = int(const_value[row].sum())
        t = int(layer.t[j]) - a * p_const - b * q_const  # constant inputs fold into the threshold
        sources = _multiset(source_of[row & variable].tolist())
        p_max = _max_sum(sources, source_max)
        if last:
            # With no variable source, p (or q) is 0: its coefficient no longer matters.
            unit = Unit(sources, a=a if sources else 0, b=b if q_all else 0, t=t)
        else:
            comparison = fold_comparison(a, b, t, p_max, total_max - p_max)
            if comparison.kind == "const":
                outputs.append(("const", comparison.value))
                constants += 1
                continue
            unit = Unit(sources if comparison.kind in ("p", "pq") else (), comparison)
        key = (unit.sources, unit.comparison, unit.a, unit.b, unit.t)
        if key not in keys:
            keys[key] = len(units)
            units.append(unit)
        outputs.append(("unit", keys[key]))
    coefficients = {}
    if narrow and not last:
        before = [u.comparison for u in units]
        p_maxes = [_max_sum(u.sources, source_max) for u in units]
        after = narrow_comparisons(before, p_maxes, total_max)
        units = [replace(u, comparison=c) for u, c in zip(units, after)]
        coefficients = {(c.a, c.b): (n.a, n.b) for c, n in zip(before, after) if c.kind == "pq"}
    uses_q = any((u.comparison.kind in ("q", "pq")) if not last else u.b != 0 for u in units)
    plan = LayerPlan(name=layer.name, source_max=list(source_max), units=units, outputs=outputs,
                     q_sources=q_all if uses_q else (), last=last)
    plan.report = {"neurons": layer.outputs, "constant_neurons": constants,
                   "merged_neurons": layer.outputs - constants - len(units),
                   "connections": int(layer.mask.sum()),
                   "coefficients": [{"exported": list(k), "built": list(v)} for k, v in coefficients.items()]}
    return plan


def _plan_xnor_layer(layer, incoming, source_max, last, scale=1):
    """The conventional BNN datapath: for every neuron, ``c`` counts the inputs equal to their
    weight bit (``v XNOR w``) over all ``n`` inputs. For binary ``v``, ``c = 2p - q + n - W``
    (``W`` the neuron's 1-valued weights), and ``2b == -a`` makes ``acc = (a/2) * (2p - q)``:
    so ``acc = (a/2) * (c_var + C)`` with ``c_var`` the count over the variable inputs and ``C``
    the constant rest. The comparison is on ``c_var`` alone: no ``q``, no shared term."""
    const_value = np.array([v if kind == "const" else 0 for kind, v in incoming], dtype=np.int64)
    variable = np.array([kind == "source" for kind, _ in incoming])
    source_of = np.array([s if kind == "source" else -1 for kind, s in incoming], dtype=np.int64)
    count = len(source_max)
    units, keys, outputs = [], {}, []
    constants = 0
    for j in range(layer.outputs):
        row = layer.mask[j].astype(bool)
        half = int(layer.a[j]) * scale // 2  # a/2 = -b, an integer
        agree_const = int(const_value[row & ~variable].sum() + (1 - const_value[~row & ~variable]).sum())
        rest = agree_const + int(row.sum()) - len(row)
        t = int(layer.t[j]) - half * rest
        sources = _multiset(source_of[row & variable].tolist() + (source_of[~row & variable] + count).tolist())
        c_max = int(variable.sum())
        if last:
            unit = Unit(sources, a=half if sources else 0, b=0, t=t)
        else:
            comparison = fold_comparison(half, 0, t, c_max, 0)
            if comparison.kind == "const":
                outputs.append(("const", comparison.value))
                constants += 1
                continue
            unit = Unit(sources, comparison)
        key = (unit.sources, unit.comparison, unit.a, unit.b, unit.t)
        if key not in keys:
            keys[key] = len(units)
            units.append(unit)
        outputs.append(("unit", keys[key]))
    plan = LayerPlan(name=layer.name, source_max=list(source_max) * 2, units=units, outputs=outputs, last=last,
                     complements=True)
    plan.report = {"neurons": layer.outputs, "constant_neurons": constants,
                   "merged_neurons": layer.outputs - constants - len(units),
                   "connections": int(layer.mask.sum())}
    return plan


def remove_unused(plans, features):
    """Drop units that no later layer reads and sources that feed nothing, in the chain of dense
    layer ``plans``; renumber. ``features`` (the first layer's sources) is filtered in place."""
    for index in range(len(plans) - 1, -1, -1):
        plan = plans[index]
        n = plan.inputs
        used = set(s % n for s, _ in plan.q_sources)  # a complement n + i uses input i
        for unit in plan.units:
            used.update(s % n for s, _ in unit.sources)
        keep = sorted(used)
        renumber = {old: new for new, old in enumerate(keep)}
        fix = lambda multiset: tuple(sorted((renumber[s % n] + (len(keep) if s >= n else 0), c) for s, c in multiset))
        plan.units = [Unit(fix(u.sources), u.comparison, u.a, u.b, u.t) for u in plan.units]
        plan.q_sources = fix(plan.q_sources)
        plan.report["unwired_inputs"] = n - len(keep)
        plan.source_max = [plan.source_max[s] for s in keep] * (2 if plan.complements else 1)
        if index == 0:
            features[:] = [features[s] for s in keep]
        else:
            previous = plans[index - 1]
            previous.report["unread_neurons"] = len(previous.units) - len(keep)
            previous.units = [previous.units[s] for s in keep]
            previous.outputs = [o if o[0] == "const" else
                                ("unit", renumber[o[1]]) if o[1] in renumber else ("unread", None)
                                for o in previous.outputs]

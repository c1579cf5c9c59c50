"""A trained SBNN as an exact :class:`~sbnn_hdl.model.Model`: folding, its proof, and the check
against the golden model (``python -m sbnn_hdl.export`` and the export after training use it).

Folding (``docs/training.md`` has the full argument). A hidden neuron of the trained net fires when
``g*(z - mu)/sd + beta >= 0`` (batch norm, then sign with sign(0) = +1), where
``z = (2*tau*p + (phi - tau)*q) / M`` (``M`` scales an integer first layer's input). With
``sd = sqrt(var + eps)`` and ``theta = mu - beta*sd/g`` evaluated in float64 (this defines the
real-valued model), and every float taken as the exact rational it is, that is

    fire  <=>  s * (p + k*q - h) >= 0,   k = (phi - tau) / (2*tau),   h = theta*M / (2*tau),

with ``s = sign(g*tau)``. One ratio ``k`` per layer: ``K/A`` is its best rational approximation with
``A, |K| < 2**24``, and the neuron becomes ``a = s*A``, ``b = s*K``, ``t = ceil(s*A*h)`` (exact
rational arithmetic). When ``K/A == k`` this is exact for every input; otherwise the integer and the
real decisions can only differ where ``|p + k*q - h| <= |K/A - k|*q`` (a strip of width about
``2**-48*q`` around the real boundary). :func:`verify` enumerates that strip for every reachable
``q`` (and every reachable ``(p, q)`` outright for neurons with at most 2**16 of them), deciding
each point exactly, ties included. The output layer's scores ``G*z_j + H_j`` share one scale, so
``a = s*A``, ``b = s*K`` for all classes (the ``q`` terms cancel between classes) and
``t_j = -s*T_j``, where ``T_j/A`` keeps ``floor(o_j)`` (``o_j = H_j/(G*2*tau/M)``) and the order of
the fractional parts of the ``o_j`` exactly (:func:`fold_output`); :func:`verify` checks every
pair of classes over the whole ``p_j - p_k`` range, ties to the lower index included.

The PyTorch model's evaluation forward (:func:`exact_scores`) computes these integer
comparisons in float64 (exact: every value is an integer below 2**53), and the export runs it and
:func:`sbnn_hdl.golden.infer` on the whole test set: any disagreement in a prediction or a score
fails the export with a report. This module imports torch.
"""

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import torch
from torch.nn import functional as F

from .. import golden
from ..errors import SbnnError
from ..model import Conv2d, Dense, MaxPool2d, Model
from .nets import encode_batch

__all__ = ["ExportError", "Folded", "fold", "fold_hidden", "fold_output", "fold_thresholds", "fold_scores",
           "clip_thresholds", "fold_smallest", "verify", "exact_scores", "to_model", "check_agreement"]

LIMIT = 2**24 - 1
#: The coefficient bounds tried in turn for each layer: the first whose folding verifies is kept,
#: since narrower ``a``, ``b`` make narrower hardware. The last one is the format's limit.
LIMITS = (2**4 - 1, 2**6 - 1, 2**8 - 1, 2**10 - 1, 2**12 - 1, 2**16 - 1, LIMIT)
FULL_ENUMERATION = 2**16


class ExportError(SbnnError):
    """A trained model that cannot be exported exactly (the message says where and why)."""


@dataclass
class Folded:
    """One binary layer in the format's integer form, with what :func:`verify` needs."""

    name: str
    kind: str                 # "dense" or "conv2d"
    mask: np.ndarray          # the format's layout: [m, n] or [Cout, kh, kw, Cin]
    a: np.ndarray
    b: np.ndarray
    t: np.ndarray
    last: bool
    max_value: int            # the largest input element (M)
    step: int                 # every input element is a multiple of this (g)
    ratio: tuple              # (A, K)
    k: Fraction
    exact: list = field(default_factory=list)  # hidden: h_j (or None: constant); last: o_j
    sign: int = 1             # last layer: sign of the shared scale
    proof: dict = None        # what verify() checked, when fold() searched


def best_ratio(k, where, limit=LIMIT):
    """``(A, K)``: ``K/A`` the closest fraction to ``k`` with ``0 < A`` and ``A, |K| <= limit``."""
    bound = limit if abs(k) <= 1 else int(limit / abs(k))
    while bound >= 1:
        f = k.limit_denominator(bound)
        if abs(f.numerator) <= limit:
            return f.denominator, f.numerator
        bound //= 2
    raise ExportError(f"layer {where!r}: expected a shared-term ratio (phi - tau)/(2*tau) below 2**24, "
                      f"found {float(k):.3g}")


def _fraction(x):
    return Fraction(float(x))


def fold_hidden(name, tau, phi, max_value, mean, var, eps, gamma, beta, limit=LIMIT):
    """Integer ``a, b, t`` of a hidden layer from its float parameters (see the module docstring)."""
    tau, phi = _fraction(tau), _fraction(phi)
    if tau == 0:
        raise ExportError(f"layer {name!r}: expected tau != 0, found tau = 0 (every weight equal)")
    k = (phi - tau) / (2 * tau)
    sd = np.sqrt(np.asarray(var, np.float64) + np.float64(eps))
    gamma, beta, mean = (np.asarray(x, np.float64) for x in (gamma, beta, mean))
    neurons = []
    for j in range(len(gamma)):
        if gamma[j] == 0:  # batch norm outputs the constant beta: always or never fires
            neurons.append(bool(beta[j] >= 0))
            continue
        theta = mean[j] - beta[j] * sd[j] / gamma[j]
        h = Fraction(float(theta)) * max_value / (2 * tau)
        s = 1 if (gamma[j] > 0) == (tau > 0) else -1
        neurons.append((s, h))
    return (k, *fold_thresholds(name, k, neurons, limit))


def fold_thresholds(name, k, neurons, limit=LIMIT):
    """``(A, K), a, b, t, exact`` of hidden neurons that fire when ``s*(p + k*q - h) >= 0``.

    ``k`` is the layer's ratio (a :class:`Fraction`); ``neurons[j]`` is ``(s, h)`` (``s`` = +-1,
    ``h`` a :class:`Fraction`), or a bool for a neuron that always (True) or never fires. Each
    neuron becomes ``a = s*A``, ``b = s*K``, ``t = ceil(s*A*h)`` with ``K/A`` the best ratio of
    :func:`best_ratio`; ``exact`` is what :func:`verify` checks (``None`` for a constant neuron).
    """
    A, K = best_ratio(k, name, limit)
    m = len(neurons)
    a, b, t = np.zeros(m, np.int64), np.zeros(m, np.int64), np.zeros(m, np.int64)
    exact = []
    for j, item in enumerate(neurons):
        if isinstance(item, bool):
            t[j] = 0 if item else 1
            exact.append(None)
            continue
        s, h = item
        a[j], b[j], t[j] = s * A, s * K, math.ceil(s * A * h)
        exact.append((s, h))
    return (A, K), a, b, t, exact


def fold_output(name, tau, phi, max_value, mean, var, eps, gain, bias, limit=LIMIT):
    """Integer ``a, b, t`` of the last layer (scores ``gain*(z - mean)/sd + bias_j``)."""
    tau, phi = _fraction(tau), _fraction(phi)
    if tau == 0 or gain == 0:
        raise ExportError(f"layer {name!r}: expected tau != 0 and gain != 0, found tau = {float(tau)}, "
                          f"gain = {float(gain)}")
    k = (phi - tau) / (2 * tau)
    G = np.float64(gain) / np.sqrt(np.float64(var) + np.float64(eps))
    H = np.asarray(bias, np.float64) - G * np.float64(mean)
    u = Fraction(float(G)) * 2 * tau / max_value
    o = [Fraction(float(h)) / u for h in H]
    return (k, *fold_scores(name, k, u, o, limit))


def fold_scores(name, k, u, o, limit=LIMIT):
    """``(A, K), a, b, t, o, s`` of a last layer whose real scores are ``u*(p_j + k*q + o_j)``.

    ``k``, ``u`` (the scale all classes share, non-zero) and the offsets ``o_j`` are exact
    :class:`Fraction` values; ``s`` is the sign of ``u``. The integer scores order the classes as
    the real ones do, ties to the lower index included (see the module docstring).
    """
    A, K = best_ratio(k, name, limit)
    # Unlike a hidden threshold, the class offsets A*o_j are rounded: scale (A, K) up to the bound.
    scale = max(1, limit // max(A, abs(K)))
    A, K = A * scale, K * scale
    s = 1 if u > 0 else -1
    # Scores compare as p_j + o_j; for integer p only floor(o_j) and the order of the fractional
    # parts matter (ties to the lower class). T_j/A keeps floor(o_j) and the fractional part to
    # within 1/A, plus its rank among the distinct fractional parts, so that order is kept exactly.
    m = len(o)
    if A <= m:
        raise ExportError(f"layer {name!r}: expected a scale above {m} classes, found {A}")
    fractions = [x - math.floor(x) for x in o]
    rank = {f: i for i, f in enumerate(sorted(set(fractions)))}
    T = [A * math.floor(x) + math.floor(f * (A - m)) + rank[f] for x, f in zip(o, fractions)]
    if max(abs(x) for x in T) >= 2**60:
        raise ExportError(f"layer {name!r}: expected thresholds below 2**60, found {max(abs(x) for x in T)}")
    return ((A, K), np.full(m, s * A, np.int64), np.full(m, s * K, np.int64),
            np.array([-s * x for x in T], np.int64), o, s)


def clip_thresholds(a, b, t, mask, max_value):
    """``t`` of a hidden layer clipped to just beyond every reachable ``a*p + b*q``: thresholds
    further out decide nothing more, and this keeps them within the format's range."""
    bound = int(np.abs(a).max()) * int(mask.reshape(len(a), -1).sum(1).max()) * max_value \
        + int(np.abs(b).max()) * mask[0].size * max_value
    return np.clip(t, -bound - 1, bound + 1)


def fold_smallest(make, search=True):
    """The :class:`Folded` layer that ``make(limit)`` builds for the first bound of :data:`LIMITS`
    whose folding :func:`verify` accepts, with its ``proof`` (``search=False``: the format's
    limit, unverified). Raises :class:`ExportError` when even the format's limit fails."""
    for limit in LIMITS if search else (LIMIT,):
        try:
            f = make(limit)
            f.proof = verify([f])["layers"][f.name] if search else None
        except ExportError:
            if limit == LIMIT:
                raise
            continue
        return f


def _reachable_p(q, fan, ones, M):
    return np.maximum(0, q - (fan - ones) * M), np.minimum(q, ones * M)


def _check_points(p, q, s, h, k, A, K, t):
    """Indices where ``s*(A*p + K*q) >= t`` differs from the exact ``s*(p + k*q - h) >= 0``."""
    integer = s * (A * p + K * q) >= t
    kf, hf = float(k), float(h)
    r = s * (p + kf * q - hf)
    bound = 1e-12 * (np.abs(p) + abs(kf) * q + abs(hf) + 1)
    real = r >= 0
    unsure = np.flatnonzero(np.abs(r) <= bound)
    for i in unsure:  # near-ties: decide in exact rational arithmetic
        real[i] = s * (int(p[i]) + k * int(q[i]) - h) >= 0
    return np.flatnonzero(real != integer)


def verify(folded):
    """Check that each neuron's integer comparison equals the exact real one over every reachable
    ``(p, q)``; return statistics, or raise :class:`ExportError` naming the first failure."""
    stats = {"layers": {}}
    for layer in folded:
        rows = layer.mask.reshape(layer.mask.shape[0], -1).astype(np.int64)
        fan, M, g = rows.shape[1], layer.max_value, layer.step
        A, K = layer.ratio
        if layer.last:
            stats["layers"][layer.name] = _verify_output(layer, rows.sum(axis=1), M)
            continue
        full = strip = 0
        q_all = np.arange(0, fan * M + 1, g, dtype=np.int64)
        for j, item in enumerate(layer.exact):
            if item is None:
                continue
            s, h = item
            ones = int(rows[j].sum())
            lo, hi = _reachable_p(q_all, fan, ones, M)
            count = int(((hi - lo) // g + 1).sum())
            if count <= FULL_ENUMERATION:
                reps = (hi - lo) // g + 1
                q = np.repeat(q_all, reps)
                p = np.repeat(lo, reps) + g * (np.arange(len(q)) - np.repeat(np.cumsum(reps) - reps, reps))
                full += len(q)
            else:
                # Outside |p - (h - k*q)| <= |K/A - k|*q both decisions agree (module docstring).
                width = float(abs(Fraction(K, A) - layer.k)) * q_all + 1e-9 * (abs(float(h)) + abs(float(layer.k)) * q_all) + g
                centre = float(h) - float(layer.k) * q_all
                first = np.maximum(lo, np.floor((centre - width) / g) * g).astype(np.int64)
                last = np.minimum(hi, np.ceil((centre + width) / g) * g).astype(np.int64)
                reps = np.maximum((last - first) // g + 1, 0)
                q = np.repeat(q_all, reps)
                p = np.repeat(first, reps) + g * (np.arange(len(q)) - np.repeat(np.cumsum(reps) - reps, reps))
                strip += len(q)
            bad = _check_points(p, q, s, h, layer.k, A, K, int(layer.t[j]))
            if len(bad):
                i = bad[0]
                raise ExportError(f"layer {layer.name!r} neuron {j}: expected the integer comparison "
                                  f"{int(layer.a[j])}*p + {int(layer.b[j])}*q >= {int(layer.t[j])} to equal the "
                                  f"real one, found a difference at p = {p[i]}, q = {q[i]} ({len(bad)} points)")
        stats["layers"][layer.name] = {"ratio": [A, K], "exact_ratio": Fraction(K, A) == layer.k,
                                       "points_enumerated": full, "strip_points": strip}
    return stats


def _verify_output(layer, ones, M):
    # Class j < i wins over i iff its score is >= (ties go to the lower index, in PyTorch's argmax
    # and in the format): compare that relation, real against integer, for every p_j - p_i.
    A, _ = layer.ratio
    T = [-layer.sign * int(t) for t in layer.t]
    m, checked = len(T), 0
    for j in range(m):
        for i in range(j + 1, m):
            x, y = layer.exact[j] - layer.exact[i], Fraction(T[j] - T[i], A)
            low, high = -int(ones[i]) * M, int(ones[j]) * M
            start = max(low, math.floor(min(-x, -y)) - 1)
            for d in range(start, min(high, math.ceil(max(-x, -y)) + 1) + 1):
                checked += 1
                if (d + x >= 0) != (d + y >= 0):
                    raise ExportError(f"layer {layer.name!r}: expected integer scores ordered as the real ones, "
                                      f"found classes {j} and {i} ordered differently at p_{j} - p_{i} = {d}")
    return {"ratio": list(layer.ratio), "exact_ratio": Fraction(layer.ratio[1], A) == layer.k,
            "pair_points": checked}


@torch.no_grad()
def fold(net, *, search=False):
    """The folded integer form of every binary layer of ``net`` (a :class:`SbnnNet`), in order.

    With ``search``, each layer takes the smallest coefficient bound of :data:`LIMITS` whose
    folding :func:`verify` accepts (and each :class:`Folded` keeps its ``proof``); otherwise the
    format's limit, unverified (as training does for its validation accuracy)."""
    folded = []
    spec = net.spec
    max_value, step = spec.max_feature, (1 << min(spec.planes)) if spec.encoding == "integer" else 1
    if net.pad_value:
        step = 1  # padding positions hold the bit value 1, whatever the input's planes
    for layer in net.binary_layers:
        tau, phi = (float(x) for x in layer.tau_phi())
        weight = layer.weight.detach()
        mask = (weight >= 0).to(torch.uint8)  # sign(0) = +1: a 1-valued connection
        if layer.kind == "conv":
            mask = mask.permute(0, 2, 3, 1)
        mask = np.ascontiguousarray(mask.numpy())
        folded.append(fold_smallest(
            lambda limit: _fold_layer(layer, tau, phi, mask, max_value, step, limit), search))
        max_value, step = 1, 1
    return folded


def _fold_layer(layer, tau, phi, mask, max_value, step, limit):
    if layer.last:
        k, ratio, a, b, t, exact, sign = fold_output(
            layer.name, tau, phi, max_value, float(layer.out_mean), float(layer.out_var), layer.eps,
            float(layer.gain), layer.bias.detach().double().numpy(), limit)
    else:
        bn = layer.bn
        k, ratio, a, b, t, exact = fold_hidden(
            layer.name, tau, phi, max_value, bn.running_mean.double().numpy(),
            bn.running_var.double().numpy(), bn.eps, bn.weight.detach().double().numpy(),
            bn.bias.detach().double().numpy(), limit)
        sign = 1
        t = clip_thresholds(a, b, t, mask, max_value)
    return Folded(layer.name, "conv2d" if layer.kind == "conv" else "dense", mask, a, b, t,
                  layer.last, max_value, step, ratio, k, exact, sign)


def exact_scores(net, folded, x, batch=2048):
    """Integer scores (int64 ``[N, classes]``) of samples ``x`` (uint8 ``[N, *spec.shape]``): the
    PyTorch evaluation forward, computing each folded comparison ``a*p + b*q >= t`` in float64."""
    by_name = {f.name: f for f in folded}
    out = []
    for start in range(0, len(x), batch):
        v = encode_batch(net.spec, x[start:start + batch], net.conv_first).double()
        flat = not net.conv_first
        for kind, item in net.layers_in_order():
            if kind == "pool":
                v = F.max_pool2d(v, 2)
                continue
            f = by_name[item.name]
            if f.kind == "dense" and not flat:
                v = v.permute(0, 2, 3, 1).flatten(1)
                flat = True
            if f.kind == "dense":
                p = v @ torch.from_numpy(f.mask).double().t()
                q = v.sum(dim=1, keepdim=True)
            else:
                padded = F.pad(v, (1, 1, 1, 1), value=float(item.pad_value))
                weight = torch.from_numpy(f.mask).permute(0, 3, 1, 2).double()
                p = F.conv2d(padded, weight)
                q = F.conv2d(padded, torch.ones((1,) + weight.shape[1:], dtype=torch.float64))
            shape = (1, -1) if f.kind == "dense" else (1, -1, 1, 1)
            acc = torch.from_numpy(f.a).double().view(shape) * p + torch.from_numpy(f.b).double().view(shape) * q
            if f.last:
                out.append(acc.to(torch.int64).numpy() - f.t)
                break
            v = (acc >= torch.from_numpy(f.t).double().view(shape)).double()
    return np.concatenate(out) if out else np.zeros((0, len(folded[-1].a)), np.int64)


def to_model(net, folded, name, classes=None, metadata=None):
    """The :class:`sbnn_hdl.model.Model` of ``net`` folded as ``folded``."""
    by_name = {f.name: f for f in folded}
    layers = []
    for kind, item in net.layers_in_order():
        if kind == "pool":
            pool_name, in_shape = item
            layers.append(MaxPool2d(pool_name, in_shape, (2, 2), (2, 2)))
            continue
        f = by_name[item.name]
        if f.kind == "dense":
            layers.append(Dense(f.name, f.mask, f.a, f.b, f.t))
        else:
            layers.append(Conv2d(f.name, item.in_shape, f.mask, f.a, f.b, f.t, stride=(1, 1), padding=(1, 1),
                                 pad_value=item.pad_value))
    return Model(name, net.spec, layers, classes=classes, metadata=metadata)


def check_agreement(net, folded, model, x, y=None):
    """Run the PyTorch evaluation forward and the golden model on ``x``; raise :class:`ExportError`
    with a report on any difference. Returns ``(predictions, accuracy or None)``."""
    x = np.asarray(x).reshape(len(x), *model.input.shape)
    scores = exact_scores(net, folded, x)
    result = golden.infer(model, x)
    predictions = scores.argmax(axis=1)
    differ = np.flatnonzero((predictions != result.predictions) | (scores != result.scores).any(axis=1))
    if len(differ):
        i = differ[0]
        raise ExportError(f"golden check: expected the PyTorch model and the golden model to agree on all "
                          f"{len(x)} samples, found {len(differ)} that differ (first: sample {i}, predictions "
                          f"{predictions[i]} vs {result.predictions[i]}, scores {scores[i].tolist()} vs "
                          f"{result.scores[i].tolist()})")
    accuracy = None if y is None else float((result.predictions == y).mean())
    return result.predictions, accuracy

"""Per-layer statistics of a model: sparsity, weight entropy, kernel Hamming weights (for conv
layers the shares K0, K1 and K>=2 of kernels with no, one, and two or more connections: ``k0``,
``k1``, ``k2plus``), coefficient ranges and binary operations against a dense BNN of the same shape.

Binary operations follow the SBNN paper (Section 3.5): a dense BNN spends 2 per weight (an XNOR
and a popcount step); an SBNN spends 1 per 1-valued connection plus the shared input sum ``q``
(1 per input of the layer or window). Convolutions count every output position.
:func:`format_report` is the readable report of ``python -m sbnn_hdl.inspect`` (and of ``convert``).
"""

import json
import math

import numpy as np

from .model import Conv2d, MaxPool2d
from .tables import format_table

__all__ = ["binary_entropy", "layer_stats", "model_stats", "format_report"]


def binary_entropy(p):
    """``h(p) = -p log2 p - (1-p) log2 (1-p)`` in bits, with ``h(0) = h(1) = 0``."""
    if p <= 0 or p >= 1:
        return 0.0
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def _range(array):
    return [int(array.min()), int(array.max())]


def layer_stats(layer):
    """A dict of statistics for one layer (JSON-serialisable)."""
    stats = {"name": layer.name, "kind": layer.kind, "in_shape": list(layer.in_shape),
             "out_shape": list(layer.out_shape)}
    if isinstance(layer, MaxPool2d):
        stats.update(kernel=list(layer.kernel), stride=list(layer.stride))
        return stats
    weights, connections = layer.weights, layer.connections
    density = connections / weights
    fan_in = layer.mask.reshape(layer.mask.shape[0], -1).sum(axis=1, dtype=np.int64)
    stats.update(
        weights=weights,
        connections=connections,
        density=density,
        entropy_bits_per_weight=binary_entropy(density),
        max_fan_in=int(fan_in.max()),
        unconnected_neurons=int((fan_in == 0).sum()),
        a_range=_range(layer.a), b_range=_range(layer.b), t_range=_range(layer.t),
        shared_sum_used=bool((layer.b != 0).any()),
        bnn_ops=2 * weights * layer.positions,
        sbnn_ops=(connections + layer.fan_in) * layer.positions,
    )
    if isinstance(layer, Conv2d):
        hamming = layer.kernel_hamming_weights
        stats.update(kernel=list(layer.kernel), stride=list(layer.stride),
                     padding=list(layer.padding), pad_value=layer.pad_value,
                     k0=float((hamming == 0).mean()), k1=float((hamming == 1).mean()),
                     k2plus=float((hamming >= 2).mean()))
    return stats


def model_stats(model):
    """A dict with the input description, per-layer statistics and network totals."""
    layers = [layer_stats(layer) for layer in model.layers]
    counted = [s for s in layers if "weights" in s]
    weights = sum(s["weights"] for s in counted)
    connections = sum(s["connections"] for s in counted)
    bnn_ops = sum(s["bnn_ops"] for s in counted)
    sbnn_ops = sum(s["sbnn_ops"] for s in counted)
    spec = model.input
    return {
        "name": model.name,
        "input": {"shape": list(spec.shape), "bits": spec.bits, "encoding": spec.encoding,
                  "planes": list(spec.planes), "features": math.prod(spec.features_shape)},
        "classes": None if model.classes is None else list(model.classes),
        "metadata": model.metadata,
        "layers": layers,
        "totals": {
            "weights": weights,
            "connections": connections,
            "density": connections / weights,
            "entropy_bits_per_weight": binary_entropy(connections / weights),
            "bnn_ops": bnn_ops,
            "sbnn_ops": sbnn_ops,
            "ops_reduction": bnn_ops / sbnn_ops if sbnn_ops else math.inf,
        },
    }


def _shape(shape):
    return "x".join(str(n) for n in shape)


def format_report(stats):
    """The human-readable report of :func:`sbnn_hdl.stats.model_stats`."""
    spec = stats["input"]
    out = [f"model {stats['name']}: input {_shape(spec['shape'])} x {spec['bits']} bits, "
           f"{spec['encoding']} encoding, planes {','.join(map(str, spec['planes']))} "
           f"({spec['features']} first-layer inputs)"]
    if stats["classes"]:
        out.append("classes: " + ", ".join(stats["classes"]))
    for key, value in stats["metadata"].items():
        out.append(f"{key}: {json.dumps(value, ensure_ascii=False)}")
    rows, coeffs = [], []
    for s in stats["layers"]:
        if "weights" not in s:
            rows.append([s["name"], s["kind"], _shape(s["in_shape"]), _shape(s["out_shape"]),
                         "-", "-", "-", "-", "-", "-", "-", "-", "-"])
            continue
        conv = s["kind"] == "conv2d"
        rows.append([s["name"], s["kind"], _shape(s["in_shape"]), _shape(s["out_shape"]),
                     f"{s['connections']:,}/{s['weights']:,}", f"{100 * s['density']:.2f}%",
                     f"{s['entropy_bits_per_weight']:.3f}",
                     *([f"{100 * s[k]:.1f}%" for k in ("k0", "k1", "k2plus")] if conv else ["-"] * 3),
                     f"{s['bnn_ops']:,}", f"{s['sbnn_ops']:,}", f"{s['bnn_ops'] / s['sbnn_ops']:.1f}x"])
        coeffs.append([s["name"], "{}..{}".format(*s["a_range"]), "{}..{}".format(*s["b_range"]),
                       "{}..{}".format(*s["t_range"]), s["max_fan_in"], s["unconnected_neurons"],
                       "yes" if s["shared_sum_used"] else "no"])
    t = stats["totals"]
    rows.append(["total", "", "", "", f"{t['connections']:,}/{t['weights']:,}",
                 f"{100 * t['density']:.2f}%", f"{t['entropy_bits_per_weight']:.3f}", "", "", "",
                 f"{t['bnn_ops']:,}", f"{t['sbnn_ops']:,}", f"{t['ops_reduction']:.1f}x"])
    out += ["", format_table(["layer", "kind", "in", "out", "connections", "density", "bits/w",
                        "K0", "K1", "K>=2", "BNN ops", "SBNN ops", "saving"], rows)]
    out += ["", format_table(["layer", "a", "b", "t", "max fan-in", "unconnected", "uses q"], coeffs)]
    out += ["", "BNN ops: 2 per weight (XNOR + popcount); SBNN ops: 1 per connection + the shared "
                "input sum q; conv layers count every output position."]
    return "\n".join(out)

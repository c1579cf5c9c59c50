"""``python -m sbnn_hdl.inspect model.sbnn [--json]``: what a model holds, layer by layer.

Per layer: kind, shapes, 1-valued connections, density, weight entropy (bits/weight), for conv
layers the share of kernels with Hamming weight 0, 1, and 2 or more (K0, K1, K>=2), coefficient
ranges, and binary operations against a dense BNN of the same shape. See :mod:`sbnn_hdl.stats`.
"""

import argparse
import json
import sys

from . import modelfile
from ._cli import command
from .tables import format_table
from .stats import model_stats

__all__ = ["format_report", "main"]


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


@command("sbnn_hdl.inspect")
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sbnn_hdl.inspect", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the .sbnn file")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    args = parser.parse_args(argv)
    stats = model_stats(modelfile.load(args.model))
    if args.json:
        print(json.dumps(stats, indent=2, ensure_ascii=False))
    else:
        print(format_report(stats))


if __name__ == "__main__":
    sys.exit(main())

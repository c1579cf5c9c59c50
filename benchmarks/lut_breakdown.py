"""Where a generated core's LUT4s go: the generator's ECP5 estimate, split by layer and by part.

For each layer: the per-neuron popcounts ``p`` (the 1-valued connections), the shared input sum
``q``, the per-neuron threshold comparators, and the layer's shared part (the split of ``b'*q`` and
the remainder comparisons, or the output layer's score arithmetic); then the argmax. The figures
are the estimate of :mod:`sbnn_hdl.estimate` (fitted to ``synth_ecp5``; compare its total with
``python -m sbnn_hdl.bench hardware``), so they take seconds instead of a synthesis run.

    ./dev python benchmarks/lut_breakdown.py MODEL.sbnn [MODEL.sbnn ...] [--arch sparse|xnor]
"""

import argparse
from pathlib import Path

from amaranth.hdl import Fragment

from sbnn_hdl import modelfile
from sbnn_hdl.estimate import estimate_ecp5
from sbnn_hdl.gateware import NetworkCore
from sbnn_hdl.gateware.core import sum_stats


def _lut(stats):
    return estimate_ecp5(stats)["lut4"]


def breakdown(model, arch="sparse"):
    """Rows ``(layer, connections, popcounts, q, thresholds, shared, total)`` in estimated LUT4."""
    core = NetworkCore(model, arch=arch)
    Fragment.get(core, None)  # elaborate: the parts count what they build
    rows = []
    for layer, built in zip(model.layers, [*core.hidden, core.output]):
        parts = [_lut(sum_stats(built.p_accumulators)),
                 _lut(sum_stats([built.q_accumulator] if built.q_accumulator else [])),
                 _lut(sum_stats(getattr(built, "thresholds", []))), _lut(sum_stats([built]))]
        rows.append((layer.name, layer.connections, *parts, sum(parts)))
    argmax = _lut({"argmax_bits": core.resources()["argmax_bits"]})
    rows.append(("argmax", 0, 0, 0, 0, argmax, argmax))
    return rows, estimate_ecp5(core.resources())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", metavar="MODEL.sbnn")
    parser.add_argument("--arch", choices=("sparse", "xnor"), default="sparse")
    args = parser.parse_args()
    header = ("layer", "connections", "popcounts", "q", "thresholds", "shared", "total", "LUT4/conn")
    for path in args.models:
        rows, estimate = breakdown(modelfile.load(path), args.arch)
        connections = sum(r[1] for r in rows)
        rows.append(("total", connections, *[sum(r[k] for r in rows) for k in range(2, 7)]))
        print(f"{Path(path).name} ({args.arch} datapath): estimated LUT4 {estimate['lut4']:,}, FF {estimate['ff']:,}")
        print("  ".join(f"{h:>11}" for h in header))
        for r in rows:
            per = f"{r[6] / r[1]:.2f}" if r[1] else "-"
            print("  ".join(f"{c:>11,}" if isinstance(c, int) else f"{c:>11}" for c in (*r, per)))
        print()


if __name__ == "__main__":
    main()

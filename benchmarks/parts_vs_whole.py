"""Synthesis in parts against a whole synthesis of the same core.

    ./dev python benchmarks/parts_vs_whole.py MODEL.sbnn [--part-bytes N]

Prints the cell counts, LUT4-eq and FF of both, their ratio and each run's time: how far the
bench's ``(synth, parts)`` figures are above a whole synthesis (docs/hardware.md). The model must
be small enough to synthesise whole (about 100,000 LUT4 at most with YoWASP's yosys).
"""

import argparse
import time

from sbnn_hdl import load
from sbnn_hdl.gateware.verilog import generate_verilog
from sbnn_hdl.synth import PART_BYTES, synth_ecp5, synth_ecp5_in_parts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--part-bytes", type=int, default=PART_BYTES, help=f"default {PART_BYTES:,}")
    args = parser.parse_args()
    generated = generate_verilog(load(args.model))
    print(f"estimate {generated.report['estimate_ecp5']}; Verilog {len(generated.verilog):,} bytes", flush=True)
    started = time.perf_counter()
    whole = synth_ecp5(generated.verilog, generated.report["top"])
    print(f"whole: {whole} in {time.perf_counter() - started:.0f} s", flush=True)
    started = time.perf_counter()
    parts = synth_ecp5_in_parts(generated.verilog, part_bytes=args.part_bytes)
    print(f"parts: {parts} in {time.perf_counter() - started:.0f} s")
    print(f"parts / whole: LUT4-eq {parts['lut4_equivalent'] / whole['lut4_equivalent']:.3f}, "
          f"FF {parts['TRELLIS_FF'] / whole['TRELLIS_FF']:.3f}")


if __name__ == "__main__":
    main()

"""The ECP5 estimate of a conv model's streaming core with each head (issue #25).

    ./dev python benchmarks/serial_head.py MODEL.sbnn [--every 2]

Prints, for ``--head unrolled`` and ``--head serial``, the estimate (``estimate_model``, from the
elaboration alone: no synthesis), the latency, and the serial engine's cut and cycles per image.
"""

import argparse

from amaranth.hdl import Fragment

from sbnn_hdl import load
from sbnn_hdl.estimate import estimate_ecp5
from sbnn_hdl.gateware.verilog import build_core
from sbnn_hdl.hwplan import DEFAULT_EVERY
from sbnn_hdl.streamplan import HEADS


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--every", type=int, default=DEFAULT_EVERY)
    args = parser.parse_args()
    model = load(args.model)
    for head in HEADS:
        core = build_core(model, every=args.every, head=head)
        Fragment.get(core, None)  # the elaboration counts what it builds
        resources = core.resources()
        estimate = estimate_ecp5(resources)
        line = (f"{head:>8}: {estimate['lut4']:,} LUT4, {estimate['ff']:,} FF, {resources['memory_bits']:,} memory "
                f"bits; latency {core.latency}, one sample per {core.pixels + core.image_gap} clocks")
        if core.engine:
            engine = core.engine
            line += (f"; engine: {engine.lanes} lane(s) x {engine.per_word} position(s) per word, {engine.steps} "
                     f"cycles per image, latency {engine.latency}")
        print(line)


if __name__ == "__main__":
    main()

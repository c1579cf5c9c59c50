"""The ECP5 estimate of a conv model's streaming core with shared conv stages and without (issue #25).

    ./dev python benchmarks/conv_share.py MODEL.sbnn [--head serial] [--every 2]

Prints, for ``--share off`` and ``--share auto``, the estimate of the whole core (from the
elaboration alone: no synthesis), its latency and gap between images, and per stage the share,
the line buffer's rows, the estimate of the stage's layer (a conv stage's accumulators,
selections, totals and thresholds) and of its window generator (line buffers, row selection,
padding); then the dense head's (the dense layers, their engine and the argmax). What is left of
the total is the core's own registers (the input, the collection of the last map, the delays).
"""

import argparse

from amaranth.hdl import Fragment

from sbnn_hdl import load
from sbnn_hdl.estimate import estimate_ecp5
from sbnn_hdl.gateware.core import sum_stats
from sbnn_hdl.gateware.verilog import build_core
from sbnn_hdl.hwplan import DEFAULT_EVERY
from sbnn_hdl.streamplan import HEADS, SHARES


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--head", choices=HEADS, default="serial")
    parser.add_argument("--every", type=int, default=DEFAULT_EVERY)
    args = parser.parse_args()
    model = load(args.model)
    for share in SHARES:
        core = build_core(model, every=args.every, head=args.head, share=share)
        Fragment.get(core, None)  # the elaboration counts what it builds
        estimate = estimate_ecp5(core.resources())
        print(f"--share {share}: {estimate['lut4']:,} LUT4, {estimate['ff']:,} FF; latency {core.latency}, "
              f"one sample per {core.pixels + core.image_gap} clocks")
        for index, stage in enumerate(core.plan.stages):
            line = f"  {stage.layer.name:>8}: share {stage.share:>2}, {core.windows[index].rows} line-buffer rows"
            if stage.is_conv:
                connections = sum(c for u in stage.layer_plan.units for _, c in u.sources)
                layer = estimate_ecp5(sum_stats([core.convs[index], *core.convs[index].parts]))
                line += f", {connections:,} connections: {layer['lut4']:,} LUT4, {layer['ff']:,} FF"
            window = estimate_ecp5(core.windows[index].stats)
            print(line + f"; window {window['lut4']:,} LUT4, {window['ff']:,} FF")
        head = [*core.hidden, core.output, core.argmax, *([core.engine] if core.engine else [])]
        head = estimate_ecp5(sum_stats([*head, *[p for layer in head for p in getattr(layer, "parts", [])]]))
        print(f"  dense head ({args.head}): {head['lut4']:,} LUT4, {head['ff']:,} FF")


if __name__ == "__main__":
    main()

"""``python -m sbnn_hdl.generate model.sbnn --verilog -o DIR [--every K] [--relay N] [--no-scores] [--head serial]``
``python -m sbnn_hdl.generate model.sbnn --board ulx3s [--device 85F] [--clock MHZ] [-o bitstreams] [--no-cache]``

Generates the hardware of a model: a fully pipelined network core in which only the 1-valued
connections become wiring. With ``--verilog``, writes ``DIR/<name>.v`` (Verilog) and
``DIR/<name>.json`` (ports, input packing, latency, connection counts, what the optimisations
removed, a LUT4/FF estimate for ECP5) and prints a summary; the same model and options give the
same bytes. With ``--board``, builds a bitstream for that board with a UART host interface
(``DIR/<board>/<name>.bit``, ``.svf``, Verilog and a report; see docs/boards.md); a build asked
before is served from the cache (``~/.cache/sbnn-hdl/board``, ``--cache DIR``) unless ``--no-cache``.
"""

import argparse
import json
import os
import sys
import time

from . import modelfile
from ._cli import add_core_options, check_core_options, command
from ._files import write_atomic
from .board import BOARDS
from .board.build import DEFAULT_CACHE, build, format_report
from .gateware.verilog import check_model, format_summary, generate_verilog
from .synth import ROUTERS

__all__ = ["main"]


@command("sbnn_hdl.generate")
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sbnn_hdl.generate", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the .sbnn file")
    parser.add_argument("--verilog", action="store_true", help="write the core's Verilog and report")
    parser.add_argument("--board", metavar="NAME", help="build a bitstream for this board (docs/boards.md): "
                        + ", ".join(sorted(BOARDS)))
    parser.add_argument("--device", metavar="SIZE", help="the board's FPGA, e.g. 12F, 25F, 45F, 85F (default: "
                        "the board's largest)")
    parser.add_argument("--clock", type=float, metavar="MHZ", help="core clock (default: the fastest that "
                        "meets timing, found by trying)")
    parser.add_argument("--baud", type=int, metavar="BAUD", help="UART baud rate (default 3000000)")
    parser.add_argument("--batch-depth", type=int, default=512, metavar="N",
                        help="samples the on-chip batch memory holds (default 512; 0: no batch memory, "
                        "INFER only, the core fed straight from the sample's shift register)")
    parser.add_argument("-o", "--output", metavar="DIR", help="output folder (default: build, or bitstreams "
                        "with --board)")
    parser.add_argument("--no-scores", action="store_true", help="no scores port, the prediction only")
    parser.add_argument("--no-carry-chains", action="store_true",
                        help="with --board: synthesise adders as LUT logic (yosys -noccu2), for a smaller part "
                             "at a lower clock")
    parser.add_argument("--router", choices=ROUTERS,
                        help="with --board: nextpnr's router (default: nextpnr's own, router1; router2 copes "
                             "better with a congested design)")
    parser.add_argument("--cache", metavar="DIR", default=str(DEFAULT_CACHE),
                        help="with --board: the folder of board builds by content; a build asked before is "
                             "served from it (default ~/.cache/sbnn-hdl/board)")
    parser.add_argument("--no-cache", action="store_true",
                        help="with --board: build even if the same build is cached, and do not cache it")
    add_core_options(parser)
    args = parser.parse_args(argv)
    if not args.verilog and not args.board:
        parser.error("expected --verilog or --board NAME")
    check_core_options(parser, args)
    if args.no_carry_chains and not args.board:
        parser.error("--no-carry-chains: expected with --board (a synthesis option), found --verilog alone")
    if args.no_cache and not args.board:
        parser.error("--no-cache: expected with --board (board builds are cached), found --verilog alone")
    if args.router and not args.board:
        parser.error("--router: expected with --board (a place and route option), found --verilog alone")
    if args.board:
        report = build(args.model, args.board, device=args.device, clock_mhz=args.clock, baud=args.baud,
                       output=args.output or "bitstreams", every=args.every, relay=args.relay,
                       scores=not args.no_scores,
                       batch_depth=args.batch_depth, arch=args.arch, head=args.head, share=args.share,
                       carry_chains=not args.no_carry_chains,
                       router=args.router, cache=None if args.no_cache else args.cache)
        print(format_report(report))
        return 0
    args.output = args.output or "build"
    model = modelfile.load(args.model)
    check_model(model, arch=args.arch, relay=args.relay, head=args.head, share=args.share)
    start = time.perf_counter()

    def progress(message):
        print(f"[{time.perf_counter() - start:6.1f} s] {message}", file=sys.stderr)

    generated = generate_verilog(model, every=args.every, relay=args.relay, scores=not args.no_scores,
                                 arch=args.arch, head=args.head, share=args.share, progress=progress)
    os.makedirs(args.output, exist_ok=True)
    verilog_path = os.path.join(args.output, f"{model.name}.v")
    report_path = os.path.join(args.output, f"{model.name}.json")
    write_atomic(verilog_path, generated.verilog.encode())
    write_atomic(report_path, (json.dumps(generated.report, indent=2, ensure_ascii=False) + "\n").encode())
    progress(f"wrote {verilog_path} and {report_path}")
    print(format_summary(generated.report))


if __name__ == "__main__":
    sys.exit(main())

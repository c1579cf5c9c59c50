"""``python -m sbnn_hdl.generate model.sbnn --verilog -o DIR [--every K] [--relay N] [--no-scores]``
``python -m sbnn_hdl.generate model.sbnn --board ulx3s [--device 85F] [--clock MHZ] [-o bitstreams]``

Generates the hardware of a model: a fully pipelined network core in which only the 1-valued
connections become wiring. With ``--verilog``, writes ``DIR/<name>.v`` (Verilog) and
``DIR/<name>.json`` (ports, input packing, latency, connection counts, what the optimisations
removed, a LUT4/FF estimate for ECP5) and prints a summary; the same model and options give the
same bytes. With ``--board``, builds a bitstream for that board with a UART host interface
(``DIR/<board>/<name>.bit``, ``.svf``, Verilog and a report; see docs/boards.md).
"""

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

from . import __version__, modelfile
from ._cli import command, format_table
from ._files import write_atomic
from .hwplan import ARCHS, check_supported, check_xnor
from .synth import ROUTERS

__all__ = ["DEFAULT_EVERY", "GeneratedCore", "generate_verilog", "estimate_model", "format_summary", "main"]

#: Adder levels per register stage by default: the choice that meets 150 MHz on an ECP5-85F
#: (speed grade 6); see docs/hardware.md for the measurement.
DEFAULT_EVERY = 2


@dataclass(frozen=True)
class GeneratedCore:
    """What :func:`generate_verilog` returns: the Verilog text, the report, and the core."""

    verilog: str
    report: dict
    core: object


def _ports(core):
    from amaranth.hdl import Value
    from amaranth.lib.wiring import In

    ports = [{"name": "clk", "direction": "in", "width": 1}, {"name": "rst", "direction": "in", "width": 1}]
    for name, member in core.signature.members.items():
        ports.append({"name": name, "direction": "in" if member.flow == In else "out",
                      "width": len(Value.cast(getattr(core, name)))})
    return ports


def _report(model, core, every, resources, estimate):
    from amaranth import __version__ as amaranth_version
    spec = model.input
    layers = []
    for plan, layer in zip(core.plan.layers, [*core.hidden, core.output]):
        entry = dict(name=plan.name, **plan.report, units_built=len(plan.units), uses_q=plan.uses_q,
                     wired_connections=sum(c for u in plan.units for _, c in u.sources),
                     latency=layer.latency)
        layers.append(entry)
    scores = None
    if core.with_scores:
        width = core.output.score_width
        scores = {"port": "scores", "classes": core.output.classes, "width": width,
                  "packing": f"class j in bits [j*{width}, (j+1)*{width}), two's complement"}
    return {
        "name": model.name,
        "top": model.name,
        "generator": {"sbnn_hdl": __version__, "amaranth": amaranth_version, "every": every,
                      "relay": core.relay, "arch": core.arch},
        "latency": core.latency,
        "throughput": "one sample per clock",
        "clock": {"port": "clk", "edge": "rising"},
        "reset": {"port": "rst", "kind": "synchronous, active high; clears the valid pipeline only"},
        "ports": _ports(core),
        "input": {"port": "sample", "shape": list(spec.shape), "bits": spec.bits, "encoding": spec.encoding,
                  "planes": list(spec.planes),
                  "packing": f"element i of the sample flattened in C order in bits [i*{spec.bits}, (i+1)*{spec.bits})",
                  "elements_read": len({element for element, _ in core.plan.features}),
                  "read_bits": list(core.read_bits)},
        "output": {"prediction": {"port": "prediction", "width": len(core.prediction),
                                  "meaning": "smallest index of the largest score"},
                   "valid": {"port": "out_valid", "meaning": f"prediction belongs to the sample that had valid "
                                                             f"{core.latency} cycles earlier"},
                   "scores": scores},
        "classes": list(model.classes) if model.classes else None,
        "connections": {"model": model.connections,
                        "wired": sum(l["wired_connections"] for l in layers)},
        "layers": layers,
        "resources": resources,
        "estimate_ecp5": estimate,
    }


def generate_verilog(model, *, every=DEFAULT_EVERY, relay=0, scores=True, arch="sparse", progress=None):
    """Generate the core of ``model`` with the datapath ``arch`` (``"sparse"``, or the dense
    ``"xnor"`` baseline), ``every`` adder levels per register stage and ``relay`` extra register
    stages on every layer's inputs (see :class:`~sbnn_hdl.gateware.NetworkCore`); returns a
    :class:`GeneratedCore`.

    Raises :class:`~sbnn_hdl.hwplan.HardwareError` for a model the generator cannot build.
    """
    from amaranth.back import rtlil as amaranth_rtlil, verilog as amaranth_verilog

    from .estimate import estimate_ecp5
    from .gateware import NetworkCore
    from .gateware.shared import SharedModules

    step = progress or (lambda message: None)
    step("planning and building the core")
    core = NetworkCore(model, every=every, relay=relay, scores=scores, arch=arch)
    step("elaborating and converting to Verilog")
    shared = SharedModules(model.name)
    top = amaranth_rtlil.convert(core, name=model.name, platform=shared, emit_src=False)
    # amaranth.back.verilog.convert() does this same step for a single RTLIL text.
    text = amaranth_verilog._convert_rtlil_text("\n".join([*shared.rtlil_texts, top]))
    resources = core.resources()
    return GeneratedCore(text, _report(model, core, every, resources, estimate_ecp5(resources)), core)


def estimate_model(model, *, every=DEFAULT_EVERY, relay=0, arch="sparse"):
    """The ECP5 estimate (:func:`sbnn_hdl.estimate.estimate_ecp5`) of the core that
    :func:`generate_verilog` would build, from the elaboration alone (no Verilog conversion)."""
    from amaranth.hdl import Fragment

    from .estimate import estimate_ecp5
    from .gateware import NetworkCore
    core = NetworkCore(model, every=every, relay=relay, arch=arch)
    Fragment.get(core, None)  # the elaboration counts what it builds (core.resources())
    return estimate_ecp5(core.resources())


def format_summary(report):
    """A readable summary of a generation report."""
    head = ["layer", "neurons", "built", "constant", "merged", "unread", "unwired in", "uses q",
            "connections", "latency"]
    rows = [[l["name"], l["neurons"], l["units_built"], l["constant_neurons"], l["merged_neurons"],
             l.get("unread_neurons", 0), l["unwired_inputs"], "yes" if l["uses_q"] else "no",
             f"{l['wired_connections']:,}/{l['connections']:,}", l["latency"]] for l in report["layers"]]
    est = report["estimate_ecp5"]
    return "\n".join([
        f"{report['name']}: latency {report['latency']} cycles (input register, layers, argmax), "
        f"one sample per clock, register every {report['generator']['every']} adder levels"
        + (f", {report['generator']['relay']} relay stage(s) on each layer's inputs" if report['generator']['relay'] else ""),
        format_table(head, rows),
        f"wired connections {report['connections']['wired']:,} of {report['connections']['model']:,} in the model; "
        f"ECP5 estimate {est['lut4']:,} LUT4, {est['ff']:,} FF",
    ])


def _board_names():
    from .boards import BOARDS
    return BOARDS


@command("sbnn_hdl.generate")
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sbnn_hdl.generate", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the .sbnn file")
    parser.add_argument("--verilog", action="store_true", help="write the core's Verilog and report")
    parser.add_argument("--board", metavar="NAME", help="build a bitstream for this board (docs/boards.md): "
                        + ", ".join(sorted(_board_names())))
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
    parser.add_argument("--every", type=int, default=DEFAULT_EVERY, metavar="K",
                        help=f"adder levels per register stage (default {DEFAULT_EVERY})")
    parser.add_argument("--relay", type=int, default=0, metavar="N",
                        help="extra register stages on every layer's inputs, and a register copy of the layer's shared "
                             "split next to each neuron, for a faster clock (default 0)")
    parser.add_argument("--no-scores", action="store_true", help="no scores port, the prediction only")
    parser.add_argument("--no-carry-chains", action="store_true",
                        help="with --board: synthesise adders as LUT logic (yosys -noccu2), for a smaller part "
                             "at a lower clock")
    parser.add_argument("--router", choices=ROUTERS,
                        help="with --board: nextpnr's router (default: nextpnr's own, router1; router2 copes "
                             "better with a congested design)")
    parser.add_argument("--arch", choices=ARCHS, default="sparse",
                        help="datapath: sparse (default), or xnor: the dense BNN baseline, for models in the "
                             "symmetric +-1 domain")
    args = parser.parse_args(argv)
    if not args.verilog and not args.board:
        parser.error("expected --verilog or --board NAME")
    if args.every < 1:
        parser.error(f"--every: expected at least 1, found {args.every}")
    if args.relay < 0:
        parser.error(f"--relay: expected 0 or more register stages, found {args.relay}")
    if args.no_carry_chains and not args.board:
        parser.error("--no-carry-chains: expected with --board (a synthesis option), found --verilog alone")
    if args.router and not args.board:
        parser.error("--router: expected with --board (a place and route option), found --verilog alone")
    if args.board:
        from .boards.build import build, format_report
        report = build(args.model, args.board, device=args.device, clock_mhz=args.clock, baud=args.baud,
                       output=args.output or "bitstreams", every=args.every, relay=args.relay,
                       scores=not args.no_scores,
                       batch_depth=args.batch_depth, arch=args.arch, carry_chains=not args.no_carry_chains,
                       router=args.router)
        print(format_report(report))
        return 0
    args.output = args.output or "build"
    model = modelfile.load(args.model)
    check_supported(model)
    if args.arch == "xnor":
        check_xnor(model)
    start = time.perf_counter()

    def progress(message):
        print(f"[{time.perf_counter() - start:6.1f} s] {message}", file=sys.stderr)

    generated = generate_verilog(model, every=args.every, relay=args.relay, scores=not args.no_scores,
                                 arch=args.arch, progress=progress)
    os.makedirs(args.output, exist_ok=True)
    verilog_path = os.path.join(args.output, f"{model.name}.v")
    report_path = os.path.join(args.output, f"{model.name}.json")
    write_atomic(verilog_path, generated.verilog.encode())
    write_atomic(report_path, (json.dumps(generated.report, indent=2, ensure_ascii=False) + "\n").encode())
    progress(f"wrote {verilog_path} and {report_path}")
    print(format_summary(generated.report))


if __name__ == "__main__":
    sys.exit(main())

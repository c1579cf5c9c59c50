"""``python -m sbnn_hdl.bench hardware MODEL.sbnn [MODEL.sbnn ...] [--arch sparse xnor] [-o DIR]``

Measures the hardware of each model: the generated core synthesised with yosys and placed and
routed out of context on an ECP5-85F (``--device``: another of the ULX3S's parts) with nextpnr,
both from YoWASP, in parallel (``--jobs``, or ``--cluster``: on the workers of a Dask scheduler)
and cached by content (``--cache``): accuracy (with ``--inputs``/``--labels``), connections, LUT4
and FF, fmax, latency, LUT4 per connection, and which ULX3S devices hold it. Writes
``DIR/hardware.json``, ``DIR/hardware.md`` (the table) and PNG plots; the measurement is
:mod:`sbnn_hdl.sweep`'s (docs/hardware.md), the cluster :mod:`sbnn_hdl.cluster`'s
(docs/cluster.md). Exit status 1 when a build on the cluster failed (it is in the table).
"""

import argparse
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from ._cli import add_core_options, check_core_options, command, load_array
from ._files import write_atomic
from .digests import tool_versions
from .errors import InputError
from .synth import ROUTERS
from .sweep import DEFAULT_DEVICE, ULX3S_DEVICES, format_results, plot_results, sweep

__all__ = ["main"]


def _hardware(argv):
    parser = argparse.ArgumentParser(prog="python -m sbnn_hdl.bench hardware",
                                     description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="MODEL.sbnn")
    add_core_options(parser, many_archs=True)
    parser.add_argument("--inputs", metavar="X.npy", help="test inputs, for the accuracy")
    parser.add_argument("--labels", metavar="Y.npy", help="their labels")
    parser.add_argument("--frequency", type=float, default=150, metavar="MHZ", help="nextpnr target (default 150)")
    parser.add_argument("--no-pnr", action="store_true", help="synthesis only (no fmax)")
    parser.add_argument("--device", choices=ULX3S_DEVICES, default=DEFAULT_DEVICE,
                        help=f"the ULX3S part to place and route on (default {DEFAULT_DEVICE})")
    parser.add_argument("--router", choices=ROUTERS,
                        help="nextpnr's router (default: nextpnr's own, router1 on the ECP5; router2 copes "
                             "better with a congested, nearly full device)")
    parser.add_argument("--no-carry-chains", action="store_true",
                        help="synthesise adders as LUT logic (yosys -noccu2): fewer LUT4 once placed, "
                             "a lower fmax")
    parser.add_argument("--synth-max", type=int, metavar="LUT4",
                        help="report designs estimated above this by the estimate, without synthesis")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel builds (default: cores)")
    parser.add_argument("--cluster", metavar="ADDRESS",
                        help="run the builds on the workers of the Dask scheduler at ADDRESS (tcp://host:8786) "
                             "instead of --jobs local processes (docs/cluster.md)")
    parser.add_argument("--cluster-timeout", type=float, default=10, metavar="S",
                        help="seconds to wait for the scheduler to answer (default 10)")
    parser.add_argument("--retries", type=int, default=2, metavar="N",
                        help="with --cluster: runs again of a build whose task raised (default 2; a build whose "
                             "worker died is run again as the scheduler's allowed-failures says)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "sbnn-hdl" / "bench"), metavar="DIR",
                        help="result cache (default ~/.cache/sbnn-hdl/bench)")
    parser.add_argument("-o", "--output", default="build/bench", metavar="DIR", help="default build/bench")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    args = parser.parse_args(argv)
    if (args.inputs is None) != (args.labels is None):
        parser.error("--inputs and --labels: expected both or neither")
    check_core_options(parser, args)
    if args.jobs < 1:
        parser.error(f"--jobs: expected at least 1, found {args.jobs}")
    if args.retries < 0:
        parser.error(f"--retries: expected 0 or more, found {args.retries}")
    if args.cluster_timeout <= 0:
        parser.error(f"--cluster-timeout: expected a number of seconds above 0, found {args.cluster_timeout:g}")
    if args.synth_max is not None and args.synth_max < 0:
        parser.error(f"--synth-max: expected a LUT4 count of 0 or more, found {args.synth_max}")
    x = labels = None
    if args.inputs:
        x, labels = load_array(args.inputs, "inputs"), load_array(args.labels, "labels")
        if labels.shape != (len(x),):
            raise InputError(f"labels file {args.labels!r}", f"{len(x)} labels", f"shape {list(labels.shape)}")
    output = Path(args.output)
    (output / "logs").mkdir(parents=True, exist_ok=True)
    bar = None

    def progress(done, total, what=None):
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            bar = tqdm(total=total, unit="build", desc="synthesis, place and route", file=sys.stderr)
        if what:
            bar.set_postfix_str(what)
        bar.update(done - bar.n)

    try:
        results = sweep(args.models, archs=args.arch, every=args.every, relay=args.relay, frequency=args.frequency,
                        pnr=not args.no_pnr, synth_max=args.synth_max, device=args.device, router=args.router,
                        carry_chains=not args.no_carry_chains, share=args.share, head=args.head,
                        jobs=args.jobs, cache=args.cache, logs=output / "logs", x=x, labels=labels,
                        progress=progress, cluster=args.cluster, cluster_timeout=args.cluster_timeout,
                        retries=args.retries)
    finally:
        if bar is not None:
            bar.close()
    table = format_results(results)
    write_atomic(output / "hardware.json", (json.dumps({"tools": tool_versions(), "results": results},
                                                       indent=1) + "\n").encode())
    write_atomic(output / "hardware.md", (table + "\n").encode())
    plots = plot_results(results, output)
    print(table)
    print(f"wrote {output / 'hardware.json'}, {output / 'hardware.md'}"
          + "".join(f", {p}" for p in plots) + f"; tool logs in {output / 'logs'}")
    failed = [r for r in results if "failed" in r]
    if failed:
        print(f"python -m sbnn_hdl.bench hardware: {len(failed)} of {len(results)} builds failed, not cached "
              f"(their last log lines: {output / 'hardware.json'})", file=sys.stderr)
        return 1


@command("sbnn_hdl.bench")
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] != "hardware":
        print("usage: python -m sbnn_hdl.bench hardware MODEL.sbnn [...] (see --help)", file=sys.stderr)
        return 2
    return _hardware(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

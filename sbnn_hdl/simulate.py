"""``python -m sbnn_hdl.simulate model.sbnn --inputs x.npy --out y.npy [--scores s.npy] [--check]``

Generates the model's Verilog, runs the samples through it in an RTL simulator and writes the
outputs as ``infer`` does (``int64`` predictions, and scores on request; files written
atomically). ``--check`` compares every output with the golden model and exits with status 1
and a readable diff (the first mismatching sample, its scores, the golden model's layer outputs)
on any difference.

Modes: ``bulk`` (default) reads the vectors inside the simulator, no Python per cycle;
``cocotb`` runs the cocotb testbench of ``sim/`` (driver with random idle cycles, monitor,
scoreboard) and also checks each output's latency. ``--netlist ecp5`` simulates the core after
``synth_ecp5`` with Yosys's ECP5 cell models instead of the RTL. ``--every``, ``--relay`` and
``--arch`` choose the core as ``generate`` does. ``--jobs N`` splits the samples between N
simulator processes (default one per 2,000 samples, at most one per CPU core). Builds are cached by content
(``$SBNN_SIM_CACHE``, default ``~/.cache/sbnn-hdl``): a second run of the same core starts at once.
"""

import sys
import time

import numpy as np
from tqdm import tqdm

from . import golden, modelfile
from ._cli import add_core_options, check_core_options, command, load_array, parser_for
from ._files import save_npy
from .gateware.verilog import check_model
from .simulation.rtl import format_mismatch, simulate
from .simulation.tools import SIMULATORS

__all__ = ["main"]

EXIT_MISMATCH = 1


class _Progress:
    """Stage lines on stderr with their times, and a tqdm bar while simulating."""

    def __init__(self, enabled):
        self.enabled, self.start, self.bar, self.stage = enabled, time.perf_counter(), None, None

    def __call__(self, stage, done, total):
        if not self.enabled:
            return
        if stage == "simulate" and total > 0:
            if self.bar is None:
                self.bar = tqdm(total=total, unit="sample", desc="simulate", file=sys.stderr, leave=False)
            self.bar.update(done - self.bar.n)
            return
        if done == 0:
            self.stage = time.perf_counter()
            print(f"[{self.stage - self.start:6.1f} s] {stage} ...", file=sys.stderr)
        elif self.stage is not None:
            print(f"[{time.perf_counter() - self.start:6.1f} s] {stage}: done in {time.perf_counter() - self.stage:.1f} s",
                  file=sys.stderr)

    def close(self):
        if self.bar is not None:
            self.bar.close()


@command("sbnn_hdl.simulate")
def main(argv=None):
    parser = parser_for(__doc__, "sbnn_hdl.simulate")
    parser.add_argument("--sim", default="verilator", choices=SIMULATORS, help="simulator (default verilator)")
    parser.add_argument("--mode", default="bulk", choices=["bulk", "cocotb"], help="default bulk")
    parser.add_argument("--netlist", choices=["ecp5"], help="simulate the synthesised netlist, not the RTL")
    parser.add_argument("--waves", metavar="OUT.fst", help="write a waveform (bulk mode; slower build)")
    parser.add_argument("--check", action="store_true", help="compare with the golden model; exit 1 on a difference")
    parser.add_argument("--idle", type=float, default=0.25, metavar="P",
                        help="cocotb mode: probability of an idle cycle before each sample (default 0.25)")
    parser.add_argument("--seed", type=int, default=0, help="cocotb mode: seed of the idle pattern")
    parser.add_argument("--jobs", type=int, metavar="N",
                        help="bulk mode: simulator processes sharing the samples (default: one per 2,000 "
                             "samples, at most one per CPU core)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    add_core_options(parser)
    args = parser.parse_args(argv)
    if args.mode == "cocotb" and (args.netlist or args.waves):
        parser.error("--netlist and --waves: expected the bulk mode, found --mode cocotb")
    check_core_options(parser, args)
    if args.jobs is not None and (args.jobs < 1 or args.mode != "bulk" or args.waves):
        parser.error(f"--jobs: expected at least 1, in bulk mode without --waves, found {args.jobs}"
                     + (f" with --mode {args.mode}" if args.mode != "bulk" else "")
                     + (" with --waves" if args.waves else ""))
    if not 0 <= args.idle < 1:
        parser.error(f"--idle: expected a probability in [0, 1), found {args.idle}")

    model = modelfile.load(args.model)
    check_model(model, arch=args.arch, relay=args.relay, head=args.head, share=args.share)
    x = golden.check_inputs(model, load_array(args.inputs, "inputs"), where=f"inputs file {args.inputs!r}")
    progress = _Progress(not args.quiet)
    started = time.perf_counter()
    try:
        predictions, scores = simulate(model, x, simulator=args.sim, mode=args.mode, netlist=args.netlist,
                                       every=args.every, relay=args.relay, arch=args.arch, head=args.head,
                                       share=args.share,
                                       waves=args.waves,
                                       idle=args.idle, seed=args.seed, progress=progress, jobs=args.jobs)
    finally:
        progress.close()
    elapsed = time.perf_counter() - started
    save_npy(args.out, predictions)
    if args.scores:
        save_npy(args.scores, scores)
    what = f"{args.netlist} netlist" if args.netlist else "RTL"
    print(f"{model.name}: {len(x)} samples through the {what} ({args.sim}, {args.mode}) in {elapsed:.1f} s -> "
          f"{args.out}" + (f", scores -> {args.scores}" if args.scores else "")
          + (f", waves -> {args.waves}" if args.waves else ""))
    if args.check:
        expected = golden.infer(model, x)
        if np.array_equal(predictions, expected.predictions) and np.array_equal(scores, expected.scores):
            print(f"check: all {len(x)} predictions and scores bit-exact against the golden model")
        else:
            print(format_mismatch(model, x, predictions, scores, expected, source=what))
            return EXIT_MISMATCH


if __name__ == "__main__":
    sys.exit(main())

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
``--arch`` choose the core as ``generate`` does. Builds are cached by content
(``$SBNN_SIM_CACHE``, default ``~/.cache/sbnn-hdl``): a second run of the same core starts at once.
"""

import sys
import time

import numpy as np

from . import golden, modelfile
from ._cli import command, load_array, parser_for
from ._files import save_npy
from .generate import DEFAULT_EVERY, generate_verilog
from .hwplan import ARCHS, check_supported, check_xnor
from .simulators import SIMULATORS

__all__ = ["main", "simulate", "format_mismatch"]

EXIT_MISMATCH = 1


def simulate(model, x, *, simulator="verilator", mode="bulk", netlist=None, every=DEFAULT_EVERY, relay=0,
             arch="sparse", waves=None, idle=0.25, seed=0, cache=None, progress=None):
    """Run ``x`` through the hardware of ``model`` in an RTL simulator; return
    ``(predictions, scores)`` as ``int64`` arrays.

    ``every``, ``relay`` and ``arch`` choose the core as in :func:`~sbnn_hdl.generate.generate_verilog`.

    ``progress(stage, done, total)`` is told of each stage (``generate``, ``synthesise``,
    ``build``, ``simulate``). Raises :class:`~sbnn_hdl.synth.ToolError` when a tool is missing or
    fails, and :class:`AssertionError` in ``cocotb`` mode when an output's latency is not the
    core's documented one.
    """
    progress = progress or (lambda stage, done, total: None)
    progress("generate", 0, 1)
    generated = generate_verilog(model, every=every, relay=relay, arch=arch)
    progress("generate", 1, 1)
    if mode == "cocotb":
        from .cocotb_run import run_cocotb
        if netlist or waves:
            raise ValueError("cocotb mode simulates the RTL without waveforms; use the bulk mode for these")
        progress("build", 0, 1)
        result = run_cocotb(model, x, generated=generated, simulator=simulator, idle=idle, seed=seed,
                            build_dir=None if cache is None else f"{cache}/cocotb-{model.name}")
        progress("simulate", len(x), len(x))
        bad = np.flatnonzero(result.latencies != generated.report["latency"])
        if len(result.predictions) != len(x) or len(bad):
            raise AssertionError(f"cocotb: expected {len(x)} outputs each {generated.report['latency']} cycles after "
                                 f"its sample, found {len(result.predictions)} outputs, latencies "
                                 f"{sorted(set(result.latencies.tolist()))}")
        return result.predictions, result.scores
    from .rtlsim import BulkSimulator
    sources, include = [(f"{model.name}.v", generated.verilog)], []
    if netlist == "ecp5":
        from .gatesim import ecp5_netlist
        progress("synthesise", 0, 1)
        sources, include, _ = ecp5_netlist(generated.verilog, generated.report["top"], simulator=simulator)
        progress("synthesise", 1, 1)
    bulk = BulkSimulator(generated.report, sources, simulator=simulator, include=include, waves=bool(waves),
                         cache=cache, progress=progress)
    return bulk.run(model, x, waves=waves)


def _bits(row):
    text = "".join(str(int(v)) for v in np.asarray(row).reshape(-1))
    return text if len(text) <= 64 else f"{text[:64]}... ({len(text)} bits, {int(np.sum(row))} ones)"


def format_mismatch(model, x, predictions, scores, expected, source="RTL"):
    """The readable diff of ``--check``: how many samples differ, and for the first one its
    prediction and scores (differing classes marked) and the golden model's layer outputs."""
    differs = predictions != expected.predictions
    if scores is not None:
        differs |= (scores != expected.scores).any(axis=1)
    bad = np.flatnonzero(differs)
    first = int(bad[0])
    lines = [f"MISMATCH: {len(bad)} of {len(x)} samples differ from the golden model "
             f"(samples {', '.join(map(str, bad[:10].tolist()))}{', ...' if len(bad) > 10 else ''})",
             f"first mismatch: sample {first}",
             f"  prediction: golden {expected.predictions[first]}, {source} {predictions[first]}"]
    if scores is not None:
        golden_scores, found = expected.scores[first].tolist(), scores[first].tolist()
        marks = ["" if g == f else " <-" for g, f in zip(golden_scores, found)]
        lines.append(f"  {'class':>5}  {'golden':>12}  {source:>12}")
        lines += [f"  {j:>5}  {g:>12}  {f:>12}{m}" for j, (g, f, m) in enumerate(zip(golden_scores, found, marks))]
    layers = golden.infer(model, x[first:first + 1], layers=True).layers
    lines.append(f"  golden layer outputs for sample {first}:")
    lines += [f"    {layer.name}: {_bits(bits[0])}" for layer, bits in zip(model.layers, layers)]
    return "\n".join(lines)


class _Progress:
    """Stage lines on stderr with their times, and a tqdm bar while simulating."""

    def __init__(self, enabled):
        self.enabled, self.start, self.bar, self.stage = enabled, time.perf_counter(), None, None

    def __call__(self, stage, done, total):
        if not self.enabled:
            return
        if stage == "simulate" and total > 0:
            if self.bar is None:
                from tqdm import tqdm
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
    parser.add_argument("--every", type=int, default=DEFAULT_EVERY, metavar="K",
                        help=f"adder levels per register stage (default {DEFAULT_EVERY})")
    parser.add_argument("--relay", type=int, default=0, metavar="N",
                        help="extra register stages on every layer's inputs (default 0)")
    parser.add_argument("--arch", choices=ARCHS, default="sparse",
                        help="datapath: sparse (default), or xnor: the dense BNN baseline")
    parser.add_argument("--idle", type=float, default=0.25, metavar="P",
                        help="cocotb mode: probability of an idle cycle before each sample (default 0.25)")
    parser.add_argument("--seed", type=int, default=0, help="cocotb mode: seed of the idle pattern")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    args = parser.parse_args(argv)
    if args.mode == "cocotb" and (args.netlist or args.waves):
        parser.error("--netlist and --waves: expected the bulk mode, found --mode cocotb")
    if args.every < 1:
        parser.error(f"--every: expected at least 1, found {args.every}")
    if args.relay < 0:
        parser.error(f"--relay: expected 0 or more register stages, found {args.relay}")
    if not 0 <= args.idle < 1:
        parser.error(f"--idle: expected a probability in [0, 1), found {args.idle}")

    model = modelfile.load(args.model)
    check_supported(model)
    if args.arch == "xnor":
        check_xnor(model)
    x = golden.check_inputs(model, load_array(args.inputs, "inputs"), where=f"inputs file {args.inputs!r}")
    progress = _Progress(not args.quiet)
    started = time.perf_counter()
    try:
        predictions, scores = simulate(model, x, simulator=args.sim, mode=args.mode, netlist=args.netlist,
                                       every=args.every, relay=args.relay, arch=args.arch, waves=args.waves,
                                       idle=args.idle, seed=args.seed, progress=progress)
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

"""A model's generated core in an RTL simulator, checked against the golden model.

:func:`simulate` generates the core's Verilog (or synthesises its ECP5 netlist) and runs samples
through it in bulk (:mod:`.bulk`) or under the cocotb testbench (:mod:`.testbench`);
:func:`format_mismatch` is the readable diff of a disagreement with :mod:`sbnn_hdl.golden`.
"""

import numpy as np

from .. import golden
from ..hwplan import DEFAULT_EVERY
from .bulk import BulkSimulator
from .cores import generated_core
from .netlist import ecp5_netlist
from .testbench import run_cocotb

__all__ = ["simulate", "format_mismatch"]


def simulate(model, x, *, simulator="verilator", mode="bulk", netlist=None, every=DEFAULT_EVERY, relay=0,
             arch="sparse", head="unrolled", share="auto", waves=None, idle=0.25, seed=0, cache=None, progress=None, jobs=None):
    """Run ``x`` through the hardware of ``model`` in an RTL simulator; return
    ``(predictions, scores)`` as ``int64`` arrays.

    ``every``, ``relay``, ``arch``, ``head`` and ``share`` choose the core as in
    :func:`~sbnn_hdl.gateware.verilog.generate_verilog`; the generated core is kept in ``cache`` too
    (:func:`~sbnn_hdl.simulation.cores.generated_core`).
    ``jobs``: simulator processes in bulk mode (:meth:`~sbnn_hdl.simulation.bulk.BulkSimulator.run`).

    ``progress(stage, done, total)`` is told of each stage (``generate``, ``synthesise``,
    ``build``, ``simulate``). Raises :class:`~sbnn_hdl.synth.ToolError` when a tool is missing or
    fails, and :class:`AssertionError` in ``cocotb`` mode when an output's latency is not the
    core's documented one.
    """
    progress = progress or (lambda stage, done, total: None)
    progress("generate", 0, 1)
    generated = generated_core(model, cache=cache, every=every, relay=relay, arch=arch, head=head, share=share)
    progress("generate", 1, 1)
    if mode == "cocotb":
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
    sources, include = [(f"{model.name}.v", generated.verilog)], []
    if netlist == "ecp5":
        progress("synthesise", 0, 1)
        sources, include, _ = ecp5_netlist(generated.verilog, generated.report["top"], simulator=simulator)
        progress("synthesise", 1, 1)
    bulk = BulkSimulator(generated.report, sources, simulator=simulator, include=include, waves=bool(waves),
                         cache=cache, progress=progress)
    return bulk.run(model, x, waves=waves, jobs=jobs)


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

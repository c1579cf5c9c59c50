"""The core of a board build or a board simulation, for either kind of model: a dense model's
:class:`~sbnn_hdl.gateware.NetworkCore`, or a conv model's
:class:`~sbnn_hdl.gateware.streaming.StreamingCore` (:func:`generate_core`), and what the host
interface needs to know about it (:func:`core_info`).
"""

from amaranth import __version__ as amaranth_version
from amaranth.back import rtlil as amaranth_rtlil

from .. import __version__
from ..estimate import estimate_ecp5
from ..gateware.shared import SharedModules
from ..gateware.streaming import StreamingCore
from ..gateware.verilog import GeneratedCore, _ports, generate_verilog
from ..hwplan import DEFAULT_EVERY, HardwareError, check_supported, check_xnor
from ..streamplan import is_streaming, plan_stream
from ..synth import rtlil_to_verilog
from .dispatch import CoreInfo

__all__ = ["check_board_model", "generate_core", "core_info"]

#: What :func:`~sbnn_hdl.hwplan.check_supported` says of a conv layer while
#: :func:`~sbnn_hdl.gateware.verilog.generate_verilog` builds dense cores only.
_NOT_YET = "hardware is not generated yet"


def check_board_model(model, arch="sparse", relay=0):
    """Raise :class:`~sbnn_hdl.hwplan.HardwareError` for a model whose core cannot be built
    with these options: a dense model as ``generate --verilog`` checks it; a conv model as the
    streaming core checks it (:func:`~sbnn_hdl.streamplan.plan_stream`), which has neither the
    ``xnor`` datapath nor relay stages."""
    if not is_streaming(model):
        check_supported(model)
        if arch == "xnor":
            check_xnor(model)
        return
    if arch != "sparse":
        raise HardwareError(f"--arch {arch}: expected a dense model (a conv model's streaming core has the sparse "
                            f"datapath only), found conv2d/maxpool2d layers")
    if relay:
        raise HardwareError(f"--relay {relay}: expected 0 for a conv model (its streaming core has no relay "
                            f"stages), found {relay}")
    plan_stream(model)


def generate_core(model, *, every=DEFAULT_EVERY, relay=0, scores=True, arch="sparse", progress=None):
    """The core of ``model`` as :func:`~sbnn_hdl.gateware.verilog.generate_verilog` generates it
    (a :class:`~sbnn_hdl.gateware.verilog.GeneratedCore`). For a conv model, while
    ``generate_verilog`` does not build streaming cores, the
    :class:`~sbnn_hdl.gateware.streaming.StreamingCore` is converted here the same way (shared
    accumulator modules, Amaranth's Yosys), with a report of what a board build reads of it.
    Raises :class:`~sbnn_hdl.hwplan.HardwareError` (:func:`check_board_model`)."""
    check_board_model(model, arch, relay)
    if not is_streaming(model):
        return generate_verilog(model, every=every, relay=relay, scores=scores, arch=arch, progress=progress)
    try:
        return generate_verilog(model, every=every, relay=relay, scores=scores, arch=arch, progress=progress)
    except HardwareError as error:
        if _NOT_YET not in str(error):
            raise
    step = progress or (lambda message: None)
    step("planning and building the streaming core")
    core = StreamingCore(model, every=every, scores=scores)
    step("elaborating and converting to Verilog")
    shared = SharedModules(model.name)
    top = amaranth_rtlil.convert(core, name=model.name, platform=shared, emit_src=False)
    text = rtlil_to_verilog("\n".join([*shared.rtlil_texts, top]))
    resources = core.resources()
    return GeneratedCore(text, _stream_report(model, core, every, resources, estimate_ecp5(resources)), core)


def _stream_report(model, core, every, resources, estimate):
    spec = model.input
    scores = None
    if core.with_scores:
        width = core.output.score_width
        scores = {"port": "scores", "classes": core.output.classes, "width": width,
                  "packing": f"class j in bits [j*{width}, (j+1)*{width}), two's complement"}
    period = core.pixels + core.image_gap
    return {
        "name": model.name,
        "top": model.name,
        "generator": {"sbnn_hdl": __version__, "amaranth": amaranth_version, "every": every, "relay": 0,
                      "arch": "sparse", "core": "streaming"},
        "latency": core.latency,
        "throughput": f"one sample per {period} clocks (one pixel per clock)",
        "ports": _ports(core),
        "input": {"port": "pixel", "shape": list(spec.shape), "bits": spec.bits, "encoding": spec.encoding,
                  "planes": list(spec.planes), "pixels": core.pixels, "image_gap": core.image_gap,
                  "packing": f"one pixel per clock in raster order, channel c in bits [c*{spec.bits}, "
                             f"(c+1)*{spec.bits})"},
        "output": {"prediction": {"port": "prediction", "width": len(core.prediction),
                                  "meaning": "smallest index of the largest score"},
                   "valid": {"port": "out_valid", "meaning": f"prediction belongs to the sample whose last pixel "
                                                             f"had valid {core.latency} cycles earlier"},
                   "scores": scores},
        "classes": list(model.classes) if model.classes else None,
        "resources": resources,
        "estimate_ecp5": estimate,
    }


def core_info(generated):
    """The :class:`~sbnn_hdl.board.dispatch.CoreInfo` (or
    :class:`~sbnn_hdl.board.dispatch.StreamCoreInfo`) of a generated core."""
    return CoreInfo.from_generated(generated)

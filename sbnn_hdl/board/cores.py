"""The core of a board build or a board simulation, for either kind of model: a dense model's
:class:`~sbnn_hdl.gateware.NetworkCore`, or a conv model's
:class:`~sbnn_hdl.gateware.streaming.StreamingCore` (:func:`generate_core`), and what the host
interface needs to know about it (:func:`core_info`).
"""

from ..gateware.verilog import check_model, generate_verilog
from ..hwplan import DEFAULT_EVERY
from .dispatch import CoreInfo

__all__ = ["check_board_model", "generate_core", "core_info"]


def check_board_model(model, arch="sparse", relay=0, head="unrolled", share="auto"):
    """Raise :class:`~sbnn_hdl.hwplan.HardwareError` for a model whose core cannot be built
    with these options (:func:`~sbnn_hdl.gateware.verilog.check_model`: a conv model's
    streaming core has neither the ``xnor`` datapath nor relay stages; a dense model's core has
    no serial head and no shared conv stages)."""
    check_model(model, arch=arch, relay=relay, head=head, share=share)


def generate_core(model, *, every=DEFAULT_EVERY, relay=0, scores=True, arch="sparse", head="unrolled",
                  share="auto", progress=None):
    """The core of ``model`` as :func:`~sbnn_hdl.gateware.verilog.generate_verilog` generates it
    (a :class:`~sbnn_hdl.gateware.verilog.GeneratedCore` whose ``core`` the host interface reads).
    Raises :class:`~sbnn_hdl.hwplan.HardwareError` (:func:`check_board_model`)."""
    check_board_model(model, arch, relay, head, share)
    return generate_verilog(model, every=every, relay=relay, scores=scores, arch=arch, head=head, share=share,
                            progress=progress)


def core_info(generated):
    """The :class:`~sbnn_hdl.board.dispatch.CoreInfo` (or
    :class:`~sbnn_hdl.board.dispatch.StreamCoreInfo`) of a generated core."""
    return CoreInfo.from_generated(generated)

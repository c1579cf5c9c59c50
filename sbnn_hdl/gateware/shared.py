"""One module definition for every group of identical leaf components, when emitting Verilog.

A 256-neuron layer has 256 sparse accumulators but only a few dozen distinct ones (an
accumulator depends on its inputs' widths and counts, not on which wires feed it). Converting
each distinct one once, and instantiating it by name, makes Verilog emission several times
faster and the Verilog smaller; the logic is the same.

:class:`SharedModules` is passed as the ``platform`` of the elaboration that emits Verilog. Leaf
components that support sharing (:class:`~sbnn_hdl.gateware.SparseAccumulator`) then elaborate
to an ``Instance``; with any other platform (``None`` in ``amaranth.sim``, a board) they build
their logic as usual.
"""

import re

from amaranth.back import rtlil
from amaranth.hdl import ClockSignal, Instance, Module, ResetSignal
from amaranth.lib.wiring import In

__all__ = ["SharedModules"]


class SharedModules:
    """Collects the module definitions that instances refer to.

    Parameters
    ----------
    prefix : str
        Prefix of the shared modules' names (the top module's name, so that cores of different
        models can live in one design).
    """

    def __init__(self, prefix):
        self.prefix = prefix
        self._modules = {}  # key -> (module name, input port names, RTLIL text, stats)

    @property
    def rtlil_texts(self):
        """The RTLIL of every shared module, in order of first use."""
        return [text for _, _, text, _ in self._modules.values()]

    def instance(self, component, key, make):
        """An ``Instance`` that stands for ``component``: of the module built from ``make()``
        the first time ``key`` is seen. Sets ``component.stats`` from the shared module."""
        if key not in self._modules:
            fresh = make()
            name = f"{self.prefix}_{type(fresh).__name__.lower()}{len(self._modules)}"
            text = rtlil.convert(fresh, name=name, emit_src=False)
            inputs = set(re.findall(r"^\s*wire (?:width \d+ )?input \d+\s+\\(\S+)$", text, re.M))
            if "clk" not in inputs and fresh.stats["register_bits"]:
                raise AssertionError(f"shared module {name}: registers but no clock port found in its RTLIL")
            self._modules[key] = (name, inputs, text, fresh.stats)
        name, inputs, _, stats = self._modules[key]
        component.stats = stats
        ports = {}
        if "clk" in inputs:
            ports["i_clk"] = ClockSignal()
        if "rst" in inputs:
            ports["i_rst"] = ResetSignal()
        for member_name, member in component.signature.members.items():
            flow = "i" if member.flow == In else "o"
            ports[f"{flow}_{member_name}"] = getattr(component, member_name)
        m = Module()
        m.submodules.shared = Instance(name, **ports)
        return m

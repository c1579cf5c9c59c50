"""Constants of a board's design that a build sets again after synthesis: the clock-dependent ones.

A board build may place and route the same design at several core clocks (the automatic clock
search, :mod:`sbnn_hdl.board.build`). What depends on the clock in the synthesised design is
the PLL's dividers, the UART's bit time, the frame timeout and the clock the INFO reply states.
Written as plain constants, the last three would be folded into the logic by synthesis, and a
new clock would need a new synthesis. A :class:`Tunable` is built instead as one ``LUT4`` per
bit with no inputs (its ``INIT`` all zeros or all ones, marked with the attribute
``sbnn_tunable = "name[bit]"``): synthesis keeps it as it is, since it does not look inside a
primitive, and :func:`patch_netlist` sets its ``INIT`` in yosys's JSON netlist for another
clock, so that only place and route runs again.

The logic around a tunable is the logic around the constant, with the constant's value: the
registers compared with it are as wide as its ``bound`` (the largest value it may be set to),
so a component built from a :class:`Tunable` behaves, for every value up to its bound, as the
same component built from the plain integer (which is what the simulations check).
"""

import json
from dataclasses import dataclass

from amaranth.hdl import Const, Instance, Signal

from .._files import write_atomic

__all__ = ["Tunable", "bound", "derive", "tunable_value", "tunables_in", "idle_tunables", "patch_netlist",
           "patch_netlist_file"]

#: The attribute that marks a tunable's LUT4 cells in the netlist.
ATTRIBUTE = "sbnn_tunable"


@dataclass(frozen=True)
class Tunable:
    """An integer constant ``value`` named ``name``, which may later be set to any value from 0
    to ``bound`` in the synthesised netlist (:func:`patch_netlist`)."""

    name: str
    value: int
    bound: int

    def __post_init__(self):
        if not 0 <= self.value <= self.bound:
            raise ValueError(f"tunable {self.name}: expected 0 <= value <= bound, found {self.value} and {self.bound}")

    @property
    def width(self):
        return max(1, self.bound.bit_length())


def bound(x):
    """The largest value of ``x``: an ``int`` is its own bound."""
    return x.bound if isinstance(x, Tunable) else x


def derive(x, suffix, function):
    """``function`` of ``x``: an ``int``, or for a :class:`Tunable` a tunable named ``name +
    suffix`` whose value and bound are ``function`` of ``x``'s (``function`` must not decrease)."""
    if isinstance(x, Tunable):
        return Tunable(x.name + suffix, function(x.value), function(x.bound))
    return function(x)


def tunable_value(m, x, platform):
    """``x`` as a value of module ``m`` elaborated for ``platform``: an ``int`` as it is; a
    :class:`Tunable` as a signal of its width driven by constant LUT4 cells added to ``m`` (an
    ECP5 primitive), or without a platform (a simulation) as a constant of its width."""
    if not isinstance(x, Tunable):
        return x
    if platform is None:
        return Const(x.value, x.width)
    signal = Signal(x.width, name=f"tunable_{x.name}")
    for bit in range(x.width):
        m.submodules[f"tunable_{x.name}_{bit}"] = Instance(
            "LUT4", p_INIT=0xFFFF if x.value >> bit & 1 else 0, a_keep=1, a_sbnn_tunable=f"{x.name}[{bit}]",
            i_A=0, i_B=0, i_C=0, i_D=0, o_Z=signal[bit])
    return signal


def _cells(netlist):
    for module in netlist["modules"].values():
        yield from module.get("cells", {}).values()


def tunables_in(netlist):
    """The tunables of a yosys JSON netlist (a dict): ``{name: {bit: value}}``, each bit's value
    read from its LUT4's ``INIT`` (several cells of the same name and bit may exist)."""
    found = {}
    for cell in _cells(netlist):
        mark = cell.get("attributes", {}).get(ATTRIBUTE)
        if mark is None:
            continue
        name, bit = mark.rstrip(" ]").split("[")
        found.setdefault(name, {})[int(bit)] = int(str(cell["parameters"]["INIT"]).strip(), 2) & 1
    return found


def idle_tunables(netlist):
    """The marks (``"name[bit]"``) of the tunable cells of ``netlist`` whose output no cell reads:
    a constant that synthesis folded into the logic after all, which setting its ``INIT`` would
    not change (sorted)."""
    read = set()
    for cell in _cells(netlist):
        directions = cell.get("port_directions", {})
        for port, bits in cell.get("connections", {}).items():
            if directions.get(port) == "input":
                read.update(bit for bit in bits if isinstance(bit, int))
    return sorted(cell["attributes"][ATTRIBUTE] for cell in _cells(netlist)
                  if ATTRIBUTE in cell.get("attributes", {}) and not read & set(cell["connections"]["Z"]))


def _integer(value, width=32):
    """A parameter as yosys's JSON writes an integer: its bits, most significant first."""
    return format(value, f"0{width}b")


def _string(text):
    """A string as yosys's JSON writes it: with a space after one that would read as bits."""
    return text + " " if set(text) <= set("01xz") else text


def patch_netlist(netlist, values, pll=None):
    """Set the tunables of ``netlist`` (yosys's JSON netlist, a dict changed in place) to
    ``values`` (``{name: int}``) and, with ``pll`` (a :class:`~sbnn_hdl.board.pll.PLLConfig`),
    the EHXPLLL's dividers and output frequency. Every tunable of the netlist must be given a
    value within its bits, and the netlist must hold one EHXPLLL: otherwise ``ValueError``
    naming what was expected and found (a design that a retry cannot reuse)."""
    found = tunables_in(netlist)
    if set(found) != set(values):
        raise ValueError(f"netlist tunables: expected {sorted(values)}, found {sorted(found)}")
    for name, value in values.items():
        width = max(found[name]) + 1
        if not 0 <= value < 1 << width:
            raise ValueError(f"netlist tunable {name}: expected a value of at most {width} bits, found {value}")
    for cell in _cells(netlist):
        mark = cell.get("attributes", {}).get(ATTRIBUTE)
        if mark is not None:
            name, bit = mark.rstrip(" ]").split("[")
            init = str(cell["parameters"]["INIT"])
            width = len(init) if set(init) <= set("01") else 16   # as yosys wrote it (Amaranth's: 32 bits)
            cell["parameters"]["INIT"] = _integer(0xFFFF if values[name] >> int(bit) & 1 else 0, width)
    if pll is not None:
        plls = [cell for cell in _cells(netlist) if cell["type"] == "EHXPLLL"]
        if len(plls) != 1:
            raise ValueError(f"netlist PLL: expected one EHXPLLL, found {len(plls)}")
        parameters, attributes = plls[0]["parameters"], plls[0]["attributes"]
        for key, value in (("CLKI_DIV", pll.clki_div), ("CLKFB_DIV", pll.clkfb_div), ("CLKOP_DIV", pll.clkop_div),
                           ("CLKOP_CPHASE", pll.clkop_div - 1)):
            parameters[key] = _integer(value)
        attributes["FREQUENCY_PIN_CLKOP"] = _string(f"{pll.output_mhz:g}")
    return netlist


def patch_netlist_file(path, values, pll=None):
    """:func:`patch_netlist` on the JSON file at ``path``, rewritten atomically."""
    with open(path) as file:
        netlist = json.load(file)
    patch_netlist(netlist, values, pll)
    write_atomic(path, json.dumps(netlist).encode())

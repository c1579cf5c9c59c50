"""Board builds: a network core behind a UART host interface, on an open FPGA board.

Every board is registered here, in :data:`BOARDS`, and nowhere else. A board names its
``amaranth-boards`` platform per device, the clock and UART resources it uses, and its FPGA's
capacity (for refusing a model before place and route). Cores never request pins: only the top
level (:mod:`sbnn_hdl.board.top`) does, through these names.
"""

from dataclasses import dataclass
import importlib

from ..errors import SbnnError

__all__ = ["Board", "Device", "BOARDS", "NEXTPNR_DEVICES", "NEXTPNR_PACKAGES", "get_board"]


@dataclass(frozen=True)
class Device:
    """One FPGA as the board carries it: ``platform`` is ``"module:Class"`` in ``amaranth_boards``,
    whose ``device``, ``package`` and ``speed`` are ``part``, ``package`` and ``speed`` here;
    ``nextpnr`` is nextpnr-ecp5's device, package and speed options for it; capacities from the
    vendor's data sheet (nextpnr reports the same figures)."""

    part: str
    platform: str
    package: str   # Lattice's package code, "BG381" (caBGA381)
    speed: str     # speed grade, "6"
    lut4: int
    ff: int
    bram: int      # DP16KD (18 kbit) blocks
    dsp: int       # MULT18X18D

    def platform_class(self):
        module, name = self.platform.split(":")
        return getattr(importlib.import_module(f"amaranth_boards.{module}"), name)

    @property
    def nextpnr(self):
        """nextpnr-ecp5's options for this FPGA: ``["--85k", "--package", "CABGA381", "--speed", "6"]``."""
        return [NEXTPNR_DEVICES[self.part], "--package", NEXTPNR_PACKAGES[self.package], "--speed", self.speed]


@dataclass(frozen=True)
class Board:
    """An open FPGA board with a UART to the host.

    ``clock``: the resource of the board's oscillator (``clock_mhz``); ``uart``: the resource of
    the USB-serial port; ``loader``: the ``openFPGALoader -b`` name; ``max_clock_mhz``: the
    highest core clock tried when ``--clock`` is not given (the first clock asked when no
    measured build of the board predicts one: :func:`sbnn_hdl.board.build.first_clock`); ``baud``: the default baud rate.
    """

    name: str
    title: str
    family: str
    devices: dict
    default_device: str
    clock: str
    clock_mhz: float
    uart: str = "uart"
    loader: str = ""
    baud: int = 3_000_000
    max_clock_mhz: float = 200.0
    notes: str = ""

    def device(self, name=None):
        name = name or self.default_device
        if name not in self.devices:
            raise SbnnError(f"--device: expected one of {', '.join(self.devices)} for the {self.title}, "
                            f"found {name!r}")
        return self.devices[name]


# LFE5U family capacities (ECP5 family data sheet, FPGA-DS-02012, table 1.1).
_ECP5 = {"12F": (12_096, 32, 28), "25F": (24_288, 56, 28), "45F": (43_848, 108, 72), "85F": (83_640, 208, 156)}

#: nextpnr-ecp5's device option for each ECP5 part (``nextpnr-ecp5 --help``): LFE5U, LFE5UM
#: (SERDES) and LFE5UM5G (5 Gb/s SERDES) of each size.
NEXTPNR_DEVICES = {
    **{f"LFE5U-{size}F": f"--{size}k" for size in (12, 25, 45, 85)},
    **{f"LFE5UM-{size}F": f"--um-{size}k" for size in (25, 45, 85)},
    **{f"LFE5UM5G-{size}F": f"--um5g-{size}k" for size in (25, 45, 85)},
}
#: nextpnr-ecp5's ``--package`` for each ECP5 package code.
NEXTPNR_PACKAGES = {"BG256": "CABGA256", "MG285": "CSFBGA285", "BG381": "CABGA381", "BG554": "CABGA554",
                    "BG756": "CABGA756"}


def _ecp5(part, platform, size, package, speed):
    lut, bram, dsp = _ECP5[size]
    return Device(part, platform, package, speed, lut, lut, bram, dsp)


BOARDS = {
    "ulx3s": Board(
        name="ulx3s", title="ULX3S (Radiona)", family="ecp5",
        devices={size: _ecp5(f"LFE5U-{size}", f"ulx3s:ULX3S_{size}_Platform", size, "BG381", "6") for size in _ECP5},
        default_device="85F", clock="clk25", clock_mhz=25.0, loader="ulx3s", max_clock_mhz=160.0,
        notes="FT231X USB-serial (up to 3 Mbaud) on the US1 port"),
    "ecpix5": Board(
        name="ecpix5", title="ECPIX-5 (LambdaConcept)", family="ecp5",
        devices={"45F": _ecp5("LFE5UM5G-45F", "ecpix5:ECPIX545Platform", "45F", "BG554", "8"),
                 "85F": _ecp5("LFE5UM5G-85F", "ecpix5:ECPIX585Platform", "85F", "BG554", "8")},
        default_device="85F", clock="clk100", clock_mhz=100.0, loader="ecpix5",
        notes="FT2232 USB-serial, second channel"),
}


def get_board(name):
    """The :class:`Board` called ``name``, or :class:`SbnnError` listing the boards."""
    if name not in BOARDS:
        raise SbnnError(f"--board: expected one of {', '.join(sorted(BOARDS))}, found {name!r}")
    return BOARDS[name]

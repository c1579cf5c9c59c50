"""Bulk RTL simulation: the vectors are read inside the simulator, no Python runs per cycle.

:func:`testbench` is a Verilog testbench around a generated core. It reads one packed sample per
line of a hex file with ``$fscanf``, drives one sample per clock (``valid`` high), and writes each
output marked ``out_valid`` to a file. The sample count, the file names and the waveform file are
plusargs, so one build runs any vector set. :class:`BulkSimulator` builds it with Verilator
(``--binary --timing``) or Icarus Verilog, caches the build by the hash of everything that goes
into it, runs it, and reads the outputs back as arrays.

The same testbench runs the synthesised netlist (:mod:`sbnn_hdl.simulation.netlist` supplies the sources),
because synthesis keeps the core's ports.
"""

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ..synth import ToolError
from .tools import configure, version

__all__ = ["testbench", "hex_samples", "BulkSimulator", "default_cache", "default_jobs"]

#: Verilator's C++ optimisation level: -O1 builds in about half the time of the default -Os
#: and simulates the short runs here no slower in total (docs/simulation.md).
VERILATOR_OPT = "-O1"


def default_cache():
    """``$SBNN_SIM_CACHE``, else ``~/.cache/sbnn-hdl/rtlsim``: where built simulations are kept."""
    if os.environ.get("SBNN_SIM_CACHE"):
        return Path(os.environ["SBNN_SIM_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sbnn-hdl" / "rtlsim"


def _port_width(report, name):
    return next(p["width"] for p in report["ports"] if p["name"] == name)


def testbench(report):
    """The Verilog testbench (module ``sbnn_tb``) for the core that the generation ``report`` describes.

    Plusargs: ``+count=N`` samples from ``+vectors=FILE`` (one hex number per line, packed as
    :func:`sbnn_hdl.hwplan.pack_sample` does), outputs to ``+outputs=FILE`` (``prediction`` and,
    when present, the packed ``scores``, in hex, one line per sample), a line ``sbnn-progress K``
    on standard output every ``+progress=K`` outputs, and waveforms to ``+waves=FILE`` when given.
    The run ends after ``count`` outputs, or prints ``sbnn-timeout`` if they have not all come
    ``latency + 64`` cycles after the last sample.

    For a streaming core (``report["kind"] == "stream"``) each line still holds one whole sample,
    packed the same way, so that pixel ``p`` is bits ``[p*pixel_width, (p+1)*pixel_width)``; the
    testbench sends its pixels one per clock, back to back, then ``image_gap`` idle cycles.
    """
    scores = report["output"]["scores"]
    if report.get("kind") == "stream":
        spec = report["input"]
        pw, pixels, gap = spec["pixel_width"], spec["pixels_per_sample"], spec["image_gap"]
        port, counters = "pixel", ", index = 0, rest = 0"
        registers = f"reg [{pw * pixels - 1}:0] current = 0;\n  reg [{pw - 1}:0] pixel = 0;"
        drive = f"""    if (rest != 0) begin
      valid <= 0;
      rest <= rest - 1;
    end else if (index == 0 && sent == count) valid <= 0;
    else begin
      if (index == 0) status = $fscanf(fin, "%h\\n", current);
      pixel <= current[index*{pw} +: {pw}];
      valid <= 1;
      if (index == {pixels - 1}) begin
        index <= 0;
        sent <= sent + 1;
        rest <= {gap};
      end else index <= index + 1;
    end"""
    else:
        port, counters = "sample", ""
        registers = f"reg [{_port_width(report, 'sample') - 1}:0] sample = 0, next_sample = 0;"
        drive = """    if (sent < count) begin
      status = $fscanf(fin, "%h\\n", next_sample);
      sample <= next_sample;
      valid <= 1;
      sent <= sent + 1;
    end else valid <= 0;"""
    pred = report["output"]["prediction"]["width"]
    score_port = "\n    .scores(scores)," if scores else ""
    score_decl = f"  wire [{scores['classes'] * scores['width'] - 1}:0] scores;\n" if scores else ""
    display = '"%h %h", prediction, scores' if scores else '"%h", prediction'
    return f"""`timescale 1ns/1ps
module sbnn_tb;
  reg clk = 0, rst = 0, valid = 0;
  {registers}
  wire [{pred - 1}:0] prediction;
  wire out_valid;
{score_decl}  integer count = 0, sent = 0, seen = 0, step = 0, fin = 0, fout = 0, status = 0{counters};
  reg [8*4096-1:0] vectors, outputs, waves;
  {report["top"]} dut (
    .clk(clk), .rst(rst), .{port}({port}), .valid(valid),{score_port}
    .prediction(prediction), .out_valid(out_valid));
  always #5 clk = ~clk;
  initial begin
    if (!$value$plusargs("count=%d", count) || !$value$plusargs("vectors=%s", vectors)
        || !$value$plusargs("outputs=%s", outputs)) begin
      $display("sbnn-error expected plusargs +count= +vectors= +outputs=");
      $finish;
    end
    if (!$value$plusargs("progress=%d", step)) step = 0;
    if ($value$plusargs("waves=%s", waves)) begin
      $dumpfile(waves);
      $dumpvars(0, sbnn_tb);
    end
    fin = $fopen(vectors, "r");
    fout = $fopen(outputs, "w");
    if (fin == 0 || fout == 0) begin
      $display("sbnn-error cannot open the vector or output file");
      $finish;
    end
    if (count == 0) begin $fclose(fout); $finish; end
    // Reset rises after time 0, so that Icarus evaluates every block that reads it with the
    // registers' initial values (at time 0 the order of evaluation is not defined).
    #1 rst = 1;
    repeat (2) @(posedge clk);
    rst <= 0;
    wait (sent == count);
    repeat ({report['latency']} + 64) @(posedge clk);
    $display("sbnn-timeout %0d", seen);
    $fclose(fout);
    $finish;
  end
  always @(posedge clk) if (!rst) begin
{drive}
    if (out_valid) begin
      $fdisplay(fout, {display});
      seen = seen + 1;
      if (step != 0 && seen % step == 0) begin $display("sbnn-progress %0d", seen); $fflush; end
      if (seen == count) begin $fclose(fout); $finish; end
    end
  end
endmodule
"""


def _sample_width(report):
    """The bits of one packed sample on a line of the vector file."""
    if report.get("kind") == "stream":
        return report["input"]["pixel_width"] * report["input"]["pixels_per_sample"]
    return _port_width(report, "sample")


class BulkSimulator:
    """A built bulk simulation of one core: build once (cached), run many vector sets.

    ``sources`` are ``(file name, Verilog text)`` pairs (the core, or a netlist and the cell
    models it needs), ``include`` folders for `` `include``, ``report`` the core's generation
    report (ports, latency, output layout). ``waves=True`` builds with waveform support
    (Verilator ``--trace-fst``), which is slower; ask for it only when a waveform is wanted.
    ``progress(stage, done, total)`` is called while building and running.
    """

    def __init__(self, report, sources, *, simulator="verilator", include=(), waves=False,
                 cache=None, progress=None):
        self.report = report
        self.simulator = simulator
        self.waves = waves
        self._progress = progress or (lambda stage, done, total: None)
        self._program = configure(simulator)
        self._sources = [("sbnn_tb.v", testbench(report))] + list(sources)
        self._include = [str(Path(folder).resolve()) for folder in include]
        key = hashlib.sha256()
        for part in [version(simulator), VERILATOR_OPT, str(waves)] + [t for pair in self._sources for t in pair]:
            key.update(part.encode() + b"\0")
        self.folder = Path(cache or default_cache()).resolve() / f"{simulator}-{report['top']}-{key.hexdigest()[:16]}"

    @property
    def executable(self):
        return self.folder / ("simv" if self.simulator == "verilator" else "sim.vvp")

    def build(self):
        """Build unless a finished build with the same inputs is cached. Returns True if it built."""
        if self.executable.exists():
            return False
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self._progress("build", 0, 1)
        scratch = Path(tempfile.mkdtemp(prefix=self.folder.name + ".", dir=self.folder.parent))
        try:
            for name, text in self._sources:
                (scratch / name).write_text(text)
            names = [name for name, _ in self._sources if name.endswith(".v")]
            if self.simulator == "verilator":
                command = [self._program, "--binary", "--timing", "-Wno-fatal", "-Wno-lint", "-Wno-style",
                           "--top-module", "sbnn_tb", "-j", str(os.cpu_count() or 1), "-o", "simv",
                           "--Mdir", "obj_dir", "-MAKEFLAGS", f"OPT_FAST={VERILATOR_OPT} OPT_SLOW=-O0"]
                command += [f"-I{folder}" for folder in self._include]
                command += ["--trace-fst"] if self.waves else []
                built = scratch / "obj_dir" / "simv"
            else:
                command = ["iverilog", "-g2012", "-o", "sim.vvp", "-s", "sbnn_tb"]
                command += [f"-I{folder}" for folder in self._include]
                built = scratch / "sim.vvp"
            result = subprocess.run(command + names, capture_output=True, text=True, cwd=scratch)
            if result.returncode != 0 or not built.exists():
                raise ToolError(f"{Path(command[0]).name}: building the simulation of {self.report['top']} failed: "
                                f"{_error_lines(result.stdout + result.stderr)}")
            final = scratch / "final"
            final.mkdir()
            shutil.move(str(built), final / self.executable.name)
            try:
                os.rename(final, self.folder)  # atomic: a half-built folder is never seen as cached
            except OSError:
                if not self.executable.exists():
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self._progress("build", 1, 1)
        return True

    def run(self, model, x, *, waves=None, jobs=None):
        """Run the samples ``x`` (``[N, *model.input.shape]``) and return ``(predictions, scores)``
        as ``int64`` arrays (``scores`` is ``None`` when the core has no scores port).

        ``waves`` names an FST file to write (the simulator must be built with ``waves=True``).
        ``jobs`` simulator processes share the samples, each a contiguous slice from a reset core
        (the outputs do not depend on it: every sample's result is independent of the others);
        default :func:`default_jobs`. A waveform needs one process.
        """
        if waves and not self.waves:
            raise ValueError("waves: the simulator was built without waveform support (waves=True)")
        if jobs is not None and jobs < 1:
            raise ValueError(f"jobs: expected at least 1 simulator process, found {jobs}")
        self.build()
        count = len(x)
        jobs = 1 if waves else min(jobs or default_jobs(count), max(count, 1))
        bounds = np.linspace(0, count, jobs + 1).round().astype(int)
        width = _sample_width(self.report)
        with tempfile.TemporaryDirectory(prefix="sbnn-bulk-") as folder:
            runs = [_Run(self, Path(folder, f"part{k}"), hex_samples(model.input, x[lo:hi], width), waves)
                    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))]
            self._progress("simulate", 0, count)
            while any(run.process.poll() is None for run in runs):
                time.sleep(0.1)
                self._progress("simulate", sum(run.done for run in runs), count)
            results = [run.finish() for run in runs]
        predictions = np.concatenate([p for p, _ in results])
        scores = None if results[0][1] is None else np.concatenate([s for _, s in results])
        return predictions, scores


#: Samples per simulator process below which :func:`default_jobs` does not start another one:
#: a process costs a start-up and a reset, and short runs are not worth splitting.
SAMPLES_PER_JOB = 2000


def default_jobs(count):
    """Simulator processes for ``count`` samples: one per :data:`SAMPLES_PER_JOB` samples, at
    most one per CPU core."""
    return max(1, min(os.cpu_count() or 1, count // SAMPLES_PER_JOB))


class _Run:
    """One simulator process over a slice of the samples; ``done`` follows its progress lines."""

    def __init__(self, bulk, folder, lines, waves):
        folder.mkdir()
        self.bulk, self.count, self.done, self.tail = bulk, len(lines), 0, []
        self.outputs = folder / "outputs.txt"
        vectors = folder / "vectors.hex"
        with open(vectors, "w") as file:
            file.writelines(line + "\n" for line in lines)
        plusargs = [f"+count={self.count}", f"+vectors={vectors}", f"+outputs={self.outputs}",
                    f"+progress={max(1, self.count // 100)}"]
        if waves:
            plusargs.append(f"+waves={Path(waves).resolve()}")
        if bulk.simulator == "verilator":
            command = [str(bulk.executable)] + plusargs
        else:
            command = ["vvp", "-n", str(bulk.executable)] + (["-fst"] if waves else []) + plusargs
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        cwd=folder)
        # A thread per process drains its output, so that no pipe fills and stalls a simulator.
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            if line.startswith("sbnn-progress "):
                self.done = int(line.split()[1])
            else:
                self.tail = (self.tail + [line.rstrip()])[-20:]

    def finish(self):
        """``(predictions, scores)`` of this slice, or :class:`ToolError` if it did not complete."""
        self.process.wait()
        self.reader.join()
        bulk = self.bulk
        text = self.outputs.read_text() if self.outputs.exists() else ""
        lines = [line.split() for line in text.splitlines() if line.strip()]
        failed = next((l for l in self.tail if l.startswith(("sbnn-timeout", "sbnn-error"))), None)
        if self.process.returncode != 0 or failed or len(lines) != self.count:
            raise ToolError(f"{bulk.simulator}: simulation of {bulk.report['top']} expected {self.count} outputs, "
                            f"found {len(lines)}: {failed or _error_lines(chr(10).join(self.tail))}")
        return _parse_outputs(bulk.report, lines)


def hex_samples(spec, x, width):
    """The samples ``x`` as :func:`~sbnn_hdl.hwplan.pack_sample` packs them, each as ``width``
    bits in hex (most significant digit first), computed for all samples at once."""
    flat = np.asarray(x).reshape(len(x), spec.size).astype(np.uint32)
    bits = ((flat[:, :, None] >> np.arange(spec.bits, dtype=np.uint32)) & 1).astype(np.uint8).reshape(len(x), spec.size * spec.bits)
    digits = (width + 3) // 4
    bits = np.pad(bits[:, :width], ((0, 0), (0, digits * 4 - min(bits.shape[1], width))))
    nibbles = bits.reshape(len(x), digits, 4) @ np.array([1, 2, 4, 8], np.uint8)
    table = np.frombuffer(b"0123456789abcdef", np.uint8)
    return [row.tobytes().decode() for row in table[nibbles[:, ::-1]]]


def _parse_outputs(report, lines):
    predictions = np.array([int(fields[0], 16) for fields in lines], dtype=np.int64)
    layout = report["output"]["scores"]
    if not layout:
        return predictions, None
    w, classes = layout["width"], layout["classes"]
    packed = [int(fields[1], 16) for fields in lines]
    fields = [[(value >> (j * w)) & ((1 << w) - 1) for j in range(classes)] for value in packed]
    signed = [[v - (1 << w) if v >> (w - 1) else v for v in row] for row in fields]  # two's complement
    return predictions, np.array(signed, dtype=np.int64).reshape(len(lines), classes)


def _error_lines(text, limit=8):
    lines = [l for l in text.splitlines() if "%Error" in l or "error" in l.lower()]
    return "; ".join((lines or text.strip().splitlines()[-limit:])[:limit])

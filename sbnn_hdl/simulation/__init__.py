"""Simulation of the generated hardware, always checked against :mod:`sbnn_hdl.golden`.

- :mod:`.rtl`: :func:`~.rtl.simulate`, a model's core in an RTL simulator (what
  ``python -m sbnn_hdl.simulate`` runs), and the readable diff of a mismatch;
- :mod:`.cores`: generated cores kept by content, so a repeated run does not generate again;
- :mod:`.bulk`: the vectors read inside the simulator, no Python per cycle;
- :mod:`.testbench`: the cocotb testbench of ``sim/`` (driver, monitor, scoreboard);
- :mod:`.netlist`: the ECP5 netlist after synthesis, for gate-level simulation;
- :mod:`.board`: the whole board top level, UART included, served on a TCP port (board in the loop);
- :mod:`.pysim`: a core in Amaranth's own simulator, for the tests;
- :mod:`.tools`: Verilator and Icarus Verilog, found and set up;
- :mod:`.sources`: where the testbench sources of ``sim/`` are (installed as ``sbnn_hdl.testbenches``).
"""

"""The testbench sources, installed as the package ``sbnn_hdl.testbenches`` (``pyproject.toml`` maps
this folder onto it): the cocotb code, which the simulator imports as the top-level modules
``core_tests`` and ``sbnn_cocotb`` from this folder, and the board bridge's ``board_bridge.cpp``.
Nothing here is meant to be imported as ``sbnn_hdl.testbenches.*``; :mod:`sbnn_hdl.simulation.sources`
finds the folder."""

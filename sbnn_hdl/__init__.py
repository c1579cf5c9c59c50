"""sbnn-hdl: sparse binary neural networks as FPGA hardware in which only the 1-valued
connections become wiring.

The parts meet at one contract: the ``.sbnn`` model file (:mod:`sbnn_hdl.modelfile`, the
objects of :mod:`sbnn_hdl.model`) and the NumPy golden model (:mod:`sbnn_hdl.golden`) that
defines what a model computes, bit for bit. Importing this package imports NumPy only.

The library, in the order a model travels through it:

- :mod:`.model`, :mod:`.modelfile`, :mod:`.stats`, :mod:`.errors`: the model and its file;
- :mod:`.golden`: what a model computes;
- :mod:`.hwplan`, :mod:`.estimate`: the hardware's structure, planned from the model, and its cost;
- :mod:`.gateware`: the Amaranth components, and :mod:`.gateware.verilog` their Verilog;
- :mod:`.simulation`: the Verilog in Verilator or Icarus, against the golden model;
- :mod:`.synth`, :mod:`.sweep`: yosys and nextpnr, and the hardware sweep built on them;
- :mod:`.board`: board builds, the UART host interface and the host's client;
- :mod:`.train`: training in PyTorch, the exact export, bit-plane pruning;
- :mod:`.qonnx_import`: binary networks from QONNX (Brevitas) as exact models;
- :mod:`.datasets`, :mod:`.tables`, :mod:`.testing`: data sets, report tables, test helpers.

The command lines are thin layers over it, one module each: :mod:`.inspect`, :mod:`.infer`,
:mod:`.generate`, :mod:`.simulate`, :mod:`.bench`, :mod:`.export`, :mod:`.bitprune`, :mod:`.convert`, and the
packages' ``__main__`` of :mod:`.board` and :mod:`.train`.
"""

from .errors import InputError, ModelError, SbnnError
from .model import Conv2d, Dense, InputSpec, MaxPool2d, Model
from .modelfile import dumps, load, loads, save

__version__ = "0.1.0"

__all__ = ["SbnnError", "ModelError", "InputError", "InputSpec", "Dense", "Conv2d", "MaxPool2d",
           "Model", "load", "loads", "save", "dumps"]

"""sbnn-hdl: sparse binary neural networks as FPGA hardware in which only the 1-valued
connections become wiring.

The parts meet at one contract: the ``.sbnn`` model file (:mod:`sbnn_hdl.modelfile`, the
objects of :mod:`sbnn_hdl.model`) and the NumPy golden model (:mod:`sbnn_hdl.golden`) that
defines what a model computes, bit for bit. Importing this package imports NumPy only.
"""

from .errors import InputError, ModelError, SbnnError
from .model import Conv2d, Dense, InputSpec, MaxPool2d, Model
from .modelfile import dumps, load, loads, save

__version__ = "0.1.0"

__all__ = ["SbnnError", "ModelError", "InputError", "InputSpec", "Dense", "Conv2d", "MaxPool2d",
           "Model", "load", "loads", "save", "dumps"]

"""Amaranth 0.5 gateware generated from a model (see :mod:`sbnn_hdl.hwplan` for what is built).

- :class:`SparseAccumulator`: one neuron's sum over exactly the wires its mask selects;
- :class:`Threshold`: one neuron's folded comparison;
- :class:`DenseLayer`, :class:`OutputLayer`: a hidden layer (bits out) and the last layer (scores);
- :class:`Argmax`: the pipelined argmax, ties to the lowest index; :class:`SerialArgmax`: one
  comparison every two cycles, for samples that come many cycles apart;
- :class:`NetworkCore`: the whole network, one sample per clock, with a fixed :attr:`latency`;
- :class:`StreamingCore` (:mod:`.streaming`): a convolutional network, one pixel per clock;
- :class:`SerialEngine` (:mod:`.serial`): a streaming core's first dense layer's sums over many
  cycles between images, from block RAM (``head="serial"``).
"""

from .accumulator import SparseAccumulator
from .argmax import Argmax, SerialArgmax
from .core import NetworkCore
from .layer import DenseLayer, OutputLayer
from .threshold import Threshold

__all__ = ["SparseAccumulator", "Threshold", "DenseLayer", "OutputLayer", "Argmax", "SerialArgmax", "NetworkCore"]

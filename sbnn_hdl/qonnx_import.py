"""Binary networks from QONNX graphs (as Brevitas' ``export_qonnx`` writes them) as exact models.

:func:`convert` reads a ``.onnx`` file with qonnx's :class:`ModelWrapper`, lets qonnx clean it up
(``cleanup_model``: shape inference, constant folding that keeps the quantizers, unique names;
then ``ConvertSubToAdd`` and ``BatchNormToAffine``), and follows the one data path from the graph
input to its output:

- **input**: nodes up to the first quantizer (``Mul``/``Add``/``Div`` by constants, ``Reshape``,
  ``Flatten``, ``Transpose``) are the user's preprocessing; the quantizer defines the model's
  input. A bipolar one (``BipolarQuant``, a signed 1-bit ``Quant``, ``Sign``) gives input bits
  (1 where its output is positive); an integer ``Quant`` of ``b`` bits gives ``b``-bit unsigned
  integers ``u = n - min`` (``n`` its integer level), the ``integer`` encoding. A graph input with
  a qonnx datatype annotation (``BIPOLAR``, ``BINARY``, ``UINTb``) and no quantizer works too.
- **layers**: ``Gemm``/``MatMul`` and ``Conv`` (2-D, one group) whose weights come from a 1-bit
  quantizer (``BipolarQuant``, ``Quant`` of bit width 1) or a ``BIPOLAR`` initializer; then
  per-channel ``Mul``/``Add``/``Div`` by constants (batch norm becomes these); then a 1-bit
  activation quantizer or ``Sign``. ``MaxPool`` on binary activations; ``Reshape``/``Flatten``/
  ``Transpose`` between layers (the column order of the next dense mask follows them). The last
  ``Gemm``/``MatMul`` with its affine ops gives the scores.

Exact folding. A weight of output ``j`` is ``lo_j + D_j*m`` (``m`` the mask bit, 1 for the larger
value: +1 for +-1 weights) and an input element is ``c + d*v`` (``v`` the bit, or the integer of
the first layer), so ``z_j = D_j*d*(p_j + k*q) + c*(n*lo_j + D_j*ones_j)`` with ``k = lo_j/D_j``
(-1/2 for +-1 weights, one value per layer), ``p``, ``q`` the format's sums, ``n`` the fan-in and
``ones_j`` the row's 1-valued weights: for a +-1 network, ``sum w*x = 4p - 2q - 2*ones + n``.
Every float in the graph is taken as the exact rational it is and the affine ops are composed in
rational arithmetic, so a hidden neuron fires when ``s_j*(p + k*q - h_j) >= 0`` (a strict ``>``,
as after ``Sign`` or a rounding 1-bit ``Quant``, becomes ``>=`` at the next point of the lattice
``p + k*q`` lives on), and the last layer's scores are ``u*(p_j + k*q + o_j)``. The integer
``a``, ``b``, ``t`` and their per-neuron proof are :mod:`sbnn_hdl.train.fold`'s
(:func:`~sbnn_hdl.train.fold.fold_thresholds`, :func:`~sbnn_hdl.train.fold.fold_scores`,
:func:`~sbnn_hdl.train.fold.verify`); a neuron that does not fold exactly is refused.

What the format cannot hold is refused with one line naming the node, its op type and why
(:class:`ConvertError`): another op, a bit width above 1 after the input, grouped or dilated
convolutions, zero padding of +-1 activations (a 0 is neither -1 nor +1), per-channel activation
scales, class scores with different scales. :func:`check` runs the graph with qonnx's executor
and the golden model on the same samples and compares their predictions.
"""

import copy
import math
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.transformation.batchnorm_to_affine import BatchNormToAffine
from qonnx.transformation.change_batchsize import ChangeBatchSize
from qonnx.transformation.general import ConvertSubToAdd
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.cleanup import cleanup_model

from . import golden
from .errors import SbnnError
from .model import Conv2d, Dense, InputSpec, MaxPool2d, Model
from .train.fold import (ExportError, Folded, clip_thresholds, fold_scores, fold_smallest,
                         fold_thresholds)

__all__ = ["ConvertError", "Conversion", "convert", "encode_inputs", "run_graph", "check"]

#: Ops that only move elements: allowed before the input quantizer and between layers.
LAYOUT_OPS = ("Reshape", "Flatten", "Transpose", "Identity")
#: Elementwise ops by a constant, composed exactly into each neuron's threshold.
AFFINE_OPS = ("Mul", "Add", "Div")
QUANTIZERS = ("BipolarQuant", "Quant", "Sign")
SUPPORTED = ("BipolarQuant", "Quant", "Sign", "Gemm", "MatMul", "Conv", "MaxPool", "BatchNormalization",
             "Mul", "Add", "Sub", "Div", "Reshape", "Flatten", "Transpose", "Identity")
# A 1-bit unsigned Quant outputs level 1 when x = y/scale + zeropt is above (strict) or at least
# this value, by rounding mode (qonnx's resolve_rounding_mode, on x clipped to [0, 1]).
_ROUNDING = {"ROUND": (Fraction(1, 2), True), "HALF_EVEN": (Fraction(1, 2), True),
             "HALF_UP": (Fraction(1, 2), False), "HALF_DOWN": (Fraction(1, 2), True),
             "CEIL": (Fraction(0), True), "UP": (Fraction(0), True), "FLOOR": (Fraction(1), False),
             "DOWN": (Fraction(1), False)}


class ConvertError(SbnnError):
    """A graph that cannot become an exact ``.sbnn`` model; the message names the node and why."""


def _node_error(path, node, expected, found):
    return ConvertError(f"{path}: node {node.name!r} ({node.op_type}): expected {expected}, found {found}")


@dataclass
class Conversion:
    """What :func:`convert` found: the model, and how to feed it from the graph's inputs.

    ``input_tensor`` is the graph tensor whose values the model's input encodes (the input
    quantizer's output, or the graph input itself): an element is ``offset + step*u`` with ``u``
    the model's input value in ``[0, max_value]``; ``channels_last``: that tensor is
    ``[C, H, W]`` and the model reads ``[H, W, C]``. ``feeding`` says so in words.
    """

    model: Model
    path: str
    graph: object                 # the cleaned qonnx ModelWrapper (before BatchNormToAffine), to execute
    input_name: str               # the graph's input
    input_shape: tuple            # one sample of the graph's input
    input_tensor: str
    offset: Fraction
    step: Fraction
    max_value: int
    channels_last: bool
    feeding: str
    proofs: dict = field(default_factory=dict)


def _fractions(array):
    return [Fraction(float(v)) for v in np.asarray(array, np.float64).ravel()]


def _load(path):
    """The cleaned-up qonnx ModelWrapper of the file at ``path``."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise ConvertError(f"{path}: expected a readable ONNX file, found {error.strerror or error}") from None
    try:
        proto = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError, TypeError) as error:
        raise ConvertError(f"{path}: expected an ONNX model (protobuf), found unreadable data "
                           f"({type(error).__name__})") from None
    if not proto.graph.node:
        raise ConvertError(f"{path}: expected an ONNX model with a graph of nodes, found "
                           f"{'no graph' if not proto.HasField('graph') else 'a graph without nodes'}")
    inputs = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if len(inputs) != 1 or len(proto.graph.output) != 1:
        raise ConvertError(f"{path}: expected a graph with one input and one output, found {len(inputs)} "
                           f"input(s) and {len(proto.graph.output)} output(s)")
    try:
        # qonnx's own passes; any failure inside them means a graph it cannot read.
        return cleanup_model(ModelWrapper(proto))
    except Exception as error:  # noqa: BLE001 - qonnx raises many types (AssertionError, KeyError...)
        raise ConvertError(f"{path}: expected a graph that qonnx can clean up (shape inference, constant "
                           f"folding), found it fails: {type(error).__name__}: {error}".splitlines()[0]) from None


def _prepare(graph):
    for transformation in (ConvertSubToAdd(), BatchNormToAffine(), InferShapes()):
        graph = graph.transform(transformation)
    return graph


def _layer_name(node, taken):
    name = re.sub(r"[^A-Za-z0-9_]", "_", node.name) or "layer"
    if not name[0].isalpha():
        name = "l" + name
    name = name[:60]
    base, n = name, 1
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def _nhwc_index(shape):
    """``idx[c, y, x] = (y*W + x)*C + c``: where each element of a ``[C, H, W]`` tensor sits in the
    format's channels-last order."""
    c, h, w = shape
    return np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1)


class _Reader:
    """Follows the data path of a cleaned graph; one method per op kind."""

    def __init__(self, path, graph):
        self.path, self.g = path, graph
        self.layers, self.folded, self.names = [], [], set()
        self.state = "pre"     # pre (before the input quantizer), bits, acc (a layer's sums)
        self.pre_ops, self.affine = [], (Fraction(1), Fraction(0))
        self.values = None     # bits: (c, d, max_value): an element is c + d*v
        self.idx = None        # bits: where each element of the tensor sits in the format's order
        self.pending = None    # acc: the layer being folded

    # -- helpers -----------------------------------------------------------------------------
    def error(self, node, expected, found):
        return _node_error(self.path, node, expected, found)

    def attr(self, node, name, default=None):
        for a in node.attribute:
            if a.name == name:
                value = helper.get_attribute_value(a)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def const(self, node, tensor, what):
        value = self.g.get_initializer(tensor)
        if value is None:
            raise self.error(node, f"{what} to be a constant", f"tensor {tensor!r} computed by the graph")
        return np.asarray(value)

    def shape(self, tensor):
        return tuple(self.g.get_tensor_shape(tensor))

    def scalar(self, node, tensor, what):
        value = np.unique(self.const(node, tensor, what))
        if value.size != 1:
            raise self.error(node, f"one {what} for the whole tensor", f"{value.size} different values")
        return Fraction(float(value[0]))

    # -- the walk --------------------------------------------------------------------------------
    def run(self):
        g = self.g
        tensor = g.graph.input[0].name
        self.input_name, self.input_shape = tensor, self.shape(tensor)[1:]
        output = g.graph.output[0].name
        while tensor != output:
            consumers = g.find_consumers(tensor) or []
            if len(consumers) != 1:
                raise ConvertError(f"{self.path}: tensor {tensor!r}: expected one chain of nodes from the input to "
                                   f"the output, found {len(consumers)} nodes reading it")
            node = consumers[0]
            if node.op_type not in SUPPORTED:
                raise self.error(node, "one of " + ", ".join(SUPPORTED), "an unsupported op")
            if list(node.input).count(tensor) != 1:
                raise self.error(node, "the data as one input, the others constants", f"inputs {list(node.input)}")
            getattr(self, "on_" + self.state)(node, tensor)
            tensor = node.output[0]
        if self.state != "acc":
            raise ConvertError(f"{self.path}: expected the graph output {output!r} to be a Gemm or MatMul layer's "
                               f"scores (with Mul/Add/Div after it), found it after the "
                               f"{'input' if self.state == 'pre' else 'binary activations'}")
        self.finish_last()
        return self

    def on_pre(self, node, tensor):
        op = node.op_type
        if op in QUANTIZERS:
            self.input_quantizer(node, tensor)
        elif op in LAYOUT_OPS:
            self.pre_ops.append(op)
        elif op in AFFINE_OPS:
            c = self.const(node, node.input[1] if node.input[0] == tensor else node.input[0], "the other operand")
            self.pre_ops.append(f"{op} {float(c.ravel()[0]):g}" if c.size == 1 else f"{op} by a {list(c.shape)} constant")
            # Scalar ops keep the quantizer's input an affine a*x + b of the graph input x.
            if self.affine is not None and c.size == 1:
                a, b = self.affine
                v = Fraction(float(c.ravel()[0]))
                if op == "Mul":
                    self.affine = (a * v, b * v)
                elif op == "Add":
                    self.affine = (a, b + v)
                else:
                    self.affine = (a / v, b / v) if v != 0 and node.input[0] == tensor else None
            else:
                self.affine = None
        elif op in ("Gemm", "MatMul", "Conv", "MaxPool"):
            self.annotated_input(node, tensor)
            self.on_bits(node, tensor)
        else:
            raise self.error(node, "an input quantizer before the first layer", f"{op} before it")

    def annotated_input(self, node, tensor):
        dtype = self.g.get_tensor_datatype(tensor)
        if self.pre_ops or not (dtype in (DataType["BIPOLAR"], DataType["BINARY"]) or
                                (dtype.is_integer() and not dtype.signed() and dtype.bitwidth() <= 16)):
            raise self.error(node, "an input quantizer (BipolarQuant, Quant or Sign) before the first layer, or a "
                                   "graph input annotated BIPOLAR, BINARY or UINT1..16",
                             f"{'ops ' + ', '.join(self.pre_ops) if self.pre_ops else 'the graph input'} "
                             f"({dtype.name}) before it")
        if dtype == DataType["BIPOLAR"]:
            c, d, top = Fraction(-1), Fraction(2), 1
        else:
            c, d, top = Fraction(0), Fraction(1), int(dtype.max())
        self.start_input(tensor, c, d, top, f"the graph input (datatype {dtype.name})", None)

    def start_input(self, tensor, c, d, top, quantizer, act):
        shape = self.shape(tensor)[1:]
        self.channels_last = len(shape) == 3
        self.idx = _nhwc_index(shape) if self.channels_last else np.arange(math.prod(shape)).reshape(shape)
        self.spec_shape = (shape[1], shape[2], shape[0]) if self.channels_last else (math.prod(shape),)
        self.values = (c, d, top)
        self.input = dict(tensor=tensor, offset=c, step=d, max_value=top, quantizer=quantizer, act=act)
        self.state = "bits"

    def input_quantizer(self, node, tensor):
        """The quantizer that defines the model's input: bipolar (bits) or integer levels."""
        kind = self.activation(node, input_layer=True)
        what = f"node {node.name!r} ({node.op_type})"
        self.start_input(node.output[0], kind["c"], kind["d"], kind["top"], what, kind)

    def activation(self, node, input_layer=False):
        """``dict(c, d, top, threshold, strict)`` of a quantizer on the data: its output is
        ``c + d*v`` for levels ``v`` in ``[0, top]``; a 1-bit one outputs 1 when its input ``y``
        satisfies ``y - threshold >= 0`` (``> 0`` when ``strict``)."""
        op = node.op_type
        if op == "Sign":
            return dict(c=Fraction(-1), d=Fraction(2), top=1, threshold=Fraction(0), strict=True, sign=True)
        scale = self.scalar(node, node.input[1], "scale (per-tensor)")
        if scale <= 0:
            raise self.error(node, "a positive scale", f"{float(scale):g}")
        if op == "BipolarQuant":
            return dict(c=-scale, d=2 * scale, top=1, threshold=Fraction(0), strict=False)
        zero = self.scalar(node, node.input[2], "zero point (per-tensor)")
        bits = self.scalar(node, node.input[3], "bit width")
        signed, narrow = bool(self.attr(node, "signed", 1)), bool(self.attr(node, "narrow", 0))
        mode = str(self.attr(node, "rounding_mode", "ROUND")).upper()
        if bits != 1:
            if not input_layer:
                raise self.error(node, "a 1-bit activation quantizer after the first layer (only the input may "
                                       "have more bits)", f"bit width {float(bits):g}")
            if bits.denominator != 1 or not 2 <= bits <= 16:
                raise self.error(node, "an input quantizer of 2 to 16 bits", f"bit width {float(bits):g}")
            bits = int(bits)
            low = -(2 ** (bits - 1)) + narrow if signed else 0
            high = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1 - narrow
            # level n outputs (n - zero)*scale; the model reads u = n - low.
            return dict(c=(low - zero) * scale, d=scale, top=high - low, threshold=None, strict=False)
        if signed:  # qonnx executes a signed 1-bit Quant as bipolar: +-1 where y/scale + zero >= 0
            return dict(c=(-1 - zero) * scale, d=2 * scale, top=1, threshold=-zero * scale, strict=False)
        if narrow or mode not in _ROUNDING:
            raise self.error(node, "an unsigned 1-bit Quant with narrow=0 and a known rounding mode",
                             f"narrow={int(narrow)}, rounding_mode {mode}")
        cut, strict = _ROUNDING[mode]
        return dict(c=-zero * scale, d=scale, top=1, threshold=(cut - zero) * scale, strict=strict)

    def param_quantizer(self, node):
        """For a quantizer whose inputs are all constants (weights): its node, else None."""
        if node.op_type not in ("BipolarQuant", "Quant"):
            return None
        return node if all(self.g.get_initializer(i) is not None for i in node.input if i) else None

    def on_bits(self, node, tensor):
        op = node.op_type
        if op in LAYOUT_OPS:
            self.move(node)
        elif op == "MaxPool":
            self.maxpool(node)
        elif op in ("Gemm", "MatMul", "Conv"):
            self.layer(node, tensor)
        elif op in QUANTIZERS:
            raise self.error(node, "a layer (Gemm, MatMul, Conv) after a quantizer", "a second quantizer")
        else:
            raise self.error(node, "Gemm, MatMul, Conv, MaxPool, Reshape, Flatten or Transpose on binary "
                                   "activations", f"{op} on them")

    def move(self, node):
        op = node.op_type
        if op == "Transpose":
            perm = list(self.attr(node, "perm", []))
            if not perm or perm[0] != 0:
                raise self.error(node, "a Transpose that keeps the batch axis first", f"perm {perm}")
            self.idx = self.idx.transpose([p - 1 for p in perm[1:]])
        elif op == "Flatten" and self.attr(node, "axis", 1) != 1:
            raise self.error(node, "Flatten with axis 1 (one flat vector per sample)", f"axis {self.attr(node, 'axis')}")
        else:
            shape = self.shape(node.output[0])[1:]
            self.idx = self.idx.reshape(shape)

    def check_channels_last(self, node):
        if self.idx.ndim != 3 or not np.array_equal(self.idx, _nhwc_index(self.idx.shape)):
            raise self.error(node, "a [N, C, H, W] input in the graph's own order",
                             f"shape {list(self.idx.shape)} reordered by Reshape/Transpose before it")

    def maxpool(self, node):
        self.check_channels_last(node)
        c, d, top = self.values
        if top != 1:
            raise self.error(node, "MaxPool on binary values", f"{top + 1}-level integer input")
        kernel = tuple(self.attr(node, "kernel_shape"))
        strides = tuple(self.attr(node, "strides", [1] * len(kernel)))  # ONNX's default stride is 1
        pads = list(self.attr(node, "pads", [0] * 4))
        if len(kernel) != 2 or any(pads) or self.attr(node, "ceil_mode", 0) or \
                any(x != 1 for x in self.attr(node, "dilations", [1, 1])) or \
                self.attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            raise self.error(node, "a 2-D MaxPool without padding, dilation or ceil_mode",
                             f"kernel {list(kernel)}, pads {pads}, ceil_mode {self.attr(node, 'ceil_mode', 0)}")
        ch, h, w = self.idx.shape
        layer = MaxPool2d(_layer_name(node, self.names), (h, w, ch), kernel, strides)
        self.layers.append(layer)
        self.idx = _nhwc_index(self.shape(node.output[0])[1:])

    def weights(self, node, tensor):
        """``(levels, lo, hi)``: the weight tensor as 0/1 levels, and each output's two values."""
        producer = self.g.find_producer(tensor)
        q = self.param_quantizer(producer) if producer is not None else None
        what = "weights from a 1-bit quantizer (BipolarQuant, Quant of bit width 1) or a BIPOLAR initializer"
        if q is None:
            w = self.g.get_initializer(tensor)
            if w is not None and self.g.get_tensor_datatype(tensor) == DataType["BIPOLAR"]:
                return (np.asarray(w) > 0).astype(np.uint8), np.float32(-1), np.float32(1)
            raise self.error(node, what, f"tensor {tensor!r} " +
                             ("from node " + repr(producer.name) + f" ({producer.op_type})" if producer is not None
                              else "a float initializer"))
        w = np.asarray(self.g.get_initializer(q.input[0]), np.float32)
        scale = np.asarray(self.g.get_initializer(q.input[1]), np.float32)
        if (scale <= 0).any():
            raise self.error(q, "positive weight scales", f"{float(scale.min()):g}")
        if q.op_type == "BipolarQuant":
            return (w >= 0).astype(np.uint8), -scale, scale
        zero = np.asarray(self.g.get_initializer(q.input[2]), np.float32)
        bits = np.asarray(self.g.get_initializer(q.input[3]))
        if bits.size != 1 or float(bits.ravel()[0]) != 1:
            raise self.error(q, "1-bit weights", f"bit width {', '.join(f'{b:g}' for b in np.unique(bits))}")
        x = w / scale + zero  # as qonnx computes it (float32)
        if self.attr(q, "signed", 1):
            return (x >= 0).astype(np.uint8), (-1 - zero) * scale, (1 - zero) * scale
        mode = str(self.attr(q, "rounding_mode", "ROUND")).upper()
        if self.attr(q, "narrow", 0) or mode not in _ROUNDING:
            raise self.error(q, "an unsigned 1-bit Quant with narrow=0 and a known rounding mode",
                             f"narrow={self.attr(q, 'narrow', 0)}, rounding_mode {mode}")
        cut, strict = _ROUNDING[mode]
        x = np.clip(x.astype(np.float64), 0, 1)
        levels = (x > float(cut)) if strict else (x >= float(cut))
        return levels.astype(np.uint8), -zero * scale, (1 - zero) * scale

    def per_output(self, node, array, shape, axis, what):
        """One exact value per output (axis ``axis`` of a tensor of ``shape``), or refuse."""
        full = np.moveaxis(np.broadcast_to(np.asarray(array, np.float32), shape), axis, 0).reshape(shape[axis], -1)
        if (full != full[:, :1]).any():
            raise self.error(node, f"one {what} per output channel", "values that vary within a channel")
        return _fractions(full[:, 0])

    def layer(self, node, tensor):
        op = node.op_type
        c, d, top = self.values
        pad_value = 0
        if op == "Conv":
            self.check_channels_last(node)
            wname = node.input[1]
            levels, lo, hi = self.weights(node, wname)
            wshape = levels.shape
            if len(wshape) != 4:
                raise self.error(node, "a 2-D convolution", f"weights of shape {list(wshape)}")
            group = self.attr(node, "group", 1)
            if group != 1:
                raise self.error(node, "a convolution with one group (group=1)", f"group={group} (grouped convolution)")
            if any(x != 1 for x in self.attr(node, "dilations", [1, 1])):
                raise self.error(node, "dilations 1", f"dilations {list(self.attr(node, 'dilations'))}")
            if self.attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
                raise self.error(node, "explicit pads (auto_pad NOTSET)", f"auto_pad {self.attr(node, 'auto_pad')}")
            pads = list(self.attr(node, "pads", [0, 0, 0, 0]))
            if pads[0] != pads[2] or pads[1] != pads[3]:
                raise self.error(node, "the same padding on both sides", f"pads {pads}")
            padding = (pads[0], pads[1])
            if any(padding):
                # A padding position holds the value 0, which must be one of the input's levels.
                v = -c / d
                if v not in (0, 1) or v > top:
                    why = (f"the padded 0 is level {v}, and the format pads with level 0 or 1 only"
                           if v.denominator == 1 and 0 <= v <= top else
                           "the padded 0 is neither level (a +-1 activation has no 0)")
                    raise self.error(node, "zero padding on an input whose levels include 0 ({0, 1} activations)",
                                     f"padding {list(padding)} on values {float(c):g} + {float(d):g}*v: {why}")
                pad_value = int(v)
            strides = tuple(self.attr(node, "strides", [1, 1]))
            cout, cin, kh, kw = wshape
            lo, hi = (self.per_output(node, x, wshape, 0, "weight scale") for x in (lo, hi))
            mask = levels.transpose(0, 2, 3, 1)
            fan = kh * kw * cin
            _, h, w = self.idx.shape
            out_shape = self.shape(node.output[0])[1:]
            kind = dict(kind="conv2d", in_shape=(h, w, cin), stride=strides, padding=padding, pad_value=pad_value)
            bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
            gain, bias_gain = Fraction(1), Fraction(1)
        else:
            if self.idx.ndim != 1:
                raise self.error(node, "a flat [N, features] input (Flatten or Reshape before it)",
                                 f"shape {list(self.shape(tensor))}")
            levels, lo, hi = self.weights(node, node.input[1])
            if levels.ndim != 2:
                raise self.error(node, "a 2-D weight matrix", f"shape {list(levels.shape)}")
            if op == "Gemm":
                if self.attr(node, "transA", 0):
                    raise self.error(node, "transA=0", "transA=1")
                trans = bool(self.attr(node, "transB", 0))
                gain = Fraction(float(self.attr(node, "alpha", 1.0)))
                bias_gain = Fraction(float(self.attr(node, "beta", 1.0)))
                bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
            else:
                trans, gain, bias_gain, bias = False, Fraction(1), Fraction(1), None
            axis = 0 if trans else 1
            lo, hi = (self.per_output(node, x, levels.shape, axis, "weight scale") for x in (lo, hi))
            rows = levels if trans else levels.T
            mask = np.zeros_like(rows)
            mask[:, self.idx] = rows  # the graph's input element i is the format's element idx[i]
            fan = rows.shape[1]
            out_shape = (rows.shape[0],)
            kind = dict(kind="dense")
        ones = mask.reshape(len(mask), -1).sum(axis=1)
        D = [h_ - l_ for l_, h_ in zip(lo, hi)]
        if any(x <= 0 for x in D):
            raise self.error(node, "two distinct weight values per output", "a channel whose two values are equal")
        ks = {l_ / x for l_, x in zip(lo, D)}
        if len(ks) != 1:
            raise self.error(node, "the same ratio lo/(hi - lo) of the two weight values in every output",
                             f"{len(ks)} ratios")
        k = ks.pop()
        # z_j = D_j*d*(p_j + k*q) + c*(n*lo_j + D_j*ones_j), times the Gemm's alpha; plus beta*bias.
        scale = [gain * x * d for x in D]
        offset = [gain * c * (fan * l_ + x * int(o)) for l_, x, o in zip(lo, D, ones)]
        if bias is not None:
            offset = [o + bias_gain * b for o, b in
                      zip(offset, self.per_channel(node, self.const(node, bias, "the bias"), out_shape))]
        self.pending = dict(node=node, mask=mask, k=k, scale=scale, offset=offset, out_shape=out_shape,
                            max_value=top, **kind)
        self.state = "acc"

    def per_channel(self, node, value, out_shape):
        """A constant broadcast over a layer's output (``[channels]`` or ``[channels, H, W]``) as
        one exact value per channel; refuses one that varies within a channel."""
        channels = out_shape[0]
        try:
            full = np.broadcast_to(np.asarray(value, np.float32), (1, *out_shape)).reshape(channels, -1)
        except ValueError:
            full = None
        if full is None or (full != full[:, :1]).any():
            raise self.error(node, f"a constant with one value per channel (of {channels})",
                             f"shape {list(np.shape(value))}")
        return _fractions(full[:, 0])

    def on_acc(self, node, tensor):
        op, p = node.op_type, self.pending
        if op in AFFINE_OPS:
            if node.input[0] != tensor and op == "Div":
                raise self.error(node, "a division by a constant", "a constant divided by the data")
            other = node.input[1] if node.input[0] == tensor else node.input[0]
            values = self.per_channel(node, self.const(node, other, "the other operand"), p["out_shape"])
            if op == "Add":
                p["offset"] = [o + v for o, v in zip(p["offset"], values)]
            elif op == "Mul":
                p["scale"] = [s * v for s, v in zip(p["scale"], values)]
                p["offset"] = [o * v for o, v in zip(p["offset"], values)]
            else:
                if any(v == 0 for v in values):
                    raise self.error(node, "a non-zero divisor", "0")
                p["scale"] = [s / v for s, v in zip(p["scale"], values)]
                p["offset"] = [o / v for o, v in zip(p["offset"], values)]
        elif op in QUANTIZERS:
            self.finish_hidden(node)
        elif op == "MaxPool":
            raise self.error(node, "MaxPool on binary activations (after the quantizer)", "it before the quantizer")
        else:
            raise self.error(node, "Mul, Add, Div by constants, then a 1-bit quantizer or Sign after a layer",
                             f"{op} after {p['node'].op_type} {p['node'].name!r}")

    def finish_hidden(self, node):
        p = self.pending
        act = self.activation(node)
        k, den = p["k"], p["k"].denominator
        neurons = []
        for j, (S, O) in enumerate(zip(p["scale"], p["offset"])):
            O = O - act["threshold"]  # fires when S*(p + k*q) + O >= 0 (or > 0)
            if S == 0:
                neurons.append(bool(O > 0 if act["strict"] else O >= 0))
                continue
            s, h = (1 if S > 0 else -1), -O / S
            if act["strict"]:
                # p + k*q lies on the lattice (1/den)Z: a strict comparison with h is a non-strict
                # one with the next lattice point beyond h.
                on_lattice = (h * den).denominator == 1
                if act.get("sign") and on_lattice:
                    raise self.error(node, "inputs that are never exactly 0 (Sign(0) = 0 is no binary value)",
                                     f"neuron {j}: 0 is reachable (at p + k*q = {h})")
                h = Fraction(math.floor(h * den) + 1, den) if s > 0 else Fraction(math.ceil(h * den) - 1, den)
            neurons.append((s, h))
        name = _layer_name(p["node"], self.names)
        mask = p["mask"]

        def make(limit):
            ratio, a, b, t, exact = fold_thresholds(name, k, neurons, limit)
            t = clip_thresholds(a, b, t, mask, p["max_value"])
            return Folded(name, p["kind"], mask, a, b, t, False, p["max_value"], 1, ratio, k, exact)

        self.emit(make, p)
        self.values = (act["c"], act["d"], 1)
        shape = p["out_shape"]
        self.idx = _nhwc_index(shape) if len(shape) == 3 else np.arange(shape[0])
        self.state = "bits"

    def finish_last(self):
        p = self.pending
        if p["kind"] != "dense":
            raise self.error(p["node"], "a dense last layer (Gemm or MatMul)", "a convolution")
        scales = set(p["scale"])
        if len(scales) != 1 or 0 in scales:
            raise self.error(p["node"], "one non-zero scale shared by all class scores",
                             f"{len(scales)} different scales" if len(scales) != 1 else "scale 0")
        u = scales.pop()
        o = [x / u for x in p["offset"]]
        name = _layer_name(p["node"], self.names)

        def make(limit):
            ratio, a, b, t, exact, s = fold_scores(name, p["k"], u, o, limit)
            return Folded(name, "dense", p["mask"], a, b, t, True, p["max_value"], 1, ratio, p["k"], exact, s)

        self.emit(make, p)

    def emit(self, make, p):
        try:
            f = fold_smallest(make)
        except ExportError as error:
            raise self.error(p["node"], "thresholds that fold exactly into integers", str(error)) from None
        self.folded.append(f)
        if f.kind == "dense":
            layer = Dense(f.name, f.mask, f.a, f.b, f.t)
        else:
            layer = Conv2d(f.name, p["in_shape"], f.mask, f.a, f.b, f.t, stride=p["stride"], padding=p["padding"],
                           pad_value=p["pad_value"])
        self.layers.append(layer)


def convert(path, *, name=None):
    """Read the QONNX file at ``path`` and return its exact :class:`Conversion`.

    Raises :class:`ConvertError` (one line: the file, the node, its op type, expected and found)
    for a file that is not ONNX, a graph the format cannot represent, or a neuron that does not
    fold exactly. ``name`` is the model's name (default: the file's stem, made a valid name).
    """
    path = os.fspath(path)
    cleaned = _load(path)
    reader = _Reader(path, _prepare(ModelWrapper(copy.deepcopy(cleaned.model)))).run()
    if name is None:
        name = re.sub(r"[^A-Za-z0-9_]", "_", os.path.splitext(os.path.basename(path))[0])
        name = (name if name[:1].isalpha() else "m" + name)[:64]
    i = reader.input
    spec = InputSpec(reader.spec_shape, max(1, int(i["max_value"]).bit_length()), "integer")
    metadata = {"source": "qonnx", "onnx_file": os.path.basename(path),
                "input": {"tensor": i["tensor"], "quantizer": i["quantizer"], "offset": str(i["offset"]),
                          "step": str(i["step"])}}
    model = Model(name, spec, reader.layers, metadata=metadata)
    return Conversion(model, path, cleaned, reader.input_name, reader.input_shape, i["tensor"], i["offset"],
                      i["step"], i["max_value"], reader.channels_last, _feeding(reader, path, spec),
                      {f.name: f.proof for f in reader.folded})


def _feeding(reader, path, spec):
    """How to feed the converted model, in words."""
    i = reader.input
    shape = "x".join(map(str, spec.shape))
    before = f" after {', '.join(reader.pre_ops)}" if reader.pre_ops else ""
    source = f"{i['quantizer']} on the graph input {reader.input_name!r}{before}"
    if i["tensor"] == reader.input_name:
        source = i["quantizer"]
    if i["max_value"] == 1:
        rule = "1 where it is the upper level (+1), 0 where it is the lower one"
        act = i["act"]
        if act is not None and reader.affine is not None and reader.affine[0] != 0 and act["threshold"] is not None:
            a, b = reader.affine
            cut = (act["threshold"] - b) / a
            rel = (">" if act["strict"] else ">=") if a > 0 else ("<" if act["strict"] else "<=")
            rule += f"; that is, 1 where x {rel} {float(cut):g} for graph inputs x"
        what = f"bits (0/1, shape {shape})"
    else:
        rule = (f"u = value/{float(i['step']):g} - ({float(i['offset'] / i['step']):g}): the quantizer's integer "
                f"level counted from its lowest")
        what = f"{spec.bits}-bit unsigned integers (shape {shape}, 'integer' encoding)"
    lines = [f"inputs: the model reads {what}, the output of {source}; {rule}"]
    if reader.channels_last:
        lines.append("  laid out [H, W, C] (channels last); the ONNX tensor is [C, H, W]")
    lines.append(f"  python: sbnn_hdl.qonnx_import.encode_inputs(convert({path!r}), x) computes them from graph "
                 f"inputs x of shape [N, {', '.join(map(str, reader.input_shape))}] with qonnx's executor")
    return "\n".join(lines)


def run_graph(conversion, x, batch=1000):
    """Run the graph with qonnx's executor on samples ``x`` (``[N, *input_shape]``); return
    ``(scores [N, classes] float32, input values [N, ...])``: the graph output and the tensor that
    the model's input encodes."""
    x = np.asarray(x, np.float32)
    out_name = conversion.graph.graph.output[0].name
    graphs, scores, values = {}, [], []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        if len(chunk) not in graphs:
            graphs[len(chunk)] = conversion.graph.transform(ChangeBatchSize(len(chunk))).transform(InferShapes())
        context = execute_onnx(graphs[len(chunk)], {conversion.input_name: chunk}, return_full_exec_context=True)
        scores.append(np.asarray(context[out_name]).reshape(len(chunk), -1))
        values.append(np.asarray(context[conversion.input_tensor]))
    return np.concatenate(scores), np.concatenate(values)


def _check_shape(conversion, x):
    x = np.asarray(x)
    want = tuple(conversion.input_shape)
    if x.ndim < 1 or x.shape[1:] != want:
        if x.ndim >= 1 and math.prod(x.shape[1:]) == math.prod(want):
            return x.reshape(len(x), *want)
        raise ConvertError(f"inputs: expected samples of the graph input's shape [N, {', '.join(map(str, want))}], "
                           f"found shape [{', '.join(map(str, x.shape))}]")
    if x.dtype.kind not in "iufb":
        raise ConvertError(f"inputs: expected numbers, found dtype {x.dtype}")
    return x


def _encode(conversion, values):
    v = (np.asarray(values, np.float64) - float(conversion.offset)) / float(conversion.step)
    if conversion.max_value == 1:
        u = (v > 0.5).astype(np.uint8)  # -1/+1 (or 0/1) levels: the upper one
    else:
        u = np.clip(np.rint(v), 0, conversion.max_value).astype(np.uint16 if conversion.max_value > 255 else np.uint8)
    if conversion.channels_last:
        u = u.transpose(0, 2, 3, 1)
    return u.reshape(len(u), *conversion.model.input.shape)


def encode_inputs(conversion, x):
    """The converted model's inputs for graph inputs ``x`` (the input quantizer's output, run
    with qonnx's executor, as the model's unsigned integers)."""
    x = _check_shape(conversion, x)
    return _encode(conversion, run_graph(conversion, x)[1])


def check(conversion, x):
    """Run the graph (qonnx) and the model (golden) on samples ``x``; return a report dict with
    ``samples``, ``ties`` (samples whose float scores tie at the top: counted, not compared),
    ``compared``, ``differ`` (indices) and ``inputs`` (the encoded samples)."""
    x = _check_shape(conversion, x)
    scores, values = run_graph(conversion, x)
    encoded = _encode(conversion, values)
    ordered = np.sort(scores, axis=1)
    ties = ordered[:, -1] == ordered[:, -2] if scores.shape[1] > 1 else np.zeros(len(x), bool)
    result = golden.infer(conversion.model, encoded)
    differ = np.flatnonzero((scores.argmax(axis=1) != result.predictions) & ~ties)
    return {"samples": len(x), "ties": int(ties.sum()), "compared": int((~ties).sum()), "differ": differ,
            "graph_predictions": scores.argmax(axis=1), "predictions": result.predictions, "inputs": encoded}

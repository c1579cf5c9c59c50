"""The in-memory SBNN model: immutable objects, one class per layer kind.

A :class:`Model` is what a ``.sbnn`` file holds (see ``docs/format.md``): an :class:`InputSpec`
and a chain of :class:`Dense`, :class:`Conv2d` and :class:`MaxPool2d` layers whose last one is
dense. Every constructor checks the format's rules and raises :class:`~sbnn_hdl.errors.ModelError`
when one is broken, so a model object that exists is a valid model: the file reader, the golden
model and the hardware generator rely on that.

Arrays are stored as read-only copies (masks as ``uint8`` 0/1, coefficients as ``int64``), so a
model cannot change under the code that holds it.
"""

import json
import math
import re
from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np

from .errors import ModelError

__all__ = [
    "MAX_INPUTS", "COEFF_LIMIT", "THRESHOLD_LIMIT", "ENCODINGS", "LAYER_KINDS",
    "InputSpec", "Dense", "Conv2d", "MaxPool2d", "Model", "check_name", "check_array",
]

#: A layer (or a convolution window ``kh*kw*Cin``) has at most this many inputs.
MAX_INPUTS = 2**20
#: ``a`` and ``b`` lie within ``[-COEFF_LIMIT, COEFF_LIMIT)``.
COEFF_LIMIT = 2**24
#: ``t`` lies within ``[-THRESHOLD_LIMIT, THRESHOLD_LIMIT)``.
THRESHOLD_LIMIT = 2**60
#: The input encodings of format version 1.
ENCODINGS = ("integer", "bitplanes")
#: The most bits an input element may have.
MAX_BITS = 16

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def _shape_text(shape):
    return "[" + ", ".join(str(int(n)) for n in shape) + "]"


def check_name(name, where):
    """Check a model or layer name: 1 to 64 characters of ``A-Za-z0-9_``, starting with a letter."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ModelError(where, "a name of 1 to 64 characters of A-Za-z0-9_ starting with a letter",
                         repr(name))
    return name


def _check_int(value, where, *, low, high=None):
    # bool is an int in Python but never a valid count in the format.
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise ModelError(where, "an integer", repr(value))
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ModelError(where, bound, str(value))
    return value


def _check_ints(values, where, *, length, low):
    if not isinstance(values, (list, tuple)) or len(values) != length:
        raise ModelError(where, f"a list of {length} integers", repr(values))
    return tuple(_check_int(v, where, low=low) for v in values)


def check_array(array, where, *, shape, low=None, high=None, binary=False):
    """Return ``array`` as a read-only ``int64`` (or, with ``binary``, ``uint8``) copy.

    It must have exactly ``shape``, an integer or boolean dtype, and values within
    ``[low, high)`` (or only 0 and 1 with ``binary``); otherwise :class:`ModelError` names
    ``where``.
    """
    if not isinstance(array, np.ndarray):
        array = np.asarray(array)
    if array.dtype.kind not in "iub":
        raise ModelError(where, "an integer array", f"dtype {array.dtype}")
    if array.shape != tuple(shape):
        raise ModelError(where, f"shape {_shape_text(shape)}", f"shape {_shape_text(array.shape)}")
    if binary:
        bad = (array != 0) & (array != 1)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ModelError(where, "mask values 0 or 1",
                             f"{array[index]} at index {_shape_text(index)}")
        result = array.astype(np.uint8)
    else:
        if array.size:
            # Compare before converting: an unsigned value beyond int64 would wrap around.
            lo, hi = array.min(), array.max()
            if int(lo) < low or int(hi) >= high:
                value = int(lo) if int(lo) < low else int(hi)
                raise ModelError(where, f"values in [{_pow2(low)}, {_pow2(high)})", str(value))
        result = array.astype(np.int64)
    result.setflags(write=False)
    return result


def _pow2(value):
    magnitude = abs(value)
    if magnitude >= 1024 and magnitude & (magnitude - 1) == 0:
        return ("-" if value < 0 else "") + f"2**{magnitude.bit_length() - 1}"
    return str(value)


def _arrays_equal(x, y):
    return x.dtype == y.dtype and np.array_equal(x, y)


class _Frozen:
    """Value equality for frozen dataclasses that hold NumPy arrays."""

    def __eq__(self, other):
        if type(self) is not type(other):
            return NotImplemented
        for f in fields(self):
            x, y = getattr(self, f.name), getattr(other, f.name)
            if isinstance(x, np.ndarray):
                if not _arrays_equal(x, y):
                    return False
            elif x != y:
                return False
        return True

    __hash__ = None


@dataclass(frozen=True, eq=False)
class InputSpec(_Frozen):
    """What one input sample is and how the first layer sees it.

    Parameters
    ----------
    shape : tuple of int
        ``(N,)``, or ``(H, W, C)`` for convolutional networks.
    bits : int
        Every element is an unsigned integer below ``2**bits`` (1 to 16).
    encoding : str
        ``"integer"``: the first layer reads each element with the planes outside ``planes``
        cleared. ``"bitplanes"``: it reads one binary value per (plane, element), plane-major.
    planes : tuple of int, optional
        The bit planes that the network reads, distinct, each in ``[0, bits)``, in the order
        that ``bitplanes`` lays them out. Default: every plane, ascending (``0, 1, ...``).
    """

    shape: tuple
    bits: int
    encoding: str = "integer"
    planes: tuple = None

    def __post_init__(self):
        where = "input"
        if not isinstance(self.shape, (list, tuple)) or len(self.shape) not in (1, 3):
            raise ModelError(f"{where}.shape", "[N] or [H, W, C]", repr(self.shape))
        object.__setattr__(self, "shape",
                           _check_ints(self.shape, f"{where}.shape", length=len(self.shape), low=1))
        object.__setattr__(self, "bits", _check_int(self.bits, f"{where}.bits", low=1, high=MAX_BITS))
        if self.encoding not in ENCODINGS:
            raise ModelError(f"{where}.encoding", "'integer' or 'bitplanes'", repr(self.encoding))
        if self.planes is None:
            planes = tuple(range(self.bits))
        else:
            if not isinstance(self.planes, (list, tuple)) or not self.planes:
                raise ModelError(f"{where}.planes", "a non-empty list of plane numbers",
                                 repr(self.planes))
            planes = tuple(_check_int(k, f"{where}.planes", low=0, high=self.bits - 1)
                           for k in self.planes)
            if len(set(planes)) != len(planes):
                raise ModelError(f"{where}.planes", "distinct plane numbers", repr(list(planes)))
        object.__setattr__(self, "planes", planes)

    @property
    def size(self):
        """Number of elements in one sample."""
        return math.prod(self.shape)

    @property
    def plane_mask(self):
        """The integer with exactly the bits of :attr:`planes` set."""
        return sum(1 << k for k in self.planes)

    @property
    def features_shape(self):
        """The shape of what the first layer reads (see the format's input encodings).

        For ``bitplanes`` with an ``[H, W, C]`` input this is ``[H, W, P*C]``, the shape that a
        conv or pool first layer sees; a dense first layer reads the same number of values, laid
        out plane-major over the flattened sample (:func:`sbnn_hdl.golden.encode_input`).
        """
        if self.encoding == "integer":
            return self.shape
        if len(self.shape) == 1:
            return (self.shape[0] * len(self.planes),)
        h, w, c = self.shape
        return (h, w, c * len(self.planes))

    @property
    def max_feature(self):
        """The largest value that one element the first layer reads can take."""
        return self.plane_mask if self.encoding == "integer" else 1


class _Layer(_Frozen):
    kind: ClassVar[str]

    @property
    def where(self):
        return f"layer '{self.name}'"


class _ThresholdLayer(_Layer):
    """Shared checks for the layers with a mask and coefficients ``a``, ``b``, ``t``."""

    def _check_coefficients(self, outputs):
        where = self.where
        for key, low, high in (("a", -COEFF_LIMIT, COEFF_LIMIT), ("b", -COEFF_LIMIT, COEFF_LIMIT),
                               ("t", -THRESHOLD_LIMIT, THRESHOLD_LIMIT)):
            object.__setattr__(self, key, check_array(getattr(self, key), f"{where} array '{key}'",
                                                      shape=(outputs,), low=low, high=high))

    @property
    def connections(self):
        """Number of 1-valued weights: the connections that become wiring."""
        return int(self.mask.sum(dtype=np.int64))

    @property
    def weights(self):
        """Number of weights, 0-valued and 1-valued."""
        return int(self.mask.size)


@dataclass(frozen=True, eq=False)
class Dense(_ThresholdLayer):
    """A fully connected layer.

    ``p[j] = sum_i mask[j, i] * v[i]``, ``q = sum_i v[i]``, ``acc[j] = a[j]*p[j] + b[j]*q``;
    a hidden layer outputs ``acc[j] >= t[j]``, the last layer the scores ``acc[j] - t[j]``.

    Parameters
    ----------
    name : str
    mask : array ``[outputs, inputs]`` of 0/1
    a, b, t : arrays ``[outputs]`` of integers
    """

    kind: ClassVar[str] = "dense"
    name: str
    mask: np.ndarray
    a: np.ndarray
    b: np.ndarray
    t: np.ndarray

    def __post_init__(self):
        check_name(self.name, "layer name")
        mask = np.asarray(self.mask)
        if mask.ndim != 2 or 0 in mask.shape:
            raise ModelError(f"{self.where} array 'mask'", "shape [outputs, inputs], both at least 1",
                             f"shape {_shape_text(mask.shape)}")
        if mask.shape[1] > MAX_INPUTS:
            raise ModelError(self.where, "at most 2**20 inputs", f"{mask.shape[1]} inputs")
        object.__setattr__(self, "mask", check_array(mask, f"{self.where} array 'mask'",
                                                     shape=mask.shape, binary=True))
        self._check_coefficients(mask.shape[0])

    @property
    def inputs(self):
        return self.mask.shape[1]

    @property
    def outputs(self):
        return self.mask.shape[0]

    @property
    def in_shape(self):
        return (self.inputs,)

    @property
    def out_shape(self):
        return (self.outputs,)

    @property
    def fan_in(self):
        """Number of inputs that ``q`` sums (and that one neuron could connect to)."""
        return self.inputs

    @property
    def positions(self):
        """Number of times each neuron is evaluated per sample."""
        return 1


@dataclass(frozen=True, eq=False)
class Conv2d(_ThresholdLayer):
    """A 2-D convolution over ``[H, W, Cin]`` bits, with a threshold per output channel.

    At each output position the window ``w[dy, dx, ci]`` (padding positions hold
    ``pad_value``) gives ``p[j] = sum mask[j] * w`` and ``q = sum w``; the output bit is
    ``a[j]*p[j] + b[j]*q >= t[j]``. Never the last layer.

    Parameters
    ----------
    name : str
    in_shape : (H, W, Cin)
    mask : array ``[Cout, kh, kw, Cin]`` of 0/1
    a, b, t : arrays ``[Cout]`` of integers
    stride : (sh, sw), default (1, 1)
    padding : (ph, pw), default (0, 0)
    pad_value : 0 or 1, default 0
    """

    kind: ClassVar[str] = "conv2d"
    name: str
    in_shape: tuple
    mask: np.ndarray
    a: np.ndarray
    b: np.ndarray
    t: np.ndarray
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    pad_value: int = 0

    def __post_init__(self):
        check_name(self.name, "layer name")
        where = self.where
        object.__setattr__(self, "in_shape", _check_ints(self.in_shape, f"{where} in_shape", length=3, low=1))
        object.__setattr__(self, "stride", _check_ints(self.stride, f"{where} stride", length=2, low=1))
        object.__setattr__(self, "padding", _check_ints(self.padding, f"{where} padding", length=2, low=0))
        object.__setattr__(self, "pad_value", _check_int(self.pad_value, f"{where} pad_value", low=0, high=1))
        mask = np.asarray(self.mask)
        if mask.ndim != 4 or 0 in mask.shape:
            raise ModelError(f"{where} array 'mask'", "shape [Cout, kh, kw, Cin], all at least 1",
                             f"shape {_shape_text(mask.shape)}")
        cout, kh, kw, cin = mask.shape
        if cin != self.in_shape[2]:
            raise ModelError(f"{where} array 'mask'", f"{self.in_shape[2]} input channels (in_shape)",
                             f"shape {_shape_text(mask.shape)}")
        if kh * kw * cin > MAX_INPUTS:
            raise ModelError(where, "a window of at most 2**20 inputs", f"{kh}*{kw}*{cin} = {kh * kw * cin}")
        h, w, _ = self.in_shape
        ph, pw = self.padding
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ModelError(where, f"a kernel no larger than the padded input {h + 2 * ph}x{w + 2 * pw}",
                             f"kernel {kh}x{kw}")
        object.__setattr__(self, "mask", check_array(mask, f"{where} array 'mask'",
                                                     shape=mask.shape, binary=True))
        self._check_coefficients(cout)

    @property
    def out_channels(self):
        return self.mask.shape[0]

    @property
    def kernel(self):
        return tuple(self.mask.shape[1:3])

    @property
    def out_shape(self):
        (h, w, _), (kh, kw) = self.in_shape, self.kernel
        (ph, pw), (sh, sw) = self.padding, self.stride
        return ((h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1, self.out_channels)

    @property
    def fan_in(self):
        """Number of inputs in one window: what ``q`` sums at each position."""
        kh, kw = self.kernel
        return kh * kw * self.in_shape[2]

    @property
    def positions(self):
        """Number of output positions: each neuron is evaluated once per position."""
        ho, wo, _ = self.out_shape
        return ho * wo

    @property
    def kernel_hamming_weights(self):
        """Hamming weight of every ``kh x kw`` kernel, shape ``[Cout, Cin]``."""
        return self.mask.sum(axis=(1, 2), dtype=np.int64)


@dataclass(frozen=True, eq=False)
class MaxPool2d(_Layer):
    """Max-pooling over bits (an OR over each window); no padding.

    Parameters
    ----------
    name : str
    in_shape : (H, W, C)
    kernel : (kh, kw)
    stride : (sh, sw), default: the kernel size
    """

    kind: ClassVar[str] = "maxpool2d"
    name: str
    in_shape: tuple
    kernel: tuple
    stride: tuple = None

    def __post_init__(self):
        check_name(self.name, "layer name")
        where = self.where
        object.__setattr__(self, "in_shape", _check_ints(self.in_shape, f"{where} in_shape", length=3, low=1))
        object.__setattr__(self, "kernel", _check_ints(self.kernel, f"{where} kernel", length=2, low=1))
        stride = self.kernel if self.stride is None else self.stride
        object.__setattr__(self, "stride", _check_ints(stride, f"{where} stride", length=2, low=1))
        (h, w, _), (kh, kw) = self.in_shape, self.kernel
        if kh > h or kw > w:
            raise ModelError(where, f"a kernel no larger than the input {h}x{w}", f"kernel {kh}x{kw}")

    @property
    def out_shape(self):
        (h, w, c), (kh, kw), (sh, sw) = self.in_shape, self.kernel, self.stride
        return ((h - kh) // sh + 1, (w - kw) // sw + 1, c)


LAYER_KINDS = {cls.kind: cls for cls in (Dense, Conv2d, MaxPool2d)}


@dataclass(frozen=True, eq=False)
class Model(_Frozen):
    """A whole SBNN: input description, layers, optional class labels and metadata.

    Parameters
    ----------
    name : str
        1 to 64 characters of ``A-Za-z0-9_``, starting with a letter.
    input : InputSpec
    layers : sequence of Dense, Conv2d, MaxPool2d
        Non-empty, shapes chaining from ``input.features_shape``, the last one :class:`Dense`.
    classes : sequence of str, optional
        One label per output of the last layer.
    metadata : dict, optional
        Free-form JSON object, kept as it is. Reading :attr:`metadata` returns a fresh copy.
    """

    name: str
    input: InputSpec
    layers: tuple
    classes: tuple = None
    metadata_json: str = field(default="{}", repr=False)

    def __init__(self, name, input, layers, classes=None, metadata=None):
        object.__setattr__(self, "name", check_name(name, "model name"))
        if not isinstance(input, InputSpec):
            raise ModelError("input", "an InputSpec", type(input).__name__)
        object.__setattr__(self, "input", input)
        layers = tuple(layers)
        object.__setattr__(self, "layers", layers)
        self._check_layers()
        if classes is not None:
            classes = tuple(classes)
            outputs = layers[-1].outputs
            if len(classes) != outputs or not all(isinstance(c, str) for c in classes):
                raise ModelError("classes", f"{outputs} strings, one per output of the last layer",
                                 f"{len(classes)} entries" if len(classes) != outputs else repr(list(classes)))
        object.__setattr__(self, "classes", classes)
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            raise ModelError("metadata", "a JSON object", type(metadata).__name__)
        try:
            text = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ModelError("metadata", "a JSON-serialisable object", str(error)) from None
        object.__setattr__(self, "metadata_json", text)

    def _check_layers(self):
        if not self.layers:
            raise ModelError("layers", "a non-empty list of layers", "an empty list")
        seen = set()
        shape = self.input.features_shape
        source = "the input"
        for index, layer in enumerate(self.layers):
            if type(layer) not in LAYER_KINDS.values():
                raise ModelError(f"layer #{index}", "a Dense, Conv2d or MaxPool2d layer",
                                 type(layer).__name__)
            if layer.name in seen:
                raise ModelError(f"layer #{index}", "a unique layer name", f"a second {layer.name!r}")
            seen.add(layer.name)
            if isinstance(layer, Dense):
                if math.prod(shape) != layer.inputs:
                    raise ModelError(layer.where, f"{math.prod(shape)} inputs ({source} has shape "
                                     f"{_shape_text(shape)})", f"{layer.inputs} inputs")
            else:
                if isinstance(layer, MaxPool2d) and index == 0 and self.input.max_feature > 1 \
                        and len(self.input.planes) > 1:
                    # Max-pooling is defined on bits (max = OR); multi-bit values have no such meaning.
                    raise ModelError(layer.where, "binary input to a maxpool2d layer (bitplanes, or a single "
                                     "plane)", f"{self.input.encoding} input with planes {list(self.input.planes)}")
                if len(shape) != 3:
                    raise ModelError(layer.where, f"in_shape equal to the shape of {source}, "
                                     f"{_shape_text(shape)} (a {layer.kind} layer needs [H, W, C])",
                                     f"in_shape {_shape_text(layer.in_shape)}")
                if tuple(layer.in_shape) != tuple(shape):
                    raise ModelError(layer.where, f"in_shape {_shape_text(shape)} (the shape of {source})",
                                     f"in_shape {_shape_text(layer.in_shape)}")
            shape = layer.out_shape
            source = f"layer '{layer.name}'"
        last = self.layers[-1]
        if not isinstance(last, Dense):
            raise ModelError(last.where, "a dense last layer", f"a {last.kind} layer")

    @property
    def metadata(self):
        """The metadata object (a fresh copy; the model itself never changes)."""
        return json.loads(self.metadata_json)

    @property
    def outputs(self):
        """Number of classes: outputs of the last layer."""
        return self.layers[-1].outputs

    @property
    def connections(self):
        """Number of 1-valued weights in the whole network."""
        return sum(layer.connections for layer in self.layers if hasattr(layer, "mask"))

    def __repr__(self):
        kinds = ", ".join(f"{l.kind} {l.name}" for l in self.layers)
        return f"Model({self.name!r}, input={_shape_text(self.input.shape)}x{self.input.bits}b, layers=[{kinds}])"

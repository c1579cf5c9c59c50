"""The golden model: what an SBNN computes, bit for bit, in NumPy.

Every other part of the project (the hardware generator, the RTL and gate-level simulations,
the board) is checked against :func:`infer`. It follows ``docs/format.md`` literally, with one
implementation choice for speed: each layer's arithmetic runs in the cheapest NumPy dtype in which
it is *exact*. Every value involved is an integer, and each layer has a bound ``B`` on the
magnitude of every sum and product it forms (from the largest input value, the fan-in and the
largest ``|a|`` and ``|b|``); float32 represents every integer up to ``2**24`` exactly and float64
every integer up to ``2**53``, so when ``B`` is below that limit no operation can round, in any
summation order. This lets the sums ``p`` and ``q`` run as BLAS matrix products. Beyond 2**53 the
arithmetic is ``int64``, which cannot overflow within the format's limits. Thresholds outside
``[-B, B]`` are clipped to ``B + 1`` or ``-B - 1`` first: a neuron whose ``acc`` lies in
``[-B, B]`` gives the same output for both. Scores are always ``int64``.

This module imports NumPy only.
"""

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import InputError
from .model import Conv2d, Dense, MaxPool2d

__all__ = ["GoldenResult", "infer", "encode_input", "check_inputs", "exact_dtype"]

#: At most this many samples per internal batch.
CHUNK = 8192
#: At most about this many array elements per intermediate result (bounds memory for conv nets).
ELEMENT_BUDGET = 2**25


@dataclass(frozen=True)
class GoldenResult:
    """What :func:`infer` returns for ``N`` samples.

    Attributes
    ----------
    predictions : int64 array ``[N]``
        The smallest index of the largest score.
    scores : int64 array ``[N, classes]``
        ``acc - t`` of the last layer.
    layers : tuple of uint8 arrays, or None
        With ``layers=True``: the output bits of every layer but the last, each shaped
        ``[N, *layer.out_shape]``.
    """

    predictions: np.ndarray
    scores: np.ndarray
    layers: tuple = None


def check_inputs(model, x, *, where="inputs"):
    """Return ``x`` as an integer array of samples for ``model``, or raise :class:`InputError`.

    ``x`` must have shape ``[N, *model.input.shape]``, an integer dtype and values in
    ``[0, 2**bits)``.
    """
    x = np.asarray(x)
    spec = model.input
    expected = "[N, " + ", ".join(map(str, spec.shape)) + "]"
    if x.ndim != len(spec.shape) + 1 or tuple(x.shape[1:]) != tuple(spec.shape):
        raise InputError(where, f"shape {expected}", "shape [" + ", ".join(map(str, x.shape)) + "]")
    if x.dtype.kind not in "iub":
        raise InputError(where, "unsigned integers", f"dtype {x.dtype}")
    if x.size:
        low, high = int(x.min()), int(x.max())
        if low < 0 or high >= 1 << spec.bits:
            bad = low if low < 0 else high
            raise InputError(where, f"values in [0, {(1 << spec.bits) - 1}] ({spec.bits}-bit input)",
                             f"{bad} at sample {int(np.argwhere(x == bad)[0][0])}")
    return x


def encode_input(spec, x, *, flat):
    """Return what the first layer reads from samples ``x`` (``[N, *spec.shape]``, checked).

    ``integer``: the samples with the planes outside ``spec.planes`` cleared, shape unchanged.
    ``bitplanes``: one bit per (plane, element). With ``flat`` (a dense first layer) the
    result is ``[N, P*size]``, plane-major: ``v[q*size + i]`` is plane ``planes[q]`` of element
    ``i`` of the sample flattened in C order, whatever the input's shape. Otherwise (a conv or
    pool first layer) an ``[H, W, C]`` input becomes ``[N, H, W, P*C]`` with channel ``q*C + c``
    holding plane ``planes[q]`` of channel ``c``.
    """
    # Checked samples fit the smallest unsigned dtype of their bit width.
    x = np.asarray(x).astype(np.uint8 if spec.bits <= 8 else np.uint16, copy=False)
    if spec.encoding == "integer":
        return x if spec.plane_mask == (1 << spec.bits) - 1 else x & spec.plane_mask
    if flat:
        x = x.reshape(len(x), spec.size)
    return np.concatenate([(x >> k) & 1 for k in spec.planes], axis=-1).astype(np.uint8, copy=False)


def exact_dtype(bound):
    """The cheapest dtype in which integers of magnitude up to ``bound`` are all exact."""
    if bound < 2**24:
        return np.dtype(np.float32)
    if bound < 2**53:
        return np.dtype(np.float64)
    return np.dtype(np.int64)


def _wider(x, y):
    order = [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64)]
    return max(x, y, key=order.index)


class _Compiled:
    """One dense or conv layer, prepared for exact vectorised evaluation on inputs in [0, max_value]."""

    def __init__(self, layer, max_value, last):
        self.layer = layer
        rows = layer.mask.reshape(layer.mask.shape[0], -1)
        self.uses_q = bool((layer.b != 0).any())
        p_max = max_value * int(rows.sum(axis=1).max())
        q_max = max_value * layer.fan_in
        self.sum_dtype = exact_dtype(q_max if self.uses_q else p_max)
        # With b != 0, q comes out of the same matrix product as p, through a row of ones.
        weights = np.vstack([rows, np.ones((1, rows.shape[1]), rows.dtype)]) if self.uses_q else rows
        self.weights = weights.T.astype(self.sum_dtype)
        bound = int(np.abs(layer.a).max()) * p_max + int(np.abs(layer.b).max()) * q_max
        self.acc_dtype = _wider(self.sum_dtype, exact_dtype(bound + 1))
        self.a = layer.a.astype(self.acc_dtype)
        self.b = layer.b.astype(self.acc_dtype)
        self.t = None if last else np.clip(layer.t, -bound - 1, bound + 1).astype(self.acc_dtype)

    def acc(self, v):
        """``a*p + b*q`` for rows ``v`` (``[rows, fan_in]``), in :attr:`acc_dtype`."""
        sums = v.astype(self.sum_dtype) @ self.weights
        outputs = self.layer.a.shape[0]
        acc = sums[:, :outputs].astype(self.acc_dtype, copy=False) * self.a
        if self.uses_q:
            acc += sums[:, outputs:].astype(self.acc_dtype, copy=False) * self.b
        return acc

    def fire(self, v):
        return (self.acc(v) >= self.t).view(np.uint8)


def _windows(layer, v):
    """All convolution windows: ``[N, Ho, Wo, kh*kw*Cin]``, padding positions holding ``pad_value``."""
    (ph, pw), (sh, sw), (kh, kw) = layer.padding, layer.stride, layer.kernel
    padded = np.pad(v, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=layer.pad_value)
    win = sliding_window_view(padded, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]  # [N, Ho, Wo, C, kh, kw]
    win = win.transpose(0, 1, 2, 4, 5, 3)  # [N, Ho, Wo, kh, kw, C]: the mask's order
    ho, wo, _ = layer.out_shape
    return win[:, :ho, :wo].reshape(len(v), ho, wo, layer.fan_in)


def _maxpool(layer, v):
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    win = sliding_window_view(v, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]
    ho, wo, _ = layer.out_shape
    return win[:, :ho, :wo].max(axis=(4, 5))


def compile_model(model):
    """Prepare ``model`` for :func:`run`: one entry per layer (``None`` for pooling layers)."""
    compiled, max_value = [], model.input.max_feature
    for index, layer in enumerate(model.layers):
        last = index == len(model.layers) - 1
        compiled.append(None if isinstance(layer, MaxPool2d) else _Compiled(layer, max_value, last))
        if not isinstance(layer, MaxPool2d):
            max_value = 1  # a threshold layer outputs bits; pooling keeps its input's range
    return compiled


def _run(model, compiled, x, keep_layers):
    v = encode_input(model.input, x, flat=isinstance(model.layers[0], Dense))
    outputs = []
    for layer, prepared in zip(model.layers[:-1], compiled):
        if isinstance(layer, MaxPool2d):
            v = _maxpool(layer, v)
        elif isinstance(layer, Conv2d):
            win = _windows(layer, v)
            v = prepared.fire(win.reshape(-1, layer.fan_in)).reshape(*win.shape[:3], layer.out_channels)
        else:
            v = prepared.fire(v.reshape(len(v), layer.inputs))
        if keep_layers:
            outputs.append(v)
    last = model.layers[-1]
    acc = compiled[-1].acc(v.reshape(len(v), last.inputs))
    return acc.astype(np.int64) - last.t, outputs


def _chunk_size(model):
    per_sample = model.input.size * len(model.input.planes)
    for layer in model.layers:
        if isinstance(layer, Conv2d):
            per_sample = max(per_sample, layer.positions * max(layer.fan_in, layer.out_channels))
        elif isinstance(layer, MaxPool2d):
            per_sample = max(per_sample, layer.out_shape[0] * layer.out_shape[1] * layer.in_shape[2]
                             * layer.kernel[0] * layer.kernel[1])
        else:
            per_sample = max(per_sample, layer.inputs, layer.outputs)
    return max(1, min(CHUNK, ELEMENT_BUDGET // per_sample))


def infer(model, x, *, layers=False):
    """Run ``model`` on the samples ``x`` and return a :class:`GoldenResult`.

    Parameters
    ----------
    model : Model
    x : array ``[N, *model.input.shape]`` of integers in ``[0, 2**bits)``
    layers : bool
        Also return every hidden layer's output bits.

    Raises
    ------
    InputError
        When ``x`` has the wrong shape, a non-integer dtype or values out of range.
    """
    x = check_inputs(model, x)
    compiled = compile_model(model)
    chunk = _chunk_size(model)
    results = [_run(model, compiled, x[i:i + chunk], layers) for i in range(0, len(x), chunk)]
    if not results:
        results = [_run(model, compiled, x, layers)]
    scores = np.concatenate([r[0] for r in results]).astype(np.int64, copy=False)
    predictions = np.argmax(scores, axis=1).astype(np.int64)  # argmax returns the first maximum
    hidden = None
    if layers:
        hidden = tuple(np.concatenate([r[1][i] for r in results]) for i in range(len(model.layers) - 1))
    return GoldenResult(predictions=predictions, scores=scores, layers=hidden)

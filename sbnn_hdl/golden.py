"""The golden model: what an SBNN computes, bit for bit, in NumPy.

Every other part of the project (the hardware generator, the RTL and gate-level simulations,
the board) is checked against :func:`infer`. It follows ``docs/format.md`` literally, with one
implementation choice for speed: the sums ``p`` (masked) and ``q`` (all inputs) are computed as
floating-point matrix products, which use BLAS. They are exact: every term is a non-negative
integer and, for the dtype chosen per layer, every partial sum stays below the largest integer
that the dtype represents exactly (``2**24`` for float32, ``2**53`` for float64), so no rounding
can happen in any summation order. Everything after the sums is ``int64`` arithmetic, which
cannot overflow within the format's limits (``|a*p|, |b*q| < 2**60``, ``|t| <= 2**60``).

This module imports NumPy only.
"""

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import InputError
from .model import Conv2d, Dense, MaxPool2d

__all__ = ["GoldenResult", "infer", "encode_input", "check_inputs"]

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
    x = np.asarray(x, dtype=np.int64)
    if spec.encoding == "integer":
        return x & spec.plane_mask
    if flat:
        x = x.reshape(len(x), spec.size)
    planes = [(x >> k) & 1 for k in spec.planes]
    return np.concatenate(planes, axis=-1)


def _sum_dtype(max_sum):
    if max_sum < 2**24:
        return np.float32
    if max_sum < 2**53:
        return np.float64
    return None  # beyond float64's exact range: integer products (never reached within the limits)


def _masked_sums(v, mask, max_value):
    """``p = v @ mask.T`` and ``q = v.sum(axis=1)`` for rows ``v`` of values in ``[0, max_value]``."""
    dtype = _sum_dtype(max_value * v.shape[1])
    if dtype is None:
        v = v.astype(np.int64)
        return v @ mask.T.astype(np.int64), v.sum(axis=1)
    vf = v.astype(dtype)
    p = vf @ mask.T.astype(dtype)
    q = vf.sum(axis=1, dtype=dtype)
    return p.astype(np.int64), q.astype(np.int64)


def _threshold_acc(layer, p, q):
    return layer.a * p + layer.b * q[..., None]


def _dense(layer, v, max_value):
    p, q = _masked_sums(v.reshape(len(v), layer.inputs), layer.mask, max_value)
    return _threshold_acc(layer, p, q)


def _windows(layer, v):
    """All convolution windows: ``[N, Ho, Wo, kh*kw*Cin]``, padding positions holding ``pad_value``."""
    (ph, pw), (sh, sw), (kh, kw) = layer.padding, layer.stride, layer.kernel
    padded = np.pad(v, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=layer.pad_value)
    win = sliding_window_view(padded, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]  # [N, Ho, Wo, C, kh, kw]
    win = win.transpose(0, 1, 2, 4, 5, 3)  # [N, Ho, Wo, kh, kw, C]: the mask's order
    ho, wo, _ = layer.out_shape
    return win[:, :ho, :wo].reshape(len(v), ho, wo, layer.fan_in)


def _conv(layer, v, max_value):
    win = _windows(layer, v)
    n, ho, wo, k = win.shape
    p, q = _masked_sums(win.reshape(-1, k), layer.mask.reshape(layer.out_channels, -1), max_value)
    acc = _threshold_acc(layer, p, q)
    return acc.reshape(n, ho, wo, layer.out_channels)


def _maxpool(layer, v):
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    win = sliding_window_view(v, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]
    ho, wo, _ = layer.out_shape
    return win[:, :ho, :wo].max(axis=(4, 5))


def _run(model, x, keep_layers):
    v = encode_input(model.input, x, flat=isinstance(model.layers[0], Dense))
    max_value = model.input.max_feature
    outputs = []
    for layer in model.layers[:-1]:
        if isinstance(layer, MaxPool2d):
            v = _maxpool(layer, v)
        else:
            acc = _conv(layer, v, max_value) if isinstance(layer, Conv2d) else _dense(layer, v, max_value)
            v = (acc >= layer.t).astype(np.uint8)
        max_value = 1
        if keep_layers:
            outputs.append(v)
    last = model.layers[-1]
    assert isinstance(last, Dense)
    scores = _dense(last, v, max_value) - last.t
    return scores, outputs


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
    chunk = _chunk_size(model)
    results = [_run(model, x[i:i + chunk], layers) for i in range(0, len(x), chunk)]
    if not results:
        results = [_run(model, x, layers)]
    scores = np.concatenate([r[0] for r in results]).astype(np.int64, copy=False)
    predictions = np.argmax(scores, axis=1).astype(np.int64)  # argmax returns the first maximum
    hidden = None
    if layers:
        hidden = tuple(np.concatenate([r[1][i] for r in results]) for i in range(len(model.layers) - 1))
    return GoldenResult(predictions=predictions, scores=scores, layers=hidden)

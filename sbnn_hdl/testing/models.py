"""Random valid models and inputs for tests (NumPy only)."""

from dataclasses import dataclass

import numpy as np

from .. import golden
from ..model import COEFF_LIMIT, Conv2d, Dense, InputSpec, MaxPool2d, Model

__all__ = ["LayerPlan", "random_model", "random_inputs"]


@dataclass(frozen=True)
class LayerPlan:
    """The structure of one layer that :func:`random_model` fills with random weights.

    ``kind`` is ``"dense"`` (uses ``outputs``), ``"conv2d"`` (uses ``outputs`` as the output
    channels, ``kernel``, ``stride``, ``padding``, ``pad_value``) or ``"maxpool2d"`` (uses
    ``kernel``, ``stride``).
    """

    kind: str
    outputs: int = 1
    kernel: tuple = (2, 2)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    pad_value: int = 0


def random_inputs(rng, spec, count, *, extremes=True):
    """``count`` valid samples for the input ``spec`` (a :class:`~sbnn_hdl.model.InputSpec`).

    With ``extremes``, the first samples are all zeros and all ones (``2**bits - 1``) when
    ``count`` allows.
    """
    dtype = np.uint8 if spec.bits <= 8 else np.uint16
    x = rng.integers(0, 1 << spec.bits, size=(count, *spec.shape), dtype=np.int64)
    # Mix in sparse samples: real inputs (images) are mostly zeros.
    sparse = rng.random(size=x.shape) < 0.5
    x[count // 2:][sparse[count // 2:]] = 0
    if extremes and count >= 2:
        x[0] = 0
        x[1] = (1 << spec.bits) - 1
    return x.astype(dtype)


def _coefficients(rng, outputs, edge_cases, shared_ratio=False, symmetric=False):
    """Coefficients ``a``, ``b`` drawn like trained models have them, plus extreme ones.

    With ``shared_ratio``, as a trained SBNN exports them: ``a = s*A``, ``b = s*B`` with one
    ``(A, B)`` per layer (``B/A`` is the layer's ``alpha/(beta - alpha)``) and a sign ``s`` per
    neuron (the sign of its batch-norm scale). With ``symmetric``, a dense BNN's: ``2*b == -a``."""
    if symmetric:
        half = rng.integers(1, 32, size=outputs) * rng.choice([-1, 1], size=outputs, p=[0.25, 0.75])
        if edge_cases:
            big = rng.random(outputs) < 0.1
            half[big] = rng.choice([COEFF_LIMIT // 2 - 1, -COEFF_LIMIT // 2], size=int(big.sum()))
        return (2 * half).astype(np.int64), (-half).astype(np.int64)
    if shared_ratio:
        big = int(rng.integers(1000, 5000))
        small = -int(round(big * rng.uniform(0.02, 0.1)))
        sign = rng.choice([-1, 1], size=outputs, p=[0.1, 0.9])
        return (sign * big).astype(np.int64), (sign * small).astype(np.int64)
    a = rng.integers(1, 64, size=outputs)
    b = rng.integers(-8, 1, size=outputs) * (rng.random(outputs) < 0.7)
    if edge_cases:
        flip = rng.random(outputs) < 0.25
        a[flip] = -a[flip]  # negative a: the comparison turns around
        big = rng.random(outputs) < 0.1
        a[big] = rng.choice([COEFF_LIMIT - 1, -COEFF_LIMIT], size=int(big.sum()))
        b[big] = rng.choice([COEFF_LIMIT - 1, -COEFF_LIMIT, 0], size=int(big.sum()))
    return a.astype(np.int64), b.astype(np.int64)


def _mask(rng, shape, density, edge_cases):
    mask = (rng.random(shape) < density).astype(np.uint8)
    if edge_cases and shape[0] >= 2:
        mask[0] = 0  # a neuron with no connections: depends on q only
        mask[1] = 1  # a neuron connected to every input
    return mask


def _thresholds(rng, acc, edge_cases):
    """Thresholds at random quantiles of the observed ``acc`` (``[samples, outputs]``), so that
    outputs vary, plus neurons that can never fire and neurons that always fire."""
    outputs = acc.shape[1]
    quantile = rng.random(outputs)
    t = np.array([int(np.quantile(acc[:, j], quantile[j], method="nearest")) for j in range(outputs)],
                 dtype=np.int64)
    t += rng.integers(0, 2, size=outputs)
    if edge_cases:
        never = rng.random(outputs) < 0.1
        always = rng.random(outputs) < 0.1
        t[never] = 2**59
        t[always] = -(2**59)
    return t


def random_model(rng, *, shape=(16,), bits=4, encoding="integer", planes=None,
                 layers=(LayerPlan("dense", 8), LayerPlan("dense", 4)), density=0.3,
                 edge_cases=True, shared_ratio=False, symmetric=False, name="random", classes=None, metadata=None,
                 probe_samples=64):
    """A random valid :class:`~sbnn_hdl.model.Model` with the given structure.

    Masks are drawn with ``density`` (one share for every layer with weights, or a sequence of
    one per such layer); thresholds are placed at random quantiles of each neuron's
    ``acc`` over ``probe_samples`` random inputs, so that hidden outputs vary. With
    ``edge_cases``, the first neuron of each layer has no connections and the second every
    connection, and some neurons get negative ``a``, ``a``/``b`` at the format's limits, or a
    threshold that can never (or always) be reached. ``shared_ratio`` draws ``a``, ``b`` as a
    trained model has them, ``symmetric`` as a dense BNN in the +-1 domain has them
    (``2*b == -a``; see :func:`_coefficients`).
    """
    spec = InputSpec(shape=shape, bits=bits, encoding=encoding, planes=planes)
    probe = golden.encode_input(spec, random_inputs(rng, spec, probe_samples),
                                flat=layers[0].kind == "dense")
    max_value = spec.max_feature
    built = []
    current = spec.features_shape
    weighted = sum(plan.kind != "maxpool2d" for plan in layers)
    densities = iter([density] * weighted if np.isscalar(density) else density)
    if not np.isscalar(density) and len(density) != weighted:
        raise ValueError(f"density: expected one share per layer with weights ({weighted}), found {len(density)}")
    for index, plan in enumerate(layers):
        layer_name = f"{plan.kind}{index}"
        if plan.kind == "maxpool2d":
            layer = MaxPool2d(layer_name, in_shape=current, kernel=plan.kernel, stride=plan.stride)
            probe = golden._maxpool(layer, probe)
        else:
            last = index == len(layers) - 1
            layer_density = next(densities)
            a, b = _coefficients(rng, plan.outputs, edge_cases, shared_ratio, symmetric)
            zero = np.zeros(plan.outputs, np.int64)
            if plan.kind == "dense":
                mask = _mask(rng, (plan.outputs, int(np.prod(current))), layer_density, edge_cases)
                make = lambda t: Dense(layer_name, mask, a, b, t)
                rows = probe.reshape(len(probe), -1)
            else:
                mask = _mask(rng, (plan.outputs, *plan.kernel, current[2]), layer_density, edge_cases)
                make = lambda t: Conv2d(layer_name, current, mask, a, b, t, stride=plan.stride,
                                        padding=plan.padding, pad_value=plan.pad_value)
                windows = golden._windows(make(zero), probe)
                rows = windows.reshape(-1, windows.shape[-1])
            acc = golden._Compiled(make(zero), max_value, last=True).acc(rows).astype(np.int64)
            layer = make(_thresholds(rng, acc, edge_cases and not last))
            fired = (acc >= layer.t).astype(np.uint8)
            probe = fired if plan.kind == "dense" else fired.reshape(*windows.shape[:3], plan.outputs)
        if plan.kind != "maxpool2d":
            max_value = 1
        built.append(layer)
        current = layer.out_shape
    return Model(name, spec, built, classes=classes, metadata=metadata)

"""Hypothesis strategies for random valid models and their inputs.

Structure (input shape, bits, encoding, plane subset, layer kinds and sizes, density) is drawn
by Hypothesis, so failures shrink toward small models; the weights themselves come from
:func:`~sbnn_hdl.testing.random_model` with a drawn seed.
"""

import numpy as np
from hypothesis import strategies as st

from ..model import ENCODINGS, MAX_BITS
from .models import LayerPlan, random_inputs, random_model

__all__ = ["models", "dense_models", "conv_models", "stream_models", "inputs_for"]


@st.composite
def _input(draw, *, image, bits=None, encoding=None):
    bits = draw(st.integers(1, MAX_BITS)) if bits is None else bits
    encoding = draw(st.sampled_from(ENCODINGS)) if encoding is None else encoding
    planes = draw(st.one_of(st.none(), st.lists(st.integers(0, bits - 1), min_size=1,
                                                max_size=bits, unique=True)))
    if image:
        shape = (draw(st.integers(2, 6)), draw(st.integers(2, 6)), draw(st.integers(1, 2)))
    else:
        shape = (draw(st.integers(1, 24)),)
    return dict(shape=shape, bits=bits, encoding=encoding, planes=planes)


def _common(draw, spec, plans):
    return random_model(np.random.default_rng(draw(st.integers(0, 2**32 - 1))), layers=plans,
                        density=draw(st.sampled_from([0.0, 0.05, 0.3, 0.7, 1.0])),
                        edge_cases=draw(st.booleans()), **spec)


@st.composite
def dense_models(draw, *, bits=None, encoding=None, max_layers=3, max_width=12):
    """Dense-only models: 1 to ``max_layers`` layers of 1 to ``max_width`` neurons."""
    spec = draw(_input(image=False, bits=bits, encoding=encoding))
    widths = draw(st.lists(st.integers(1, max_width), min_size=1, max_size=max_layers))
    return _common(draw, spec, [LayerPlan("dense", n) for n in widths])


@st.composite
def conv_models(draw, *, bits=None, encoding=None):
    """Small convolutional models: conv2d layers, maybe a max-pool, and a dense head."""
    spec = draw(_input(image=True, bits=bits, encoding=encoding))
    h, w, _ = spec["shape"]
    plans = []
    for _ in range(draw(st.integers(1, 2))):
        ph, pw = draw(st.integers(0, 1)), draw(st.integers(0, 1))
        kh, kw = draw(st.integers(1, min(3, h + 2 * ph))), draw(st.integers(1, min(3, w + 2 * pw)))
        sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
        plans.append(LayerPlan("conv2d", draw(st.integers(1, 4)), kernel=(kh, kw), stride=(sh, sw),
                               padding=(ph, pw), pad_value=draw(st.integers(0, 1))))
        h, w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if h >= 2 and w >= 2 and draw(st.booleans()):
        plans.append(LayerPlan("maxpool2d", kernel=(2, 2), stride=(draw(st.integers(1, 2)),) * 2))
    plans.append(LayerPlan("dense", draw(st.integers(1, 6))))
    return _common(draw, spec, plans)


@st.composite
def stream_models(draw, *, max_side=7, max_channels=3):
    """Convolutional models as the streaming core meets them: odd and non-square images, 1 to 3
    conv layers in a row with kernels from 1x1 to 5x5 (non-square too), stride 1 or 2, padding 0
    to 2 with ``pad_value`` 0 or 1, max-pools 2x2 or 3x3 with stride 1 to 3 between or after
    them, ``integer`` and ``bitplanes`` first layers, densities from empty to full, then one or
    two dense layers."""
    bits = draw(st.integers(1, 4))
    spec = draw(_input(image=True, bits=bits))
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    spec["shape"] = (h, w, draw(st.integers(1, 2)))
    if spec["encoding"] == "integer" and spec["planes"] and min(spec["planes"]) > 0:
        pad_values = st.just(0)   # the streaming core sums the elements divided by 2**(lowest plane)
    else:
        pad_values = st.integers(0, 1)
    plans, binary = [], spec["encoding"] == "bitplanes" or len(spec["planes"] or range(bits)) == 1
    for _ in range(draw(st.integers(1, 3))):
        if binary and h >= 2 and w >= 2 and draw(st.integers(0, 3)) == 0:
            k = draw(st.integers(2, min(3, h, w)))
            plans.append(LayerPlan("maxpool2d", kernel=(k, k), stride=(draw(st.integers(1, 3)),) * 2))
            h, w = (h - k) // plans[-1].stride[0] + 1, (w - k) // plans[-1].stride[1] + 1
            continue
        ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
        kh = draw(st.sampled_from([k for k in (1, 2, 3, 5) if k <= h + 2 * ph]))
        kw = draw(st.sampled_from([k for k in (1, 2, 3, 5) if k <= w + 2 * pw]))
        sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
        plans.append(LayerPlan("conv2d", draw(st.integers(1, max_channels)), kernel=(kh, kw), stride=(sh, sw),
                               padding=(ph, pw), pad_value=draw(pad_values if all(p.kind == "maxpool2d" for p in plans)
                                                                else st.integers(0, 1))))
        h, w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        binary = True
    plans += [LayerPlan("dense", draw(st.integers(1, 5))) for _ in range(draw(st.integers(1, 2)))]
    return _common(draw, spec, plans)


def models():
    """Any valid model: dense or convolutional."""
    return st.one_of(dense_models(), conv_models())


@st.composite
def inputs_for(draw, model, *, max_count=16):
    """Valid input samples for ``model``: ``[N, *model.input.shape]``, the extremes included."""
    count = draw(st.integers(1, max_count))
    return random_inputs(np.random.default_rng(draw(st.integers(0, 2**32 - 1))), model.input, count)

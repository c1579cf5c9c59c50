"""The random-model fixtures really produce the edge cases that later tests rely on."""

import numpy as np
import pytest
from hypothesis import given, settings

from sbnn_hdl import golden
from sbnn_hdl.testing import LayerPlan, random_inputs, random_model
from sbnn_hdl.testing.strategies import conv_models, dense_models, models


def test_edge_cases_present():
    rng = np.random.default_rng(0)
    seen = dict(empty=False, full=False, negative_a=False, nonzero_b=False, never=False, always=False)
    for _ in range(20):
        model = random_model(rng, layers=(LayerPlan("dense", 12), LayerPlan("dense", 1)))
        hidden = model.layers[0]
        seen["empty"] |= bool((hidden.mask.sum(axis=1) == 0).any())
        seen["full"] |= bool((hidden.mask.sum(axis=1) == hidden.inputs).any())
        seen["negative_a"] |= bool((hidden.a < 0).any())
        seen["nonzero_b"] |= bool((hidden.b != 0).any())
        seen["never"] |= bool((hidden.t == 2**59).any())
        seen["always"] |= bool((hidden.t == -(2**59)).any())
        assert model.layers[1].outputs == 1
    assert all(seen.values()), seen


def test_hidden_outputs_vary():
    rng = np.random.default_rng(1)
    model = random_model(rng, edge_cases=False, layers=(LayerPlan("dense", 16), LayerPlan("dense", 3)))
    bits = golden.infer(model, random_inputs(rng, model.input, 200), layers=True).layers[0]
    varying = ((bits.min(axis=0) == 0) & (bits.max(axis=0) == 1)).mean()
    assert varying > 0.5


def test_density_per_layer():
    """One share per layer with weights (pools have none): what-if estimates of a trained
    model's shape at other sparsities draw each layer as dense as asked."""
    layers = (LayerPlan("conv2d", 16, kernel=(3, 3), padding=(1, 1)), LayerPlan("maxpool2d"),
              LayerPlan("dense", 32), LayerPlan("dense", 4))
    model = random_model(np.random.default_rng(2), shape=(8, 8, 2), edge_cases=False, layers=layers,
                         density=(0.9, 0.05, 0.5))
    densities = [layer.mask.mean() for layer in model.layers if hasattr(layer, "mask")]
    assert densities[0] > 0.8 and densities[1] < 0.1 and 0.3 < densities[2] < 0.7
    with pytest.raises(ValueError, match=r"^density: expected one share per layer with weights \(3\), found 2$"):
        random_model(np.random.default_rng(2), shape=(8, 8, 2), layers=layers, density=(0.9, 0.05))


def test_same_seed_same_model():
    a = random_model(np.random.default_rng(9), bits=16, encoding="bitplanes", planes=(15, 3))
    b = random_model(np.random.default_rng(9), bits=16, encoding="bitplanes", planes=(15, 3))
    assert a == b


@settings(max_examples=200)
@given(model=models())
def test_strategies_cover_the_space(model):
    # Recorded by hypothesis' own statistics; here every drawn model must simply be valid and runnable.
    x = random_inputs(np.random.default_rng(0), model.input, 3)
    assert golden.infer(model, x).scores.shape == (3, model.outputs)


def test_strategies_reach_bit_extremes_and_plane_subsets():
    from hypothesis import find
    find(dense_models(), lambda m: m.input.bits == 16 and len(m.input.planes) < 16)
    find(dense_models(), lambda m: m.input.bits == 1)
    find(dense_models(), lambda m: m.input.encoding == "bitplanes" and m.input.planes != tuple(sorted(m.input.planes)))
    find(conv_models(), lambda m: any(l.kind == "maxpool2d" for l in m.layers))
    find(conv_models(), lambda m: any(getattr(l, "pad_value", 0) == 1 and l.padding != (0, 0) for l in m.layers))
    find(dense_models(), lambda m: any(l.outputs == 1 for l in m.layers[:-1]))

"""The golden model against the plain-loop evaluation of the spec, and its input checks."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, strategies as st

import spec_reference as ref
from sbnn_hdl import InputError, golden, save
from sbnn_hdl.model import Dense, InputSpec, Model
from sbnn_hdl.testing import LayerPlan, random_inputs, random_model
from sbnn_hdl.testing.strategies import conv_models, dense_models, inputs_for


def _reference(model, tmp_path, x):
    save(model, tmp_path / "m.sbnn")
    manifest, arrays = ref.read_sbnn(tmp_path / "m.sbnn")
    return ref.evaluate(manifest, arrays, x)


@given(model=dense_models(), data=st.data())
def test_dense_models_match_plain_loop(tmp_path_factory, model, data):
    x = data.draw(inputs_for(model))
    predictions, scores = _reference(model, tmp_path_factory.mktemp("g"), x)
    result = golden.infer(model, x)
    assert result.scores.tolist() == scores
    assert result.predictions.tolist() == predictions


@given(model=conv_models(), data=st.data())
def test_conv_models_match_plain_loop(tmp_path_factory, model, data):
    x = data.draw(inputs_for(model, max_count=6))
    predictions, scores = _reference(model, tmp_path_factory.mktemp("g"), x)
    assert golden.infer(model, x).scores.tolist() == scores


def test_hand_computed_example():
    # v = [3, 0, 1, 2] (2-bit input, all planes); q = 6.
    # fc1: p = [4, 0, 6]; acc = [1*4+0, 2*0-6, -1*6+0] = [4, -6, -6]; y = [4>=2, -6>=-3, -6>=-4] = [1, 0, 0]
    # out: p = [1, 0]; q = 1; scores = [1*1 - 0, 1*0 - 1] = [1, -1] -> class 0
    fc1 = Dense("fc1", [[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], [1, 2, -1], [0, -1, 0], [2, -3, -4])
    out = Dense("out", [[1, 1, 0], [0, 1, 1]], [1, 1], [0, 0], [0, 1])
    model = Model("tiny", InputSpec((4,), 2), [fc1, out])
    result = golden.infer(model, np.array([[3, 0, 1, 2]]), layers=True)
    assert result.layers[0].tolist() == [[1, 0, 0]]
    assert result.scores.tolist() == [[1, -1]]
    assert result.predictions.tolist() == [0]


def test_ties_go_to_the_lowest_index():
    out = Dense("out", [[1, 0], [1, 0], [0, 1]], [1, 1, 1], [0, 0, 0], [0, 0, 0])
    model = Model("tie", InputSpec((2,), 1), [out])
    result = golden.infer(model, np.array([[1, 1], [0, 1], [0, 0]]))
    assert result.predictions.tolist() == [0, 2, 0]


def test_plane_selection_and_bitplane_order():
    # 3-bit input 0b101 = 5 and 0b110 = 6; planes [2, 0].
    spec = InputSpec((2,), 3, "bitplanes", planes=(2, 0))
    x = np.array([[5, 6]])
    assert golden.encode_input(spec, x, flat=True).tolist() == [[1, 1, 1, 0]]
    assert golden.encode_input(InputSpec((2,), 3, "integer", planes=(2, 0)), x, flat=True).tolist() == [[5, 4]]
    image = InputSpec((1, 2, 1), 3, "bitplanes", planes=(2, 0))
    assert golden.encode_input(image, x.reshape(1, 1, 2, 1), flat=False).tolist() == [[[[1, 1], [1, 0]]]]


def test_chunking_does_not_change_results(monkeypatch):
    rng = np.random.default_rng(3)
    model = random_model(rng, shape=(20,), bits=5, layers=(LayerPlan("dense", 7), LayerPlan("dense", 3)))
    x = random_inputs(rng, model.input, 50)
    whole = golden.infer(model, x, layers=True)
    monkeypatch.setattr(golden, "CHUNK", 7)
    chunked = golden.infer(model, x, layers=True)
    assert np.array_equal(whole.scores, chunked.scores)
    assert all(np.array_equal(a, b) for a, b in zip(whole.layers, chunked.layers))


def test_layer_outputs_have_layer_shapes():
    rng = np.random.default_rng(4)
    model = random_model(rng, shape=(5, 5, 1), bits=2, layers=(
        LayerPlan("conv2d", 3, kernel=(3, 3), padding=(1, 1)), LayerPlan("maxpool2d", kernel=(2, 2), stride=(2, 2)),
        LayerPlan("dense", 2)))
    result = golden.infer(model, random_inputs(rng, model.input, 4), layers=True)
    assert [r.shape for r in result.layers] == [(4, 5, 5, 3), (4, 2, 2, 3)]
    assert result.scores.shape == (4, 2) and result.scores.dtype == np.int64


def test_empty_batch():
    model = random_model(np.random.default_rng(5))
    result = golden.infer(model, np.zeros((0, 16), np.uint8))
    assert result.predictions.shape == (0,) and result.scores.shape == (0, 4)


@pytest.mark.parametrize("x,message", [
    (np.zeros((3, 15), np.uint8), "inputs: expected shape [N, 16], found shape [3, 15]"),
    (np.zeros(16, np.uint8), "inputs: expected shape [N, 16], found shape [16]"),
    (np.zeros((2, 16), np.float32), "inputs: expected unsigned integers, found dtype float32"),
    (np.full((2, 16), 16, np.uint8), "inputs: expected values in [0, 15] (4-bit input), found 16 at sample 0"),
    (np.full((2, 16), -1, np.int8), "inputs: expected values in [0, 15] (4-bit input), found -1 at sample 0"),
])
def test_bad_inputs_are_refused(x, message):
    model = random_model(np.random.default_rng(6))
    with pytest.raises(InputError) as info:
        golden.infer(model, x)
    assert str(info.value) == message


def test_importing_golden_imports_neither_torch_nor_amaranth():
    code = ("import sys, sbnn_hdl.golden, sbnn_hdl.modelfile, sbnn_hdl.testing; "
            "bad = [m for m in ('torch', 'amaranth', 'hypothesis') if m in sys.modules]; print(bad)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"

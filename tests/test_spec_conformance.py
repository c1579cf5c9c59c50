"""The project against an independent implementation of the format spec (spec_reference.py).

Both directions: files written by the independent writer load here and infer agrees with the
plain-loop evaluation of the spec; files written here load in the independent reader and its
evaluation agrees with the golden model.
"""

import numpy as np
import pytest
from hypothesis import given, strategies as st

import spec_reference as ref
from sbnn_hdl import golden, infer as infer_cli, load, save
from sbnn_hdl.testing.strategies import conv_models, dense_models, inputs_for


def _check_against_reference(model, manifest, arrays, x):
    expected_predictions, expected_scores = ref.evaluate(manifest, arrays, x)
    result = golden.infer(model, x, layers=True)
    assert result.scores.tolist() == expected_scores
    assert result.predictions.tolist() == expected_predictions
    expected_layers = ref.evaluate_layers(manifest, arrays, x)
    for index, bits in enumerate(result.layers):
        assert bits.reshape(len(x), -1).tolist() == [sample[index] for sample in expected_layers]


CASES = ([("integer", seed, False) for seed in range(30)] + [("bitplanes", seed, False) for seed in range(30)]
         + [(None, seed, True) for seed in range(30)])


@pytest.mark.parametrize("encoding,seed,conv", CASES)
def test_independent_file_loads_and_agrees(tmp_path, encoding, seed, conv):
    rng = np.random.default_rng(seed)
    manifest, arrays = ref.random_description(rng, encoding=encoding, conv=conv)
    path = tmp_path / "model.sbnn"
    ref.write_sbnn(path, manifest, arrays, compression=("deflated", "stored")[seed % 2],
                   manifest_last=seed % 3 != 0)
    model = load(path)
    x = ref.random_inputs(rng, manifest, 12)
    _check_against_reference(model, manifest, arrays, x)


@pytest.mark.parametrize("bits", range(1, 17))
@pytest.mark.parametrize("encoding", ["integer", "bitplanes"])
def test_every_bit_width(tmp_path, bits, encoding):
    rng = np.random.default_rng(1000 + bits)
    manifest, arrays = ref.random_description(rng, encoding=encoding, bits=bits)
    ref.write_sbnn(tmp_path / "m.sbnn", manifest, arrays)
    _check_against_reference(load(tmp_path / "m.sbnn"), manifest, arrays, ref.random_inputs(rng, manifest, 10))


@pytest.mark.parametrize("seed", range(6))
def test_infer_cli_on_independent_file(tmp_path, seed):
    rng = np.random.default_rng(500 + seed)
    manifest, arrays = ref.random_description(rng, encoding=("integer", "bitplanes")[seed % 2])
    ref.write_sbnn(tmp_path / "m.sbnn", manifest, arrays)
    x = ref.random_inputs(rng, manifest, 40)
    np.save(tmp_path / "x.npy", x)
    status = infer_cli.main([str(tmp_path / "m.sbnn"), "--inputs", str(tmp_path / "x.npy"),
                             "--out", str(tmp_path / "y.npy"), "--scores", str(tmp_path / "s.npy")])
    assert status == 0
    predictions, scores = ref.evaluate(manifest, arrays, x)
    assert np.load(tmp_path / "y.npy").tolist() == predictions
    assert np.load(tmp_path / "s.npy").tolist() == scores


@given(model=st.one_of(dense_models(), conv_models()), data=st.data())
def test_written_file_reads_independently_and_agrees(tmp_path_factory, model, data):
    path = tmp_path_factory.mktemp("w") / "model.sbnn"
    save(model, path)
    manifest, arrays = ref.read_sbnn(path)
    x = data.draw(inputs_for(model, max_count=6))
    _check_against_reference(model, manifest, arrays, x)


def test_large_sums_stay_exact(tmp_path):
    """16-bit inputs at the top of their range: p and q beyond float32's exact range (2**24)."""
    rng = np.random.default_rng(7)
    n = 1500
    manifest = {"format": "sbnn", "version": 1, "name": "wide",
                "input": {"shape": [n], "bits": 16, "encoding": "integer"},
                "layers": [{"kind": "dense", "name": "out", "inputs": n, "outputs": 3,
                            "mask": "m.npy", "a": "a.npy", "b": "b.npy", "t": "t.npy"}]}
    arrays = {"m.npy": (rng.random((3, n)) < 0.9).astype(np.uint8),
              "a.npy": np.array([2**24 - 1, -(2**24), 3], dtype=np.int64),
              "b.npy": np.array([-(2**24), 2**24 - 1, -1], dtype=np.int64),
              "t.npy": np.array([2**60 - 1, -(2**60), 12345], dtype=np.int64)}
    ref.write_sbnn(tmp_path / "w.sbnn", manifest, arrays)
    x = rng.integers(65000, 65536, size=(5, n)).astype(np.uint16)
    x[0] = 65535
    _check_against_reference(load(tmp_path / "w.sbnn"), manifest, arrays, x)

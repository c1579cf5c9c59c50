"""The emitted Verilog itself (shared modules, instances and all) against the golden model, in
Icarus Verilog with the vectors read inside the simulator."""

import numpy as np
import pytest

from sbnn_hdl import golden, load
from sbnn_hdl.generate import generate_verilog
from sbnn_hdl.rtlsim import run_icarus
from sbnn_hdl.testing import LayerPlan, random_inputs, random_model


def check_verilog(model, x, **options):
    generated = generate_verilog(model, **options)
    predictions, scores = run_icarus(model, generated.verilog, generated.report, x)
    expected = golden.infer(model, x)
    if scores is not None:
        assert scores == expected.scores.tolist()
    assert predictions == expected.predictions.tolist()


def test_example_model():
    check_verilog(load("examples/digits.sbnn"), np.load("examples/digits_x.npy")[:120])


CASES = [
    dict(shape=(20,), bits=8, encoding="integer", planes=(7, 5, 4)),
    dict(shape=(9,), bits=16, encoding="bitplanes", planes=(15, 0, 8)),
    dict(shape=(12,), bits=1, encoding="integer"),
    dict(shape=(10,), bits=3, encoding="bitplanes"),
]


@pytest.mark.parametrize("seed", range(len(CASES) * 2))
def test_random_models(seed):
    rng = np.random.default_rng(100 + seed)
    model = random_model(rng, layers=(LayerPlan("dense", 9), LayerPlan("dense", 5), LayerPlan("dense", 3)),
                         shared_ratio=seed >= len(CASES), **CASES[seed % len(CASES)])
    check_verilog(model, random_inputs(rng, model.input, 40), every=1 + seed % 3, scores=seed % 4 != 3)

"""The generated hardware against the golden model, in amaranth.sim: every output, exact latency."""

import gc
import warnings

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Fragment, Module, UnusedElaboratable
from hypothesis import given, settings, strategies as st

from sbnn_hdl import load
from sbnn_hdl.gateware import NetworkCore
from sbnn_hdl.hwplan import HardwareError
from sbnn_hdl.testing import LayerPlan, random_inputs, random_model
from sbnn_hdl.simulation import pysim
from sbnn_hdl.testing.strategies import dense_models


def check_core(model, x, *, every=2, relay=0, idle=0.3, seed=0):
    return pysim.check_core(NetworkCore(model, every=every, relay=relay), x, idle=idle, seed=seed)


@settings(max_examples=int(__import__("os").environ.get("SBNN_SIM_EXAMPLES", "25")))
@given(model=dense_models(max_layers=3, max_width=8), every=st.integers(1, 3), relay=st.sampled_from([0, 0, 1, 2]),
       seed=st.integers(0, 2**16))
def test_random_models_match_golden(model, every, relay, seed):
    rng = np.random.default_rng(seed)
    check_core(model, random_inputs(rng, model.input, 12), every=every, relay=relay, seed=seed)


@pytest.mark.parametrize("bits", [1, 2, 8, 16])
@pytest.mark.parametrize("encoding", ["integer", "bitplanes"])
def test_bits_and_encodings(bits, encoding):
    rng = np.random.default_rng(bits)
    planes = None if bits < 8 else tuple(sorted(rng.choice(bits, size=3, replace=False).tolist(), reverse=True))
    model = random_model(rng, shape=(10,), bits=bits, encoding=encoding, planes=planes,
                         layers=(LayerPlan("dense", 6), LayerPlan("dense", 3)))
    check_core(model, random_inputs(rng, model.input, 16))


def test_one_class_and_one_neuron_layers():
    rng = np.random.default_rng(11)
    model = random_model(rng, shape=(7,), bits=3, layers=(LayerPlan("dense", 1), LayerPlan("dense", 1)))
    core = check_core(model, random_inputs(rng, model.input, 8))
    assert core.argmax.latency == 0


def test_example_model_back_to_back():
    model = load("examples/digits.sbnn")
    check_core(model, np.load("examples/digits_x.npy")[:60], idle=0.0)


def test_relay_stages_add_one_cycle_per_layer_each_and_one_for_the_neurons_copies():
    model = load("examples/digits.sbnn")
    plain = NetworkCore(model, every=1)
    Fragment.get(plain, None)  # built whole, as a generated core is (and no warning of an unused core)
    core = check_core(model, np.load("examples/digits_x.npy")[:20], every=1, relay=2, idle=0.0)
    # The hidden layer's 64 neurons read their split in groups, so each also gets its own copy.
    assert [layer.neuron_copies for layer in core.hidden] == [True]
    assert [layer.neuron_copies for layer in plain.hidden] == [False]
    assert core.latency == plain.latency + 2 * len(model.layers) + 1


def test_relay_must_not_be_negative():
    with pytest.raises(ValueError, match=r"^relay: expected 0 or more register stages, found -1$"):
        NetworkCore(load("examples/digits.sbnn"), relay=-1)


def test_a_refused_core_is_never_built():
    """Arguments are refused before the core exists: Amaranth has no unused core to warn about
    (its warning is on, as after any elaboration; the unused ``Probe`` shows that it is)."""

    class Probe(Elaboratable):
        def elaborate(self, platform):
            return Module()

    model = load("examples/digits.sbnn")
    Fragment.get(Probe(), None)  # Amaranth warns of unused elaboratables once one was elaborated
    refusals = [(dict(relay=-1), ValueError, r"^relay: expected 0 or more register stages, found -1$"),
                (dict(every=0), ValueError, r"^every: expected at least 1 adder level per stage, found 0$"),
                (dict(arch="nosuch"), HardwareError, r"^--arch: expected one of sparse, xnor, found 'nosuch'$"),
                (dict(arch="xnor"), HardwareError, r"^input: expected binary first-layer inputs for --arch xnor")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for kwargs, error, message in refusals:
            with pytest.raises(error, match=message):
                NetworkCore(model, **kwargs)
        gc.collect()
        refused = [str(w.message) for w in caught if issubclass(w.category, UnusedElaboratable)]
        Probe()
        gc.collect()
        probe = [str(w.message) for w in caught if issubclass(w.category, UnusedElaboratable)][len(refused):]
    assert refused == []
    assert len(probe) == 1 and "Probe object" in probe[0] and "created but never used" in probe[0]


def test_constant_neurons_are_folded_away():
    rng = np.random.default_rng(5)
    model = random_model(rng, shape=(12,), bits=2, layers=(LayerPlan("dense", 10), LayerPlan("dense", 4)))
    hidden = model.layers[0]
    t = hidden.t.copy()
    t[:4] = [2**59, -(2**59), 2**59, -(2**59)]  # never, always, never, always
    from sbnn_hdl.model import Dense, Model
    model = Model("folded", model.input, [Dense("h", hidden.mask, hidden.a, hidden.b, t), model.layers[1]])
    core = check_core(model, random_inputs(rng, model.input, 16))
    report = core.plan.layers[0].report
    assert report["constant_neurons"] >= 4

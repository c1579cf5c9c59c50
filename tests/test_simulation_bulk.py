"""The emitted Verilog in bulk mode (vectors read inside the simulator) on Verilator and Icarus,
bit-exact against the golden model; and faults that the check must catch."""

import numpy as np
import pytest

from sbnn_hdl import golden, load
from sbnn_hdl.gateware.verilog import generate_verilog
from sbnn_hdl.hwplan import pack_sample
from sbnn_hdl.model import InputSpec
from sbnn_hdl.simulation import cores
from sbnn_hdl.simulation.bulk import BulkSimulator, default_jobs, hex_samples
from sbnn_hdl.simulation.cores import generated_core
from sbnn_hdl.synth import ToolError
from sbnn_hdl.testing import LayerPlan, random_inputs, random_model

from rtl_faults import faulty

SIMULATORS = ["verilator", "icarus"]


@pytest.fixture(scope="session", autouse=True)
def fresh_build_cache(tmp_path_factory):
    """Every test session builds its simulations afresh (a cache from elsewhere proves nothing)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SBNN_SIM_CACHE", str(tmp_path_factory.mktemp("rtlsim-cache")))
        yield


def run_bulk(model, x, generated, simulator, **options):
    bulk = BulkSimulator(generated.report, [(f"{generated.report['top']}.v", generated.verilog)],
                         simulator=simulator, **options)
    return bulk, bulk.run(model, x)


def check_exact(model, x, generated, simulator):
    _, (predictions, scores) = run_bulk(model, x, generated, simulator)
    expected = golden.infer(model, x)
    np.testing.assert_array_equal(predictions, expected.predictions)
    if scores is not None:
        np.testing.assert_array_equal(scores, expected.scores)


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_example_model(simulator):
    model = load("examples/digits.sbnn")
    check_exact(model, np.load("examples/digits_x.npy"), generate_verilog(model), simulator)


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
    generated = generate_verilog(model, every=1 + seed % 3, scores=seed % 4 != 3)
    # Each case runs once on each simulator (seed and seed + len(CASES)).
    check_exact(model, random_inputs(rng, model.input, 300), generated, SIMULATORS[(seed + seed // len(CASES)) % 2])


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_samples_split_between_processes(simulator):
    """Three processes over 200 samples give the golden outputs in order; an unreasonable ``jobs``
    is refused; a process count above the samples runs one process per sample."""
    model = load("examples/digits.sbnn")
    x = np.load("examples/digits_x.npy")[:200]
    generated = generate_verilog(model)
    bulk = BulkSimulator(generated.report, [(f"{model.name}.v", generated.verilog)], simulator=simulator)
    expected = golden.infer(model, x)
    for samples, jobs in ((200, 3), (2, 5)):
        predictions, scores = bulk.run(model, x[:samples], jobs=jobs)
        np.testing.assert_array_equal(predictions, expected.predictions[:samples])
        np.testing.assert_array_equal(scores, expected.scores[:samples])
    with pytest.raises(ValueError, match="jobs: expected at least 1 simulator process, found 0"):
        bulk.run(model, x, jobs=0)


def test_default_jobs(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert [default_jobs(n) for n in (0, 1999, 4000, 10000)] == [1, 1, 2, 2]


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_wrong_hardware_is_caught(simulator):
    """A core whose prediction is corrupted for odd first elements disagrees where it should."""
    model = random_model(np.random.default_rng(7), shape=(6,), bits=2)
    x = random_inputs(np.random.default_rng(8), model.input, 64)
    _, (predictions, _) = run_bulk(model, x, faulty(generate_verilog(model), "prediction"), simulator)
    expected = golden.infer(model, x).predictions
    np.testing.assert_array_equal(predictions != expected, x[:, 0] % 2 == 1)


def test_build_is_cached_and_reused(tmp_path):
    model = random_model(np.random.default_rng(3), shape=(5,), bits=2)
    generated = generate_verilog(model)
    first, _ = run_bulk(model, random_inputs(np.random.default_rng(0), model.input, 3), generated, "icarus",
                        cache=tmp_path)
    second = BulkSimulator(generated.report, [(f"{model.name}.v", generated.verilog)], simulator="icarus",
                           cache=tmp_path)
    assert second.folder == first.folder and not second.build()
    changed = BulkSimulator(generated.report, [(f"{model.name}.v", generated.verilog + "\n// changed\n")],
                            simulator="icarus", cache=tmp_path)
    assert changed.folder != first.folder


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_relative_cache_folder(tmp_path, monkeypatch, simulator):
    """The simulators run in folders of their own: a cache given relative to the working
    directory still finds the built simulator (it failed with "No such file" before)."""
    monkeypatch.chdir(tmp_path)
    model = random_model(np.random.default_rng(3), shape=(5,), bits=2)
    x = random_inputs(np.random.default_rng(0), model.input, 40)
    _, (predictions, _) = run_bulk(model, x, generate_verilog(model), simulator, cache="relative/cache")
    np.testing.assert_array_equal(predictions, golden.infer(model, x).predictions)


def test_generated_core_is_cached_by_model_and_options(tmp_path, monkeypatch):
    model = random_model(np.random.default_rng(3), shape=(5,), bits=2)
    first = generated_core(model, cache=tmp_path, every=1)
    assert first.core is not None
    fresh = generate_verilog(model, every=1)
    assert (first.verilog, first.report) == (fresh.verilog, fresh.report)

    def refuse(*args, **kwargs):
        raise AssertionError("generated again although cached")

    monkeypatch.setattr(cores, "generate_verilog", refuse)
    served = generated_core(model, cache=tmp_path, every=1)
    assert served.core is None and (served.verilog, served.report) == (fresh.verilog, fresh.report)
    monkeypatch.undo()
    other_option = generated_core(model, cache=tmp_path, every=2)
    other_model = generated_core(random_model(np.random.default_rng(4), shape=(5,), bits=2), cache=tmp_path, every=1)
    assert other_option.core is not None and other_model.core is not None
    assert other_option.report["generator"]["every"] == 2
    assert len(list(tmp_path.glob("verilog-*"))) == 3

    # A changed generator is a different key: the digest of its code is part of it.
    monkeypatch.setattr(cores, "generator_digest", lambda: "changed")
    assert generated_core(model, cache=tmp_path, every=1).core is not None


def test_empty_and_single_sample_runs():
    model = random_model(np.random.default_rng(4), shape=(4,), bits=3)
    generated = generate_verilog(model)
    for count in (0, 1):
        x = random_inputs(np.random.default_rng(count), model.input, count)
        check_exact(model, x, generated, "icarus")


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_waveforms_on_request(simulator, tmp_path):
    model = random_model(np.random.default_rng(5), shape=(4,), bits=2)
    generated = generate_verilog(model)
    bulk = BulkSimulator(generated.report, [("core.v", generated.verilog)], simulator=simulator, waves=True)
    x = random_inputs(np.random.default_rng(0), model.input, 5)
    predictions, _ = bulk.run(model, x, waves=tmp_path / "run.fst")
    np.testing.assert_array_equal(predictions, golden.infer(model, x).predictions)
    assert (tmp_path / "run.fst").stat().st_size > 0
    plain = BulkSimulator(generated.report, [("core.v", generated.verilog)], simulator=simulator)
    with pytest.raises(ValueError, match="built without waveform support"):
        plain.run(model, x, waves=tmp_path / "other.fst")


def test_broken_verilog_reports_the_tools_error():
    model = random_model(np.random.default_rng(6), shape=(4,), bits=2)
    generated = generate_verilog(model)
    bulk = BulkSimulator(generated.report, [("core.v", generated.verilog.replace("endmodule", "endmodul", 1))],
                         simulator="icarus")
    with pytest.raises(ToolError, match=r"^iverilog: building the simulation of random failed: .*core\.v"):
        bulk.build()


@pytest.mark.parametrize("shape, bits", [((784,), 8), ((9,), 3), ((5,), 16), ((7,), 1), ((3, 2, 2), 5)])
def test_hex_samples_pack_as_pack_sample(shape, bits):
    spec = InputSpec(shape=shape, bits=bits, encoding="integer")
    x = np.random.default_rng(0).integers(0, 2 ** bits, (20, *shape))
    width = spec.size * bits
    assert hex_samples(spec, x, width) == [f"{pack_sample(spec, s):0{(width + 3) // 4}x}" for s in x]

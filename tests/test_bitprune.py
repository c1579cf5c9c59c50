"""Bit-plane input pruning (sbnn_hdl.bitprune) on tiny nets trained on scikit-learn's digits: the
removal of a plane for both encodings, the exact re-calibration, the greedy choice within the
budget, the command end to end (report, manifest), RTL simulation of pruned models against the
golden model, slim checkpoints and the command's one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sbnn_hdl import datasets, golden, load  # noqa: E402
from sbnn_hdl.train.planes import Candidate, analyse, calibrate, choose, population_moments, remove_planes  # noqa: E402
from sbnn_hdl.train.loop import Config, TrainError, export_model, load_net, train  # noqa: E402
from sbnn_hdl.train.nets import encode_batch  # noqa: E402

TINY = dict(data="digits", arch="mlp:24", sparsity=0.7, epochs=3, batch_size=64, train_limit=512, seed=5,
            threads=1)


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, digits):
    """Tiny trained runs reading all four planes of the 4-bit digits, one per encoding: their
    checkpoint paths."""
    paths = {}
    for encoding in ("bitplanes", "integer"):
        paths[encoding] = tmp_path_factory.mktemp(encoding) / "tiny.ckpt"
        train(Config(encoding=encoding, planes=[3, 2, 1, 0], **TINY), checkpoint=paths[encoding], progress=False,
              data=digits)
    return paths


@pytest.fixture(params=["bitplanes", "integer"])
def checkpoint(request, checkpoints):
    return checkpoints[request.param]


@pytest.fixture
def trained(checkpoint, digits):
    net, config, data, _ = load_net(checkpoint, threads=1, data=digits)
    return net, config, data


def _first_z(net, x):
    with torch.no_grad():
        return net(encode_batch(net.spec, x, net.conv_first), until=net.binary_layers[0]).double()


# --- removing a plane ---------------------------------------------------------------------------------

def test_removed_plane_reads_as_zero(trained):
    """The reduced first layer computes what the full one computes on inputs whose removed planes
    are 0 (bitplanes: the same sums; integer: the same sums on the new input scale)."""
    net, config, data = trained
    x = data.x_val
    reduced, reduced_config = remove_planes(net, config, data, [3, 1, 0])
    assert reduced_config.planes == [3, 1, 0] and config.planes == [3, 2, 1, 0]
    assert list(reduced.spec.planes) == [3, 1, 0]
    cleared = x & np.uint8(0b1011)
    expected = _first_z(net, cleared)
    if config.encoding == "bitplanes":
        assert reduced.binary_layers[0].weight.shape[1] == 3 * 64
        expected_scale = 1.0
    else:
        assert reduced.binary_layers[0].weight.shape == net.binary_layers[0].weight.shape
        expected_scale = 0b1111 / 0b1011  # the input is divided by its largest value, now 11 not 15
    torch.testing.assert_close(_first_z(reduced, x), expected * expected_scale, rtol=1e-5, atol=1e-5)
    # The rest of the net is copied unchanged.
    for a, b in zip(list(net.state_dict().items())[1:], list(reduced.state_dict().items())[1:]):
        assert a[0] == b[0] and torch.equal(a[1], b[1])


def test_remove_planes_refuses_a_foreign_plane(trained):
    net, config, data = trained
    with pytest.raises(Exception, match=r"planes to keep: expected a non-empty subset of \[3, 2, 1, 0\]"):
        remove_planes(net, config, data, [3, 7])


# --- re-calibration -----------------------------------------------------------------------------------------

def test_calibration_is_the_exact_population_statistics(trained):
    net, config, data = trained
    reduced, _ = remove_planes(net, config, data, [3, 2])
    before = {k: v.clone() for k, v in reduced.state_dict().items() if "running" in k or k.endswith("out_var")}
    x = data.x_train[:500]
    stats = calibrate(reduced, x, batch=37)  # many uneven batches: the pairwise merge must be exact
    after = reduced.state_dict()
    for key, value in before.items():
        assert not torch.allclose(value, after[key]), key  # the stale statistics were replaced
    v = encode_batch(reduced.spec, x, reduced.conv_first)
    for layer in reduced.binary_layers:  # directly: all samples at once, with the calibrated layers before
        with torch.no_grad():
            z = reduced(v, until=layer).double()
        mean, var = (z.mean(), z.var()) if layer.last else (z.mean(0), z.var(0))
        np.testing.assert_allclose(stats[layer.name][0], mean.numpy(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(stats[layer.name][1], var.numpy(), rtol=1e-9, atol=1e-9)
        stored = (layer.out_mean, layer.out_var) if layer.last else (layer.bn.running_mean, layer.bn.running_var)
        np.testing.assert_allclose(stored[0].numpy(), mean.numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(stored[1].numpy(), var.numpy(), rtol=1e-6, atol=1e-6)
    # One batch or many: the same statistics.
    mean, var = population_moments(reduced, reduced.binary_layers[1], x, batch=len(x))
    np.testing.assert_allclose(mean.numpy(), stats["out"][0], rtol=1e-12)
    np.testing.assert_allclose(var.numpy(), stats["out"][1], rtol=1e-12)


# --- the analysis and the choice ---------------------------------------------------------------------------

def _candidate(planes, accuracy):
    return Candidate(tuple(planes), accuracy, None, None)


def test_choose_takes_the_smallest_set_within_the_budget():
    curve = [_candidate([3, 2, 1, 0], 0.90), _candidate([3, 2, 1], 0.905), _candidate([3, 2], 0.891),
             _candidate([3], 0.80)]
    assert choose(curve, curve[0], 0.01).planes == (3, 2)
    assert choose(curve, curve[0], 0.008).planes == (3, 2, 1)
    assert choose(curve, curve[0], 0.0).planes == (3, 2, 1)
    assert choose(curve, curve[0], 0.2).planes == (3,)
    # A step beyond the budget does not end the search: a later, smaller set within it is chosen.
    dip = [curve[0], _candidate([3, 2, 1], 0.85), _candidate([3, 2], 0.895)]
    assert choose(dip, dip[0], 0.01).planes == (3, 2)


def test_greedy_curve(trained):
    net, config, data = trained
    calls = []
    base, sensitivity, curve = analyse(net, config, data, data.x_train[:512], progress=lambda: calls.append(1))
    assert len(calls) == 1 + 4 + 3 + 2  # every plane set evaluated once
    assert [len(c.planes) for c in curve] == [4, 3, 2, 1] and curve[0] is base
    assert [c.planes for c in sensitivity] == [(2, 1, 0), (3, 1, 0), (3, 2, 0), (3, 2, 1)]
    # The first greedy step removes the plane whose removal costs least.
    assert curve[1].val_accuracy == max(c.val_accuracy for c in sensitivity)
    for bigger, smaller in zip(curve, curve[1:]):
        assert set(smaller.planes) < set(bigger.planes)


# --- the command ----------------------------------------------------------------------------------------------

def _run(*args, cwd=None):
    # This checkout's package, whatever the folder the command runs in.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "sbnn_hdl.bitprune", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env)


def _slim(checkpoint, path):
    state = torch.load(checkpoint, weights_only=True)
    del state["optimizer"]
    torch.save(state, path)
    return path


def test_command_end_to_end(checkpoint, tmp_path, digits):
    encoding = checkpoint.parent.name.rstrip("0123456789")
    slim = _slim(checkpoint, tmp_path / "slim.ckpt")  # pruning needs no optimiser state
    out, report_dir = tmp_path / "pruned.sbnn", tmp_path / "report"
    finetune = ["--finetune", "1"] if encoding == "bitplanes" else []
    r = _run(slim, "--data", "digits", "--budget", "0.03", *finetune, "--threads", "1", "--quiet", "-o", out,
             "--report", report_dir)
    assert r.returncode == 0, r.stderr
    assert "Greedy removal" in r.stdout and "PyTorch and golden agree" in r.stdout
    report = json.loads((report_dir / "bitprune.json").read_text())
    assert (report_dir / "bitprune.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (report_dir / "bitprune.md").read_text()
    assert "## Greedy removal" in markdown and "## Sensitivity" in markdown
    curve = report["curve"]
    assert [len(c["planes"]) for c in curve] == [4, 3, 2, 1]
    assert all(c["first_layer"] > 0 and c["lut4"] > 0 for c in curve)
    assert [c["first_layer"] for c in curve] == sorted((c["first_layer"] for c in curve), reverse=True)
    # The chosen set: within the budget, and no smaller set of the curve is.
    base, chosen = report["base"]["val_accuracy"], report["chosen"]
    assert base - chosen["val_accuracy"] <= 0.03 + 1e-12
    assert all(base - c["val_accuracy"] > 0.03 for c in curve if len(c["planes"]) < len(chosen["planes"]))
    # The model reads exactly the kept planes, and is what the report says.
    model = load(out)
    assert list(model.input.planes) == report["exported"]["planes"]
    assert model.input.encoding == encoding
    exported = report["exported"]["planes"]  # the chosen set, or a smaller one that fine-tuning kept within budget
    assert model.layers[0].mask.shape[1] == 64 * (len(exported) if encoding == "bitplanes" else 1)
    assert model.metadata["bitprune"]["from_planes"] == [3, 2, 1, 0]
    assert model.metadata["command"].startswith("python -m sbnn_hdl.bitprune")
    x = digits.x_test.reshape(len(digits.x_test), -1)
    accuracy = float((golden.infer(model, x).predictions == digits.y_test).mean())
    assert accuracy == report["exported"]["test_accuracy"]
    tuned = report["finetune"]
    assert bool(tuned) == bool(finetune)
    if tuned:  # from the budget's choice down the curve, until a fine-tuned set misses the budget
        assert tuned[0]["planes"] == chosen["planes"]
        assert all(t["within_budget"] for t in tuned[:-1])
        assert [t["within_budget"] for t in tuned] == [base - t["val_accuracy"] <= 0.03 + 1e-12 for t in tuned]
        accepted = [t for t in tuned if t["within_budget"]]
        assert report["exported"]["planes"] == (accepted[-1] if accepted else chosen)["planes"]
        assert report["exported"]["fine_tuned"] == bool(accepted)
    else:
        assert report["exported"]["planes"] == chosen["planes"]


def test_keep_overrides_the_budget(checkpoints, tmp_path):
    r = _run(checkpoints["integer"], "--keep", "1", "--calibration", "300", "--quiet", "-o", tmp_path / "one.sbnn")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "bitprune.json").read_text())  # next to the output by default
    assert report["settings"]["calibration_samples"] == 300
    assert list(load(tmp_path / "one.sbnn").input.planes) == report["curve"][-1]["planes"]


def test_resume_refuses_a_slim_checkpoint(checkpoint, tmp_path, digits):
    slim = _slim(checkpoint, tmp_path / "slim.ckpt")
    config = Config(encoding=load_net(checkpoint, data=digits)[1].encoding, planes=[3, 2, 1, 0],
                    **{**TINY, "epochs": 4})
    with pytest.raises(TrainError, match=r"expected a full checkpoint \(with the optimiser state\) to resume "
                                         r"from, found a slim one without it"):
        train(config, checkpoint=slim, resume=True, progress=False, data=digits)


@pytest.mark.parametrize("args, message", [
    (["missing.ckpt", "-o", "x.sbnn"],
     "sbnn_hdl.bitprune: error: checkpoint 'missing.ckpt': expected a checkpoint file, found no such file"),
    (["{ckpt}", "--budget", "1.5", "-o", "x.sbnn"],
     "sbnn_hdl.bitprune: error: option --budget: expected a share of accuracy in [0, 1) (0.01 = 1 point), "
     "found 1.5"),
    (["bytes.ckpt", "-o", "x.sbnn"],
     "sbnn_hdl.bitprune: error: checkpoint 'bytes.ckpt': expected a checkpoint written by sbnn_hdl.train, "
     "found unreadable data (UnpicklingError)"),
    (["tensor.ckpt", "-o", "x.sbnn"],
     "sbnn_hdl.bitprune: error: checkpoint 'tensor.ckpt': expected a checkpoint written by sbnn_hdl.train, "
     "found KeyError: 'config'"),
    (["{ckpt}", "--data", "fashion-mnist", "-o", "x.sbnn"],
     "sbnn_hdl.bitprune: error: option --data: expected the checkpoint's data set 'digits', found "
     "'fashion-mnist'"),
    (["{ckpt}", "--keep", "5", "-o", "x.sbnn"],
     "sbnn_hdl.bitprune: error: option --keep: expected at most the checkpoint's 4 planes, found 5"),
    (["{ckpt}", "-o", "nowhere/x.sbnn"],
     "sbnn_hdl.bitprune: error: output 'nowhere/x.sbnn': expected an existing folder '{tmp}/nowhere', found none"),
])
def test_errors_are_one_line(tmp_path, checkpoints, args, message, monkeypatch, capsys):
    # In this process (each subprocess would import torch again); test_command_end_to_end runs the
    # real command line.
    from sbnn_hdl.bitprune import main
    (tmp_path / "bytes.ckpt").write_bytes(b"not a checkpoint")
    torch.save({"model": {}}, tmp_path / "tensor.ckpt")
    monkeypatch.chdir(tmp_path)
    assert main([a.format(ckpt=checkpoints["bitplanes"]) for a in args]) == 2
    assert capsys.readouterr().err.strip() == message.format(tmp=tmp_path)
    assert not (tmp_path / "x.sbnn").exists() and not (tmp_path / "bitprune.json").exists()


# --- hardware ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding, planes", [("integer", [3, 1]), ("bitplanes", [3, 2, 0])])
def test_pruned_model_is_bit_exact_in_rtl_simulation(checkpoints, digits, tmp_path, encoding, planes):
    """Pruned models (integer: non-contiguous planes, the adder narrowed to the planes from the
    lowest kept one up) through the generated Verilog on Verilator, against the golden model."""
    from sbnn_hdl.gateware.verilog import estimate_model, generate_verilog
    from sbnn_hdl.simulation.rtl import simulate
    net, config, data, _ = load_net(checkpoints[encoding], threads=1, data=digits)
    reduced, reduced_config = remove_planes(net, config, data, planes)
    calibrate(reduced, data.x_train)
    model, _ = export_model(reduced, data, reduced_config, [], tmp_path / "pruned.sbnn")
    assert list(model.input.planes) == planes
    generated = generate_verilog(model)
    assert generated.report["input"]["planes"] == planes
    assert generated.report["estimate_ecp5"] == estimate_model(model)
    # Only the kept planes are wired: every first-layer source is built from kept planes alone.
    features = generated.core.plan.features
    read = {k for _, source_planes in features for k in source_planes}
    assert read <= set(planes) and len(features) > 0
    if config.encoding == "integer":
        # An element is read as its kept bits from the lowest kept plane up, the others 0: the
        # adders narrow to plane_mask >> lowest plane (3,1 -> 0b101 = 5; 3,2,0 -> 0b1101 = 13).
        assert all(source_planes == tuple(planes) for _, source_planes in features)
        mask = sum(1 << k for k in planes)
        assert max(generated.core.plan.layers[0].source_max) == mask >> min(planes)
    else:
        assert read == set(planes) and len(features) <= 64 * len(planes)
    x = data.x_test.reshape(len(data.x_test), -1)
    predictions, scores = simulate(model, x, simulator="verilator", cache=tmp_path / "build")  # a fresh build
    expected = golden.infer(model, x)
    np.testing.assert_array_equal(predictions, expected.predictions)
    np.testing.assert_array_equal(scores, expected.scores)

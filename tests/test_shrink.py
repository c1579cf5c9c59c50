"""Shrinking the hidden layers after the planes (``bitprune --shrink``, sbnn_hdl.train.shrink) on
tiny two-hidden-layer MLPs trained on scikit-learn's digits: the candidates' widths, the
most-used neurons, the copied weights, the budget rule and its fallback, every candidate's exact
export, the command's report and its one-line errors."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sbnn_hdl import datasets, golden, load  # noqa: E402
from sbnn_hdl.bitprune import main  # noqa: E402
from sbnn_hdl.train.fold import fold, to_model  # noqa: E402
from sbnn_hdl.train.loop import Config, exact_accuracy, load_net, train  # noqa: E402
from sbnn_hdl.train.nets import encode_batch, with_widths  # noqa: E402
from sbnn_hdl.train.shrink import (ShrinkCandidate, candidate_widths, hidden_widths, is_selected, most_used,  # noqa: E402
                                   neuron_usage, parse_sparsities, parse_widths, search, select, shrink_candidates,
                                   shrink_net)
from sbnn_hdl.train.tune import BitpruneError  # noqa: E402

TINY = dict(data="digits", arch="mlp:32,24", sparsity=0.7, epochs=3, batch_size=64, train_limit=512, seed=5,
            threads=1, encoding="bitplanes", planes=[3, 2, 1, 0])


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, digits):
    path = tmp_path_factory.mktemp("shrink") / "tiny.ckpt"
    train(Config(**TINY), checkpoint=path, progress=False, data=digits)
    return path


@pytest.fixture
def trained(checkpoint, digits):
    net, config, data, _ = load_net(checkpoint, threads=1, data=digits)
    return net, config, data


# --- the candidates ---------------------------------------------------------------------------------------

def test_candidate_widths_decrease():
    # Integers: every hidden layer that wide (capped at its own width); shares: of each layer.
    assert candidate_widths([32, 24], [0.25, 16, 32, 24, 0.5]) == [(24, 24), (16, 16), (16, 12), (8, 6)]
    assert candidate_widths([32, 24], parse_widths("192,128,0.75")) == [(24, 18)]
    with pytest.raises(BitpruneError, match=r"^option --widths: expected at least one candidate smaller than the "
                                            r"hidden widths 32,24, found none$"):
        candidate_widths([32, 24], [32, 40])
    # Per-layer widths: one per hidden layer, each capped at its own width.
    assert candidate_widths([32, 24], parse_widths("8:32,16,16:16")) == [(16, 16), (8, 24)]
    with pytest.raises(BitpruneError, match=r"^option --widths: expected 2 per-layer widths \(one per hidden layer, "
                                            r"32:24\), found 8:16:4$"):
        candidate_widths([32, 24], [(8, 16, 4)])


@pytest.mark.parametrize("text, bad", [("abc", "abc"), ("0", "0"), ("1.5", "1.5"), ("", ""), ("64,,32", ""),
                                       ("-8", "-8"), ("0.5,1.0", "1.0"), ("64:", "64:"), ("64:0", "64:0"),
                                       ("0.5:64", "0.5:64")])
def test_parse_widths_refuses(text, bad):
    with pytest.raises(BitpruneError) as error:
        parse_widths(text)
    assert str(error.value) == (f"option --widths: expected comma-separated widths (positive integers), shares in "
                                f"(0, 1) or per-layer widths (e.g. 64:128), found {bad!r}")


# --- the most-used neurons ----------------------------------------------------------------------------------

def test_most_used_takes_the_highest_usage():
    assert most_used([0.1, 3.0, 2.0, 3.0, 0.0], 2) == [1, 3]
    assert most_used([0.1, 3.0, 2.0, 3.0, 0.0], 3) == [1, 2, 3]
    assert most_used([1.0, 1.0, 1.0], 2) == [0, 1]  # ties: the lower index


def test_usage_is_outgoing_connections_times_the_bit_deviation(trained):
    net, _, data = trained
    x = data.x_train[:400]
    usage = neuron_usage(net, x)
    v = encode_batch(net.spec, x, net.conv_first)
    assert [len(u) for u in usage] == [32, 24]
    for i, layer in enumerate(net.binary_layers[:-1]):  # directly: the layer's normalised output >= 0
        with torch.no_grad():
            bits = (layer.normalise(net(v, until=layer)) >= 0).double()
        rate = bits.mean(0).numpy()
        outgoing = (net.binary_layers[i + 1].weight >= 0).sum(0).numpy()
        np.testing.assert_allclose(usage[i], outgoing * np.sqrt(rate * (1 - rate)), rtol=1e-12)
    assert len(set(np.round(usage[0], 9))) > 5  # a ranking, not a constant


def test_shrunk_net_keeps_the_most_used_neurons_and_their_weights(trained):
    net, config, data = trained
    x = data.x_train[:400]
    usage = neuron_usage(net, x)
    keep = [most_used(u, w) for u, w in zip(usage, (12, 8))]
    for u, k in zip(usage, keep):
        dropped = [j for j in range(len(u)) if j not in k]
        assert min(u[k]) >= max(u[dropped])
    shrunk, shrunk_config = shrink_net(net, config, data, keep)
    assert shrunk_config.arch == "mlp:12,8" and config.arch == "mlp:32,24"
    a, b = net.binary_layers, shrunk.binary_layers
    k0, k1 = (torch.tensor(k) for k in keep)
    assert torch.equal(b[0].weight, a[0].weight[k0])
    assert torch.equal(b[1].weight, a[1].weight[k1][:, k0])
    assert torch.equal(b[2].weight, a[2].weight[:, k1])
    assert torch.equal(b[0].bn.running_var, a[0].bn.running_var[k0])
    assert torch.equal(b[1].bn.bias, a[1].bn.bias[k1])
    assert b[2].gain.item() == a[2].gain.item() and torch.equal(b[2].bias, a[2].bias)
    # The first hidden layer computes the kept neurons' bits exactly as before.
    v = encode_batch(net.spec, x, net.conv_first)
    with torch.no_grad():
        before = net.binary_layers[0].normalise(net(v, until=a[0]))[:, k0]
        after = shrunk.binary_layers[0].normalise(shrunk(v, until=b[0]))
    torch.testing.assert_close(after, before)


# --- the budget rule ----------------------------------------------------------------------------------------

def _candidate(widths, lut4, connections, val, fits):
    return ShrinkCandidate(widths, val, val, {"lut4": lut4, "connections": connections, "first_layer": 0}, {}, fits)


def test_select_takes_the_smallest_lut4_within_the_budget():
    candidates = [_candidate((24,), 900, 300, 0.90, True), _candidate((16,), 700, 200, 0.89, True),
                  _candidate((12,), 650, 180, 0.80, False), _candidate((8,), 500, 100, 0.88, True)]
    assert select(candidates).widths == (8,)  # past a candidate beyond the budget
    assert select(candidates[:3]).widths == (16,)
    assert select([_candidate((16,), 700, 200, 0.85, True), _candidate((15,), 700, 190, 0.86, True)]).widths == (15,)
    assert select([c for c in candidates if not c.within_budget]) is None


def test_search_tries_every_width_and_exports_each_exactly(trained):
    net, config, data = trained
    calibration = data.x_train[:512]
    reference = exact_accuracy(net, data.x_val, data.y_val)
    order = []
    tried = search(net, config, data, calibration, [(24, 16), (16, 12), (4, 4)], epochs=1, reference=reference,
                   budget=0.05, threads=1, seed=0, announce=lambda w, s: order.append((w, s)))
    assert order == [((24, 16), 0.7), ((16, 12), 0.7), ((4, 4), 0.7)]  # bare widths: at the recipe's target
    assert [(c.widths, c.sparsity) for c in tried] == order
    assert [c.figures["connections"] for c in tried] == sorted((c.figures["connections"] for c in tried), reverse=True)
    for c in tried:
        assert [layer.weight.shape[0] for layer in c.net.binary_layers[:-1]] == list(c.widths)
        assert c.within_budget == (reference - c.val_accuracy <= 0.05 + 1e-12)
        assert c.val_accuracy == exact_accuracy(c.net, data.x_val, data.y_val)
        assert set(c.proof) == {"fc1", "fc2", "out"} and len(c.log) == 1
        model = to_model(c.net, fold(c.net, search=True), "c")
        x = data.x_test.reshape(len(data.x_test), -1)
        assert float((golden.infer(model, x).predictions == data.y_test).mean()) == c.test_accuracy
        assert model.connections == c.figures["connections"] and c.figures["lut4"] > 0
    assert not tried[-1].within_budget  # 4 neurons per layer: far below the budget


# --- the command ---------------------------------------------------------------------------------------------

def _run_command(checkpoint, tmp_path, *args):
    out = tmp_path / "shrunk.sbnn"
    code = main([str(checkpoint), "--budget", "0.03", "--calibration", "512", "--quiet", "--shrink",
                 *map(str, args), "-o", str(out)])
    assert code == 0
    return out, json.loads((tmp_path / "bitprune.json").read_text())


def test_command_exports_the_smallest_within_budget(checkpoint, tmp_path, digits, capsys):
    out, report = _run_command(checkpoint, tmp_path, "--widths", "24,0.5,4", "--shrink-epochs", "2")
    shrink = report["shrink"]
    candidates = shrink["candidates"]
    assert [c["widths"] for c in candidates] == [[24, 24], [16, 12], [4, 4]]
    reference = shrink["reference_val_accuracy"]
    assert reference == report["base"]["val_accuracy"]
    assert [c["within_budget"] for c in candidates] == [reference - c["val_accuracy"] <= 0.03 + 1e-12
                                                        for c in candidates]
    fits = [c for c in candidates if c["within_budget"]]
    assert fits, "the tiny net keeps 24 neurons per layer within 3 points"
    best = min(fits, key=lambda c: c["lut4"])
    assert shrink["selected"] == best["widths"] and report["exported"]["widths"] == best["widths"]
    assert report["exported"]["shrunk"] and report["exported"]["connections"] == best["connections"]
    assert report["exported"]["lut4"] == best["lut4"]
    model = load(out)
    assert [layer.mask.shape[0] for layer in model.layers[:-1]] == best["widths"]
    assert model.metadata["bitprune"]["shrink"]["widths"] == best["widths"]
    x = digits.x_test.reshape(len(digits.x_test), -1)
    assert float((golden.infer(model, x).predictions == digits.y_test).mean()) == best["test_accuracy"]
    # Reductions are counted against the unpruned model as trained, on the whole network.
    assert shrink["unpruned"]["widths"] == [32, 24] and shrink["unpruned"]["planes"] == [3, 2, 1, 0]
    assert shrink["unpruned"]["connections"] > shrink["start"]["connections"] >= best["connections"]
    markdown = (tmp_path / "bitprune.md").read_text()
    assert "## Shrinking" in markdown and "![accuracy against the LUT4 estimate](shrink.png)" in markdown
    assert (tmp_path / "shrink.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = markdown.split("## Shrinking")[1]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 2 + len(candidates)
    ratio = shrink["unpruned"]["lut4"] / best["lut4"]
    assert f"{ratio:.2f}x" in [cell.strip() for cell in rows[2 + candidates.index(best)].split("|")]
    assert "exported" in rows[2 + candidates.index(best)]
    printed = capsys.readouterr().out
    assert "Shrinking" in printed and f"hidden widths {','.join(map(str, best['widths']))}," in printed


def test_command_falls_back_to_the_planes_when_no_width_fits(checkpoint, tmp_path):
    out, report = _run_command(checkpoint, tmp_path, "--widths", "1", "--shrink-epochs", "0")
    shrink = report["shrink"]
    assert [c["widths"] for c in shrink["candidates"]] == [[1, 1]]
    assert not shrink["candidates"][0]["within_budget"] and shrink["selected"] is None
    assert not report["exported"]["shrunk"] and report["exported"]["widths"] == [32, 24]
    assert report["exported"]["connections"] == shrink["start"]["connections"]
    assert load(out).metadata["bitprune"]["shrink"]["widths"] is None


@pytest.mark.parametrize("args, message", [
    (["--shrink", "--widths", "12,x"], "option --widths: expected comma-separated widths (positive integers), "
                                       "shares in (0, 1) or per-layer widths (e.g. 64:128), found 'x'"),
    (["--shrink", "--widths", "12:8:4"], "option --widths: expected 2 per-layer widths (one per hidden layer, "
                                         "32:24), found 12:8:4"),
    (["--shrink", "--widths", "32,64"], "option --widths: expected at least one candidate smaller than the hidden "
                                        "widths 32,24, found none"),
    (["--widths", "16"], "option --widths: expected --shrink as well, found none"),
    (["--shrink-epochs", "2"], "option --shrink-epochs: expected --shrink as well, found none"),
    (["--shrink", "--shrink-epochs", "-1"], "option --shrink-epochs: expected a non-negative number, found -1"),
    (["--shrink", "--shrink-init", "random"], "option --shrink-init: expected kept or scratch, found 'random'"),
    (["--shrink-init", "scratch"], "option --shrink-init: expected --shrink as well, found none"),
    (["--shrink-sparsity", "0.9"], "option --shrink-sparsity: expected --shrink as well, found none"),
    (["--shrink", "--shrink-sparsity", "1"], "option --shrink-sparsity: expected comma-separated sparsity targets in "
                                             "(0, 1) (e.g. 0.95,0.985), found '1'"),
    (["--shrink", "--shrink-lr", "0"], "option --shrink-lr: expected a share of the checkpoint's learning rate in "
                                       "(0, 1], found 0.0"),
])
def test_errors_are_one_line(checkpoint, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main([str(checkpoint), *args, "-o", "x.sbnn"]) == 2
    assert capsys.readouterr().err.strip() == f"sbnn_hdl.bitprune: error: {message}"
    assert not (tmp_path / "x.sbnn").exists() and not (tmp_path / "bitprune.json").exists()


# --- CNNs: channels -----------------------------------------------------------------------------------------

CNN = dict(TINY, arch="cnn:6,p,8,fc8", epochs=8, train_limit=1024)


@pytest.fixture(scope="module")
def cnn_checkpoint(tmp_path_factory, digits):
    path = tmp_path_factory.mktemp("shrink_cnn") / "cnn.ckpt"
    train(Config(**CNN), checkpoint=path, progress=False, data=digits)
    return path


def test_with_widths_replaces_the_hidden_widths_in_order():
    assert with_widths("cnn:64,p,128,p,128,p,fc128", [48, 96, 80, 64]) == "cnn:48,p,96,p,80,p,fc64"
    assert with_widths("mlp:256,256", [192, 128]) == "mlp:192,128"
    with pytest.raises(ValueError, match=r"^expected 2 widths for 'cnn:6,p,fc8', found 3$"):
        with_widths("cnn:6,p,fc8", [1, 2, 3])


def test_channel_usage_is_over_samples_and_positions(cnn_checkpoint, digits):
    """A channel's rate of 1s is over the samples and the positions that the next layer reads
    (after the max-pool), and its outgoing connections are the next conv layer's 1-valued taps on
    it, or the dense layer's 1-valued weights on it at every position."""
    net, _, data, _ = load_net(cnn_checkpoint, threads=1, data=digits)
    x = data.x_train[:300]
    usage = neuron_usage(net, x)
    assert [len(u) for u in usage] == [6, 8, 8]
    v = encode_batch(net.spec, x, net.conv_first)
    conv1, conv2, fc1, out = net.binary_layers
    with torch.no_grad():
        bits1 = torch.nn.functional.max_pool2d((conv1.normalise(net(v, until=conv1)) >= 0).double(), 2)
        bits2 = (conv2.normalise(net(v, until=conv2)) >= 0).double()
    rate1, rate2 = bits1.mean((0, 2, 3)).numpy(), bits2.mean((0, 2, 3)).numpy()
    taps = (conv2.weight >= 0).sum((0, 2, 3)).numpy()
    positions = (fc1.weight >= 0).numpy().reshape(8, 4 * 4, 8).sum((0, 1))  # HWC order: channel fastest
    np.testing.assert_allclose(usage[0], taps * np.sqrt(rate1 * (1 - rate1)), rtol=1e-12)
    np.testing.assert_allclose(usage[1], positions * np.sqrt(rate2 * (1 - rate2)), rtol=1e-12)
    assert len(set(np.round(usage[1], 9))) > 3


def test_shrunk_cnn_keeps_the_channels_and_their_weights(cnn_checkpoint, digits):
    net, config, data, _ = load_net(cnn_checkpoint, threads=1, data=digits)
    x = data.x_train[:300]
    keep = [most_used(u, w) for u, w in zip(neuron_usage(net, x), (4, 5, 6))]
    shrunk, shrunk_config = shrink_net(net, config, data, keep)
    assert shrunk_config.arch == "cnn:4,p,5,fc6" and hidden_widths(shrunk) == [4, 5, 6]
    a, b = net.binary_layers, shrunk.binary_layers
    k0, k1, k2 = (torch.tensor(k) for k in keep)
    assert torch.equal(b[0].weight, a[0].weight[k0])
    assert torch.equal(b[1].weight, a[1].weight[k1][:, k0])  # [out, in, kh, kw]: kept outputs, kept inputs
    # The dense layer reads conv2's 4x4x8 map in HWC order: the kept channels' inputs at every position.
    assert torch.equal(b[2].weight, a[2].weight[k2].reshape(6, 16, 8)[:, :, k1].reshape(6, 16 * 5))
    assert torch.equal(b[3].weight, a[3].weight[:, k2])
    assert torch.equal(b[1].bn.running_mean, a[1].bn.running_mean[k1])
    # conv1 computes the kept channels' bits exactly as before, so conv2 reads exactly those.
    v = encode_batch(net.spec, x, net.conv_first)
    before, after = [], []
    with torch.no_grad():
        net(v, inputs=before)
        shrunk(v, inputs=after)
    assert torch.equal(after[1], before[1][:, k0])


def test_command_shrinks_a_cnn_exactly(cnn_checkpoint, tmp_path, digits):
    """A CNN's channels are shrunk like an MLP's neurons, and the exported model is the smaller CNN,
    exact on the test set through the golden model."""
    out, report = _run_command(cnn_checkpoint, tmp_path, "--widths", "0.5,4:6:8", "--shrink-epochs", "1",
                               "--budget", "0.6")  # any candidate fits: the smallest is exported
    shrink = report["shrink"]
    assert [c["widths"] for c in shrink["candidates"]] == [[4, 6, 8], [3, 4, 4]]
    assert shrink["unpruned"]["widths"] == [6, 8, 8]
    for c in shrink["candidates"]:
        assert c["lut4"] is not None and c["connections"] < shrink["unpruned"]["connections"]
    assert report["exported"]["shrunk"] and report["exported"]["widths"] == shrink["selected"] == [3, 4, 4]
    model = load(out)
    assert [layer.mask.shape[0] for layer in model.layers if layer.kind != "maxpool2d"] == [3, 4, 4, 10]
    assert model.layers[2].mask.shape[1] == 3 and model.layers[3].mask.shape[1] == 4 * 4 * 4
    tested = golden.infer(model, digits.x_test).predictions
    assert float((tested == digits.y_test).mean()) == report["exported"]["test_accuracy"]


def test_scratch_trains_the_recipe_anew(trained):
    """``init="scratch"``: each candidate is the recipe trained from fresh weights at its widths
    (the same net as training it directly), not the kept neurons."""
    from dataclasses import replace
    from sbnn_hdl.train.tune import calibrate
    net, config, data = trained
    calibration = data.x_train[:512]
    (c,) = search(net, config, data, calibration, [(16, 12)], epochs=2, reference=1.0, budget=0.0, threads=1, seed=3,
                  lr_share=0.5, init="scratch")
    assert c.kept == [] and len(c.log) == 2 and not c.within_budget
    direct, _, _ = train(replace(config, arch="mlp:16,12", epochs=2, lr=config.lr * 0.5, seed=3, threads=1),
                         data=data, progress=False)
    calibrate(direct, calibration)
    for (name, a), b in zip(direct.state_dict().items(), c.net.state_dict().values()):
        assert torch.equal(a, b), name
    kept, _ = shrink_net(net, config, data, [most_used(u, w) for u, w in zip(neuron_usage(net, calibration), (16, 12))])
    assert not torch.equal(kept.binary_layers[0].weight, c.net.binary_layers[0].weight)


def test_shrink_rate_is_a_share_of_the_checkpoints(checkpoint, tmp_path):
    """After a plane fine-tune (a tenth of the checkpoint's rate), the candidates still start at
    --shrink-lr of the checkpoint's rate."""
    _, report = _run_command(checkpoint, tmp_path, "--finetune", "1", "--widths", "16", "--shrink-epochs", "2",
                             "--shrink-lr", "0.5")
    lr = Config(**TINY).lr
    assert report["settings"]["shrink_lr"] == lr * 0.5
    steps = 512 // 64  # per epoch; the cosine's value at the first epoch's last step
    first = report["shrink"]["candidates"][0]["log"][0]["lr_end"]
    assert first == pytest.approx(lr * 0.5 * 0.5 * (1 + np.cos(np.pi * (steps - 1) / (2 * steps))), rel=1e-9)


# --- sparser candidates (--shrink-sparsity) ------------------------------------------------------------------

def test_shrink_candidates_pair_widths_with_targets():
    # The recipe's target alone: the widths as before.
    assert shrink_candidates([32, 24], [16, 8], None, 0.7) == [((16, 16), 0.7), ((8, 8), 0.7)]
    # Other targets: every width at each (lower target first), and the unshrunk widths at those.
    assert shrink_candidates([32, 24], [16], [0.9, 0.7, 0.9], 0.7) == [((32, 24), 0.9), ((16, 16), 0.7),
                                                                        ((16, 16), 0.9)]
    # A sparser net of the same widths is a candidate, so widths that are not smaller are no error.
    assert shrink_candidates([32, 24], [32], [0.8], 0.7) == [((32, 24), 0.8)]


@pytest.mark.parametrize("text, bad", [("1.0", "1.0"), ("0", "0"), ("x", "x"), ("0.9,", ""), ("95", "95")])
def test_parse_sparsities_refuses(text, bad):
    with pytest.raises(BitpruneError) as error:
        parse_sparsities(text)
    assert str(error.value) == (f"option --shrink-sparsity: expected comma-separated sparsity targets in (0, 1) "
                                f"(e.g. 0.95,0.985), found {bad!r}")


def test_command_tries_sparser_candidates(checkpoint, tmp_path, capsys):
    """Each candidate is fine-tuned toward its own target: the unshrunk widths at 90% have fewer
    connections than the plane-pruned start (the recipe's 70%), and the report says which target
    each candidate had."""
    out, report = _run_command(checkpoint, tmp_path, "--widths", "16", "--shrink-sparsity", "0.7,0.9",
                               "--shrink-epochs", "3")
    shrink = report["shrink"]
    pairs = [(c["widths"], c["sparsity"]) for c in shrink["candidates"]]
    assert pairs == [([32, 24], 0.9), ([16, 16], 0.7), ([16, 16], 0.9)]
    assert shrink["start"]["sparsity"] == shrink["unpruned"]["sparsity"] == 0.7
    full = shrink["candidates"][0]
    assert full["connections"] < 0.7 * shrink["start"]["connections"]  # 79% sparse or more, from 70%
    assert shrink["candidates"][2]["connections"] < shrink["candidates"][1]["connections"]
    assert report["settings"]["shrink_sparsity"] == [0.7, 0.9]
    table = (tmp_path / "bitprune.md").read_text().split("## Shrinking")[1]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [[cell.strip() for cell in r.split("|")][3:5] for r in rows] == [
        ["32,24", "70%"], ["32,24", "70%"], ["32,24", "90%"], ["16,16", "70%"], ["16,16", "90%"]]
    if shrink["selected"] is not None:
        chosen = [c for c in shrink["candidates"] if is_selected(c, shrink)]
        assert len(chosen) == 1 and "exported" in rows[2 + shrink["candidates"].index(chosen[0])]
        assert load(out).metadata["bitprune"]["shrink"]["sparsity"] == chosen[0]["sparsity"]
        assert report["exported"]["sparsity_target"] == chosen[0]["sparsity"]


def test_a_fixed_gamma_recipe_is_steered_by_the_ramp_at_other_targets(trained):
    """The paper's fixed gamma belongs to the recipe's target: a candidate at another target gets
    the ramp controller; one at the recipe's target keeps the recipe's controller and gamma."""
    from dataclasses import replace
    net, config, data = trained
    fixed = replace(config, controller="fixed", gamma=0.2, edge_budgets=False)
    same, other = search(net, fixed, data, data.x_train[:256], [((16, 12), 0.7), ((16, 12), 0.9)], epochs=0,
                         reference=1.0, budget=0.0, threads=1, seed=0)
    assert (same.config.controller, same.config.gamma, same.config.sparsity) == ("fixed", 0.2, 0.7)
    assert (other.config.controller, other.config.gamma, other.config.sparsity) == ("ramp", None, 0.9)

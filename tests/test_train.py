"""Training (sbnn_hdl.train) and the exact export (sbnn_hdl.export): quantizers, Eq. 15, Eq. 18,
tiny models trained on scikit-learn's digits and checked against the golden model, determinism,
resume, and the command-line error paths."""

import dataclasses
import hashlib
import json
import math
import pickle
import re
import subprocess
import sys
import warnings
from fractions import Fraction

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sbnn_hdl import datasets, golden, load  # noqa: E402
from sbnn_hdl.train.fold import ExportError, fold_hidden, fold_output, verify, Folded  # noqa: E402
from sbnn_hdl.train import controller, quant  # noqa: E402
from sbnn_hdl.train.loop import Config, TrainError, augment, export_model, load_net, train  # noqa: E402
from sbnn_hdl.train.nets import POOLS, SbnnNet, encode_batch, input_spec, parse_arch  # noqa: E402
from sbnn_hdl.train.teacher import TeacherConfig, load_teacher, save_teacher, teacher_input, train_teacher  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


# --- quantizers -------------------------------------------------------------------------------

def test_sign_of_zero_is_plus_one():
    x = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 2.0, -3.0])
    assert quant.sign(x).tolist() == [1, 1, 1, -1, 1, -1]
    assert quant.binary_sign(x, "irnet", 3.0).tolist() == [1, 1, 1, -1, 1, -1]


X = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]


@pytest.mark.parametrize("kind, t, expected", [
    ("ste", 1.0, [0, 1, 1, 1, 1, 1, 0]),
    ("approxsign", 1.0, [0, 0, 1, 2, 1, 0, 0]),
    ("irnet", 0.1, [10 * 0.1 * (1 - math.tanh(0.1 * x) ** 2) for x in X]),   # k = 1/t = 10
    ("irnet", 10.0, [1 * 10 * (1 - math.tanh(10 * x) ** 2) for x in X]),     # k = 1
])
def test_estimators_forward_and_backward(kind, t, expected):
    x = torch.tensor(X, requires_grad=True)
    y = quant.binary_sign(x, kind, t)
    assert y.tolist() == [-1, -1, -1, 1, 1, 1, 1]
    (y * torch.arange(1.0, 8.0)).sum().backward()  # the incoming gradient is multiplied through
    assert x.grad.tolist() == pytest.approx([e * w for e, w in zip(expected, range(1, 8))], rel=1e-3, abs=1e-6)


def test_ir_net_schedule():
    assert quant.ir_net_t(0) == pytest.approx(0.1)
    assert quant.ir_net_t(0.5) == pytest.approx(1.0)
    assert quant.ir_net_t(1) == pytest.approx(10.0)


def test_symmetric_domain_is_xnor_scaling():
    w = torch.tensor([0.3, -0.1, 0.2, -0.6])
    tau, phi = quant.domain_params("symmetric", w)
    assert float(tau) == pytest.approx(0.3) and float(phi) == 0


@pytest.mark.parametrize("seed", range(5))
def test_eq15_is_the_least_squares_optimum(seed):
    w = torch.from_numpy(np.random.default_rng(seed).normal(0.1 * seed, 0.5, 257).astype(np.float32))
    tau, phi = quant.closed_form(w)
    plus, minus = w[w >= 0], w[w < 0]
    # The optimum puts beta = tau + phi at the mean of the +1 class, alpha = phi - tau at the mean of the -1 class.
    assert float(tau + phi) == pytest.approx(float(plus.mean()), abs=1e-5)
    assert float(phi - tau) == pytest.approx(float(minus.mean()), abs=1e-5)
    design = np.stack([quant.sign(w).numpy(), np.ones(len(w))], axis=1).astype(np.float64)
    (tau_ls, phi_ls), *_ = np.linalg.lstsq(design, w.numpy().astype(np.float64), rcond=None)
    assert (float(tau), float(phi)) == pytest.approx((tau_ls, phi_ls), abs=1e-5)


def test_eq15_with_one_sign_class():
    tau, phi = quant.closed_form(torch.tensor([0.5, 0.25, 0.75]))
    assert float(tau + phi) == pytest.approx(0.5)


def test_learned_domain_trains_tau_and_phi():
    tau, phi = torch.ones((), requires_grad=True), torch.zeros((), requires_grad=True)
    w = torch.tensor([0.5, -0.5, 0.1])
    t, p = quant.domain_params("learned", w, tau, phi)
    (t * quant.sign(w) + p).sum().backward()
    assert tau.grad == 1 and phi.grad == 3


def test_eq16_penalty_and_its_gradient():
    w = torch.tensor([0.5, -0.5, 0.2, -0.1, 2.0], requires_grad=True)
    wbar = quant.binary_sign(w, "ste")
    j = quant.sparsity_penalty([wbar], target_sparsity=0.8)
    assert float(j.detach()) == pytest.approx(3 / 5 - 0.2)
    j.backward()
    assert w.grad.tolist() == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.0])  # 1/(2N) inside the clip
    assert float(quant.sparsity_penalty([wbar.detach()], target_sparsity=0.3)) == 0


@pytest.mark.parametrize("gamma", [0.1, 0.2, 0.6])
def test_eq18_lambda(gamma):
    task, j = torch.tensor(1.7), torch.tensor(0.05)
    lam = quant.eq18_lambda(task, j, gamma)
    assert lam == pytest.approx(gamma * 1.7 / (0.05 * (1 - gamma)))
    assert lam * 0.05 / (1.7 + lam * 0.05) == pytest.approx(gamma)  # lambda*j is the share gamma of the total
    assert quant.eq18_lambda(task, torch.tensor(0.0), gamma) == 0
    # Near the target, j is floored at 1%: lambda stays finite.
    assert quant.eq18_lambda(task, torch.tensor(1e-9), gamma) == pytest.approx(gamma * 1.7 / (0.01 * (1 - gamma)))


def test_arch_strings():
    assert parse_arch("mlp:256,256") == ("mlp", [("fc", 256), ("fc", 256)])
    assert parse_arch("cnn:8,p,16,p,fc32") == ("cnn", [("conv", 8), ("pool", 2), ("conv", 16), ("pool", 2),
                                                       ("fc", 32)])
    for bad in ("mlp", "mlp:0", "cnn:p,8", "cnn:8,fc8,p", "rnn:3"):
        with pytest.raises(ValueError, match="expected"):
            parse_arch(bad)


# --- folding ------------------------------------------------------------------------------------

def _hidden(rows, *, tau, phi, mean, var, gamma, beta, max_value=1, step=1):
    mask = np.array(rows, np.uint8)
    k, ratio, a, b, t, exact = fold_hidden("fc", tau, phi, max_value, mean, var, 0.0, gamma, beta)
    return Folded("fc", "dense", mask, a, b, t, False, max_value, step, ratio, k, exact)


def _real_fires(rows, x, *, tau, phi, mean, var, gamma, beta):
    # The real-valued neuron, in exact rational arithmetic (var + eps = 1 here, so sd = 1).
    out = []
    for row, m, g, bb in zip(rows, mean, gamma, beta):
        z = sum((Fraction(tau) * (1 if r else -1) + Fraction(phi)) * v for r, v in zip(row, x))
        out.append(Fraction(g) * (z - Fraction(m)) + Fraction(bb) >= 0)
    return out


def test_fold_ties_and_negative_batch_norm_scale():
    rows = [[1, 1, 0, 0, 1], [0, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    params = dict(tau=0.5, phi=-0.25, mean=[0.25, -0.5, 0.75, 0.0], var=[1.0] * 4,
                  gamma=[2.0, -1.0, 0.5, 0.0], beta=[0.0, 0.0, 0.0, -1.0])
    layer = _hidden(rows, **params)
    assert layer.ratio == (4, -3)  # k = (phi - tau)/(2 tau) = -3/4, exact
    stats = verify([layer])
    assert stats["layers"]["fc"]["points_enumerated"] > 0
    ties = 0
    for bits in range(32):
        x = [(bits >> i) & 1 for i in range(5)]
        p = np.array(rows) @ x
        acc = layer.a * p + layer.b * sum(x)
        real = _real_fires(rows, x, **params)
        assert list(acc >= layer.t) == real, x
        ties += any(Fraction(g) * (sum((Fraction(0.5) * (1 if r else -1) - Fraction(0.25)) * v
                                       for r, v in zip(row, x)) - Fraction(m)) == 0
                    for row, m, g in zip(rows, params["mean"], params["gamma"][:3]))
    assert ties  # some inputs sit exactly on a boundary: they fire (sign(0) = +1) in both forms
    assert layer.a[1] < 0  # negative batch-norm scale: the comparison is flipped
    assert (layer.a[3], layer.b[3], layer.t[3]) == (0, 0, 1)  # gamma = 0, beta < 0: never fires


def test_verify_catches_a_wrong_threshold():
    layer = _hidden([[1, 0, 1, 1]], tau=0.5, phi=-0.25, mean=[0.25], var=[1.0], gamma=[2.0], beta=[0.0])
    layer.t = layer.t + 1
    with pytest.raises(ExportError, match="neuron 0: expected the integer comparison"):
        verify([layer])


def test_fold_output_orders_classes_as_the_real_scores():
    k, ratio, a, b, t, o, s = fold_output("out", 0.3, 0.05, 1, 1.5, 4.0, 0.0, -0.7, [0.1, -0.2, 0.3])
    assert s == -1 and (a < 0).all() and len(set(a)) == 1 and len(set(b)) == 1
    layer = Folded("out", "dense", np.ones((3, 6), np.uint8), a, b, t, True, 1, 1, ratio, k, o, s)
    assert verify([layer])["layers"]["out"]["pair_points"] > 0


# --- tiny models, end to end ----------------------------------------------------------------------

TINY = dict(data="digits", epochs=2, batch_size=64, train_limit=512, seed=3, threads=1)


@pytest.mark.parametrize("arch, encoding, planes, domain, ste, pad, pool", [
    ("mlp:32", "integer", [3, 2], "learned", "ste", 0, "values"),
    ("mlp:32,16", "bitplanes", [3, 2, 1], "closed-form", "irnet", 0, "values"),
    ("cnn:4,p,fc16", "bitplanes", [3, 2], "symmetric", "approxsign", 0, "values"),
    ("cnn:4,p", "integer", [3], "learned", "ste", 1, "values"),
    ("cnn:4,p,4,p", "integer", [3, 2], "learned", "ste", 0, "bits"),
])
def test_tiny_model_exports_exactly(tmp_path, digits, arch, encoding, planes, domain, ste, pad, pool):
    config = Config(arch=arch, encoding=encoding, planes=planes, domain=domain, ste=ste, sparsity=0.7,
                    pad_value=pad, pool=pool, **TINY)
    net, data, log = train(config, progress=False, data=digits)
    assert len(log) == 2 and 0 <= log[-1]["val_accuracy"] <= 1
    path = tmp_path / "tiny.sbnn"
    model, report = export_model(net, data, config, log, path)  # raises on any disagreement
    loaded = load(path)
    assert loaded == model
    meta = loaded.metadata
    assert meta["dataset"] == "digits" and meta["domain"] == domain and meta["seed"] == 3
    assert meta.get("pool") == (pool if ",p" in arch else None)
    assert set(meta["versions"]) == {"sbnn_hdl", "torch", "numpy", "python"}
    x = data.x_test.reshape(len(data.x_test), *model.input.shape)
    accuracy = float((golden.infer(loaded, x).predictions == data.y_test).mean())
    assert accuracy == report["accuracy"] == pytest.approx(meta["test_accuracy"], abs=1e-6)
    if domain == "learned" and arch.startswith("mlp"):
        assert accuracy > 0.5  # 16 steps on 512 images: well above chance (10%)
    assert report["proof"]["layers"]


def test_same_seed_same_model(tmp_path, digits):
    config = dict(arch="mlp:24", sparsity=0.8, **TINY)
    paths = []
    for i in range(2):
        net, data, log = train(Config(**config), progress=False, data=digits)
        paths.append(tmp_path / f"m{i}.sbnn")
        export_model(net, data, Config(**config), log, paths[-1])
    assert paths[0].read_bytes() == paths[1].read_bytes()
    net, *_ = train(Config(**{**config, "seed": 4}), progress=False, data=digits)
    assert not torch.equal(net.binary_layers[0].weight, train(Config(**config), progress=False, data=digits)[0]
                           .binary_layers[0].weight)


@pytest.mark.parametrize("arch, controller_mode", [("mlp:24", "ramp"), ("cnn:4,p,fc16", "ramp"),
                                                   ("mlp:24", "fixed")])
def test_resume_continues_exactly(tmp_path, digits, arch, controller_mode):
    # The ramp ends half-way through epoch 2: the resumed epoch 3 runs on the feedback's saved state.
    config = dict(arch=arch, sparsity=0.8, mixup=0.4, controller=controller_mode, **{**TINY, "epochs": 3})
    straight, _, log = train(Config(**config), progress=False, data=digits)
    ckpt = tmp_path / "run.ckpt"
    train(Config(**config), checkpoint=ckpt, progress=False, data=digits, stop_after=2)
    resumed, _, log2 = train(Config(**config), checkpoint=ckpt, resume=True, progress=False, data=digits)
    assert [e["epoch"] for e in log2] == [1, 2, 3]
    for x, y in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(x, y)
    assert log2[-1]["groups"] == log[-1]["groups"]  # the controller's pushes and lambdas too
    with pytest.raises(Exception, match="expected the settings of this run"):
        train(Config(**{**config, "seed": 9}), checkpoint=ckpt, resume=True, progress=False, data=digits)
    # Tensors and plain data only: the safe loader (weights_only=True) reads it.
    state = torch.load(ckpt, weights_only=True)
    assert sorted(state) == ["config", "controller", "epoch", "log", "model", "optimizer"]
    assert sorted(state["controller"]) == ["ms", "push", "start"]
    assert state["config"] == {**config, **{k: v for k, v in state["config"].items() if k not in config}}
    assert state["epoch"] == 2 and [e["epoch"] for e in state["log"]] == [1, 2, 3]  # as the resumed run ended


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory, digits):
    """A real-valued cnn:8,p,fc32 teacher trained on digits for 3 epochs, and its test accuracy."""
    path = tmp_path_factory.mktemp("teacher") / "t.pt"
    config = TeacherConfig(data="digits", arch="cnn:8,p,fc32", epochs=3, batch_size=64, seed=1, threads=1)
    net, data, log = train_teacher(config, data=digits, progress=False)
    return path, save_teacher(path, net, config, data, log)


def test_teacher_trains_and_loads(teacher_file, digits):
    path, accuracy = teacher_file
    assert accuracy > 0.8  # a real-valued CNN on 8x8 digits, 3 epochs
    net, info = load_teacher(path, digits)
    assert info["test_accuracy"] == accuracy and info["arch"] == "cnn:8,p,fc32" and len(info["sha256"]) == 64
    x = digits.x_test.reshape(len(digits.x_test), *digits.image_shape)
    predictions = net(teacher_input(net, x, digits.bits)).argmax(1).numpy()
    assert (predictions == digits.y_test).mean() == pytest.approx(accuracy)
    assert sorted(torch.load(path, weights_only=True)) == ["classes", "config", "data", "image_shape", "kind",
                                                           "log", "model", "test_accuracy"]


def test_distillation_shapes_the_student(tmp_path, teacher_file, digits):
    """With the teacher's term at weight 0 the student is the one trained without a teacher, weight
    for weight; at 0.7 it differs. Either way the export is exact, and the model's metadata names
    the teacher."""
    path, accuracy = teacher_file
    config = dict(arch="cnn:4,p,fc16", sparsity=0.8, **TINY)
    plain = train(Config(**config), progress=False, data=digits)[0]
    muted = train(Config(**config, teacher=str(path), distill=0.0), progress=False, data=digits)[0]
    for x, y in zip(plain.state_dict().values(), muted.state_dict().values()):
        assert torch.equal(x, y)
    distilled = Config(**config, teacher=str(path), distill=0.7, temperature=3.0, mixup=0.3)
    net, data, log = train(distilled, progress=False, data=digits)
    assert not torch.equal(net.binary_layers[0].weight, plain.binary_layers[0].weight)
    export_model(net, data, distilled, log, tmp_path / "d.sbnn")  # raises unless exact on the whole test set
    meta = load(tmp_path / "d.sbnn").metadata["distillation"]
    assert meta["weight"] == 0.7 and meta["temperature"] == 3.0 and meta["test_accuracy"] == accuracy
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_distilled_run_resumes_exactly(tmp_path, teacher_file, digits):
    config = dict(arch="mlp:24", sparsity=0.8, teacher=str(teacher_file[0]), **{**TINY, "epochs": 3})
    straight = train(Config(**config), progress=False, data=digits)[0]
    ckpt = tmp_path / "run.ckpt"
    train(Config(**config), checkpoint=ckpt, progress=False, data=digits, stop_after=2)
    resumed = train(Config(**config), checkpoint=ckpt, resume=True, progress=False, data=digits)[0]
    for x, y in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(x, y)


def test_teacher_refusals(tmp_path, teacher_file, digits):
    path = str(teacher_file[0])
    other = dataclasses.replace(digits, name="mnist5k")
    with pytest.raises(TrainError, match=re.escape(
            f"teacher {path!r}: expected a teacher of mnist5k (10 classes of 8x8x1 images), found one of digits "
            f"(10 classes of 8x8x1 images)")):
        load_teacher(path, other)
    ckpt = tmp_path / "s.ckpt"
    train(Config(arch="mlp:8", **{**TINY, "epochs": 1}), checkpoint=ckpt, progress=False, data=digits)
    with pytest.raises(TrainError, match=re.escape(
            f"teacher {str(ckpt)!r}: expected a teacher written by python -m sbnn_hdl.train.teacher, "
            f"found a student checkpoint")):
        load_teacher(str(ckpt), digits)
    with pytest.raises(TrainError, match="option --distill: expected a share in \\[0, 1\\], found 1.5"):
        train(Config(arch="mlp:8", teacher=path, distill=1.5, **TINY), progress=False, data=digits)


def test_checkpoint_from_before_the_controller(tmp_path, digits):
    """A checkpoint written before the controller existed (no controller settings or state) was a
    fixed-gamma run with one budget: it loads as one, and resumes as one, exactly."""
    config = dict(arch="cnn:4,p,fc16", sparsity=0.8, controller="fixed", **{**TINY, "epochs": 3})
    straight, *_ = train(Config(**config), progress=False, data=digits)
    ckpt = tmp_path / "old.ckpt"
    train(Config(**config), checkpoint=ckpt, progress=False, data=digits, stop_after=2)
    state = torch.load(ckpt, weights_only=True)
    new = ("controller", "ramp", "ramp_shape", "layer_sparsity", "edge_budgets")
    state["config"] = {k: v for k, v in state["config"].items() if k not in new}
    del state["controller"]
    torch.save(state, ckpt)
    assert load_net(ckpt, data=digits)[1].controller == "fixed"
    with pytest.raises(TrainError, match="differing: gamma 0.2, here None; controller 'fixed', here 'ramp'; "
                                         "edge_budgets False, here True"):  # today's default is the ramp
        train(Config(**{**config, "controller": "ramp"}), checkpoint=ckpt, resume=True, progress=False, data=digits)
    resumed, *_ = train(Config(**config), checkpoint=ckpt, resume=True, progress=False, data=digits)
    for x, y in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(x, y)


def test_pooling_the_values_gives_the_bits_of_pooling_the_bits():
    """``pool="values"`` (the default) max-pools the normalised values before the sign: the same
    forward pass as OR-pooling the bits, with the gradient sent to each window's largest value."""
    torch.manual_seed(0)
    spec = input_spec("cnn", (8, 8, 1), 4, "integer", [3, 2])
    nets = [SbnnNet(spec, "cnn:6,p,5,p,p,fc8", 3, pool=pool) for pool in POOLS]
    nets[1].load_state_dict(nets[0].state_dict())
    v = torch.randint(0, 4, (16, 1, 8, 8)).float()
    trained, evaluated, grads = [], [], []
    for net in nets:
        net.train()
        scores = net(v)
        scores.square().sum().backward()
        trained.append(scores.detach())
        grads.append(net.binary_layers[0].weight.grad.clone())
        net.eval()
        with torch.no_grad():
            evaluated.append(net(v))
    assert torch.equal(trained[0], trained[1]) and torch.equal(evaluated[0], evaluated[1])
    assert not torch.equal(grads[0], grads[1])
    with pytest.raises(ValueError, match="expected pool values or bits, found 'avg'"):
        SbnnNet(spec, "cnn:6,p", 3, pool="avg")


def test_checkpoint_from_before_the_pool_option_pooled_the_bits(tmp_path, digits):
    config = dict(arch="cnn:4,p,fc16", sparsity=0.8, pool="bits", **{**TINY, "epochs": 3})
    straight, *_ = train(Config(**config), progress=False, data=digits)
    ckpt = tmp_path / "old.ckpt"
    train(Config(**config), checkpoint=ckpt, progress=False, data=digits, stop_after=2)
    state = torch.load(ckpt, weights_only=True)
    del state["config"]["pool"]
    torch.save(state, ckpt)
    assert load_net(ckpt, data=digits)[1].pool == "bits"
    with pytest.raises(TrainError, match="differing: pool 'bits', here 'values'"):
        train(Config(**{**config, "pool": "values"}), checkpoint=ckpt, resume=True, progress=False, data=digits)
    resumed, *_ = train(Config(**config), checkpoint=ckpt, resume=True, progress=False, data=digits)
    for x, y in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(x, y)


def test_augment_shifts_and_flips_whole_images():
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4, 1) + 1
    shifted = augment(x, np.random.default_rng(0), shift=1)
    for image, moved in zip(x[..., 0], shifted[..., 0]):
        # Some offset in [-1, 1] on each axis maps the image onto the result, zeros moved in.
        padded = np.pad(image, 1)
        assert any(np.array_equal(padded[1 + dy:4 + dy, 1 + dx:5 + dx], moved)
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    flipped = augment(x, np.random.default_rng(1), flip=True)
    assert all(np.array_equal(f, i) or np.array_equal(f, i[:, ::-1]) for f, i in zip(flipped, x))
    many = augment(np.repeat(x[:1], 64, axis=0), np.random.default_rng(2), shift=2, flip=True)
    assert len({m.tobytes() for m in many}) > 10  # the draws differ from image to image
    assert augment(x, np.random.default_rng(0)) is x


def test_augmented_training_exports_exactly(tmp_path, digits):
    config = Config(arch="mlp:16", sparsity=0.7, shift=1, flip=True, **TINY)
    net, data, log = train(config, progress=False, data=digits)
    model, report = export_model(net, data, config, log, tmp_path / "a.sbnn")  # raises on any mismatch
    assert np.mean(golden.infer(load(tmp_path / "a.sbnn"), data.x_test.reshape(len(data.x_test), -1)).predictions
                   == data.y_test) == \
        report["accuracy"]
    straight, *_ = train(Config(arch="mlp:16", sparsity=0.7, **TINY), progress=False, data=digits)
    assert not torch.equal(net.binary_layers[0].weight, straight.binary_layers[0].weight)


# --- the sparsity controller ---------------------------------------------------------------------

def test_budgets_solve_the_rest_so_the_total_is_the_target():
    layers = [("conv1", 288), ("conv2", 4608), ("conv3", 9216), ("out", 2880)]
    groups = controller.budgets(layers, 0.9)
    assert [(name, members) for name, members, _ in groups] == [("conv1", ["conv1"]), ("out", ["out"]),
                                                                 ("rest", ["conv2", "conv3"])]
    targets = {name: target for name, _, target in groups}
    d, middle = 0.1, 4608 + 9216
    # The default rule: D + min(sqrt(D) - D, D*R/(4*N_e)).
    assert 1 - targets["conv1"] == pytest.approx(math.sqrt(d))  # small: the sqrt(D) term
    assert 1 - targets["out"] == pytest.approx(d + d * middle / (4 * 2880))  # the quarter-of-the-middle cap
    zeros = sum(targets[name if name in targets else "rest"] * n for name, n in layers)
    assert zeros / sum(n for _, n in layers) == pytest.approx(0.9)
    # An override wins over the rule, and the rest is solved again.
    groups = controller.budgets(layers, 0.9, {"out": 0.95, "conv2": 0.8})
    targets = {name: target for name, _, target in groups}
    assert targets["out"] == 0.95 and targets["conv2"] == 0.8 and [m for n, m, _ in groups if n == "rest"] == [["conv3"]]
    zeros = sum(targets.get(name, targets["rest"]) * n for name, n in layers)
    assert zeros / sum(n for _, n in layers) == pytest.approx(0.9)


def test_budgets_rule_spares_big_first_layers_and_two_layer_nets():
    mlp = [("fc1", 802816), ("fc2", 65536), ("out", 2560)]
    assert [name for name, _, _ in controller.budgets(mlp, 0.95)] == ["out", "rest"]  # fc1 holds most weights
    assert controller.budgets([("fc1", 1000), ("out", 100)], 0.9) == [("all", ["fc1", "out"], 0.9)]
    assert controller.budgets(mlp, 0.95, edges=False) == [("all", ["fc1", "fc2", "out"], 0.95)]
    # Overrides on every layer but the rule's: the rule yields, those layers take the rest.
    groups = controller.budgets([("conv1", 288), ("conv2", 4608), ("out", 2880)], 0.9, {"conv2": 0.92})
    assert [(name, members) for name, members, _ in groups] == [("conv2", ["conv2"]), ("rest", ["conv1", "out"])]


@pytest.mark.parametrize("overrides, message", [
    ({"conv9": 0.5}, "expected a layer name of this network (conv1, conv2, out), found 'conv9'"),
    ({"conv2": 0.5}, "expected budgets that leave the other layers (conv1, out) a target strictly between 0 and 1 "
                     "for a total of 0.9, found 1.4818"),
    ({"conv1": 0.9, "conv2": 0.9, "out": 0.8},
     "expected a layer without a budget of its own to take the rest of the global 0.9, found every layer listed "
     "(their budgets give 0.8630)"),
])
def test_budgets_that_cannot_be_met(overrides, message):
    with pytest.raises(controller.BudgetError) as error:
        controller.budgets([("conv1", 288), ("conv2", 4608), ("out", 2880)], 0.9, overrides)
    assert str(error.value) == message


def test_ramp_schedule():
    ramp = controller.SparsityController([("all", [0], 0.99)], [1000], mode="ramp", gamma=None, ramp=0.5,
                                         shape="cosine", total_steps=100)
    ramp.start_from([(500, 1000)])
    steps = [ramp.scheduled("all", 0.99, step) for step in range(100)]
    assert steps[0] == pytest.approx(0.5, abs=0.005) and steps[49] == steps[-1] == pytest.approx(0.99)
    assert all(a < b for a, b in zip(steps[:50], steps[1:50]))
    # Geometric in density: half-way along the cosine, the density is the geometric mean.
    assert 1 - steps[24] == pytest.approx(math.sqrt(0.5 * 0.01))
    fixed = controller.SparsityController([("all", [0], 0.99)], [1000], mode="fixed", gamma=0.5, ramp=0.5,
                                          shape="cosine", total_steps=100)
    assert {fixed.scheduled("all", 0.99, step) for step in range(100)} == {0.99}
    assert controller.ramp_share(0.25, "linear") == 0.25 and controller.ramp_share(2, "cosine") == 1


def test_fixed_controller_is_the_papers_regulariser():
    """One budget, fixed gamma: the term is Eq. 18's lambda times Eq. 16's j, as before the controller."""
    w = torch.tensor([[0.5, -0.5, 0.2], [-0.1, 2.0, 0.3]], requires_grad=True)
    task = torch.tensor(1.3)
    fixed = controller.SparsityController([("all", [0, 1], 0.7)], [3, 3], mode="fixed", gamma=0.2, ramp=0.5,
                                          shape="cosine", total_steps=10)
    wbars = [quant.binary_sign(w[0], "ste"), quant.binary_sign(w[1], "ste")]
    term, used = fixed.penalty(task, wbars, 0)
    j = quant.sparsity_penalty(wbars, 0.7)
    lam = quant.eq18_lambda(task, j, 0.2)
    assert float(term.detach()) == float(lam * j.detach()) and used == {"all": lam}
    config = Config(data="digits", controller="fixed", sparsity=0.7)
    config.check(4)
    assert config.gamma == 0.2 and config.edge_budgets is False


def test_ramp_controller_pushes_by_the_task_gradient():
    """A group behind its schedule gets kappa * sigma on every weight, sigma the RMS of the task's
    gradient over the group; the feedback raises kappa while behind and lowers it while ahead."""
    ramp = controller.SparsityController([("all", [0], 0.5)], [4], mode="ramp", gamma=None, ramp=0.0,
                                         shape="cosine", total_steps=10)
    ramp.start_from([(2, 4)])
    w = torch.tensor([0.5, 0.4, 0.3, -0.2], requires_grad=True)
    term, used = ramp.penalty(torch.tensor(1.0), [quant.binary_sign(w, "ste")], 0)
    assert term == 0.0 and used == {"all": 0.0}  # no sigma yet: no push at the first step
    assert ramp.push["all"] == pytest.approx(controller.PUSH_START * math.exp(controller.FEEDBACK_RATE))
    ramp.observe([torch.tensor([0.3, -0.4, 0.0, 0.0])])  # task gradient RMS 0.25
    kappa = ramp.push["all"]
    term, used = ramp.penalty(torch.tensor(1.0), [quant.binary_sign(w, "ste")], 1)
    term.backward()
    assert w.grad.tolist() == pytest.approx([kappa * 0.25] * 4)
    ramp.observe([w.grad + torch.tensor([0.3, -0.4, 0.0, 0.0])])  # the push is taken out again
    assert ramp.ms[0] == pytest.approx(0.25 ** 2)
    w2 = torch.tensor([-0.5, -0.4, -0.3, 0.2])  # ahead: no push, kappa shrinks
    before = ramp.push["all"]
    assert ramp.penalty(torch.tensor(1.0), [quant.sign(w2)], 2) == (0.0, {"all": 0.0})
    assert ramp.push["all"] == pytest.approx(before * math.exp(-controller.FEEDBACK_RATE * controller.FEEDBACK_DOWN))


DIGITS = dict(data="digits", epochs=4, batch_size=64, seed=3, threads=1)  # the whole training split: 84 steps


@pytest.mark.parametrize("arch", ["mlp:64,32", "cnn:8,p,16,p,fc32"])
@pytest.mark.parametrize("target", [0.5, 0.95])
def test_ramp_controller_reaches_the_target(digits, arch, target):
    net, _, log = train(Config(arch=arch, sparsity=target, **DIGITS), progress=False, data=digits)
    last = log[-1]
    # Eq. 16 is one-sided: a net that is sparser on its own is not pushed back (at 50% some are).
    assert target - 0.02 <= last["sparsity"] <= max(target + 0.02, log[0]["sparsity"])
    assert last["target"] == pytest.approx(target)  # the ramp is over, the groups' targets add up to it
    for name, group in last["groups"].items():
        assert group["sparsity"] >= group["target"] - 0.02, name
    for entry in log:  # no layer emptied at any point: the budget never asks for it
        assert all(figures["sparsity"] < 1 for figures in entry["layers"].values()), entry["epoch"]
        assert entry["target"] <= target + 1e-9 and 0 <= entry["gamma"] < 1
        assert set(entry["groups"]["rest"]) == {"layers", "target", "scheduled", "sparsity", "lambda", "push"}
    assert [e["target"] for e in log] == sorted(e["target"] for e in log)


def test_per_layer_budgets_are_met(digits):
    # The run this test was written on pooled the bits. On other seeds conv1 overshoots its 0.6
    # in these 4 epochs past the tolerance either way (seeds 0 to 3: 0.604 to 0.715 pooling the
    # bits, 0.622 to 0.677 pooling the values): the controller only pushes toward sparsity, so a
    # small layer in a short run can land above its target.
    config = Config(arch="cnn:8,p,16,p,fc32", sparsity=0.9, layer_sparsity={"conv1": 0.6, "fc1": 0.95},
                    pool="bits", **DIGITS)
    net, _, log = train(config, progress=False, data=digits)
    groups = log[-1]["groups"]
    assert {name: group["layers"] for name, group in groups.items()} == {
        "conv1": ["conv1"], "fc1": ["fc1"], "out": ["out"], "rest": ["conv2"]}  # out: the default rule
    assert groups["conv1"]["target"] == 0.6 and groups["fc1"]["target"] == 0.95
    for name, group in groups.items():
        assert group["target"] - 0.02 <= group["sparsity"] <= group["target"] + 0.03, name
    assert log[-1]["sparsity"] == pytest.approx(0.9, abs=0.02)
    # The log's kernel shares are those of the weights' signs.
    mask = net.binary_layers[1].weight >= 0
    hamming = mask.sum(dim=(2, 3))
    figures = log[-1]["layers"]["conv2"]
    assert figures["k0"] == float((hamming == 0).float().mean()) and figures["k1"] == float((hamming == 1).float().mean())
    assert figures["k0"] + figures["k1"] + figures["k2plus"] == pytest.approx(1)
    assert "k0" not in log[-1]["layers"]["fc1"]


def test_controller_settings_are_checked():
    with pytest.raises(TrainError, match=r"^option --gamma: expected --controller fixed as well \(the ramp controller "
                                         r"sets its push by feedback\), found --controller ramp$"):
        Config(data="digits", sparsity=0.9, gamma=0.3).check(4)
    with pytest.raises(TrainError, match=r"^option --layer-sparsity: expected --sparsity as well"):
        Config(data="digits", layer_sparsity={"fc1": 0.5}).check(4)
    with pytest.raises(TrainError, match=r"^option --ramp: expected a share of the steps in \[0, 1\], found 1.5$"):
        Config(data="digits", sparsity=0.9, ramp=1.5).check(4)


# --- command line -----------------------------------------------------------------------------------

def _run(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True)


def test_train_and_export_cli(tmp_path):
    out = tmp_path / "d.sbnn"
    r = _run("sbnn_hdl.train", "--data", "digits", "--arch", "mlp:16", "--sparsity", "0.75", "--epochs", "1",
             "--train-limit", "256", "--quiet", "--threads", "1", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "PyTorch and golden agree on every prediction and score" in r.stdout
    assert (tmp_path / "d.log.json").exists() and (tmp_path / "d.ckpt").exists()
    meta = load(out).metadata
    assert meta["command"].startswith("python -m sbnn_hdl.train --data digits")
    r = _run("sbnn_hdl.export", str(tmp_path / "d.ckpt"), "-o", str(tmp_path / "again.sbnn"))
    assert r.returncode == 0, r.stderr
    assert load(tmp_path / "again.sbnn").layers == load(out).layers


@pytest.mark.parametrize("args, message", [
    (["sbnn_hdl.train", "--data", "digits", "--arch", "mlp:0", "-o", "x.sbnn"],
     "sbnn_hdl.train: error: option --arch: expected layer widths in 'mlp:0', found '0'"),
    (["sbnn_hdl.train", "--data", "digits", "--sparsity", "1.5", "-o", "x.sbnn"],
     "sbnn_hdl.train: error: option --sparsity: expected a share strictly between 0 and 1, found 1.5"),
    (["sbnn_hdl.train", "--data", "digits", "--planes", "3,9", "-o", "x.sbnn"],
     "sbnn_hdl.train: error: option --planes: expected distinct plane numbers in [0, 4), found [3, 9]"),
    (["sbnn_hdl.train", "--data", "digits", "-o", "nowhere/x.sbnn"],
     "sbnn_hdl.train: error: output 'nowhere/x.sbnn': expected an existing folder '{tmp}/nowhere', found none"),
    (["sbnn_hdl.train", "--data", "digits", "--shift", "-1", "-o", "x.sbnn"],
     "sbnn_hdl.train: error: option --shift: expected a number of pixels, 0 or more, found -1"),
    (["sbnn_hdl.train", "--data", "digits", "--arch", "mlp:16,8", "--sparsity", "0.9", "--layer-sparsity", "fc1=0.8",
      "--layer-sparsity", "conv1=0.5", "--threads", "1", "-o", "x.sbnn"],
     "sbnn_hdl.train: error: option --layer-sparsity: expected a layer name of this network (fc1, fc2, out), "
     "found 'conv1'"),
    (["sbnn_hdl.train", "--data", "digits", "--sparsity", "0.9", "--layer-sparsity", "fc1:0.5", "-o", "x.sbnn"],
     "sbnn_hdl.train: error: option --layer-sparsity: expected NAME=VALUE such as conv1=0.5, found 'fc1:0.5'"),
    (["sbnn_hdl.train", "--data", "digits", "--teacher", "none.pt", "-o", "x.sbnn"],
     "sbnn_hdl.train: error: teacher 'none.pt': expected a teacher file (python -m sbnn_hdl.train.teacher), "
     "found no such file"),
    (["sbnn_hdl.train.teacher", "--data", "digits", "--arch", "cnn:p", "-o", "x.sbnn"],
     "sbnn_hdl.train.teacher: error: option --arch: expected a cnn to start with a conv width, found 'cnn:p'"),
    (["sbnn_hdl.export", "missing.ckpt", "-o", "x.sbnn"],
     "sbnn_hdl.export: error: checkpoint 'missing.ckpt': expected a checkpoint file, found no such file"),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
    r = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == message.format(tmp=tmp_path)
    assert not (tmp_path / "x.sbnn").exists()


def test_teacher_and_student_cli(tmp_path):
    r = _run("sbnn_hdl.train.teacher", "--data", "digits", "--arch", "mlp:32", "--epochs", "1", "--train-limit",
             "512", "--quiet", "--threads", "1", "-o", str(tmp_path / "t.pt"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{tmp_path / 't.pt'}: real-valued teacher mlp:32 on digits, validation accuracy ")
    assert [e["epoch"] for e in json.loads((tmp_path / "t.log.json").read_text())] == [1]
    r = _run("sbnn_hdl.train", "--data", "digits", "--arch", "mlp:16", "--sparsity", "0.75", "--epochs", "1",
             "--train-limit", "256", "--quiet", "--threads", "1", "--teacher", str(tmp_path / "t.pt"),
             "-o", str(tmp_path / "d.sbnn"))
    assert r.returncode == 0, r.stderr
    assert load(tmp_path / "d.sbnn").metadata["distillation"]["arch"] == "mlp:32"


def test_export_refuses_a_foreign_checkpoint(tmp_path):
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    r = _run("sbnn_hdl.export", str(tmp_path / "bad.ckpt"), "-o", str(tmp_path / "x.sbnn"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "expected a checkpoint written by sbnn_hdl.train, found unreadable data" in r.stderr


class _RunsCode:
    """Unpickling this creates ``marker``: what a checkpoint from elsewhere could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def _malicious_checkpoint(path, marker, write):
    state = {"config": _RunsCode(marker), "epoch": 0, "model": {}, "optimizer": {}, "log": []}
    if write == "torch.save":
        torch.save(state, path)
    else:
        with open(path, "wb") as file:
            pickle.dump(state, file)
    # The test can fail: unpickled as the old loader did (weights_only=False), the file runs code.
    assert not marker.exists()


REFUSED = ("{prog}: error: checkpoint 'evil.ckpt': expected a checkpoint of plain tensors and data written by "
           "sbnn_hdl.train, found a pickle that imports builtins.exec (refused: loading it could run code)")


@pytest.mark.parametrize("write", ["torch.save", "pickle.dump"])
@pytest.mark.parametrize("prog, args", [
    ("sbnn_hdl.export", ["evil.ckpt", "-o", "x.sbnn"]),
    ("sbnn_hdl.bitprune", ["evil.ckpt", "-o", "x.sbnn"]),
    ("sbnn_hdl.train", ["--data", "digits", "--arch", "mlp:16", "--epochs", "1", "--train-limit", "64",
                        "--threads", "1", "--quiet", "--checkpoint", "evil.ckpt", "--resume", "-o", "x.sbnn"]),
])
def test_checkpoint_that_runs_code_is_refused(tmp_path, monkeypatch, capsys, prog, args, write):
    # In this process: had anything unpickled the file, the marker would be there.
    import importlib
    main = importlib.import_module(prog if prog != "sbnn_hdl.train" else "sbnn_hdl.train.__main__").main
    marker = tmp_path / "ran"
    _malicious_checkpoint(tmp_path / "evil.ckpt", marker, write)
    monkeypatch.chdir(tmp_path)
    status, err = main(args), capsys.readouterr().err
    assert not marker.exists(), "the checkpoint ran code"
    assert status == 2 and err.strip() == REFUSED.format(prog=prog) and "Traceback" not in err
    assert not (tmp_path / "x.sbnn").exists()


def test_checkpoint_that_runs_code_is_refused_by_the_command(tmp_path):
    marker = tmp_path / "ran"
    _malicious_checkpoint(tmp_path / "evil.ckpt", marker, "torch.save")
    r = subprocess.run([sys.executable, "-m", "sbnn_hdl.export", "evil.ckpt", "-o", "x.sbnn"], capture_output=True,
                       text=True, cwd=tmp_path)
    assert not marker.exists(), "the checkpoint ran code"
    assert r.returncode == 2 and r.stderr.strip() == REFUSED.format(prog="sbnn_hdl.export")


def test_a_read_only_dataset_is_encoded_without_a_warning():
    """All eight planes of an integer input are the pixels themselves: a view of the data set's
    read-only array, which torch would warn about on every training run."""
    x = np.arange(2 * 6 * 6, dtype=np.uint8).reshape(2, 6, 6)
    x.setflags(write=False)
    spec = input_spec("cnn", (6, 6, 1), 8, "integer", range(7, -1, -1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = encode_batch(spec, x, conv_first=True)
    assert v.shape == (2, 1, 6, 6) and v[1, 0, 5, 5] == 71

"""``python -m sbnn_hdl.convert``: Brevitas binary networks exported as QONNX become exact models
that predict what qonnx's execution of the graph predicts (thousands of inputs, random batch-norm
statistics, a net trained on digits, a CNV-like CNN), one of them bit-exact in Verilator; broken
and unsupported graphs are refused with one line and nothing written."""

import os

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper

from sbnn_hdl import convert as convert_cli
from sbnn_hdl import datasets, golden, modelfile, qonnx_import
from sbnn_hdl import simulate as simulate_cli
from sbnn_hdl.qonnx_import import ConvertError, check, convert
from sbnn_hdl.testing import brevitas_nets

torch.set_num_threads(1)


def _export(net, folder, name, shape, seed):
    brevitas_nets.randomize_batch_norms(net, torch.Generator().manual_seed(seed))
    return brevitas_nets.export(net, str(folder / f"{name}.onnx"), shape)


NETS = {  # name: (builder, one sample's shape)
    "tfc_like": (lambda: brevitas_nets.fc((48, 32, 24), inputs=64), (64,)),
    "uint8_input": (lambda: brevitas_nets.fc((32, 16), inputs=64, input_bits=8), (64,)),
    "cnv_like": (lambda: brevitas_nets.cnv(channels=(8, 8, 16), pool_after=(1,), dense=(32,)), (1, 10, 10)),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    result = {}
    for seed, (name, (build, shape)) in enumerate(NETS.items()):
        torch.manual_seed(seed)  # the weights' initialisation
        result[name] = (_export(build(), folder, name, shape, seed), shape)
    return result


@pytest.mark.parametrize("name", sorted(NETS))
def test_predictions_equal_qonnx_execution(exported, name):
    path, shape = exported[name]
    conversion = convert(path)
    x = np.random.default_rng(7).random((3000, *shape), dtype=np.float32)
    report = check(conversion, x)
    assert report["samples"] == 3000 and report["compared"] + report["ties"] == 3000
    assert report["compared"] >= 1500, report["ties"]
    assert len(report["differ"]) == 0
    # The model's inputs are what the quantizer produced: bits, or 8-bit levels.
    assert report["inputs"].max() <= conversion.model.input.plane_mask
    assert len(np.unique(report["predictions"])) >= 2  # the thresholds matter: not one constant class


def test_layers_and_input_encoding(exported):
    tfc = convert(exported["tfc_like"][0]).model
    assert [l.kind for l in tfc.layers] == ["dense"] * 4 and tfc.input.shape == (64,) and tfc.input.bits == 1
    # +-1 weights and inputs: sum w*x = 4p - 2q - 2*ones + n, so a = -2b (the symmetric domain).
    for layer in tfc.layers:
        assert (layer.a == -2 * layer.b).all()
    uint8 = convert(exported["uint8_input"][0]).model
    assert uint8.input.bits == 8 and uint8.input.encoding == "integer"
    cnv = convert(exported["cnv_like"][0]).model
    assert [l.kind for l in cnv.layers] == ["conv2d", "conv2d", "maxpool2d", "conv2d", "dense", "dense"]
    assert cnv.input.shape == (10, 10, 1) and cnv.layers[0].padding == (0, 0)


def test_mask_is_the_plus_one_weights(tmp_path):
    net = brevitas_nets.fc((16,), inputs=12)
    path = _export(net, tmp_path, "small", (12,), 3)
    model = convert(path).model
    weight = net.head[1].weight.detach().numpy()  # the first QuantLinear (after the input quantizer)
    assert np.array_equal(model.layers[0].mask, (weight >= 0).astype(np.uint8))


def test_trained_on_digits_agrees_with_brevitas_and_qonnx(tmp_path):
    """One epoch on the digits data set (4-bit pixels as an unsigned integer input), then the
    converted model against Brevitas itself and qonnx on the test images and 2,000 random ones."""
    data = datasets.load("digits")
    scale = lambda x: torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / 15)  # noqa: E731
    x_train, y_train = scale(data.x_train), torch.from_numpy(data.y_train)
    torch.manual_seed(0)
    net = brevitas_nets.fc((64, 32), inputs=64, input_bits=4)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    net.train()
    for start in range(0, len(x_train), 32):
        loss = torch.nn.functional.cross_entropy(net(x_train[start:start + 32]), y_train[start:start + 32])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path = brevitas_nets.export(net, str(tmp_path / "digits.onnx"), (64,))
    conversion = convert(path)
    assert conversion.model.input.bits == 4
    x = np.concatenate([scale(data.x_test).numpy(), np.random.default_rng(1).random((2000, 64), dtype=np.float32)])
    report = check(conversion, x)
    assert len(report["differ"]) == 0 and report["compared"] >= 1500
    with torch.no_grad():
        brevitas = net.eval()(torch.from_numpy(x)).numpy().argmax(axis=1)
    assert (brevitas == report["predictions"]).mean() > 0.99
    accuracy = (report["predictions"][:len(data.x_test)] == data.y_test).mean()
    assert accuracy > 0.6  # one epoch learns the digits


def test_command_writes_the_model_and_reports(exported, tmp_path, capsys):
    path, shape = exported["tfc_like"]
    x = np.random.default_rng(3).random((500, *shape), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "tfc.sbnn"
    assert convert_cli.main([path, "-o", str(out), "--check", str(tmp_path / "x.npy"), "--name", "tfc"]) == 0
    text = capsys.readouterr().out
    model = modelfile.load(out)
    assert model.name == "tfc" and model == convert(path, name="tfc").model
    assert "1 where x >= 0.5 for graph inputs x" in text
    assert "give the same prediction in qonnx's execution of the graph and in the golden model" in text
    assert "layer" in text and "density" in text and "BNN ops" in text  # the inspect table
    assert "--arch sparse:" in text and "--arch xnor  :" in text and "LUT4" in text
    assert "python -m sbnn_hdl.train --sparsity" in text


def test_help():
    with pytest.raises(SystemExit) as exit_info:
        convert_cli.main(["--help"])
    assert exit_info.value.code == 0


def test_verilator_runs_a_converted_model_bit_exact(exported, tmp_path, capsys):
    path, shape = exported["uint8_input"]
    conversion = convert(path)
    modelfile.save(conversion.model, tmp_path / "m.sbnn")
    x = np.random.default_rng(5).random((300, *shape), dtype=np.float32)
    inputs = qonnx_import.encode_inputs(conversion, x)
    assert np.array_equal(golden.infer(conversion.model, inputs).predictions, check(conversion, x)["predictions"])
    np.save(tmp_path / "u.npy", inputs)
    assert simulate_cli.main([str(tmp_path / "m.sbnn"), "--inputs", str(tmp_path / "u.npy"), "--out",
                              str(tmp_path / "y.npy"), "--sim", "verilator", "--check", "--quiet"]) == 0
    assert "check: all 300 predictions and scores bit-exact against the golden model" in capsys.readouterr().out


def _refused(capsys, argv, output):
    status = convert_cli.main(argv)
    captured = capsys.readouterr()
    assert status == 2
    assert not os.path.exists(output)
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_malformed_files_are_refused(exported, tmp_path, capsys):
    out = str(tmp_path / "out.sbnn")
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a graph\n")
    line = _refused(capsys, [str(text), "-o", out], out)
    assert line == f"sbnn_hdl.convert: error: {text}: expected an ONNX model (protobuf), found unreadable data (DecodeError)"
    data = open(exported["tfc_like"][0], "rb").read()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[:len(data) // 2])
    line = _refused(capsys, [str(truncated), "-o", out], out)
    assert line.startswith(f"sbnn_hdl.convert: error: {truncated}: expected an ONNX model (protobuf), found unreadable")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    line = _refused(capsys, [str(empty), "-o", out], out)
    assert line == f"sbnn_hdl.convert: error: {empty}: expected an ONNX model with a graph of nodes, found no graph"
    line = _refused(capsys, [str(tmp_path / "missing.onnx"), "-o", out], out)
    assert line == (f"sbnn_hdl.convert: error: {tmp_path / 'missing.onnx'}: expected a readable ONNX file, found "
                    f"No such file or directory")


def _unsupported(tmp_path, capsys, net, shape):
    torch.manual_seed(0)
    path = _export(net, tmp_path, "bad", shape, 11)
    out = str(tmp_path / "bad.sbnn")
    return _refused(capsys, [path, "-o", out], out).removeprefix(f"sbnn_hdl.convert: error: {path}: ")


def test_unsupported_op_is_refused(tmp_path, capsys):
    line = _unsupported(tmp_path, capsys, brevitas_nets.fc((16, 8), inputs=12, extra=(torch.nn.ReLU(),)), (12,))
    assert line == ("node 'Relu_0' (Relu): expected one of BipolarQuant, Quant, Sign, Gemm, MatMul, Conv, MaxPool, "
                    "BatchNormalization, Mul, Add, Sub, Div, Reshape, Flatten, Transpose, Identity, found an "
                    "unsupported op")


def test_two_bit_hidden_activation_is_refused(tmp_path, capsys):
    from brevitas.nn import QuantIdentity
    from brevitas_examples.bnn_pynq.models.common import CommonActQuant
    two_bits = QuantIdentity(act_quant=CommonActQuant, bit_width=2)
    net = brevitas_nets.fc((16, 8), inputs=12)
    layers = list(net.head)
    layers[3] = two_bits  # the first hidden layer's activation: input quantizer, linear, batch norm, act
    net.head = torch.nn.Sequential(*layers)
    line = _unsupported(tmp_path, capsys, net, (12,))
    assert line == ("node 'Quant_0' (Quant): expected a 1-bit activation quantizer after the first layer (only the "
                    "input may have more bits), found bit width 2")


def test_grouped_convolution_is_refused(tmp_path, capsys):
    line = _unsupported(tmp_path, capsys, brevitas_nets.cnv(channels=(4, 4), pool_after=(), groups=2, size=8), (1, 8, 8))
    assert line == "node 'Conv_1' (Conv): expected a convolution with one group (group=1), found group=2 (grouped convolution)"


def test_zero_padding_of_bipolar_activations_is_refused(tmp_path, capsys):
    line = _unsupported(tmp_path, capsys, brevitas_nets.cnv(channels=(4, 4), pool_after=(), padding=1, size=6), (1, 6, 6))
    assert line.startswith("node 'Conv_1' (Conv): expected zero padding on an input whose levels include 0")
    assert line.endswith("the padded 0 is neither level (a +-1 activation has no 0)")


def test_failed_check_writes_nothing(exported, tmp_path, capsys, monkeypatch):
    path, shape = exported["tfc_like"]
    np.save(tmp_path / "x.npy", np.random.default_rng(3).random((50, *shape), dtype=np.float32))
    real = golden.infer

    def wrong(model, x, **kwargs):
        result = real(model, x, **kwargs)
        result.predictions[:] = (result.predictions + 1) % model.outputs
        return result

    monkeypatch.setattr(qonnx_import.golden, "infer", wrong)
    out = str(tmp_path / "m.sbnn")
    line = _refused(capsys, [path, "-o", out, "--check", str(tmp_path / "x.npy")], out)
    assert "check: expected qonnx and the golden model to predict the same class on all" in line
    assert line.endswith("nothing written")


def _sign_graph(path):
    """A hand-made graph: a BIPOLAR-annotated input, Sign activations, MatMul with BIPOLAR weights."""
    rng = np.random.default_rng(9)
    w1 = np.where(rng.random((10, 16)) < 0.5, -1.0, 1.0).astype(np.float32)
    w2 = np.where(rng.random((16, 4)) < 0.5, -1.0, 1.0).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["z1"], name="mm1"),
             helper.make_node("Add", ["z1", "t1"], ["y1"], name="add1"),
             helper.make_node("Sign", ["y1"], ["s1"], name="sign1"),
             helper.make_node("MatMul", ["s1", "w2"], ["out"], name="mm2")]
    graph = helper.make_graph(nodes, "signs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor("w1", TensorProto.FLOAT, w1.shape, w1.ravel()),
                               helper.make_tensor("w2", TensorProto.FLOAT, w2.shape, w2.ravel()),
                               helper.make_tensor("t1", TensorProto.FLOAT, [16], rng.integers(-4, 4, 16) + 0.5)])
    model = ModelWrapper(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    for name in ("x", "w1", "w2"):
        model.set_tensor_datatype(name, DataType["BIPOLAR"])
    onnx.save(model.model, path)
    return path


def test_sign_and_bipolar_annotations(tmp_path):
    conversion = convert(_sign_graph(str(tmp_path / "signs.onnx")))
    assert conversion.model.input.bits == 1 and [l.outputs for l in conversion.model.layers] == [16, 4]
    x = np.where(np.random.default_rng(2).random((2000, 10)) < 0.5, -1.0, 1.0).astype(np.float32)
    report = check(conversion, x)
    assert len(report["differ"]) == 0 and report["compared"] > 500
    assert np.array_equal(report["inputs"], (x > 0).astype(np.uint8))


def _unsigned_activations(source, path):
    """The graph at ``source`` with every activation BipolarQuant replaced by an unsigned 1-bit Quant
    (levels {0, scale}, round half to even: a strict threshold at 1/2), as ``path``. Brevitas
    exports 1-bit activations as BipolarQuant only, so this graph is edited by hand."""
    model = ModelWrapper(source)
    for index, node in enumerate(model.graph.node):
        if node.op_type != "BipolarQuant" or model.get_initializer(node.input[0]) is not None:
            continue
        zero, bits = f"uq_zero_{index}", f"uq_bits_{index}"
        model.set_initializer(zero, np.zeros((), np.float32))
        model.set_initializer(bits, np.ones((), np.float32))
        replacement = helper.make_node("Quant", [node.input[0], node.input[1], zero, bits], list(node.output),
                                       name=node.name, domain=node.domain, signed=0, narrow=0, rounding_mode="ROUND")
        model.graph.node.remove(node)
        model.graph.node.insert(index, replacement)
    onnx.save(model.model, path)
    return path


def test_unsigned_activations_and_zero_padding(tmp_path):
    """{0, 1} activations: zero padding is the bit 0, and rounding's strict threshold folds exactly."""
    torch.manual_seed(4)
    source = _export(brevitas_nets.cnv(channels=(6, 8, 8), pool_after=(1,), dense=(16,), padding=1), tmp_path,
                     "padded", (1, 10, 10), 4)
    conversion = convert(_unsigned_activations(source, str(tmp_path / "unsigned.onnx")))
    convs = [l for l in conversion.model.layers if l.kind == "conv2d"]
    assert [c.padding for c in convs] == [(0, 0), (1, 1), (1, 1)] and {c.pad_value for c in convs} == {0}
    x = np.random.default_rng(4).random((3000, 1, 10, 10), dtype=np.float32)
    report = check(conversion, x)
    assert len(report["differ"]) == 0 and report["compared"] >= 1500


@pytest.mark.parametrize("which, samples", [("tfc", 2000), ("cnv", 300)])
def test_bnn_pynq_reference_networks(which, samples, tmp_path):
    """brevitas_examples.bnn_pynq's own W1A1 TFC and CNV classes (untrained, random batch norms)."""
    torch.manual_seed(0)
    net, shape = brevitas_nets.bnn_pynq(which)
    path = _export(net, tmp_path, which, shape, 1)
    conversion = convert(path)
    kinds = [l.kind for l in conversion.model.layers]
    assert kinds == (["dense"] * 4 if which == "tfc" else ["conv2d", "conv2d", "maxpool2d"] * 2 + ["conv2d"] * 2
                     + ["dense"] * 3)
    report = check(conversion, np.random.default_rng(8).random((samples, *shape), dtype=np.float32))
    assert len(report["differ"]) == 0 and report["compared"] >= samples // 2

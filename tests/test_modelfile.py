"""Reading and writing .sbnn files: round trips, determinism and every refusal of the spec."""

import copy
import io
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given, strategies as st

import spec_reference as ref
from sbnn_hdl import ModelError, dumps, inspect as inspect_cli, load, loads, save
from sbnn_hdl.testing.strategies import models


def _valid():
    """A small valid two-layer model as (manifest, arrays), ready to be damaged."""
    manifest = {"format": "sbnn", "version": 1, "name": "tiny",
                "input": {"shape": [4], "bits": 2, "encoding": "integer", "planes": [1, 0]},
                "layers": [
                    {"kind": "dense", "name": "fc1", "inputs": 4, "outputs": 3,
                     "mask": "fc1.mask.npy", "a": "fc1.a.npy", "b": "fc1.b.npy", "t": "fc1.t.npy"},
                    {"kind": "dense", "name": "out", "inputs": 3, "outputs": 2,
                     "mask": "out.mask.npy", "a": "out.a.npy", "b": "out.b.npy", "t": "out.t.npy"}],
                "classes": ["no", "yes"]}
    arrays = {"fc1.mask.npy": np.array([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], np.uint8),
              "fc1.a.npy": np.array([1, 2, -1], np.int32), "fc1.b.npy": np.array([0, -1, 0], np.int32),
              "fc1.t.npy": np.array([2, -3, -4], np.int64),
              "out.mask.npy": np.array([[1, 1, 0], [0, 1, 1]], np.uint8),
              "out.a.npy": np.array([1, 1], np.int32), "out.b.npy": np.array([0, 0], np.int32),
              "out.t.npy": np.array([0, 1], np.int64)}
    return manifest, arrays


def _write(path, manifest, arrays):
    ref.write_sbnn(path, manifest, arrays)
    return path


def _damage(change):
    manifest, arrays = _valid()
    manifest, arrays = copy.deepcopy(manifest), dict(arrays)
    change(manifest, arrays)
    return manifest, arrays


def _set(path, value):
    def change(manifest, arrays):
        *parents, key = path
        target = manifest
        for p in parents:
            target = target[p]
        if value is _DELETE:
            del target[key]
        else:
            target[key] = value
    return change


_DELETE = object()


def _array(member, value):
    def change(manifest, arrays):
        arrays[member] = value
    return change


def _chain(*changes):
    def change(manifest, arrays):
        for c in changes:
            c(manifest, arrays)
    return change


# Each refusal of the spec's Errors section: (id, damage, the message's expected fragment).
MANIFEST_CASES = [
    ("wrong-format", _set(["format"], "onnx"), "manifest.json key 'format': expected 'sbnn', found 'onnx'"),
    ("wrong-version", _set(["version"], 2), "manifest.json key 'version': expected version 1, found version 2"),
    ("version-bool", _set(["version"], True), "manifest.json key 'version': expected version 1, found version True"),
    ("missing-name", _set(["name"], _DELETE), "manifest.json: expected a key 'name', found none"),
    ("bad-name", _set(["name"], "9lives"), "model name: expected a name of 1 to 64 characters"),
    ("long-name", _set(["name"], "a" * 65), "model name: expected a name of 1 to 64 characters"),
    ("bits-0", _set(["input", "bits"], 0), "input.bits: expected an integer in [1, 16], found 0"),
    ("bits-17", _set(["input", "bits"], 17), "input.bits: expected an integer in [1, 16], found 17"),
    ("bits-float", _set(["input", "bits"], 2.0), "input.bits: expected an integer, found 2.0"),
    ("encoding", _set(["input", "encoding"], "gray"), "input.encoding: expected 'integer' or 'bitplanes', found 'gray'"),
    ("plane-range", _set(["input", "planes"], [2]), "input.planes: expected an integer in [0, 1], found 2"),
    ("plane-twice", _set(["input", "planes"], [1, 1]), "input.planes: expected distinct plane numbers, found [1, 1]"),
    ("planes-empty", _set(["input", "planes"], []), "input.planes: expected a non-empty list of plane numbers"),
    ("shape-2d", _set(["input", "shape"], [2, 2]), "input.shape: expected [N] or [H, W, C], found [2, 2]"),
    ("no-layers", _set(["layers"], []), "manifest.json key 'layers': expected a non-empty list of layers"),
    ("unknown-kind", _set(["layers", 0, "kind"], "lstm"), "layer #0 key 'kind': expected one of 'dense', 'conv2d', 'maxpool2d', found 'lstm'"),
    ("duplicate-name", _set(["layers", 1, "name"], "fc1"), "layer #1: expected a unique layer name, found a second 'fc1'"),
    ("no-chain", _chain(_set(["layers", 0, "inputs"], 5),
                        _array("fc1.mask.npy", np.ones((3, 5), np.uint8))),
     "layer 'fc1': expected 4 inputs (the input has shape [4]), found 5 inputs"),
    ("no-chain-hidden", _chain(_set(["layers", 1, "inputs"], 2), _array("out.mask.npy", np.ones((2, 2), np.uint8))),
     "layer 'out': expected 3 inputs (layer 'fc1' has shape [3]), found 2 inputs"),
    ("pool-after-dense", _set(["layers", 1], {"kind": "maxpool2d", "name": "pool", "in_shape": [3, 1, 1],
                                             "kernel": [1, 1], "stride": [1, 1]}),
     "layer 'pool': expected in_shape equal to the shape of layer 'fc1', [3] (a maxpool2d layer needs [H, W, C])"),
    ("last-not-dense", _chain(_set(["input", "shape"], [2, 2, 1]), _set(["input", "encoding"], "bitplanes"),
                              _set(["classes"], _DELETE),
                              _set(["layers"], [{"kind": "maxpool2d", "name": "pool", "in_shape": [2, 2, 2],
                                                 "kernel": [2, 2], "stride": [1, 1]}])),
     "layer 'pool': expected a dense last layer, found a maxpool2d layer"),
    ("conv-shape", _chain(_set(["input", "shape"], [2, 2, 1]), _set(["layers", 0], {
        "kind": "conv2d", "name": "fc1", "in_shape": [2, 2, 2], "out_channels": 3, "kernel": [1, 1],
        "stride": [1, 1], "padding": [0, 0], "mask": "fc1.mask.npy", "a": "fc1.a.npy", "b": "fc1.b.npy",
        "t": "fc1.t.npy"})), "layer 'fc1' member 'fc1.mask.npy' (mask): expected shape [3, 1, 1, 2], found shape [3, 4]"),
    ("classes-count", _set(["classes"], ["a"]), "classes: expected 2 strings, one per output of the last layer, found 1 entries"),
    ("missing-member", _set(["layers", 0, "a"], "nope.npy"), "layer 'fc1' member 'nope.npy' (a): expected a member named 'nope.npy' in the archive, found no such member"),
    ("wrong-shape", _array("fc1.mask.npy", np.ones((3, 3), np.uint8)), "layer 'fc1' member 'fc1.mask.npy' (mask): expected shape [3, 4], found shape [3, 3]"),
    ("wrong-dtype", _array("fc1.a.npy", np.ones(3, np.float32)), "layer 'fc1' member 'fc1.a.npy' (a): expected an integer array, found dtype float32"),
    ("mask-value", _array("fc1.mask.npy", np.array([[1, 0, 1, 0], [0, 2, 0, 0], [1, 1, 1, 1]], np.int8)),
     "layer 'fc1' member 'fc1.mask.npy' (mask): expected mask values 0 or 1, found 2 at index [1, 1]"),
    ("a-range", _array("fc1.a.npy", np.array([1, 2**24, 1], np.int64)), "layer 'fc1' member 'fc1.a.npy' (a): expected values in [-2**24, 2**24), found 16777216"),
    ("b-range", _array("fc1.b.npy", np.array([1, -(2**24) - 1, 1], np.int64)), "layer 'fc1' member 'fc1.b.npy' (b): expected values in [-2**24, 2**24), found -16777217"),
    ("t-range", _array("out.t.npy", np.array([0, 2**60], np.int64)), "layer 'out' member 'out.t.npy' (t): expected values in [-2**60, 2**60), found 1152921504606846976"),
    ("t-uint64", _array("out.t.npy", np.array([0, 2**64 - 1], np.uint64)), "layer 'out' member 'out.t.npy' (t): expected values in [-2**60, 2**60), found 18446744073709551615"),
]


@pytest.mark.parametrize("case,change,message", MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
def test_refusals_name_file_part_expected_and_found(tmp_path, case, change, message):
    path = _write(tmp_path / "bad.sbnn", *_damage(change))
    with pytest.raises(ModelError) as info:
        load(path)
    assert str(info.value).startswith(f"{path}: {message}")
    assert "\n" not in str(info.value)


def test_valid_model_loads(tmp_path):
    model = load(_write(tmp_path / "ok.sbnn", *_valid()))
    assert model.name == "tiny" and model.input.planes == (1, 0) and model.classes == ("no", "yes")
    assert [l.name for l in model.layers] == ["fc1", "out"]
    assert model.layers[0].a.tolist() == [1, 2, -1]


def _zip_bytes(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


CONTAINER_CASES = [
    ("not-zip", b"hello, this is not a zip file", "file: expected a ZIP archive, found bytes starting b'hell'"),
    ("empty", b"", "file: expected a ZIP archive, found an empty file"),
    ("no-manifest", _zip_bytes({"a.npy": b""}), "manifest: expected a member named 'manifest.json' in the archive, found no such member"),
    ("bad-json", _zip_bytes({"manifest.json": b"{\"format\": "}), "manifest.json: expected a UTF-8 JSON object, found invalid JSON"),
    ("not-utf8", _zip_bytes({"manifest.json": b"\xff\xfe{}"}), "manifest.json: expected a UTF-8 JSON object, found invalid JSON"),
    ("json-list", _zip_bytes({"manifest.json": b"[1, 2]"}), "manifest.json: expected a JSON object, found a JSON list"),
]


@pytest.mark.parametrize("case,data,message", CONTAINER_CASES, ids=[c[0] for c in CONTAINER_CASES])
def test_container_refusals(tmp_path, case, data, message):
    path = tmp_path / "bad.sbnn"
    path.write_bytes(data)
    with pytest.raises(ModelError, match="^" + __import__("re").escape(f"{path}: {message}")):
        load(path)


def _replace_member(data, name, content):
    source = zipfile.ZipFile(io.BytesIO(data))
    return _zip_bytes({n: (content if n == name else source.read(n)) for n in source.namelist()})


def test_unloadable_array(tmp_path):
    manifest, arrays = _valid()
    data = _replace_member(_write(tmp_path / "m.sbnn", manifest, arrays).read_bytes(), "fc1.t.npy", b"\x93NUMPY garbage")
    with pytest.raises(ModelError, match=r"layer 'fc1' member 'fc1.t.npy' \(t\): expected a NumPy .npy array .* found no valid header"):
        loads(data, path="m.sbnn")


def test_pickled_array_is_refused(tmp_path):
    manifest, arrays = _valid()
    data = _write(tmp_path / "m.sbnn", manifest, arrays).read_bytes()
    buffer = io.BytesIO()
    np.save(buffer, np.array([1, "x", None], dtype=object), allow_pickle=True)
    with pytest.raises(ModelError, match=r"\(t\): expected an integer array, found dtype object"):
        loads(_replace_member(data, "fc1.t.npy", buffer.getvalue()))


def test_short_array_data(tmp_path):
    manifest, arrays = _valid()
    data = _write(tmp_path / "m.sbnn", manifest, arrays).read_bytes()
    member = _npy(np.array([1, 2, 3], np.int64))[:-4]
    with pytest.raises(ModelError, match=r"\(t\): expected 24 bytes of array data, found 20 bytes"):
        loads(_replace_member(data, "fc1.t.npy", member))


def test_truncated_file(tmp_path):
    data = _write(tmp_path / "m.sbnn", *_valid()).read_bytes()
    for cut in (10, len(data) // 2, len(data) - 5):
        with pytest.raises(ModelError, match="^x.sbnn: "):
            loads(data[:cut], path="x.sbnn")


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="nothere.sbnn: file: expected a readable .sbnn file, found No such file"):
        load(tmp_path / "nothere.sbnn")


@given(model=models())
def test_round_trip_and_deterministic_bytes(model):
    data = dumps(model)
    again = loads(data)
    assert again == model
    assert dumps(again) == data


def test_same_model_same_bytes_across_writes(tmp_path):
    model = load(_write(tmp_path / "m.sbnn", *_valid()))
    save(model, tmp_path / "a.sbnn")
    save(load(tmp_path / "a.sbnn"), tmp_path / "b.sbnn")
    assert (tmp_path / "a.sbnn").read_bytes() == (tmp_path / "b.sbnn").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.sbnn") as archive:
        assert archive.namelist()[0] == "manifest.json"
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_metadata_and_unicode_classes_kept(tmp_path):
    manifest, arrays = _valid()
    manifest["classes"] = ["Schuh", "Größe 猫"]
    manifest["metadata"] = {"dataset": "fashion-mnist", "nested": {"list": [1, 2.5, None, True]}}
    model = load(_write(tmp_path / "m.sbnn", manifest, arrays))
    assert model.classes == ("Schuh", "Größe 猫")
    assert model.metadata == manifest["metadata"]
    assert loads(dumps(model)).metadata == manifest["metadata"]


def test_model_is_immutable(tmp_path):
    model = load(_write(tmp_path / "m.sbnn", *_valid()))
    with pytest.raises(ValueError):
        model.layers[0].mask[0, 0] = 0
    with pytest.raises(AttributeError):
        model.layers[0].a = None
    model.metadata["x"] = 1
    assert "x" not in model.metadata


def test_save_is_atomic_and_keeps_old_file_on_failure(tmp_path, monkeypatch):
    model = load(_write(tmp_path / "m.sbnn", *_valid()))
    target = tmp_path / "out.sbnn"
    target.write_bytes(b"old")
    import sbnn_hdl._files as files

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError):
        save(model, target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.sbnn", "out.sbnn"]


@given(model=models(), data=st.data())
def test_random_corruptions_raise_only_model_error(model, data):
    original = bytearray(dumps(model))
    damaged = bytearray(original)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(damaged) - 1))
        damaged[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        damaged = damaged[:data.draw(st.integers(0, len(damaged)))]
    try:
        loaded = loads(bytes(damaged))
    except ModelError as error:
        assert "\n" not in str(error)
    else:
        # A damage that the format cannot see (e.g. in an unused header field) must not change the model.
        assert loaded == model or damaged != original


def test_cli_prints_one_line_and_exits_2(tmp_path):
    path = _write(tmp_path / "bad.sbnn", *_damage(_set(["version"], 7)))
    result = subprocess.run([sys.executable, "-m", "sbnn_hdl.inspect", str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"sbnn_hdl.inspect: error: {path}: manifest.json key 'version': expected version 1, found version 7\n"


@pytest.mark.parametrize("case,change,message", MANIFEST_CASES[:8], ids=[c[0] for c in MANIFEST_CASES[:8]])
def test_inspect_exit_status_2(tmp_path, capsys, case, change, message):
    path = _write(tmp_path / "bad.sbnn", *_damage(change))
    assert inspect_cli.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def _corrupt_member_data(data, name):
    """Flip one byte inside the compressed data of member ``name`` (its CRC no longer matches)."""
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(name)
    name_length, extra_length = np.frombuffer(data[info.header_offset + 26:info.header_offset + 30], "<u2")
    start = info.header_offset + 30 + int(name_length) + int(extra_length)
    damaged = bytearray(data)
    damaged[start + info.compress_size // 2] ^= 0xFF
    return bytes(damaged)


FILE_DAMAGE = [
    ("corrupted", lambda d: _corrupt_member_data(d, "fc1.mask.npy"),
     "layer 'fc1' member 'fc1.mask.npy' (mask): expected a readable member 'fc1.mask.npy', found a damaged member"),
    ("truncated", lambda d: d[:len(d) * 2 // 3], "file: expected a ZIP archive, found a damaged or truncated ZIP archive of "),
    ("wrong-version", None, "manifest.json key 'version': expected version 1, found version 2"),
    ("wrong-shape", None, "layer 'fc1' member 'fc1.a.npy' (a): expected shape [3], found shape [4]"),
    ("out-of-range", None, "layer 'fc1' member 'fc1.t.npy' (t): expected values in [-2**60, 2**60), found -1152921504606846977"),
]


@pytest.mark.parametrize("case,damage,message", FILE_DAMAGE, ids=[c[0] for c in FILE_DAMAGE])
def test_damaged_files_give_their_own_error_and_status_2(tmp_path, case, damage, message):
    manifest, arrays = _valid()
    if case == "wrong-version":
        manifest["version"] = 2
    elif case == "wrong-shape":
        arrays["fc1.a.npy"] = np.array([1, 2, 3, 4], np.int32)
    elif case == "out-of-range":
        arrays["fc1.t.npy"] = np.array([0, -(2**60) - 1, 0], np.int64)
    path = tmp_path / "m.sbnn"
    ref.write_sbnn(path, manifest, arrays, manifest_last=False)
    if damage is not None:
        path.write_bytes(damage(path.read_bytes()))
    result = subprocess.run([sys.executable, "-m", "sbnn_hdl.infer", str(path), "--inputs", "examples/digits_x.npy",
                             "--out", str(tmp_path / "y.npy")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith(f"sbnn_hdl.infer: error: {path}: {message}")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "y.npy").exists()


def test_maxpool_on_multibit_input_is_refused():
    from sbnn_hdl.model import Dense, InputSpec, MaxPool2d, Model
    pool = MaxPool2d("pool", (2, 2, 1), (2, 2))
    out = Dense("out", [[1]], [1], [0], [0])
    with pytest.raises(ModelError, match=r"^layer 'pool': expected binary input to a maxpool2d layer \(bitplanes, "
                                         r"or a single plane\), found integer input with planes \[0, 1\]$"):
        Model("m", InputSpec((2, 2, 1), 2), [pool, out])
    assert Model("m", InputSpec((2, 2, 1), 2, planes=[1]), [pool, out]).layers[0] is pool
    assert Model("m", InputSpec((2, 2, 1), 1), [pool, out]).layers[0] is pool

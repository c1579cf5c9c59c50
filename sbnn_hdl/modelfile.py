"""Reading and writing ``.sbnn`` files (format version 1, see ``docs/format.md``).

:func:`load` accepts every file that follows the specification, whatever program wrote it:
members stored or deflated, in any order, arrays of any integer (or boolean) dtype, either byte
order, C or Fortran order. Everything it refuses raises :class:`~sbnn_hdl.errors.ModelError`
naming the file, the member or layer, what was expected and what was found; no other exception
type escapes it for a malformed file.

:func:`save` is deterministic: the same model gives the same bytes (fixed member order, fixed
timestamps, canonical dtypes), so a file's hash identifies its model.
"""

import io
import json
import os
import struct
import zipfile
import zlib

import numpy as np

from ._files import write_atomic
from .errors import ModelError
from .model import (COEFF_LIMIT, LAYER_KINDS, THRESHOLD_LIMIT, Conv2d, Dense, InputSpec, MaxPool2d,
                    Model, check_array)

__all__ = ["FORMAT", "VERSION", "load", "loads", "save", "dumps"]

FORMAT = "sbnn"
VERSION = 1
MANIFEST = "manifest.json"

# Fixed for reproducible bytes: the earliest time a ZIP header can hold, Unix file attributes.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
# Canonical dtypes of written arrays (any integer dtype is accepted on reading).
_DTYPES = {"mask": np.dtype("|u1"), "a": np.dtype("<i4"), "b": np.dtype("<i4"), "t": np.dtype("<i8")}
_LIMITS = {"a": COEFF_LIMIT, "b": COEFF_LIMIT, "t": THRESHOLD_LIMIT}

# What a damaged archive can raise from inside zipfile, zlib and the npy header parser.
_DAMAGE = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError,
           NotImplementedError, RuntimeError, struct.error, OverflowError, KeyError, IndexError,
           TypeError, SyntaxError, MemoryError, RecursionError, UnicodeDecodeError)


def _shape_text(shape):
    return "[" + ", ".join(str(n) for n in shape) + "]"


def load(path):
    """Read the ``.sbnn`` file at ``path`` and return its :class:`~sbnn_hdl.model.Model`.

    Raises :class:`ModelError` (naming ``path``) for a missing, unreadable or malformed file.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise ModelError("file", "a readable .sbnn file", error.strerror or str(error),
                         path=os.fspath(path)) from None
    return loads(data, path=os.fspath(path))


def loads(data, *, path="<bytes>"):
    """Parse the bytes of a ``.sbnn`` file; ``path`` is the name that errors give it."""
    try:
        return _Reader(data).model()
    except ModelError as error:
        raise error.in_file(path) from None


class _Reader:
    def __init__(self, data):
        head = bytes(data[:4])
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
        except _DAMAGE as error:
            if not data:
                found = "an empty file"
            elif head.startswith(b"PK"):
                found = f"a damaged or truncated ZIP archive of {len(data)} bytes ({error})"
            else:
                found = f"bytes starting {head!r} ({error})"
            raise ModelError("file", "a ZIP archive", found) from None
        self.names = set(self.zip.namelist())

    def member(self, name, where):
        if name not in self.names:
            raise ModelError(where, f"a member named {name!r} in the archive", "no such member")
        try:
            return self.zip.read(name)
        except _DAMAGE as error:
            raise ModelError(where, f"a readable member {name!r}", f"a damaged member ({error})") from None

    def manifest(self):
        data = self.member(MANIFEST, "manifest")
        try:
            manifest = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise ModelError(MANIFEST, "a UTF-8 JSON object", f"invalid JSON ({error})") from None
        if not isinstance(manifest, dict):
            raise ModelError(MANIFEST, "a JSON object", f"a JSON {type(manifest).__name__}")
        return manifest

    def model(self):
        manifest = self.manifest()
        format_ = _key(manifest, "format", MANIFEST)
        if format_ != FORMAT:
            raise ModelError(f"{MANIFEST} key 'format'", repr(FORMAT), repr(format_))
        version = _key(manifest, "version", MANIFEST)
        if type(version) is not int or version != VERSION:
            raise ModelError(f"{MANIFEST} key 'version'", f"version {VERSION}", f"version {version!r}")
        name = _key(manifest, "name", MANIFEST)
        spec = _key(manifest, "input", MANIFEST, dict)
        input_spec = InputSpec(shape=_key(spec, "shape", "input"), bits=_key(spec, "bits", "input"),
                               encoding=_key(spec, "encoding", "input"), planes=spec.get("planes"))
        layers = _key(manifest, "layers", MANIFEST, list)
        if not layers:
            raise ModelError(f"{MANIFEST} key 'layers'", "a non-empty list of layers", "an empty list")
        layers = [self.layer(index, entry) for index, entry in enumerate(layers)]
        return Model(name, input_spec, layers, classes=_optional(manifest, "classes", list),
                     metadata=_optional(manifest, "metadata", dict))

    def layer(self, index, entry):
        where = f"layer #{index}"
        if not isinstance(entry, dict):
            raise ModelError(where, "a JSON object", f"a JSON {type(entry).__name__}")
        kind = _key(entry, "kind", where)
        if kind not in LAYER_KINDS:
            raise ModelError(f"{where} key 'kind'", "one of " + ", ".join(map(repr, LAYER_KINDS)), repr(kind))
        name = _key(entry, "name", where)
        if isinstance(name, str):
            where = f"layer '{name}'"
        if kind == "dense":
            inputs = _count(entry, "inputs", where)
            outputs = _count(entry, "outputs", where)
            return Dense(name, **self.arrays(entry, where, (outputs, inputs), outputs))
        if kind == "conv2d":
            in_shape = _key(entry, "in_shape", where, list)
            cout = _count(entry, "out_channels", where)
            kernel = _key(entry, "kernel", where, list)
            if len(in_shape) != 3 or len(kernel) != 2:
                raise ModelError(where, "in_shape [H, W, Cin] and kernel [kh, kw]",
                                 f"in_shape {in_shape!r}, kernel {kernel!r}")
            for value in (*in_shape, *kernel):
                if type(value) is not int or value < 1:
                    raise ModelError(where, "positive integers in in_shape and kernel",
                                     f"in_shape {in_shape!r}, kernel {kernel!r}")
            mask_shape = (cout, kernel[0], kernel[1], in_shape[2])
            return Conv2d(name, in_shape=in_shape, stride=_key(entry, "stride", where, list),
                          padding=_key(entry, "padding", where, list),
                          pad_value=entry.get("pad_value", 0),
                          **self.arrays(entry, where, mask_shape, cout))
        return MaxPool2d(name, in_shape=_key(entry, "in_shape", where, list),
                         kernel=_key(entry, "kernel", where, list),
                         stride=_key(entry, "stride", where, list))

    def arrays(self, entry, where, mask_shape, outputs):
        arrays = {}
        for key in ("mask", "a", "b", "t"):
            member = _key(entry, key, where, str)
            at = f"{where} member {member!r} ({key})"
            shape = mask_shape if key == "mask" else (outputs,)
            array = _parse_npy(self.member(member, at), at, shape)
            if key == "mask":
                arrays[key] = check_array(array, at, shape=shape, binary=True)
            else:
                arrays[key] = check_array(array, at, shape=shape, low=-_LIMITS[key], high=_LIMITS[key])
        return arrays


def _key(mapping, key, where, kind=None):
    if key not in mapping:
        raise ModelError(where, f"a key {key!r}", "none")
    value = mapping[key]
    if kind is not None and not isinstance(value, kind):
        names = {dict: "a JSON object", list: "a JSON list", str: "a string"}
        raise ModelError(f"{where} key {key!r}", names[kind], repr(value))
    return value


def _optional(mapping, key, kind):
    value = mapping.get(key)
    if value is not None and not isinstance(value, kind):
        raise ModelError(f"{MANIFEST} key {key!r}", "a JSON list" if kind is list else "a JSON object",
                         repr(value))
    return value


def _count(entry, key, where):
    value = _key(entry, key, where)
    if type(value) is not int or value < 1:
        raise ModelError(f"{where} key {key!r}", "a positive integer", repr(value))
    return value


def _parse_npy(data, where, shape):
    """Decode one ``.npy`` member, checking its header before touching the data.

    Checking shape and dtype from the header first means that a damaged header can never make
    the reader allocate more memory than the member's actual size.
    """
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"npy format version {version[0]}.{version[1]}")
    except _DAMAGE as error:
        raise ModelError(where, "a NumPy .npy array (format 1.0 or 2.0)", f"no valid header ({error})") from None
    found_shape, fortran_order, dtype = header
    if dtype.hasobject or dtype.kind not in "iub" or dtype.fields is not None or dtype.subdtype is not None:
        raise ModelError(where, "an integer array", f"dtype {dtype}")
    if tuple(found_shape) != tuple(shape):
        raise ModelError(where, f"shape {_shape_text(shape)}", f"shape {_shape_text(found_shape)}")
    count = 1
    for n in shape:
        count *= n
    payload = data[stream.tell():]
    if len(payload) != count * dtype.itemsize:
        raise ModelError(where, f"{count * dtype.itemsize} bytes of array data",
                         f"{len(payload)} bytes")
    array = np.frombuffer(payload, dtype=dtype, count=count)
    if fortran_order:
        return array.reshape(tuple(shape)[::-1]).T
    return array.reshape(shape)


def _layer_manifest(layer):
    if isinstance(layer, Dense):
        entry = {"kind": layer.kind, "name": layer.name, "inputs": layer.inputs, "outputs": layer.outputs}
    elif isinstance(layer, Conv2d):
        entry = {"kind": layer.kind, "name": layer.name, "in_shape": list(layer.in_shape),
                 "out_channels": layer.out_channels, "kernel": list(layer.kernel),
                 "stride": list(layer.stride), "padding": list(layer.padding),
                 "pad_value": layer.pad_value}
    else:
        return {"kind": layer.kind, "name": layer.name, "in_shape": list(layer.in_shape),
                "kernel": list(layer.kernel), "stride": list(layer.stride)}
    for key in ("mask", "a", "b", "t"):
        entry[key] = f"{layer.name}.{key}.npy"
    return entry


def _npy_bytes(array, dtype):
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=dtype), allow_pickle=False)
    return buffer.getvalue()


def dumps(model):
    """Return the bytes of ``model`` as a ``.sbnn`` file (deterministic)."""
    spec = model.input
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "name": model.name,
        "input": {"shape": list(spec.shape), "bits": spec.bits, "encoding": spec.encoding,
                  "planes": list(spec.planes)},
        "layers": [_layer_manifest(layer) for layer in model.layers],
    }
    if model.classes is not None:
        manifest["classes"] = list(model.classes)
    metadata = model.metadata
    if metadata:
        manifest["metadata"] = metadata
    members = [(MANIFEST, (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))]
    for layer, entry in zip(model.layers, manifest["layers"]):
        for key in ("mask", "a", "b", "t"):
            if key in entry:
                members.append((entry[key], _npy_bytes(getattr(layer, key), _DTYPES[key])))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            archive.writestr(info, data, compresslevel=9)
    return buffer.getvalue()


def save(model, path):
    """Write ``model`` to ``path`` as a ``.sbnn`` file, atomically and deterministically."""
    write_atomic(path, dumps(model))

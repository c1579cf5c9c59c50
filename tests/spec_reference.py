"""Independent reference implementation of the `.sbnn` model file format, version 1.

This module is a second implementation of the spec in ``shared/spec/sbnn-format-v1.md``,
written from that text alone, without looking at the main implementation in ``sbnn_hdl``.
It serves as a test oracle: tests compare the main implementation against it.

It provides:

- ``write_sbnn(path, manifest, arrays, *, compression="deflated", manifest_last=True)``:
  write a ZIP container (``manifest.json`` + one ``.npy`` member per array).
- ``read_sbnn(path) -> (manifest, arrays)``: a minimal reader (no validation beyond loading).
- ``evaluate(manifest, arrays, x) -> (predictions, scores)``: a plain-loop, Python-int
  evaluation of the network, meant to be checked line by line against the spec.
- ``evaluate_layers(manifest, arrays, x)``: every layer's output for every sample.
- ``random_description(rng, *, encoding=None, bits=None, conv=False) -> (manifest, arrays)``
  and ``random_inputs(rng, manifest, n)``: random valid models and inputs.

Interpretations of points the spec leaves open (each is also noted where it is used):

- Default ``planes`` (key absent): all planes in ascending order ``[0, 1, ..., bits-1]``.
  The order only matters for the ``bitplanes`` encoding.
- ``planes: []`` is treated as unspecified by the spec; the evaluator accepts it (the
  network then sees all-zero / empty input), but the generator never produces it.
- "Integers": numpy signed and unsigned integer dtypes of any byte order, plus ``bool``
  (read as 0/1). The generator uses ``bool`` only for masks.
- ``bitplanes`` with an ``[H, W, C]`` input and a *dense* first layer uses the plane-major
  order ``v[q*len(u) + i]`` (the spec's formula "for a dense first layer"), where ``u`` is the
  sample flattened in C order; only a conv2d / maxpool2d first layer sees ``[H, W, C*len(P)]``.
- ``maxpool2d`` computes the maximum over the window, which is the spec's OR on bits. (It only
  differs from OR when a maxpool is the first layer of an ``integer`` encoded multi-bit input;
  the generator never builds that.)
- A conv2d / maxpool2d that follows a dense layer (not produced by the generator) reads the
  dense output vector as its ``in_shape`` in C order.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np

__all__ = [
    "write_sbnn",
    "read_sbnn",
    "evaluate",
    "evaluate_layers",
    "encode_input",
    "random_description",
    "random_inputs",
]

MANIFEST = "manifest.json"
ARRAY_KEYS = ("mask", "a", "b", "t")
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


# ---------------------------------------------------------------------------------------------
# Container
# ---------------------------------------------------------------------------------------------

def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def write_sbnn(path, manifest: dict, arrays: dict, *, compression: str = "deflated",
               manifest_last: bool = True) -> None:
    """Write a `.sbnn` ZIP: ``manifest.json`` plus one ``.npy`` member per entry of ``arrays``.

    Member names are the keys of ``arrays``; arrays are saved with ``np.save`` exactly with the
    dtype / byte order / memory order they have. Arrays are written in reverse-sorted name
    order and, by default, the manifest is the LAST member (deliberately unlike a typical
    writer). Timestamps are fixed, so identical inputs give identical bytes.
    """
    if compression == "deflated":
        ctype = zipfile.ZIP_DEFLATED
    elif compression == "stored":
        ctype = zipfile.ZIP_STORED
    else:
        raise ValueError(f"compression must be 'deflated' or 'stored', not {compression!r}")

    manifest_bytes = json.dumps(manifest, ensure_ascii=False, indent=2).encode("utf-8")
    members = [(name, _npy_bytes(arrays[name])) for name in sorted(arrays, reverse=True)]
    if manifest_last:
        members.append((MANIFEST, manifest_bytes))
    else:
        members.insert(0, (MANIFEST, manifest_bytes))

    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
            info.compress_type = ctype
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)


def read_sbnn(path) -> tuple[dict, dict]:
    """Minimal independent reader: returns (manifest, {member name: array}).

    Loads ``manifest.json`` (UTF-8 JSON) and every array member named by a layer's
    ``mask``/``a``/``b``/``t`` key, with ``allow_pickle=False``. No validation beyond that.
    """
    with zipfile.ZipFile(path, "r") as zf:
        manifest = json.loads(zf.read(MANIFEST).decode("utf-8"))
        arrays = {}
        for layer in manifest["layers"]:
            for key in ARRAY_KEYS:
                name = layer.get(key)
                if isinstance(name, str) and name not in arrays:
                    data = zf.read(name)
                    arrays[name] = np.load(io.BytesIO(data), allow_pickle=False)
    return manifest, arrays


# ---------------------------------------------------------------------------------------------
# Evaluation (plain loops, Python ints only)
# ---------------------------------------------------------------------------------------------

def _planes(input_desc: dict) -> list[int]:
    bits = int(input_desc["bits"])
    if input_desc.get("planes") is None:
        # INTERPRETATION: the spec says "default: all" without an order; we use ascending
        # order 0, 1, ..., bits-1. (Only matters for the bitplanes encoding.)
        return list(range(bits))
    return [int(k) for k in input_desc["planes"]]


def _bit(value: int, k: int) -> int:
    return (value >> k) & 1


def _get_array(arrays: dict, name: str) -> np.ndarray:
    if name in arrays:
        return arrays[name]
    # leniency: allow arrays keyed without the ".npy" suffix
    if name.endswith(".npy") and name[:-4] in arrays:
        return arrays[name[:-4]]
    raise KeyError(f"array {name!r} not found")


def encode_input(manifest: dict, sample) -> tuple[list[int], tuple]:
    """Encode one sample (numpy array of shape input.shape) into the first layer's input.

    Returns (flat list of Python ints in C order, shape tuple of that input).
    """
    inp = manifest["input"]
    shape = tuple(int(s) for s in inp["shape"])
    bits = int(inp["bits"])
    P = _planes(inp)
    sample = np.asarray(sample)
    assert tuple(sample.shape) == shape, f"sample shape {sample.shape} != input.shape {shape}"

    # u: the sample flattened in C order (for [H, W, C]: index (y*W + x)*C + c)
    u = []
    for idx in np.ndindex(*shape):  # np.ndindex iterates in C order (last index fastest)
        val = int(sample[idx])
        assert 0 <= val < 2 ** bits, f"input value {val} outside [0, 2**{bits})"
        u.append(val)

    encoding = inp["encoding"]
    if encoding == "integer":
        v = []
        for i in range(len(u)):
            s = 0
            for k in P:
                s += 2 ** k * _bit(u[i], k)
            v.append(s)
        return v, shape

    if encoding == "bitplanes":
        first_kind = manifest["layers"][0]["kind"]
        if first_kind == "dense" or len(shape) != 3:
            # plane-major: v[q*len(u) + i] = bit_{P[q]}(u[i])
            v = [0] * (len(P) * len(u))
            for q in range(len(P)):
                for i in range(len(u)):
                    v[q * len(u) + i] = _bit(u[i], P[q])
            return v, (len(P) * len(u),)
        # [H, W, C] input, conv/pool first layer: shape [H, W, C*len(P)],
        # channel q*C + c holds bit_{P[q]} of channel c.
        H, W, C = shape
        Cp = C * len(P)
        v = [0] * (H * W * Cp)
        for y in range(H):
            for x in range(W):
                for q in range(len(P)):
                    for c in range(C):
                        v[(y * W + x) * Cp + (q * C + c)] = _bit(u[(y * W + x) * C + c], P[q])
        return v, (H, W, Cp)

    raise ValueError(f"unknown input encoding {encoding!r}")


def _check_01(name, values):
    for val in values:
        assert val in (0, 1), f"mask {name} holds {val}, expected 0/1"


def _prepare_dense(layer: dict, arrays: dict) -> dict:
    n = int(layer["inputs"])
    m = int(layer["outputs"])
    mask_arr = _get_array(arrays, layer["mask"])
    a_arr = _get_array(arrays, layer["a"])
    b_arr = _get_array(arrays, layer["b"])
    t_arr = _get_array(arrays, layer["t"])
    assert mask_arr.shape == (m, n), f"{layer['name']}: mask shape {mask_arr.shape} != {(m, n)}"
    for arr, nm in ((a_arr, "a"), (b_arr, "b"), (t_arr, "t")):
        assert arr.shape == (m,), f"{layer['name']}: {nm} shape {arr.shape} != {(m,)}"
    mask = [[int(mask_arr[j, i]) for i in range(n)] for j in range(m)]
    for j in range(m):
        _check_01(layer["name"], mask[j])
    return {
        "n": n, "m": m, "mask": mask,
        "a": [int(a_arr[j]) for j in range(m)],
        "b": [int(b_arr[j]) for j in range(m)],
        "t": [int(t_arr[j]) for j in range(m)],
    }


def _dense_acc(P: dict, v: list[int]) -> list[int]:
    n, m = P["n"], P["m"]
    assert len(v) == n, f"dense layer expects {n} inputs, got {len(v)}"
    q = 0
    for i in range(n):
        q += v[i]
    acc = []
    for j in range(m):
        p = 0
        for i in range(n):
            p += P["mask"][j][i] * v[i]
        acc.append(P["a"][j] * p + P["b"][j] * q)
    return acc


def _dense(P: dict, v: list[int], last: bool) -> list[int]:
    acc = _dense_acc(P, v)
    if last:
        return [acc[j] - P["t"][j] for j in range(P["m"])]          # scores
    return [1 if acc[j] >= P["t"][j] else 0 for j in range(P["m"])]  # bits


def _prepare_conv(layer: dict, arrays: dict) -> dict:
    H, W, Cin = (int(s) for s in layer["in_shape"])
    Cout = int(layer["out_channels"])
    kh, kw = (int(s) for s in layer["kernel"])
    sh, sw = (int(s) for s in layer["stride"])
    ph, pw = (int(s) for s in layer["padding"])
    pad_value = int(layer.get("pad_value", 0))
    mask_arr = _get_array(arrays, layer["mask"])
    a_arr = _get_array(arrays, layer["a"])
    b_arr = _get_array(arrays, layer["b"])
    t_arr = _get_array(arrays, layer["t"])
    assert mask_arr.shape == (Cout, kh, kw, Cin), f"{layer['name']}: mask shape {mask_arr.shape}"
    for arr, nm in ((a_arr, "a"), (b_arr, "b"), (t_arr, "t")):
        assert arr.shape == (Cout,), f"{layer['name']}: {nm} shape {arr.shape} != {(Cout,)}"
    mask = [[[[int(mask_arr[j, dy, dx, ci]) for ci in range(Cin)] for dx in range(kw)]
             for dy in range(kh)] for j in range(Cout)]
    for j in range(Cout):
        for dy in range(kh):
            for dx in range(kw):
                _check_01(layer["name"], mask[j][dy][dx])
    return {
        "H": H, "W": W, "Cin": Cin, "Cout": Cout, "kh": kh, "kw": kw, "sh": sh, "sw": sw,
        "ph": ph, "pw": pw, "pad_value": pad_value, "mask": mask,
        "a": [int(a_arr[j]) for j in range(Cout)],
        "b": [int(b_arr[j]) for j in range(Cout)],
        "t": [int(t_arr[j]) for j in range(Cout)],
    }


def _conv2d_acc(P: dict, v: list[int], shape: tuple) -> tuple[list[int], tuple]:
    """acc at every output position, flat in C order over [Ho, Wo, Cout]."""
    H, W, Cin = P["H"], P["W"], P["Cin"]
    assert len(v) == H * W * Cin, f"conv2d expects {(H, W, Cin)}, got {len(v)} values {shape}"
    if len(shape) == 3:
        assert tuple(shape) == (H, W, Cin), f"conv2d in_shape {(H, W, Cin)} != {shape}"
    kh, kw, sh, sw, ph, pw = P["kh"], P["kw"], P["sh"], P["sw"], P["ph"], P["pw"]
    Cout = P["Cout"]
    Ho = (H + 2 * ph - kh) // sh + 1
    Wo = (W + 2 * pw - kw) // sw + 1
    out = [0] * (Ho * Wo * Cout)
    for y in range(Ho):
        for x in range(Wo):
            # the window w[dy, dx, ci] = v[y*sh - ph + dy, x*sw - pw + dx, ci]
            w = [[[0] * Cin for _ in range(kw)] for _ in range(kh)]
            for dy in range(kh):
                for dx in range(kw):
                    iy = y * sh - ph + dy
                    ix = x * sw - pw + dx
                    for ci in range(Cin):
                        if 0 <= iy < H and 0 <= ix < W:
                            w[dy][dx][ci] = v[(iy * W + ix) * Cin + ci]
                        else:
                            w[dy][dx][ci] = P["pad_value"]
            q = 0
            for dy in range(kh):
                for dx in range(kw):
                    for ci in range(Cin):
                        q += w[dy][dx][ci]
            for j in range(Cout):
                p = 0
                for dy in range(kh):
                    for dx in range(kw):
                        for ci in range(Cin):
                            p += P["mask"][j][dy][dx][ci] * w[dy][dx][ci]
                out[(y * Wo + x) * Cout + j] = P["a"][j] * p + P["b"][j] * q
    return out, (Ho, Wo, Cout)


def _conv2d(P: dict, v: list[int], shape: tuple) -> tuple[list[int], tuple]:
    acc, (Ho, Wo, Cout) = _conv2d_acc(P, v, shape)
    out = [0] * len(acc)
    for y in range(Ho):
        for x in range(Wo):
            for j in range(Cout):
                k = (y * Wo + x) * Cout + j
                out[k] = 1 if acc[k] >= P["t"][j] else 0
    return out, (Ho, Wo, Cout)


def _prepare_pool(layer: dict) -> dict:
    H, W, C = (int(s) for s in layer["in_shape"])
    kh, kw = (int(s) for s in layer["kernel"])
    sh, sw = (int(s) for s in layer["stride"])
    return {"H": H, "W": W, "C": C, "kh": kh, "kw": kw, "sh": sh, "sw": sw}


def _maxpool2d(P: dict, v: list[int], shape: tuple) -> tuple[list[int], tuple]:
    H, W, C = P["H"], P["W"], P["C"]
    assert len(v) == H * W * C, f"maxpool2d expects {(H, W, C)}, got {len(v)} values {shape}"
    if len(shape) == 3:
        assert tuple(shape) == (H, W, C), f"maxpool2d in_shape {(H, W, C)} != {shape}"
    kh, kw, sh, sw = P["kh"], P["kw"], P["sh"], P["sw"]
    Ho = (H - kh) // sh + 1
    Wo = (W - kw) // sw + 1
    out = [0] * (Ho * Wo * C)
    for y0 in range(Ho):
        for x0 in range(Wo):
            for c in range(C):
                m = 0  # max over the window == OR on bits (values are non-negative)
                for dy in range(kh):
                    for dx in range(kw):
                        val = v[((y0 * sh + dy) * W + (x0 * sw + dx)) * C + c]
                        if val > m:
                            m = val
                out[(y0 * Wo + x0) * C + c] = m
    return out, (Ho, Wo, C)


def _prepare_layers(manifest: dict, arrays: dict) -> list:
    prepared = []
    for layer in manifest["layers"]:
        kind = layer["kind"]
        if kind == "dense":
            prepared.append(("dense", _prepare_dense(layer, arrays)))
        elif kind == "conv2d":
            prepared.append(("conv2d", _prepare_conv(layer, arrays)))
        elif kind == "maxpool2d":
            prepared.append(("maxpool2d", _prepare_pool(layer)))
        else:
            raise ValueError(f"unknown layer kind {kind!r}")
    assert prepared and prepared[-1][0] == "dense", "the last layer must be dense"
    return prepared


def _run_sample(manifest: dict, prepared: list, sample) -> list[list[int]]:
    v, shape = encode_input(manifest, sample)
    outs = []
    L = len(prepared)
    for li, (kind, P) in enumerate(prepared):
        if kind == "dense":
            # a dense layer after conv/pool reads its input flattened in C order, which is
            # exactly how v is stored here
            v = _dense(P, v, last=(li == L - 1))
            shape = (len(v),)
        elif kind == "conv2d":
            v, shape = _conv2d(P, v, shape)
        else:
            v, shape = _maxpool2d(P, v, shape)
        outs.append(list(v))
    return outs


def evaluate_layers(manifest: dict, arrays: dict, x) -> list[list[list[int]]]:
    """Every layer's output for every sample: result[n][layer] is a flat list of ints (C order).

    For the last (dense) layer the output is the score list ``acc - t``.
    """
    prepared = _prepare_layers(manifest, arrays)
    x = np.asarray(x)
    return [_run_sample(manifest, prepared, x[s]) for s in range(x.shape[0])]


def evaluate(manifest: dict, arrays: dict, x) -> tuple[list[int], list[list[int]]]:
    """Plain-loop evaluation. x: unsigned ints of shape [N, *input.shape].

    Returns (predictions, scores) with scores[n][j] = acc[j] - t[j] of the last dense layer and
    predictions[n] = the smallest j with the largest score.
    """
    all_outs = evaluate_layers(manifest, arrays, x)
    predictions, scores = [], []
    for outs in all_outs:
        s = outs[-1]
        best = 0
        for j in range(1, len(s)):
            if s[j] > s[best]:  # strict: ties keep the smaller j
                best = j
        predictions.append(best)
        scores.append(s)
    return predictions, scores


# ---------------------------------------------------------------------------------------------
# Random valid models and inputs
# ---------------------------------------------------------------------------------------------

_A_MIN, _A_MAX = -2 ** 24, 2 ** 24 - 1
_NAME_FIRST = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_NAME_REST = _NAME_FIRST + "0123456789_"
_MASK_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "bool"]
_AB_DTYPES = ["int32", "int64", ">i8"]


def _random_name(rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.1:
        length_rest = 63          # maximum length 64
    elif r < 0.2:
        length_rest = 0           # single letter
    else:
        length_rest = int(rng.integers(1, 12))
    s = _NAME_FIRST[int(rng.integers(len(_NAME_FIRST)))]
    for _ in range(length_rest):
        s += _NAME_REST[int(rng.integers(len(_NAME_REST)))]
    return s


def _unique_name(rng, used: set) -> str:
    while True:
        n = _random_name(rng)
        if n not in used:
            used.add(n)
            return n


def _maybe_fortran(rng, arr: np.ndarray) -> np.ndarray:
    if arr.ndim >= 2 and rng.random() < 0.25:
        return np.asfortranarray(arr)
    return arr


def _random_mask(rng, shape: tuple) -> np.ndarray:
    """Random 0/1 mask of shape [m, ...]; row j is the connections of neuron / channel j."""
    m = shape[0]
    density = rng.uniform(0.1, 0.9)
    mask = (rng.random(shape) < density).astype(np.int64)
    if rng.random() < 0.35:
        mask[int(rng.integers(m))] = 0       # a neuron with no connections
    if rng.random() < 0.35:
        mask[int(rng.integers(m))] = 1       # a neuron connected to everything
    return mask


def _random_ab(rng, m: int) -> tuple[np.ndarray, np.ndarray]:
    a = rng.integers(-8, 9, size=m).astype(np.int64)
    if rng.random() < 0.5:
        b = np.zeros(m, dtype=np.int64)
    else:
        b = rng.integers(-4, 5, size=m).astype(np.int64)
    if rng.random() < 0.2:
        a[int(rng.integers(m))] = _A_MIN
    if rng.random() < 0.2:
        a[int(rng.integers(m))] = _A_MAX
    if rng.random() < 0.15:
        b[int(rng.integers(m))] = _A_MIN
    if rng.random() < 0.15:
        b[int(rng.integers(m))] = _A_MAX
    return a, b


def _random_t(rng, acc_per_output: list[list[int]]) -> np.ndarray:
    """Thresholds mostly chosen among observed acc values, so that outputs are mixed."""
    m = len(acc_per_output)
    t = np.zeros(m, dtype=np.int64)
    for j in range(m):
        vals = sorted(acc_per_output[j])
        if vals:
            k = int(rng.integers(len(vals)))
            tj = vals[k] + int(rng.integers(0, 2))  # on or just above an observed value
        else:
            tj = int(rng.integers(-5, 6))
        t[j] = max(-2 ** 60, min(2 ** 60 - 1, tj))
    r = rng.random()
    if r < 0.2:
        t[int(rng.integers(m))] = 2 ** 59       # never reached
    if rng.random() < 0.2:
        t[int(rng.integers(m))] = -2 ** 59      # always reached
    if rng.random() < 0.05:
        t[int(rng.integers(m))] = 2 ** 60 - 1   # range limits
    if rng.random() < 0.05:
        t[int(rng.integers(m))] = -2 ** 60
    return t


def _store(rng, arrays: dict, lname: str, mask, a, b, t) -> dict:
    names = {}
    mdt = _MASK_DTYPES[int(rng.integers(len(_MASK_DTYPES)))]
    for key, arr, dt in (("mask", mask, mdt),
                         ("a", a, _AB_DTYPES[int(rng.integers(len(_AB_DTYPES)))]),
                         ("b", b, _AB_DTYPES[int(rng.integers(len(_AB_DTYPES)))]),
                         ("t", t, "int64")):
        arr = np.asarray(arr).astype(np.dtype(dt))
        if key == "mask":
            arr = _maybe_fortran(rng, arr)
        member = f"{lname}.{key}.npy"
        arrays[member] = arr
        names[key] = member
    return names


def random_inputs(rng: np.random.Generator, manifest: dict, n: int) -> np.ndarray:
    """n valid samples: shape [n, *input.shape], uint8 (bits <= 8) or uint16.

    Sample 0 is all zeros, sample 1 all 2**bits-1; the others are random with some elements
    forced to the extremes.
    """
    inp = manifest["input"]
    bits = int(inp["bits"])
    shape = tuple(int(s) for s in inp["shape"])
    dtype = np.uint8 if bits <= 8 else np.uint16
    hi = 2 ** bits - 1
    x = rng.integers(0, hi + 1, size=(n, *shape), dtype=np.int64)
    if n > 2:
        sel = rng.random(x.shape)
        x[sel < 0.1] = 0
        x[sel > 0.9] = hi
    if n >= 1:
        x[0] = 0
    if n >= 2:
        x[1] = hi
    return x.astype(dtype)


def _input_for_first(manifest_input: dict, first_kind: str, samples) -> list:
    """Encode samples for the first layer, using encode_input (needs only input + first kind)."""
    fake = {"input": manifest_input, "layers": [{"kind": first_kind}]}
    return [encode_input(fake, s) for s in samples]


def random_description(rng: np.random.Generator, *, encoding=None, bits=None,
                       conv: bool = False) -> tuple[dict, dict]:
    """A random valid (manifest, arrays) following the spec. See module docstring."""
    if bits is None:
        bits = int(rng.integers(1, 17))
    if encoding is None:
        encoding = "integer" if rng.random() < 0.5 else "bitplanes"
    assert encoding in ("integer", "bitplanes")
    assert 1 <= bits <= 16

    input_desc: dict = {}
    if conv:
        shape = [int(rng.integers(3, 7)), int(rng.integers(3, 7)), int(rng.integers(1, 3))]
    else:
        shape = [int(rng.integers(1, 21))]
    input_desc["shape"] = shape
    input_desc["bits"] = bits
    input_desc["encoding"] = encoding
    if rng.random() < 0.5:
        k = int(rng.integers(1, bits + 1))
        planes = [int(p) for p in rng.permutation(bits)[:k]]
        if rng.random() < 0.3:
            planes = sorted(planes)
        input_desc["planes"] = planes
    P = _planes(input_desc)

    used = set()
    layers: list = []
    arrays: dict = {}

    # Decide the layer kinds first.
    kinds: list[str] = []
    if conv:
        first_binary = encoding == "bitplanes" or all(p == 0 for p in P)
        r = rng.random()
        if r < 0.12:
            pass  # dense directly on the [H, W, C] input
        else:
            if first_binary and rng.random() < 0.2:
                kinds.append("maxpool2d")
            n_conv = 1 if rng.random() < 0.7 else 2
            for _ in range(n_conv):
                kinds.append("conv2d")
                if rng.random() < 0.5:
                    kinds.append("maxpool2d")
        n_dense = int(rng.integers(1, 3))
    else:
        n_dense = int(rng.integers(1, 4))
    kinds += ["dense"] * n_dense

    # Sample inputs used to choose thresholds that give mixed outputs.
    probe = random_inputs(rng, {"input": input_desc}, 12)
    cur = _input_for_first(input_desc, kinds[0], probe)  # list of (v, shape)

    for li, kind in enumerate(kinds):
        last = li == len(kinds) - 1
        lname = _unique_name(rng, used)
        shp = cur[0][1]
        if kind == "dense":
            n = len(cur[0][0])
            if last:
                m = 1 if rng.random() < 0.15 else int(rng.integers(1, 13))
            else:
                m = 1 if rng.random() < 0.2 else int(rng.integers(1, 13))
            mask = _random_mask(rng, (m, n))
            a, b = _random_ab(rng, m)
            if last and m >= 2 and rng.random() < 0.3:
                # duplicate a neuron to provoke score ties (prediction = smallest j)
                mask[m - 1] = mask[0]
                a[m - 1] = a[0]
                b[m - 1] = b[0]
                dup = True
            else:
                dup = False
            params = {"n": n, "m": m, "mask": mask.tolist(), "a": [int(e) for e in a],
                      "b": [int(e) for e in b], "t": None}
            accs = [_dense_acc(params, v) for v, _ in cur]
            t = _random_t(rng, [[acc[j] for acc in accs] for j in range(m)])
            if dup:
                t[m - 1] = t[0]
            params["t"] = [int(e) for e in t]
            names = _store(rng, arrays, lname, mask, a, b, t)
            layers.append({"kind": "dense", "name": lname, "inputs": n, "outputs": m, **names})
            cur = [(_dense(params, v, last), (m,)) for v, _ in cur]
        elif kind == "conv2d":
            H, W, Cin = shp
            Cout = 1 if rng.random() < 0.2 else int(rng.integers(1, 5))
            kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
            ph, pw = int(rng.integers(0, 2)), int(rng.integers(0, 2))
            kh, kw = min(kh, H + 2 * ph), min(kw, W + 2 * pw)
            sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
            pad_value = int(rng.integers(0, 2))
            mask = _random_mask(rng, (Cout, kh, kw, Cin))
            a, b = _random_ab(rng, Cout)
            params = {"H": H, "W": W, "Cin": Cin, "Cout": Cout, "kh": kh, "kw": kw,
                      "sh": sh, "sw": sw, "ph": ph, "pw": pw, "pad_value": pad_value,
                      "mask": mask.tolist(), "a": [int(e) for e in a],
                      "b": [int(e) for e in b], "t": None}
            accs = [_conv2d_acc(params, v, s) for v, s in cur]
            per_ch = [[] for _ in range(Cout)]
            for acc, (Ho, Wo, _c) in accs:
                for k in range(len(acc)):
                    per_ch[k % Cout].append(acc[k])
            t = _random_t(rng, per_ch)
            params["t"] = [int(e) for e in t]
            names = _store(rng, arrays, lname, mask, a, b, t)
            layer = {"kind": "conv2d", "name": lname, "in_shape": [H, W, Cin],
                     "out_channels": Cout, "kernel": [kh, kw], "stride": [sh, sw],
                     "padding": [ph, pw]}
            if pad_value == 1 or rng.random() < 0.5:
                layer["pad_value"] = pad_value  # pad_value 0 is sometimes left to the default
            layer.update(names)
            layers.append(layer)
            cur = [_conv2d(params, v, s) for v, s in cur]
        else:  # maxpool2d
            H, W, C = shp
            kh, kw = int(rng.integers(1, min(2, H) + 1)), int(rng.integers(1, min(2, W) + 1))
            sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
            params = {"H": H, "W": W, "C": C, "kh": kh, "kw": kw, "sh": sh, "sw": sw}
            layers.append({"kind": "maxpool2d", "name": lname, "in_shape": [H, W, C],
                           "kernel": [kh, kw], "stride": [sh, sw]})
            cur = [_maxpool2d(params, v, s) for v, s in cur]

    manifest: dict = {
        "format": "sbnn",
        "version": 1,
        "name": _random_name(rng),
        "input": input_desc,
        "layers": layers,
    }
    if rng.random() < 0.5:
        m_out = layers[-1]["outputs"]
        pool = ["T-shirt/top", "Trouser", "Größe", "Schühchen", "naïve café", "猫", "",
                "with space", "Sneaker"]
        classes = [pool[int(rng.integers(len(pool)))] + str(j) for j in range(m_out)]
        classes[int(rng.integers(m_out))] = "Schuh ü"  # always one non-ASCII label
        manifest["classes"] = classes
    if rng.random() < 0.5:
        manifest["metadata"] = {
            "dataset": "random",
            "seed": int(rng.integers(0, 2 ** 31)),
            "test_accuracy": float(rng.random()),
            "nested": {"list": [1, 2.5, None, True, "ß"], "empty": {}, "deep": {"x": [[]]}},
        }
    return manifest, arrays

"""The host's side of a board built by ``generate --board``: open its port, run samples on it
and check every prediction against the golden model (:func:`run_model`), probe the protocol's
error handling (:func:`check_protocol`), load a bitstream (:func:`program`).

The frames and the client are :mod:`sbnn_hdl.board.protocol`'s.
"""

import os
import shutil
import subprocess
import time

import numpy as np

from .. import golden
from ..errors import SbnnError
from ..hwplan import pack_sample
from . import protocol as P

__all__ = ["open_port", "check_model", "run_model", "format_run", "check_protocol", "program"]


def open_port(url, baud, timeout=0.02):
    """A pyserial port for ``url`` (device path or URL)."""
    try:
        import serial
    except ImportError:
        raise SbnnError("pyserial: expected the package (./dev installs it from requirements.txt), found none") from None
    try:
        return serial.serial_for_url(url, baudrate=baud, timeout=timeout)
    except (serial.SerialException, ValueError) as error:
        raise SbnnError(f"--port {url}: cannot open it ({error}); is the board plugged in, and is the "
                        f"port right (ls /dev/ttyUSB*)?") from None


def check_model(info, model, model_bytes, path):
    """Refuse a board (its :class:`~sbnn_hdl.board.protocol.Info`) that does not run ``model``
    (read from ``path`` as ``model_bytes``)."""
    digest = P.model_digest(model_bytes)
    if info.digest != digest:
        raise SbnnError(f"the board runs model '{info.name}' (digest {info.digest.hex()}), not {path} "
                        f"('{model.name}', digest {digest.hex()}): program the matching bitstream, or "
                        f"give the model it was built from")
    if info.sample_bits != model.input.bits * model.input.size:
        raise SbnnError(f"the board takes {info.sample_bits}-bit samples, the model "
                        f"{model.input.bits * model.input.size}")


def run_model(client, model, x, *, labels=None, scores=False, batch=True, progress=None):
    """Run ``x`` on the board behind ``client``; returns a dict of results (see :func:`format_run`).
    Every prediction (and score) is compared with :func:`sbnn_hdl.golden.infer`."""
    info = client.info or client.get_info()
    expected = golden.infer(model, x)
    packed = [pack_sample(model.input, sample) for sample in x]
    predictions, cycles, times, mismatches = [], [], [], []
    use_scores = scores and info.scores
    for n, value in enumerate(packed):
        start = time.perf_counter()
        prediction, latency, values = client.infer(value, scores=use_scores)
        times.append(time.perf_counter() - start)
        predictions.append(prediction)
        cycles.append(latency)
        if prediction != expected.predictions[n] or (use_scores and values != expected.scores[n].tolist()):
            mismatches.append({"sample": n, "board": prediction, "golden": int(expected.predictions[n]),
                               **({"board_scores": values, "golden_scores": expected.scores[n].tolist()}
                                  if use_scores else {})})
        if progress:
            progress(n + 1, len(packed))
    result = {
        "model": model.name, "samples": len(x), "agree": len(x) - len(mismatches), "mismatches": mismatches[:10],
        "scores_checked": bool(use_scores), "clock_hz": info.clock_hz,
        "latency_cycles": sorted(set(cycles)), "latency_ns": [round(c * 1e9 / info.clock_hz, 2) for c in sorted(set(cycles))],
        "round_trip_ms": {"median": round(1000 * float(np.median(times)), 3),
                          "p99": round(1000 * float(np.percentile(times, 99)), 3)} if times else None,
        "host_samples_per_s": round(len(times) / sum(times), 1) if times else None,
    }
    if labels is not None:
        result["accuracy"] = {"correct": int((np.asarray(predictions) == labels).sum()), "of": len(x)}
    if batch and len(x) and info.batch_depth:   # (a build without a batch memory has INFER only)
        count = min(len(x), info.batch_depth)
        for n in range(count):
            client.load(n, packed[n])
        run_cycles, run_predictions = client.run(count)
        bad = [n for n in range(count) if run_predictions[n] != expected.predictions[n]]
        result["batch"] = {"samples": count, "cycles": run_cycles, "agree": count - len(bad),
                           "mismatches": bad[:10], "streaming": info.streaming,
                           "samples_per_cycle": round((count - 1) / (run_cycles - info.latency), 4)
                           if count > 1 and run_cycles > info.latency else None,
                           "cycles_per_sample": round((run_cycles - info.latency) / (count - 1), 2)
                           if count > 1 else None,
                           "samples_per_s": round(count * info.clock_hz / run_cycles) if run_cycles else None}
    result["ok"] = not mismatches and (not result.get("batch") or not result["batch"]["mismatches"])
    return result


def format_run(result):
    lines = [f"{result['model']}: {result['agree']}/{result['samples']} predictions agree with the golden model"
             + (" (scores too)" if result["scores_checked"] else "")]
    for m in result["mismatches"]:
        lines.append(f"  MISMATCH sample {m['sample']}: board {m['board']}, golden {m['golden']}")
    if "accuracy" in result:
        a = result["accuracy"]
        lines.append(f"accuracy: {a['correct']}/{a['of']} = {100 * a['correct'] / max(1, a['of']):.2f}%")
    lines.append(f"on-chip latency: {', '.join(map(str, result['latency_cycles']))} cycles = "
                 f"{', '.join(f'{ns:g}' for ns in result['latency_ns'])} ns at {result['clock_hz'] / 1e6:g} MHz")
    if result["round_trip_ms"]:
        r = result["round_trip_ms"]
        lines.append(f"host round trip (UART, one request at a time): median {r['median']:.3f} ms, "
                     f"p99 {r['p99']:.3f} ms; {result['host_samples_per_s']:,.0f} samples/s")
    if "batch" in result:
        b = result["batch"]
        start = "the first sample's last pixel" if b.get("streaming") else "the first sample"
        lines.append(f"on-chip batch of {b['samples']}: {b['agree']}/{b['samples']} agree; {b['cycles']} cycles "
                     f"from {start} in to the last prediction out"
                     + (f"; {b['samples_per_cycle']:g} samples per cycle after the pipeline fills"
                        + (f" (one per {b['cycles_per_sample']:g} cycles, "
                           + ("pixel by pixel)" if b.get("streaming") else "a word of the batch memory per clock)")
                           if b["cycles_per_sample"] else "")
                        + ", "
                        f"{b['samples_per_s'] / 1e6:.2f} M samples/s including the fill" if b["samples_per_cycle"] else ""))
    return "\n".join(lines)


def check_protocol(client, model=None, sample=None):
    """Robustness checks on a live board (or its simulation); returns a list of (check, passed, detail)."""
    info = client.info or client.get_info()
    sample = sample if sample is not None else 0
    body = int(sample).to_bytes(info.sample_bytes, "big")
    results = []

    def expect_error(name, data, code, kind, timeout=2.0):
        client.port.write(data)
        try:
            client.reply(kind, timeout=timeout)
            results.append((name, False, "no error reply"))
        except P.BoardError as error:
            results.append((name, error.code == code and error.request == kind,
                            f"error {error.code} ({P.ERROR_NAMES.get(error.code)}) for type 0x{error.request:02x}"))
        except P.ProtocolError as error:
            results.append((name, False, str(error)))

    frame = bytearray(P.encode(P.INFER, body))
    frame[-1] ^= 0x01
    expect_error("bad CRC", bytes(frame), P.ERR_CRC, P.INFER)
    expect_error("bad length", P.encode(P.INFER, body + b"\0"), P.ERR_LENGTH, P.INFER)
    expect_error("unknown type", P.encode(0x42, b"xy"), P.ERR_TYPE, 0x42)
    expect_error("over-long length", P.SYNC + bytes([P.LOAD, 0xFF, 0xFF]), P.ERR_LENGTH, P.LOAD)
    expect_error("partial frame times out", P.encode(P.INFER, body)[:6], P.ERR_TIMEOUT, P.INFER, timeout=5.0)
    rng = np.random.default_rng(1)
    garbage = bytes(rng.integers(0, 256, 300, dtype=np.uint8))
    client.port.write(garbage)
    # Whatever the garbage started (error replies, a partial frame) ends with the zeros that
    # resync sends; the board then answers INFO and the valid request.
    skipped = client.resync()
    prediction, cycles, _ = client.infer(sample)
    detail = f"prediction {prediction} after {len(garbage)} random bytes ({skipped} error replies skipped)"
    ok = cycles == info.latency
    if model is not None:
        want = int(golden.infer(model, _unpack(model, sample)[None]).predictions[0])
        ok = ok and prediction == want
        detail += f" (golden {want})"
    results.append(("garbage, then a valid request", ok, detail))
    return results


def _unpack(model, value):
    spec = model.input
    mask = (1 << spec.bits) - 1
    return np.array([(value >> (i * spec.bits)) & mask for i in range(spec.size)]).reshape(spec.shape)


def program(board, bitstream, *, flash=False, log=None):
    """Load ``bitstream`` into ``board`` (a :class:`~sbnn_hdl.board.Board`) with openFPGALoader
    (``$OPENFPGALOADER`` or the one on PATH), into SRAM or, with ``flash``, the SPI flash; returns
    openFPGALoader's last line; ``log`` is told the command line. Raises :class:`~sbnn_hdl.errors.SbnnError` naming what is missing
    when the tool, the file or the board is not there."""
    tool = os.environ.get("OPENFPGALOADER", "openFPGALoader")
    found = shutil.which(tool)
    if not found:
        raise SbnnError(f"{tool}: expected openFPGALoader on PATH, found none; install it with "
                        f"'sudo apt-get install openfpgaloader' (Debian 12 and later)")
    if not os.path.exists(bitstream):
        raise SbnnError(f"{bitstream}: expected a bitstream (build one with python -m sbnn_hdl.generate "
                        f"MODEL --board {board.name}), found no file")
    command = [found, "-b", board.loader] + (["-f"] if flash else []) + [bitstream]
    if log:
        log(" ".join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    text = result.stdout + result.stderr
    if result.returncode != 0:
        lower = text.lower()
        if any(s in lower for s in ("unable to open ftdi", "no cable", "jtag init failed", "not found",
                                     "no device", "unable to open")):
            raise SbnnError(f"no {board.title} found by openFPGALoader: is it plugged in (USB), powered, "
                            f"and may this user open it (udev rule or plugdev group)? openFPGALoader said: "
                            f"{' | '.join(l for l in text.splitlines() if l.strip())[-400:]}")
        raise SbnnError(f"openFPGALoader failed: {' | '.join(l for l in text.splitlines() if l.strip())[-600:]}")
    return text.strip().splitlines()[-1] if text.strip() else "programmed"

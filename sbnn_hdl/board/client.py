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

__all__ = ["open_port", "check_model", "run_model", "board_figures", "describe_link", "format_run",
           "format_figures", "check_protocol", "program"]


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


def run_model(client, model, x, *, labels=None, scores=False, batch=True, link=None, progress=None):
    """Run ``x`` on the board behind ``client``; returns a dict of results (see :func:`format_run`).
    Every prediction (and score) is compared with :func:`sbnn_hdl.golden.infer`.

    One INFER (INFER_SCORES with ``scores`` on a build with scores) per sample, then, unless
    ``batch`` is false or the build has no batch memory, up to ``batch_depth`` LOADs and one RUN.
    ``result["figures"]`` holds what they measured (:func:`board_figures`); ``link`` describes the
    port for them (:func:`describe_link`).
    """
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
    result = {"model": model.name, "samples": len(x), "agree": len(x) - len(mismatches),
              "mismatches": mismatches[:10], "scores_checked": bool(use_scores)}
    if labels is not None:
        result["accuracy"] = {"correct": int((np.asarray(predictions) == labels).sum()), "of": len(x)}
    run = None
    if batch and len(x) and info.batch_depth:   # (a build without a batch memory has INFER only)
        count = min(len(x), info.batch_depth)
        load_times = []
        for n in range(count):
            start = time.perf_counter()
            client.load(n, packed[n])
            load_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        run_cycles, run_predictions = client.run(count)
        run = {"count": count, "cycles": run_cycles, "load_times": load_times, "time": time.perf_counter() - start}
        bad = [n for n in range(count) if run_predictions[n] != expected.predictions[n]]
        result["batch"] = {"samples": count, "agree": count - len(bad), "mismatches": bad[:10]}
    result["figures"] = board_figures(info, kind="INFER_SCORES" if use_scores else "INFER", cycles=cycles,
                                      times=times, run=run, link=link)
    result["ok"] = not mismatches and (not result.get("batch") or not result["batch"]["mismatches"])
    return result


def describe_link(url, info):
    """What the host's round trips over the port ``url`` include, in a sentence, for a board
    that reported ``info`` (its clock and baud rate)."""
    clocks = info.clock_hz / info.baud if info.baud else 0
    if url.startswith("socket://"):
        return (f"a TCP socket ({url}): with the board-in-the-loop simulation (board simulate), the "
                f"simulated UART at {clocks:g} clocks per bit ({info.baud / 1e6:g} Mbaud at the reported "
                f"{info.clock_hz / 1e6:g} MHz) and the simulator's speed, not a board's")
    return (f"the serial port {url} ({info.baud / 1e6:g} Mbaud, 10 bits a byte): the UART, the USB-serial "
            f"adapter's latency and the operating system")


def _ms(seconds):
    return round(1000 * float(seconds), 4)


def _round_trips(times):
    times = np.asarray(times, dtype=float)
    return {"median": _ms(np.median(times)), "p99": _ms(np.percentile(times, 99)),
            "min": _ms(times.min()), "max": _ms(times.max())}


def board_figures(info, *, kind, cycles, times, run=None, link=None):
    """The on-board figures of a :func:`run_model`, per request kind, as a JSON-ready dict.

    ``on_chip`` (exact: the board's cycle counters, converted at INFO's ``clock_hz``):

    - ``INFER`` (or ``INFER_SCORES``): ``latency_cycles``, the most frequent of the ``cycles``
      that the replies carried (``latency_cycles_seen``: every value, normally one), from the
      clock on which the sample (a conv model's: its last pixel) entered the core to the one on
      which the prediction was valid (``docs/protocol.md``); ``latency_ns``; and INFO's
      ``info_latency_cycles``, which it equals on a working board.
    - ``RUN`` (with ``run``, a dict of the batch's ``count``, its reply's ``cycles``, the
      host's ``load_times`` and ``time`` in seconds): ``cycles_per_sample``, the clocks between
      samples once the pipeline is full, ``(cycles - latency) / (count - 1)`` (None for a batch
      of one), ``samples_per_s`` at the clock, and ``samples_per_s_with_fill``,
      ``count * clock / cycles``, for a dense core only (a streaming core's count starts at the
      first sample's last pixel, after most of that sample went in: None).

    ``host`` (this computer's clock around each request, one request at a time; ``link`` says what
    that includes): per kind ``requests`` and ``round_trip_ms`` (median, p99 by linear
    interpolation, min, max); ``uart_ms``, the time of one request's and its reply's bytes on the
    line at INFO's baud rate (10 bits a byte: the least a round trip can take); ``samples_per_s``
    as the host sees them end to end: samples over the total time of their INFERs, or of the
    batch's LOADs and RUN.
    """
    clock = info.clock_hz
    values, counts = np.unique(np.asarray(cycles, dtype=np.int64), return_counts=True)
    latency = int(values[np.argmax(counts)]) if len(cycles) else None
    on_chip, host = {}, {}

    def uart_ms(request, reply):   # payload bytes each way, plus sync, type, length and CRC
        return round(1000 * (request + reply + 14) * 10 / info.baud, 4) if info.baud else None

    reply_bytes = 5 + (info.classes * info.score_bytes if kind == "INFER_SCORES" else 0)
    if latency is not None:
        on_chip[kind] = {"latency_cycles": latency, "latency_ns": round(latency * 1e9 / clock, 2),
                         "latency_cycles_seen": [int(v) for v in values], "info_latency_cycles": info.latency,
                         "from": "the sample's last pixel into the core" if info.streaming
                                 else "the sample into the core"}
        host[kind] = {"requests": len(times), "round_trip_ms": _round_trips(times),
                      "uart_ms": uart_ms(info.sample_bytes, reply_bytes),
                      "samples_per_s": round(len(times) / sum(times), 1)}
    if run is not None:
        count, run_cycles = run["count"], run["cycles"]
        fill = latency if latency is not None else info.latency
        per = (run_cycles - fill) / (count - 1) if count > 1 else None
        on_chip["RUN"] = {"samples": count, "cycles": run_cycles,
                          "cycles_per_sample": round(per, 4) if per is not None else None,
                          "samples_per_s": round(clock / per, 1) if per else None,
                          "samples_per_s_with_fill": round(count * clock / run_cycles, 1)
                          if run_cycles and not info.streaming else None}
        host["LOAD"] = {"requests": len(run["load_times"]), "round_trip_ms": _round_trips(run["load_times"]),
                        "uart_ms": uart_ms(2 + info.sample_bytes, 2)}
        host["RUN"] = {"requests": 1, "samples": count, "round_trip_ms": _round_trips([run["time"]]),
                       "uart_ms": uart_ms(2, 6 + count),
                       "samples_per_s": round(count / (sum(run["load_times"]) + run["time"]), 1)}
    return {"clock_hz": clock, "baud": info.baud, "streaming": info.streaming,
            "on_chip": on_chip, "host": host, "link": link}


def format_run(result):
    """The text ``board run`` prints: agreement with the golden model, the accuracy, and the
    on-board figures as a table (:func:`format_figures`)."""
    lines = [f"{result['model']}: {result['agree']}/{result['samples']} predictions agree with the golden model"
             + (" (scores too)" if result["scores_checked"] else "")]
    for m in result["mismatches"]:
        lines.append(f"  MISMATCH sample {m['sample']}: board {m['board']}, golden {m['golden']}")
    if "accuracy" in result:
        a = result["accuracy"]
        lines.append(f"accuracy: {a['correct']}/{a['of']} = {100 * a['correct'] / max(1, a['of']):.2f}%")
    if "batch" in result:
        b = result["batch"]
        lines.append(f"on-chip batch (LOAD, RUN): {b['agree']}/{b['samples']} predictions agree")
        for n in b["mismatches"]:
            lines.append(f"  MISMATCH batch entry {n}")
    if result["figures"]["on_chip"]:
        lines.append("")
        lines.append(format_figures(result["figures"]))
    return "\n".join(lines)


def _rate(per_s):
    if per_s is None:   # (a RUN whose count does not exceed the latency: a board that is not right)
        return "no rate"
    if per_s >= 1e6:
        return f"{per_s / 1e6:,.2f} M samples/s"
    return f"{per_s:,.0f} samples/s" if per_s >= 100 else f"{per_s:.3g} samples/s"


def format_figures(figures):
    """The on-board figures (:func:`board_figures`) as a plain-text table, each row marked as
    measured on chip (exact, by the board's counters) or by the host (the link included), with
    a note on what each kind includes."""
    clock = figures["clock_hz"]
    rows = []
    for kind, f in figures["on_chip"].items():
        if kind == "RUN":
            value = f"{f['samples']} sample{'' if f['samples'] == 1 else 's'} in {f['cycles']:,} cycles"
            if figures["streaming"]:
                value += " from the first sample's last pixel"
            else:
                value += f" = {_rate(f['samples_per_s_with_fill'])} with the fill"
            if f["cycles_per_sample"] is not None:
                per = f["cycles_per_sample"]
                value = (f"{per:g} cycle{'' if per == 1 else 's'} per sample once full = {_rate(f['samples_per_s'])}"
                         f" ({value})")
            rows.append(("throughput", "on chip", f"RUN of {f['samples']}", value))
        else:
            value = f"{f['latency_cycles']} cycles = {f['latency_ns']:g} ns from {f['from']}"
            if f["latency_cycles_seen"] != [f["latency_cycles"]]:
                value += f" (counters read {', '.join(map(str, f['latency_cycles_seen']))})"
            if f["info_latency_cycles"] != f["latency_cycles"]:
                value += f" (INFO says {f['info_latency_cycles']})"
            rows.append(("latency", "on chip", kind, value))
    for kind, f in figures["host"].items():
        r = f["round_trip_ms"]
        what = f"RUN of {f['samples']}" if kind == "RUN" else kind
        wire = f" (its bytes on the line: {f['uart_ms']:.3f} ms)" if f.get("uart_ms") is not None else ""
        if f["requests"] == 1:
            rows.append(("round trip", "host", what, f"{r['median']:.3f} ms{wire}"))
        else:
            rows.append(("round trip", "host", f"{what} x {f['requests']}",
                         f"median {r['median']:.3f} ms, p99 {r['p99']:.3f}, min {r['min']:.3f}, "
                         f"max {r['max']:.3f}{wire}"))
        if "samples_per_s" in f:
            rows.append(("end to end", "host", "INFER one at a time" if kind != "RUN" else "LOAD each, then RUN",
                         _rate(f["samples_per_s"])))
    header = ("figure", "measured", "request", "value")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    lines = [f"on-board figures (clock {clock / 1e6:g} MHz, as INFO reports it):",
             "  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  " + header[3],
             "  ".join("-" * w for w in widths) + "  " + "-" * max(len(row[3]) for row in [header, *rows])]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[3] for row in rows]
    lines.append("on chip: exact, from the board's cycle counters; ns and samples/s at the clock INFO reports.")
    lines.append("host: this computer's clock around each request, one request at a time; includes "
                 + (figures["link"] or "the link to the board (UART, USB, the operating system)") + ".")
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

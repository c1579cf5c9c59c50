"""The host protocol of a board build (``docs/protocol.md``): framing, CRC, requests and replies.

Pure Python (no Amaranth, no pyserial): the host tool (:mod:`sbnn_hdl.board`) and the tests use
it, and the gateware (:mod:`sbnn_hdl.board.host`) takes its constants from here, so the two sides
cannot disagree on a number.

A frame, in both directions::

    A5 5A | type (1) | length (2) | payload (length bytes) | crc (2)

Every multi-byte number is big-endian. ``crc`` is CRC-16/IBM-3740 (polynomial 0x1021, initial
value 0xFFFF, no reflection, no final XOR; also called CRC-16/CCITT-FALSE) over ``type``,
``length`` and ``payload``, sent high byte first so that the CRC of a whole frame after the sync
bytes is 0 (the receiver's check). A reply's type is the request's type with bit 7 set, or
:data:`ERROR`.
"""

import hashlib
import struct
import time
from dataclasses import dataclass

from ..errors import SbnnError

__all__ = ["SYNC", "INFO", "INFER", "INFER_SCORES", "LOAD", "RUN", "ERROR", "ERROR_NAMES", "VERSION",
           "crc16", "encode", "FrameReader", "ProtocolError", "BoardError", "Info", "Client",
           "model_digest", "sample_bytes"]

SYNC = b"\xa5\x5a"
VERSION = 1
#: Request types (a reply is ``type | 0x80``).
INFO, INFER, INFER_SCORES, LOAD, RUN = 0x01, 0x02, 0x03, 0x04, 0x05
#: The type of an error reply; its payload is ``code (1) | request type (1)``.
ERROR = 0xFF
ERR_CRC, ERR_LENGTH, ERR_TYPE, ERR_TIMEOUT, ERR_RANGE = 1, 2, 3, 4, 5
ERROR_NAMES = {ERR_CRC: "bad CRC", ERR_LENGTH: "bad length", ERR_TYPE: "unknown type",
               ERR_TIMEOUT: "timeout in a partial frame", ERR_RANGE: "index or count out of range"}
#: CRC-16/IBM-3740, as ``amaranth.lib.crc.catalog.CRC16_IBM_3740`` in the gateware.
CRC_POLY, CRC_INIT = 0x1021, 0xFFFF
#: The INFO reply's fixed part (before the name): version, flags, sample bits, sample bytes,
#: classes, score width, latency, clock (Hz), baud rate, batch depth, model digest, name length.
INFO_FORMAT = ">BBHHHBHIIH8sB"
MAX_NAME = 32
#: Where the INFO payload's clock (``clock_hz``, 4 bytes) begins.
INFO_CLOCK_OFFSET = struct.calcsize(INFO_FORMAT[:INFO_FORMAT.index("I")])


def crc16(data, crc=CRC_INIT):
    """CRC-16/IBM-3740 of ``data`` (bytes), continuing from ``crc``."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def encode(kind, payload=b""):
    """One frame of type ``kind`` carrying ``payload``."""
    body = bytes([kind]) + struct.pack(">H", len(payload)) + bytes(payload)
    return SYNC + body + struct.pack(">H", crc16(body))


def model_digest(data):
    """The 8-byte model digest a build carries: the start of the SHA-256 of the ``.sbnn`` file."""
    return hashlib.sha256(data).digest()[:8]


def sample_bytes(spec):
    """Bytes of one packed sample on the wire: ``ceil(bits * size / 8)``."""
    return (spec.bits * spec.size + 7) // 8


class ProtocolError(SbnnError):
    """The board's reply was missing, damaged or not the one expected."""


class BoardError(ProtocolError):
    """The board answered with an error reply."""

    def __init__(self, code, request):
        self.code, self.request = code, request
        super().__init__(f"board replied error {code} ({ERROR_NAMES.get(code, 'unknown code')}) "
                         f"to request type 0x{request:02x}")


class FrameReader:
    """Finds frames in a byte stream: skips anything before a sync, rejects bad CRCs.

    ``feed(data)`` returns the complete frames found, as ``(type, payload)``; damaged frames are
    counted in :attr:`dropped` and skipped by searching for the next sync after their first byte.
    """

    def __init__(self, max_payload=65535):
        self.buffer = bytearray()
        self.max_payload = max_payload
        self.dropped = 0

    def feed(self, data):
        self.buffer += data
        frames = []
        while True:
            start = self.buffer.find(SYNC)
            if start < 0:
                del self.buffer[:max(0, len(self.buffer) - 1)]
                return frames
            del self.buffer[:start]
            if len(self.buffer) < 5:
                return frames
            length = struct.unpack(">H", self.buffer[3:5])[0]
            if length > self.max_payload:
                self.dropped += 1
                del self.buffer[:1]
                continue
            if len(self.buffer) < 7 + length:
                return frames
            body = bytes(self.buffer[2:5 + length])
            if crc16(body + bytes(self.buffer[5 + length:7 + length])) != 0:
                self.dropped += 1
                del self.buffer[:1]
                continue
            frames.append((body[0], body[3:]))
            del self.buffer[:7 + length]


@dataclass(frozen=True)
class Info:
    """What a build says about itself (the INFO reply)."""

    version: int
    scores: bool
    sample_bits: int
    sample_bytes: int
    classes: int
    score_width: int
    latency: int
    clock_hz: int
    baud: int
    batch_depth: int
    digest: bytes
    name: str
    #: Flags bit 1: a streaming core (a conv model): samples enter it pixel by pixel, ``latency``
    #: counts from a sample's last pixel, RUN takes ``pixels + image_gap`` clocks per sample.
    streaming: bool = False

    @classmethod
    def decode(cls, payload):
        size = struct.calcsize(INFO_FORMAT)
        if len(payload) < size:
            raise ProtocolError(f"INFO reply: expected at least {size} bytes, found {len(payload)}")
        (version, flags, bits, nbytes, classes, width, latency, clock, baud, depth, digest,
         name_length) = struct.unpack(INFO_FORMAT, payload[:size])
        name = payload[size:size + name_length].decode("ascii", "replace")
        return cls(version, bool(flags & 1), bits, nbytes, classes, width, latency, clock, baud, depth, digest, name,
                   streaming=bool(flags & 2))

    def encode(self):
        name = self.name.encode("ascii", "replace")[:MAX_NAME]
        flags = int(self.scores) | int(self.streaming) << 1
        return struct.pack(INFO_FORMAT, self.version, flags, self.sample_bits, self.sample_bytes,
                           self.classes, self.score_width, self.latency, self.clock_hz, self.baud,
                           self.batch_depth, self.digest, len(name)) + name

    @property
    def score_bytes(self):
        return (self.score_width + 7) // 8


class Client:
    """Requests to a board over ``port`` (a pyserial port, or anything with ``read``/``write``
    whose ``read(n)`` returns what came within the port's timeout).

    One request at a time: each call sends a frame and waits for its reply, at most ``timeout``
    seconds. Raises :class:`BoardError` for an error reply and :class:`ProtocolError` when no
    valid reply comes.
    """

    def __init__(self, port, *, timeout=2.0):
        self.port = port
        self.timeout = timeout
        self.reader = FrameReader()
        self.info = None

    def request(self, kind, payload=b"", *, expect=None, timeout=None):
        self.port.write(encode(kind, payload))
        return self.reply(kind, expect=expect, timeout=timeout)

    def reply(self, kind, *, expect=None, timeout=None):
        """Wait for the reply to a request of type ``kind``; returns its payload."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            frames = self.reader.feed(b"")
            if not frames:
                while not frames:
                    if time.monotonic() > deadline:
                        raise ProtocolError(f"no reply to request type 0x{kind:02x} within "
                                            f"{timeout or self.timeout:g} s (is the board programmed, "
                                            f"and the port and baud rate right?)")
                    data = self.port.read(max(1, getattr(self.port, "in_waiting", 0) or 1))
                    if data:
                        frames = self.reader.feed(data)
            # Frames after this one (there should be none) stay queued for the next reply.
            reply_type, payload = frames[0]
            self._requeue(frames[1:])
            if reply_type == ERROR and len(payload) == 2:
                raise BoardError(payload[0], payload[1])
            if reply_type != (kind | 0x80):
                raise ProtocolError(f"expected a reply of type 0x{kind | 0x80:02x}, found type 0x{reply_type:02x}")
            if expect is not None and len(payload) != expect:
                raise ProtocolError(f"reply type 0x{reply_type:02x}: expected {expect} payload bytes, "
                                    f"found {len(payload)}")
            return payload

    def _requeue(self, frames):
        for kind, payload in reversed(frames):
            self.reader.buffer[:0] = encode(kind, payload)

    def drain(self, quiet=0.05):
        """Read and discard everything until the line has been quiet for ``quiet`` seconds;
        returns the number of bytes discarded."""
        dropped = len(self.reader.buffer)
        self.reader = FrameReader()
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            data = self.port.read(max(1, getattr(self.port, "in_waiting", 0) or 1))
            if data:
                dropped += len(data)
                last = time.monotonic()
        return dropped

    def resync(self, *, timeout=None):
        """Bring the board back in step after garbage on the line, without waiting for its frame
        timeout: send enough zero bytes to complete any partial frame (zeros never start one),
        then an INFO request, and skip every reply until the INFO reply. Returns the number of
        replies skipped. Before the first INFO the longest frame is unknown: 64 zeros are tried
        first (enough for samples of up to 55 bytes), then 4,096."""
        sizes = [self.info.sample_bytes + 9] if self.info else [64, 4096]
        skipped = 0
        for size in sizes:
            self.reader = FrameReader()
            self.port.write(bytes(size))
            self.port.write(encode(INFO))
            deadline = time.monotonic() + (timeout or self.timeout)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    self.info = Info.decode(self.reply(INFO, timeout=left))
                    return skipped
                except BoardError:
                    skipped += 1
                except ProtocolError as error:
                    if "no reply" in str(error):
                        break
                    skipped += 1
        raise ProtocolError(f"no INFO reply after resynchronising (within {timeout or self.timeout:g} s; is the "
                            f"board programmed, and the port and baud rate right?)")

    # The requests (docs/protocol.md).

    def get_info(self):
        self.info = Info.decode(self.request(INFO))
        return self.info

    def _need_info(self):
        return self.info or self.get_info()

    def _sample(self, value):
        info = self._need_info()
        return int(value).to_bytes(info.sample_bytes, "big")

    def infer(self, packed, *, scores=False):
        """Run one packed sample; returns ``(prediction, cycles, scores or None)``."""
        info = self._need_info()
        if scores and not info.scores:
            raise ProtocolError("this build has no scores port (built with --no-scores)")
        kind = INFER_SCORES if scores else INFER
        expect = 5 + (info.classes * info.score_bytes if scores else 0)
        payload = self.request(kind, self._sample(packed), expect=expect)
        prediction, cycles = payload[0], struct.unpack(">I", payload[1:5])[0]
        values = None
        if scores:
            n = info.score_bytes
            values = [int.from_bytes(payload[5 + j * n:5 + (j + 1) * n], "big", signed=True)
                      for j in range(info.classes)]
        return prediction, cycles, values

    def load(self, index, packed):
        """Store one packed sample at ``index`` of the on-chip batch memory."""
        self.request(LOAD, struct.pack(">H", index) + self._sample(packed), expect=2)

    def run(self, count):
        """Run batch entries ``0 .. count-1`` back to back; returns ``(cycles, predictions)``:
        the cycles from the first sample into the core to the last prediction out."""
        payload = self.request(RUN, struct.pack(">H", count), expect=6 + count)
        got, cycles = struct.unpack(">HI", payload[:6])
        if got != count:
            raise ProtocolError(f"RUN reply: expected count {count}, found {got}")
        return cycles, list(payload[6:])

"""The host side of the board protocol (sbnn_hdl.board.protocol): CRC, framing, resynchronisation,
and the same CRC in the gateware (amaranth.lib.crc) as on the host."""

import struct

import numpy as np
import pytest
from amaranth.lib.crc import catalog
from amaranth.sim import Simulator

from sbnn_hdl.board import protocol as P


def test_crc_is_crc16_ibm_3740():
    assert P.crc16(b"123456789") == 0x29B1  # the catalogue's check value
    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 7, 64, 300):
        data = bytes(rng.integers(0, 256, n, dtype=np.uint8))
        assert P.crc16(data) == catalog.CRC16_IBM_3740(data_width=8).compute(data)


def test_gateware_crc_matches_host_crc_and_accepts_whole_frames():
    """The amaranth.lib.crc processor the gateware uses, fed byte by byte: its register equals the
    host's CRC, and a frame body followed by its CRC (high byte first) leaves the residue."""
    crc = catalog.CRC16_IBM_3740(data_width=8).create()
    body = bytes([P.INFER]) + struct.pack(">H", 3) + b"\x01\x02\xff"
    frame = body + struct.pack(">H", P.crc16(body))

    async def bench(ctx):
        ctx.set(crc.start, 1)
        await ctx.tick()
        ctx.set(crc.start, 0)
        for n, byte in enumerate(frame):
            ctx.set(crc.data, byte)
            ctx.set(crc.valid, 1)
            await ctx.tick()
            if n == len(body) - 1:
                assert ctx.get(crc.crc) == P.crc16(body)
                assert not ctx.get(crc.match_detected)
        ctx.set(crc.valid, 0)
        assert ctx.get(crc.match_detected)

    sim = Simulator(crc)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_encode_layout():
    frame = P.encode(P.RUN, b"\x00\x10")
    assert frame[:2] == P.SYNC and frame[2] == P.RUN and frame[3:5] == b"\x00\x02" and frame[5:7] == b"\x00\x10"
    assert P.crc16(frame[2:]) == 0


def test_reader_resynchronises_after_garbage_and_damage():
    rng = np.random.default_rng(1)
    frames = [(P.INFO | 0x80, b"hello"), (P.INFER | 0x80, bytes(range(20))), (P.ERROR, bytes([1, 2])), (0x85, b"")]
    damaged = bytearray(P.encode(0x82, b"abc"))
    damaged[6] ^= 0x40
    stream = (bytes(rng.integers(0, 256, 50, dtype=np.uint8)).replace(P.SYNC, b"") + P.encode(*frames[0])
              + b"\xa5\xa5\x5a" + bytes(damaged) + P.encode(*frames[1]) + P.encode(*frames[2])
              + b"\x00\xa5" + P.encode(*frames[3]))
    for chunk in (1, 3, 1000):
        reader = P.FrameReader(max_payload=1000)
        got = []
        for i in range(0, len(stream), chunk):
            got += reader.feed(stream[i:i + chunk])
        assert got == frames
        assert reader.dropped >= 1


def test_info_round_trip():
    info = P.Info(1, True, 256, 32, 10, 10, 15, 100_000_000, 3_000_000, 512, b"abcdefgh", "digits")
    assert P.Info.decode(info.encode()) == info
    with pytest.raises(P.ProtocolError, match="INFO reply: expected at least"):
        P.Info.decode(b"\x01")


class FakePort:
    """A port whose 'board' answers each request from a function."""

    def __init__(self, answer):
        self.answer, self.pending = answer, bytearray()

    def write(self, data):
        for kind, payload in P.FrameReader().feed(bytes(data)):
            self.pending += self.answer(kind, payload)

    def read(self, n):
        data, self.pending[:n] = bytes(self.pending[:n]), b""
        return data


def test_client_errors_and_replies():
    info = P.Info(1, False, 12, 2, 3, 0, 5, 1000, 100, 4, b"12345678", "m")

    def answer(kind, payload):
        if kind == P.INFO:
            return b"\x00garbage" + P.encode(P.INFO | 0x80, info.encode())
        if kind == P.INFER:
            return P.encode(P.INFER | 0x80, bytes([2]) + struct.pack(">I", 5))
        return P.encode(P.ERROR, bytes([P.ERR_TYPE, kind]))

    client = P.Client(FakePort(answer), timeout=0.2)
    assert client.get_info() == info
    assert client.infer(0xABC) == (2, 5, None)
    with pytest.raises(P.BoardError, match=r"board replied error 3 \(unknown type\) to request type 0x05"):
        client.run(2)
    with pytest.raises(P.ProtocolError, match="this build has no scores port"):
        client.infer(1, scores=True)
    silent = P.Client(FakePort(lambda kind, payload: b""), timeout=0.05)
    with pytest.raises(P.ProtocolError, match="no reply to request type 0x01 within 0.05 s"):
        silent.get_info()


def test_documented_info_request_bytes():
    assert P.encode(P.INFO) == bytes.fromhex("a55a010000fbac")  # docs/protocol.md


def test_resync_skips_error_replies_until_info():
    info = P.Info(1, False, 12, 2, 3, 0, 5, 1000, 100, 4, b"12345678", "m")
    sent = []

    def answer(kind, payload):
        sent.append(kind)
        return P.encode(P.ERROR, bytes([P.ERR_CRC, 7])) + P.encode(P.INFO | 0x80, info.encode())

    port = FakePort(answer)
    client = P.Client(port, timeout=0.2)
    assert client.resync() == 1 and client.info == info
    assert sent == [P.INFO]

"""The host interface's components in amaranth.sim, each fed through its own stream ports and
checked against the host side of the protocol (sbnn_hdl.board.protocol: frames, CRC, replies)
and the golden model: the frame receiver, the reply sender, the sample shifter and the
dispatcher; for a streaming core (a conv model), the pixel shifter and the pixel dispatcher."""

import gc
import os
import random
import struct
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from amaranth.hdl import Module, UnusedElaboratable
from amaranth.lib import wiring
from amaranth.sim import Simulator

from sbnn_hdl import golden
from sbnn_hdl.board import protocol as P
from sbnn_hdl.board.dispatch import BANK_WORDS, CoreInfo, Dispatcher, SampleShifter, StreamCoreInfo, run_period
from sbnn_hdl.board.frames import FrameReceiver, ReplySender
from sbnn_hdl.board.host import HostInterface
from sbnn_hdl.board.pixels import PixelDispatcher, PixelShifter
from sbnn_hdl.gateware import NetworkCore
from sbnn_hdl.gateware.streaming import StreamingCore
from sbnn_hdl.hwplan import pack_sample
from sbnn_hdl.streamplan import is_streaming
from sbnn_hdl.testing import LayerPlan, random_inputs, random_model
from sbnn_hdl.testing.strategies import stream_models


async def put(ctx, stream, **fields):
    """One transfer into ``stream`` (a plain payload as ``payload=``, a struct's by field)."""
    for name, value in fields.items():
        ctx.set(stream.payload if name == "payload" else getattr(stream.payload, name), value)
    ctx.set(stream.valid, 1)
    # A loop rather than ``until``: a background testbench may be left waiting here when the
    # simulation ends, which ``until`` (and ``repeat``) report as an error while closing.
    while not (await ctx.tick().sample(stream.ready))[2]:
        pass
    ctx.set(stream.valid, 0)


async def get(ctx, stream):
    """One transfer out of ``stream``; returns its payload."""
    ctx.set(stream.ready, 1)
    while True:
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if valid:
            break
    ctx.set(stream.ready, 0)
    return payload


async def idle(ctx, clocks):
    for _ in range(clocks):   # (not ``repeat``, for the reason given in ``put``)
        await ctx.tick()


def simulate(dut, *testbenches, background=()):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for bench in testbenches:
        sim.add_testbench(bench)
    for bench in background:
        sim.add_testbench(bench, background=True)
    sim.run()


# --- FrameReceiver ------------------------------------------------------------------------------

def test_receiver_hands_on_what_the_protocol_frames():
    """Frames made by ``protocol.encode`` (between garbage without a sync pattern) come out as
    their payload bytes and one good request each; a damaged CRC, a length beyond the longest
    request and a partial frame come out as the matching error, the first two after their
    payload is skipped or not awaited. The consumers stall at random."""
    rng = random.Random(1)
    dut = FrameReceiver(max_length=12, timeout=200)
    good = [(P.INFER, bytes(rng.randrange(256) for _ in range(12))), (P.INFO, b""), (0x42, b"ab"),
            (P.RUN, b"\x00\x07")]
    bad_crc = bytearray(P.encode(P.LOAD, b"\x00\x01" + bytes(10)))
    bad_crc[-2] ^= 0x10
    stream = [b"\x00\xa5\x00\x5a\xff", P.encode(*good[0]), P.encode(*good[1]), bytes(bad_crc),
              b"\xa5\xa5" + P.encode(*good[2])[1:], P.SYNC + bytes([P.INFER, 0x00, 13]), P.encode(*good[3]),
              P.encode(P.INFER, bytes(12))[:9]]
    expected = [(P.INFER, 12, 0, good[0][1]), (P.INFO, 0, 0, b""), (P.LOAD, 12, P.ERR_CRC, bad_crc[5:-2]),
                (0x42, 2, 0, b"ab"), (P.INFER, 13, P.ERR_LENGTH, b""), (P.RUN, 2, 0, b"\x00\x07"),
                (P.INFER, 12, P.ERR_TIMEOUT, bytes(4))]
    payload, requests = [], []

    async def producer(ctx):
        for data in stream:
            for byte in data:
                await put(ctx, dut.bytes, payload=byte)
                await idle(ctx, rng.randrange(3))

    async def payload_consumer(ctx):
        while True:
            await idle(ctx, rng.randrange(4))
            byte = await get(ctx, dut.payload)
            if byte.first:
                payload.append(bytearray())
            payload[-1].append(byte.data)

    async def request_consumer(ctx):
        for _ in expected:
            request = await get(ctx, dut.request)
            requests.append((request.kind, request.length, request.error, bytes(payload.pop(0)) if request.length
                             and request.error != P.ERR_LENGTH else b""))
            assert not payload
        assert requests == expected

    simulate(dut, producer, request_consumer, background=[payload_consumer])


def test_receiver_times_out_inside_a_frame_only():
    """Silence between frames is no error; silence after ``A5 5A`` (before the type: kind 0)
    ends the frame with a timeout, ``timeout`` clocks after the last byte; waiting for the
    payload to be taken is no silence."""
    dut = FrameReceiver(max_length=4, timeout=50)
    frame = P.encode(P.RUN, b"\x00\x02")
    go = []

    async def bench(ctx):
        await ctx.tick().repeat(500)
        assert not ctx.get(dut.request.valid) and not ctx.get(dut.busy)
        for byte in P.SYNC:
            await put(ctx, dut.bytes, payload=byte)
        waited = 0
        while not ctx.get(dut.request.valid):
            await ctx.tick()
            waited += 1
        assert 50 <= waited <= 55
        request = await get(ctx, dut.request)
        assert (request.kind, request.error) == (0, P.ERR_TIMEOUT)
        go.append(True)
        await ctx.tick().repeat(200)
        assert not ctx.get(dut.request.valid) and ctx.get(dut.payload.valid)
        for byte in frame[5:7]:
            assert (await get(ctx, dut.payload)).data == byte
        request = await get(ctx, dut.request)
        assert (request.kind, request.length, request.error) == (P.RUN, 2, 0)

    async def producer(ctx):
        while not go:
            await ctx.tick()
        for byte in frame:
            await put(ctx, dut.bytes, payload=byte)

    simulate(dut, bench, background=[producer])


def test_receiver_takes_one_frame_at_a_time():
    """Until its request is taken, the receiver takes at most one byte of what follows a frame."""
    dut = FrameReceiver(max_length=4, timeout=1000)
    taken = []

    async def producer(ctx):
        for byte in P.encode(P.INFO) * 2:
            await put(ctx, dut.bytes, payload=byte)
            taken.append(byte)

    async def consumer(ctx):
        await ctx.tick().until(dut.request.valid)
        await ctx.tick().repeat(300)
        assert len(taken) <= len(P.encode(P.INFO)) + 1
        for _ in range(2):
            request = await get(ctx, dut.request)
            assert (request.kind, request.error) == (P.INFO, 0)

    simulate(dut, consumer, background=[producer])


# --- ReplySender --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, fixed, tail", [(P.INFO | 0x80, bytes(range(40, 77)), b""),
                                               (P.RUN | 0x80, struct.pack(">HI", 5, 1234), b"\x03\x01\x04\x01\x05"),
                                               (P.ERROR, bytes([P.ERR_CRC, P.LOAD]), b""),
                                               (P.RUN | 0x80, b"", b"\xa5\x5a")])
def test_sender_frames_what_the_protocol_encodes(kind, fixed, tail):
    """The bytes out are ``protocol.encode(kind, fixed + tail)``, whatever the stalls on either
    side; the reply is taken on the clock its last byte is."""
    rng = random.Random(len(fixed) + len(tail))
    max_fixed = 40
    dut = ReplySender(max_fixed)
    out = []

    async def replier(ctx):
        for repeat in range(2):
            ctx.set(dut.reply.payload.kind, kind)
            ctx.set(dut.reply.payload.fixed, int.from_bytes(fixed.ljust(max_fixed, b"\0"), "big"))
            ctx.set(dut.reply.payload.fixed_length, len(fixed))
            ctx.set(dut.reply.payload.tail_length, len(tail))
            ctx.set(dut.reply.payload.length, len(fixed) + len(tail))
            ctx.set(dut.reply.valid, 1)
            await ctx.tick().until(dut.reply.ready)
            ctx.set(dut.reply.valid, 0)
            await ctx.tick()   # (for the UART testbench to note the last byte)
            assert not ctx.get(dut.bytes.valid)
            assert bytes(out) == P.encode(kind, fixed + tail) * (repeat + 1)
            assert P.FrameReader().feed(bytes(out)) == [(kind, fixed + tail)] * (repeat + 1)

    async def tail_source(ctx):
        while tail:
            for byte in tail:
                await idle(ctx, rng.randrange(5))
                await put(ctx, dut.tail, payload=byte)

    async def uart(ctx):
        while True:
            await idle(ctx, rng.randrange(6))
            out.append(await get(ctx, dut.bytes))

    simulate(dut, replier, background=[tail_source, uart])


# --- SampleShifter ------------------------------------------------------------------------------

@pytest.mark.parametrize("word_bits", [72, 8, 3])
def test_shifter_keeps_the_read_bits_of_the_big_endian_sample(word_bits):
    """``features`` bit n is bit ``read_bits[n]`` of the sample sent as big-endian bytes (after
    a LOAD's two index bytes), and ``prefix`` the payload's first two bytes, frame after frame;
    with the sample register in one word, in one word exactly, and in three words with a
    spare bit."""
    rng = random.Random(5)
    info = CoreInfo(sample_bits=21, classes=2, score_width=0, latency=1, prediction_width=1,
                    read_bits=(0, 3, 4, 8, 13, 15, 16, 20))
    dut = SampleShifter(info, word_bits)

    async def bench(ctx):
        for kind in (P.INFER, P.LOAD, P.INFER, P.LOAD, P.RUN):
            sample = rng.getrandbits(21)
            payload = (struct.pack(">H", rng.randrange(1 << 16)) if kind != P.INFER else b"") + \
                sample.to_bytes(info.sample_bytes, "big")
            if kind == P.RUN:
                payload = payload[:2]
            for n, byte in enumerate(payload):
                await put(ctx, dut.payload, data=byte, first=n == 0, kind=kind)
            await ctx.tick().until(~dut.busy)
            assert ctx.get(dut.prefix) == int.from_bytes(payload[:2], "big")
            if kind != P.RUN:
                assert ctx.get(dut.features) == sum(((sample >> b) & 1) << n for n, b in enumerate(info.read_bits))

    simulate(dut, bench)


# --- PixelShifter -------------------------------------------------------------------------------

@pytest.mark.parametrize("pixels, pixel_bits, read", [
    (7, 5, (0, 2, 3)),     # 35 bits in 5 bytes: 5 padding bits, pixels across byte boundaries
    (12, 1, None),         # a bit per pixel: a pixel written on every clock
    (4, 16, (1, 15)),      # no padding, two bytes per pixel
    (3, 3, ()),            # a core that reads nothing of its input: words of 0
])
def test_pixel_shifter_writes_each_pixel_of_the_big_endian_sample(pixels, pixel_bits, read):
    """Pixel ``p`` of the sample (bits ``[p*B, (p+1)*B)`` of the big-endian integer) is written at
    ``base + p``, its read bits packed from bit 0 up; the last pixel comes first. ``prefix`` is
    the payload's first two bytes; frame after frame (INFER, LOAD with its index first)."""
    rng = random.Random(pixels * pixel_bits)
    info = StreamCoreInfo(pixels=pixels, pixel_bits=pixel_bits, classes=2, score_width=0, latency=1,
                          prediction_width=1, pixel_read_bits=read)
    base = 5
    dut = PixelShifter(info, base=base)
    writes = []

    async def recorder(ctx):
        async for _, _, en, addr, data in ctx.tick().sample(dut.write_en, dut.write_addr, dut.write_data):
            if en:
                writes.append((addr, data))

    async def bench(ctx):
        for kind in (P.INFER, P.LOAD, P.INFER, P.LOAD):
            sample = rng.getrandbits(info.sample_bits)
            index = rng.randrange(1 << 16)
            payload = (struct.pack(">H", index) if kind == P.LOAD else b"") + sample.to_bytes(info.sample_bytes, "big")
            writes.clear()
            for n, byte in enumerate(payload):
                await put(ctx, dut.payload, data=byte, first=n == 0, kind=kind)
            await ctx.tick().until(~dut.busy)
            await ctx.tick()
            assert ctx.get(dut.prefix) == int.from_bytes(payload[:2], "big")
            expected = []
            for p in reversed(range(pixels)):
                pixel = sample >> (p * pixel_bits) & ((1 << pixel_bits) - 1)
                expected.append((base + p, sum((pixel >> b & 1) << n for n, b in enumerate(info.pixel_read_bits))))
            assert writes == expected

    simulate(dut, bench, background=[recorder])


# --- Dispatcher ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(3)
    model = random_model(rng, shape=(12,), bits=3, layers=(LayerPlan("dense", 6), LayerPlan("dense", 4)))
    return model, random_inputs(rng, model.input, 4)


def conv_model(rng):
    """A small conv model: a 6x5 image of 3-bit pixels, a 3x3 conv with padding 1 and 3 channels,
    a 2x2 max-pool, a dense layer of 4."""
    return random_model(rng, shape=(6, 5, 1), bits=3, encoding="integer", name="conv",
                        layers=(LayerPlan("conv2d", 3, kernel=(3, 3), padding=(1, 1)),
                                LayerPlan("maxpool2d", kernel=(2, 2), stride=(2, 2)), LayerPlan("dense", 4)))


@pytest.fixture(scope="module")
def conv():
    rng = np.random.default_rng(1)
    model = conv_model(rng)
    return model, random_inputs(rng, model.input, 4)


@pytest.fixture(scope="module")
def gapped():
    """A conv model whose streaming core needs idle cycles between images (a 1x1 kernel with
    padding 2: more output positions than input pixels), read as two bit planes."""
    rng = np.random.default_rng(4)
    model = random_model(rng, shape=(3, 4, 1), bits=2, encoding="bitplanes", name="gapped",
                         layers=(LayerPlan("conv2d", 2, kernel=(1, 1), padding=(2, 2)), LayerPlan("dense", 3)))
    return model, random_inputs(rng, model.input, 4)


def run_cycles(info, count, word_bits=72):
    """A RUN's cycles (docs/protocol.md): one sample per ``ceil(feature_bits / word_bits)``
    clocks on a dense core, one per ``pixels + image_gap`` clocks on a streaming core, counted
    from its last pixel."""
    return (count - 1) * run_period(info, word_bits) + info.latency


class DispatchBench:
    """A dispatcher around a core (a streaming core for a conv model), fed requests directly;
    plays receiver and sender."""

    def __init__(self, model, depth, word_bits=72, bank_words=None):
        self.core = StreamingCore(model) if is_streaming(model) else NetworkCore(model)
        self.info = CoreInfo.from_core(self.core)
        self.info_payload = P.Info(P.VERSION, True, self.info.sample_bits, self.info.sample_bytes, self.info.classes,
                                   self.info.score_width, self.info.latency, 1000, 250, depth, b"abcdefgh",
                                   "m", streaming=self.info.streaming).encode()
        self.word_bits = word_bits
        if self.info.streaming:
            self.dut = PixelDispatcher(self.info, info_payload=self.info_payload, batch_depth=depth,
                                       bank_words=bank_words)
        else:
            self.dut = Dispatcher(self.info, info_payload=self.info_payload, batch_depth=depth, max_word=word_bits,
                                  bank_words=bank_words or BANK_WORDS)
        self.top = Module()
        self.top.submodules.core, self.top.submodules.dut = self.core, self.dut
        wiring.connect(self.top, self.dut.core, self.core)

    async def request(self, ctx, kind, payload=b"", error=0):
        """Serve one request; returns the reply as ``(type, payload)``."""
        dut = self.dut
        for n, byte in enumerate(payload):
            await put(ctx, dut.payload, data=byte, first=n == 0, kind=kind)
        ctx.set(dut.request.payload.kind, kind)
        ctx.set(dut.request.payload.length, len(payload))
        ctx.set(dut.request.payload.error, error)
        ctx.set(dut.request.valid, 1)
        reply, = await ctx.tick().sample(dut.reply.payload).until(dut.reply.valid)
        fixed = reply.fixed.to_bytes(self.dut.max_fixed, "big")[:reply.fixed_length]
        tail = bytes([(await get(ctx, dut.tail)) for _ in range(reply.tail_length)])
        assert reply.length == reply.fixed_length + reply.tail_length   # the frame's length field
        ctx.set(dut.reply.ready, 1)
        assert ctx.get(dut.request.ready)   # taken with its reply
        await ctx.tick()
        ctx.set(dut.reply.ready, 0)
        ctx.set(dut.request.valid, 0)
        return reply.kind, fixed + tail


@pytest.mark.parametrize("which, word_bits", [("small", 72), ("small", 5), ("conv", None), ("gapped", None)])
def test_dispatcher_serves_the_requests_as_the_protocol_defines_them(which, word_bits, request):
    """INFO, INFER, INFER_SCORES, LOAD and RUN replies as docs/protocol.md defines them, with
    the golden model's predictions and scores and the core's cycle counts: on a dense core (its
    sample in one word of the batch memory, and in several), and on streaming cores (the pixel
    dispatcher), one of which needs a gap between images."""
    model, x = request.getfixturevalue(which)
    bench = DispatchBench(model, depth=4, word_bits=word_bits or 72)
    info = bench.info
    expected = golden.infer(model, x)
    nbytes = P.sample_bytes(model.input)
    samples = [pack_sample(model.input, x[n]).to_bytes(nbytes, "big") for n in range(len(x))]

    async def script(ctx):
        assert await bench.request(ctx, P.INFO) == (P.INFO | 0x80, bench.info_payload)
        for n, sample in enumerate(samples):
            prediction = bytes([expected.predictions[n]]) + struct.pack(">I", info.latency)
            assert await bench.request(ctx, P.INFER, sample) == (P.INFER | 0x80, prediction)
            scores = b"".join(int(s).to_bytes(info.score_bytes, "big", signed=True) for s in expected.scores[n])
            assert await bench.request(ctx, P.INFER_SCORES, sample) == (P.INFER_SCORES | 0x80, prediction + scores)
            load = struct.pack(">H", 3 - n)
            assert await bench.request(ctx, P.LOAD, load + sample) == (P.LOAD | 0x80, load)
        for count in (4, 1):
            predictions = bytes(expected.predictions[::-1][:count].tolist())
            assert await bench.request(ctx, P.RUN, struct.pack(">H", count)) == \
                (P.RUN | 0x80, struct.pack(">HI", count, run_cycles(info, count, bench.word_bits)) + predictions)

    if which == "gapped":
        assert info.image_gap > 0
    simulate(bench.top, script)


@settings(max_examples=int(os.environ.get("SBNN_SIM_EXAMPLES", "25")) // 3 + 1, deadline=None)
@given(model=stream_models(max_side=6), seed=st.integers(0, 2**16), bank_words=st.sampled_from([None, 2, 8, 32]))
def test_pixel_dispatcher_on_random_conv_models(model, seed, bank_words):
    """Random streamable models (pixel widths of 1 to 8 bits, either encoding, planes skipped,
    padding, strides, gaps between images), with the pixel memory in one bank or in up to 72
    (up to four levels of registered selection between them): INFER_SCORES and a RUN of the
    loaded samples give the golden model's results and the core's cycle counts."""
    x = random_inputs(np.random.default_rng(seed), model.input, 3)
    bench = DispatchBench(model, depth=3, bank_words=bank_words)
    info = bench.info
    expected = golden.infer(model, x)
    nbytes = P.sample_bytes(model.input)

    async def script(ctx):
        for n in range(len(x)):
            sample = pack_sample(model.input, x[n]).to_bytes(nbytes, "big")
            kind, payload = await bench.request(ctx, P.INFER_SCORES, sample)
            assert (kind, payload[0], struct.unpack(">I", payload[1:5])[0]) == \
                (P.INFER_SCORES | 0x80, expected.predictions[n], info.latency)
            scores = [int.from_bytes(payload[5 + j * info.score_bytes:5 + (j + 1) * info.score_bytes], "big",
                                     signed=True) for j in range(info.classes)]
            assert scores == expected.scores[n].tolist()
            assert (await bench.request(ctx, P.LOAD, struct.pack(">H", n) + sample))[0] == P.LOAD | 0x80
        assert await bench.request(ctx, P.RUN, struct.pack(">H", 3)) == \
            (P.RUN | 0x80, struct.pack(">HI", 3, run_cycles(info, 3)) + bytes(expected.predictions.tolist()))

    simulate(bench.top, script)


@pytest.mark.parametrize("which, word_bits", [("small", 72), ("small", 7), ("conv", 72)])
@pytest.mark.parametrize("depth", [4, 0])
def test_dispatcher_errors(which, word_bits, depth, request):
    """Every refusal is the error reply ``code, type`` (protocol.ERROR) and changes nothing: a
    frame error from the receiver, a bad length, an unknown type, an index or count out of range
    (every LOAD and RUN without a batch memory); on a dense and a streaming core."""
    model, x = request.getfixturevalue(which)
    bench = DispatchBench(model, depth=depth, word_bits=word_bits)
    nbytes = P.sample_bytes(model.input)
    sample = pack_sample(model.input, x[0]).to_bytes(nbytes, "big")

    def error(code, kind):
        return P.ERROR, bytes([code, kind])

    async def script(ctx):
        for code in (P.ERR_CRC, P.ERR_LENGTH, P.ERR_TIMEOUT):
            assert await bench.request(ctx, P.INFER, sample, error=code) == error(code, P.INFER)
        assert await bench.request(ctx, P.INFO, b"\0") == error(P.ERR_LENGTH, P.INFO)
        assert await bench.request(ctx, P.INFER, sample + b"\0") == error(P.ERR_LENGTH, P.INFER)
        assert await bench.request(ctx, P.LOAD, sample) == error(P.ERR_LENGTH, P.LOAD)
        assert await bench.request(ctx, P.RUN, b"\0") == error(P.ERR_LENGTH, P.RUN)
        assert await bench.request(ctx, 0x42, b"ab") == error(P.ERR_TYPE, 0x42)
        assert await bench.request(ctx, P.LOAD, struct.pack(">H", depth) + sample) == error(P.ERR_RANGE, P.LOAD)
        assert await bench.request(ctx, P.RUN, struct.pack(">H", 0)) == error(P.ERR_RANGE, P.RUN)
        assert await bench.request(ctx, P.RUN, struct.pack(">H", depth + 1)) == error(P.ERR_RANGE, P.RUN)
        kind, payload = await bench.request(ctx, P.INFER, sample)
        assert (kind, payload[0]) == (P.INFER | 0x80, golden.infer(model, x[:1]).predictions[0])
        if depth:
            # A LOAD refused for its frame leaves the entry as it was (a streaming core's host
            # keeps every arriving sample, good or bad, in its staging area, never in the entry).
            want = golden.infer(model, x).predictions.tolist()
            other = [n for n in range(len(x)) if want[n] != want[0]]
            assert other, "the test needs samples with different predictions"
            loaded = pack_sample(model.input, x[other[0]]).to_bytes(nbytes, "big")
            assert (await bench.request(ctx, P.LOAD, struct.pack(">H", 0) + sample))[0] == P.LOAD | 0x80
            for code in (P.ERR_CRC, P.ERR_TIMEOUT):
                assert await bench.request(ctx, P.LOAD, struct.pack(">H", 0) + loaded, error=code) == \
                    error(code, P.LOAD)
            kind, payload = await bench.request(ctx, P.RUN, struct.pack(">H", 1))
            assert (kind, payload[6:]) == (P.RUN | 0x80, bytes([want[0]]))

    simulate(bench.top, script)


@pytest.mark.parametrize("word_bits, bank_words", [(72, 1024), (12, 1024), (12, 4), (5, 4), (5, 32), (1, 8)])
def test_run_feeds_every_sample_to_the_core_bit_exactly(small, word_bits, bank_words):
    """The narrow path from the batch memory: LOADs in any order with idle clocks between
    requests (and an INFER among them, which uses the same sample register), then RUNs: the
    core takes every entry, bit for bit as it was sent (the bits it does not read 0), in order,
    one every ``ceil(F / word_bits)`` clocks exactly, and the RUN's cycles are
    ``(count - 1) * that + latency``; a LOAD refused for its frame changes nothing. With the
    sample in one word, in words that divide it, in words with spare bits, and a bit per word;
    the batch memory in one bank, and in several (a bank's words not a multiple of a sample's)."""
    model, x = small
    bench = DispatchBench(model, depth=4, word_bits=word_bits, bank_words=bank_words)
    info, core = bench.info, bench.dut.core
    words = -(-info.feature_bits // word_bits)
    assert run_period(info, word_bits) == words
    nbytes = P.sample_bytes(model.input)
    packed = [pack_sample(model.input, x[n]) for n in range(len(x))]
    mask = sum(1 << b for b in info.read_bits)
    expected = golden.infer(model, x).predictions.tolist()
    fed = []   # (clock, sample) on each clock the core takes a sample

    async def probe(ctx):
        clock = 0
        async for _, _, valid, sample in ctx.tick().sample(core.valid, core.sample):
            if valid:
                fed.append((clock, sample))
            clock += 1

    async def run(ctx, count):
        del fed[:]
        kind, payload = await bench.request(ctx, P.RUN, struct.pack(">H", count))
        assert (kind, payload[:6]) == (P.RUN | 0x80, struct.pack(">HI", count, (count - 1) * words + info.latency))
        assert list(payload[6:]) == expected[:count]
        assert [sample for _, sample in fed] == [packed[n] & mask for n in range(count)]
        assert [b - a for (a, _), (b, _) in zip(fed, fed[1:])] == [words] * (count - 1)

    async def script(ctx):
        rng = random.Random(word_bits)
        for n in (2, 0, 3, 1):
            await idle(ctx, rng.randrange(0, 20))
            load = struct.pack(">H", n)
            assert await bench.request(ctx, P.LOAD, load + packed[n].to_bytes(nbytes, "big")) == (P.LOAD | 0x80, load)
        await idle(ctx, 7)
        kind, payload = await bench.request(ctx, P.INFER, packed[3].to_bytes(nbytes, "big"))
        assert (kind, payload[0]) == (P.INFER | 0x80, expected[3])
        assert fed[-1][1] == packed[3] & mask
        await idle(ctx, 5)
        await run(ctx, 4)
        await run(ctx, 3)
        await run(ctx, 1)
        # A LOAD refused for its frame (CRC, timeout) or its index leaves the entries as they were.
        other = packed[0].to_bytes(nbytes, "big")
        for code in (P.ERR_CRC, P.ERR_TIMEOUT):
            assert await bench.request(ctx, P.LOAD, struct.pack(">H", 1) + other, error=code) == \
                (P.ERROR, bytes([code, P.LOAD]))
        assert await bench.request(ctx, P.LOAD, struct.pack(">H", 4) + other) == \
            (P.ERROR, bytes([P.ERR_RANGE, P.LOAD]))
        await idle(ctx, 3)
        await run(ctx, 4)

    simulate(bench.top, script, background=[probe])


# --- HostInterface ------------------------------------------------------------------------------

def test_host_refuses_more_than_256_classes_and_leaves_no_warning():
    """The refusal comes before the object exists: nothing is left to warn UnusedElaboratable
    (which Amaranth does, once elaboration has started in the process, for an elaboratable that
    is collected without having been elaborated)."""
    info = CoreInfo(sample_bits=8, classes=257, score_width=0, latency=1, prediction_width=9)
    Simulator(Module())   # elaboration has started
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match=r"^host interface: expected at most 256 classes \(one byte per "
                                             r"prediction\), found 257$"):
            HostInterface(None, info, divisor=4, clock_hz=1000, baud=250, digest=bytes(8), name="n")
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, UnusedElaboratable)]

"""The board's UART and host interface (protocol engine) in amaranth.sim, against the golden
model and the host side of the protocol (sbnn_hdl.board.protocol); for dense models and for conv
models (their streaming core, fed pixel by pixel from block RAM)."""

import re
import struct

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

from sbnn_hdl import golden
from sbnn_hdl.board import protocol as P
from sbnn_hdl.board.dispatch import run_period, sample_words, word_width
from sbnn_hdl.board.host import CoreInfo, HostInterface, StreamCoreInfo
from sbnn_hdl.board.top import CoreInstance
from sbnn_hdl.board.uart import UARTRx, UARTTx
from sbnn_hdl.gateware import NetworkCore
from sbnn_hdl.gateware.streaming import StreamingCore
from sbnn_hdl.hwplan import pack_sample
from sbnn_hdl.testing import LayerPlan, random_inputs, random_model

DIVISOR = 4


async def send_bytes(ctx, line, data, divisor=DIVISOR):
    """Drive ``line`` as a UART transmitter would."""
    for byte in data:
        for bit in [0] + [(byte >> k) & 1 for k in range(8)] + [1]:
            ctx.set(line, bit)
            await ctx.tick().repeat(divisor)


async def receive_bytes(ctx, line, out, divisor=DIVISOR):
    """Decode ``line`` (sampling mid-bit) into ``out`` forever."""
    while True:
        while ctx.get(line):
            await ctx.tick()
        await ctx.tick().repeat(divisor // 2)
        value = 0
        for k in range(8):
            await ctx.tick().repeat(divisor)
            value |= ctx.get(line) << k
        await ctx.tick().repeat(divisor)
        assert ctx.get(line) == 1, "stop bit"
        out.append(value)


@pytest.mark.parametrize("divisor", [4, 5, 33])
def test_uart_loopback(divisor):
    tx, rx = UARTTx(divisor), UARTRx(divisor)
    from amaranth.hdl import Module
    m = Module()
    m.submodules.tx, m.submodules.rx = tx, rx
    m.d.comb += rx.rx.eq(tx.tx)
    data = [0x00, 0xFF, 0xA5, 0x5A, 0x01, 0x80, 0x37]
    got = []

    async def sender(ctx):
        for byte in data:
            ctx.set(tx.data.payload, byte)
            ctx.set(tx.data.valid, 1)
            await ctx.tick().until(tx.data.ready)
            ctx.set(tx.data.valid, 0)
        await ctx.tick().repeat(20 * divisor)
        assert got == data

    async def receiver(ctx):
        async for _, _, valid, byte, error in ctx.tick().sample(rx.data.valid, rx.data.payload, rx.error):
            assert not error
            if valid:
                got.append(byte)

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(sender)
    sim.add_testbench(receiver, background=True)
    sim.run()


class Host:
    """The host side inside the simulation: sends frames into ``rx``, reads reply frames from ``tx``."""

    def __init__(self, ctx, dut, received):
        self.ctx, self.dut, self.received = ctx, dut, received
        self.reader = P.FrameReader()

    async def send(self, data):
        await send_bytes(self.ctx, self.dut.rx, data)

    async def frame(self, limit=20_000):
        frames = []
        for _ in range(limit // 50):
            frames += self.reader.feed(bytes(self.received))
            self.received.clear()
            if frames:
                assert len(frames) == 1, frames
                return frames[0]
            await self.ctx.tick().repeat(50)
        raise AssertionError("no reply frame")

    async def request(self, kind, payload=b""):
        await self.send(P.encode(kind, payload))
        return await self.frame()


def run_host(dut, script):
    received = []

    async def main(ctx):
        await script(Host(ctx, dut, received))

    async def listener(ctx):
        await receive_bytes(ctx, dut.tx, received)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(main)
    sim.add_testbench(listener, background=True)
    sim.run()


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(3)
    model = random_model(rng, shape=(12,), bits=3, layers=(LayerPlan("dense", 6), LayerPlan("dense", 4)))
    return model, random_inputs(rng, model.input, 6)


def make_dut(model, *, timeout=3000, depth=8):
    core = NetworkCore(model)
    info = CoreInfo.from_core(core)
    return HostInterface(core, info, divisor=DIVISOR, clock_hz=100_000_000, baud=25_000_000,
                         digest=b"12345678", name=model.name, batch_depth=depth, timeout=timeout), info


def test_info_infer_scores_match_golden(small):
    model, x = small
    dut, info = make_dut(model)
    expected = golden.infer(model, x)
    nbytes = P.sample_bytes(model.input)

    async def script(host):
        kind, payload = await host.request(P.INFO)
        assert kind == P.INFO | 0x80
        got = P.Info.decode(payload)
        assert (got.version, got.scores, got.sample_bits, got.sample_bytes, got.classes, got.latency,
                got.clock_hz, got.baud, got.batch_depth, got.digest, got.name) == \
            (P.VERSION, True, 36, nbytes, 4, info.latency, 100_000_000, 25_000_000, 8, b"12345678", model.name)
        for n in range(3):
            sample = pack_sample(model.input, x[n]).to_bytes(nbytes, "big")
            kind, payload = await host.request(P.INFER_SCORES, sample)
            assert kind == P.INFER_SCORES | 0x80
            score_bytes = (info.score_width + 7) // 8
            assert len(payload) == 5 + 4 * score_bytes
            assert payload[0] == expected.predictions[n]
            assert struct.unpack(">I", payload[1:5])[0] == info.latency
            scores = [int.from_bytes(payload[5 + j * score_bytes:5 + (j + 1) * score_bytes], "big", signed=True)
                      for j in range(4)]
            assert scores == expected.scores[n].tolist()
            kind, payload = await host.request(P.INFER, sample)
            assert (kind, payload[0], len(payload)) == (P.INFER | 0x80, expected.predictions[n], 5)

    run_host(dut, script)


def test_batch_run_matches_golden(small):
    model, x = small
    dut, info = make_dut(model)
    expected = golden.infer(model, x).predictions.tolist()
    nbytes = P.sample_bytes(model.input)

    async def script(host):
        for n in range(len(x)):
            kind, payload = await host.request(P.LOAD, struct.pack(">H", n) + pack_sample(model.input, x[n]).to_bytes(nbytes, "big"))
            assert (kind, payload) == (P.LOAD | 0x80, struct.pack(">H", n))
        kind, payload = await host.request(P.RUN, struct.pack(">H", len(x)))
        assert kind == P.RUN | 0x80
        count, cycles = struct.unpack(">HI", payload[:6])
        assert count == len(x)
        # Back to back: one sample per ceil(F / 72) clocks (one here: F = 36), so the last result
        # comes (count - 1) of those after the first one, which comes `latency` cycles after the
        # first sample went in.
        assert run_period(info) == 1
        assert cycles == len(x) - 1 + info.latency
        assert list(payload[6:]) == expected
        kind, payload = await host.request(P.RUN, struct.pack(">H", 9))
        assert (kind, payload) == (P.ERROR, bytes([P.ERR_RANGE, P.RUN]))
        kind, payload = await host.request(P.LOAD, struct.pack(">H", 8) + bytes(nbytes))
        assert (kind, payload) == (P.ERROR, bytes([P.ERR_RANGE, P.LOAD]))

    run_host(dut, script)


def test_errors_and_resynchronisation(small):
    model, x = small
    dut, info = make_dut(model, timeout=600)
    expected = golden.infer(model, x).predictions.tolist()
    nbytes = P.sample_bytes(model.input)
    sample = pack_sample(model.input, x[0]).to_bytes(nbytes, "big")

    async def script(host):
        frame = bytearray(P.encode(P.INFER, sample))
        frame[-1] ^= 1
        assert await host.request_raw(bytes(frame)) == (P.ERROR, bytes([P.ERR_CRC, P.INFER]))
        assert await host.request(P.INFER, sample + b"\0") == (P.ERROR, bytes([P.ERR_LENGTH, P.INFER]))
        assert await host.request(0x42, b"ab") == (P.ERROR, bytes([P.ERR_TYPE, 0x42]))
        # Longer than any request: refused as soon as the length is seen.
        await host.send(P.SYNC + bytes([P.INFER, 0xFF, 0xFF]))
        assert await host.frame() == (P.ERROR, bytes([P.ERR_LENGTH, P.INFER]))
        # A partial frame, then silence: the engine gives up and says so.
        await host.send(P.encode(P.INFER, sample)[:6])
        assert await host.frame() == (P.ERROR, bytes([P.ERR_TIMEOUT, P.INFER]))
        # Garbage without a sync pattern is ignored; the next frame is served.
        await host.send(bytes([0x00, 0xA5, 0x00, 0x5A, 0xFF, 0xA5]))
        kind, payload = await host.request(P.INFER, sample)
        assert (kind, payload[0]) == (P.INFER | 0x80, expected[0])

    Host.request_raw = lambda self, data: _raw(self, data)
    run_host(dut, script)


async def _raw(host, data):
    await host.send(data)
    return await host.frame()


def test_build_without_scores(small):
    """--no-scores: INFO says so, INFER works, INFER_SCORES is an unknown type."""
    model, x = small
    core = NetworkCore(model, scores=False)
    info = CoreInfo.from_core(core)
    assert info.score_width == 0
    dut = HostInterface(core, info, divisor=DIVISOR, clock_hz=1000, baud=250, digest=bytes(8), name="n",
                        batch_depth=4, timeout=3000)
    expected = golden.infer(model, x).predictions
    nbytes = P.sample_bytes(model.input)
    sample = pack_sample(model.input, x[1]).to_bytes(nbytes, "big")

    async def script(host):
        kind, payload = await host.request(P.INFO)
        assert not P.Info.decode(payload).scores
        kind, payload = await host.request(P.INFER, sample)
        assert (kind, payload[0]) == (P.INFER | 0x80, expected[1])
        assert await host.request(P.INFER_SCORES, sample) == (P.ERROR, bytes([P.ERR_TYPE, P.INFER_SCORES]))

    run_host(dut, script)


def test_byte_masks_follow_the_big_endian_sample():
    # 12 bits in 2 bytes: the first byte holds bits 8 to 15 (9 and 11 read), the second 0 to 7.
    info = CoreInfo(sample_bits=12, classes=2, score_width=0, latency=1, prediction_width=1, read_bits=(0, 9, 11))
    assert (info.sample_bytes, info.feature_bits, info.byte_masks()) == (2, 3, [0b1010, 0b1])
    with pytest.raises(ValueError, match=r"^read_bits: expected ascending distinct bit positions below 12, "
                                         r"found \[9, 0\]\.\.\.$"):
        CoreInfo(sample_bits=12, classes=2, score_width=0, latency=1, prediction_width=1, read_bits=(9, 0))


def test_only_the_bits_the_core_reads_are_kept():
    """Two of eight bit planes: the host keeps a quarter of each sample, and still computes what
    the golden model computes, one sample at a time and from the batch memory."""
    rng = np.random.default_rng(8)
    model = random_model(rng, shape=(10,), bits=8, encoding="integer", planes=(7, 5),
                         layers=(LayerPlan("dense", 5), LayerPlan("dense", 3)))
    x = random_inputs(rng, model.input, 5)
    dut, info = make_dut(model)
    assert info.sample_bits == 80 and len(info.read_bits) <= 20
    assert all(bit % 8 in (5, 7) for bit in info.read_bits)
    expected = golden.infer(model, x).predictions.tolist()
    nbytes = P.sample_bytes(model.input)

    async def script(host):
        for n in range(len(x)):
            sample = pack_sample(model.input, x[n]).to_bytes(nbytes, "big")
            kind, payload = await host.request(P.INFER, sample)
            assert (kind, payload[0]) == (P.INFER | 0x80, expected[n])
            kind, _ = await host.request(P.LOAD, struct.pack(">H", len(x) - 1 - n) + sample)
            assert kind == P.LOAD | 0x80
        kind, payload = await host.request(P.RUN, struct.pack(">H", len(x)))
        assert kind == P.RUN | 0x80
        assert list(payload[6:]) == expected[::-1]

    run_host(dut, script)


def test_without_a_batch_memory_infer_only(small):
    """``batch_depth=0`` (``generate --board --batch-depth 0``): no block RAMs, the core reads the
    shift register that assembles each sample; INFO says depth 0, INFER computes what the golden
    model computes, LOAD and RUN are out of range."""
    model, x = small
    dut, info = make_dut(model, depth=0)
    expected = golden.infer(model, x).predictions.tolist()
    nbytes = P.sample_bytes(model.input)

    async def script(host):
        kind, payload = await host.request(P.INFO)
        assert P.Info.decode(payload).batch_depth == 0
        for n in range(len(x)):
            sample = pack_sample(model.input, x[n]).to_bytes(nbytes, "big")
            kind, payload = await host.request(P.INFER, sample)
            assert (kind, payload[0], payload[1:]) == (P.INFER | 0x80, expected[n], struct.pack(">I", info.latency))
        assert await host.request(P.LOAD, struct.pack(">H", 0) + sample) == (P.ERROR, bytes([P.ERR_RANGE, P.LOAD]))
        assert await host.request(P.RUN, struct.pack(">H", 1)) == (P.ERROR, bytes([P.ERR_RANGE, P.RUN]))
        # A LOAD of the wrong length is still a length error, as with a batch memory.
        assert await host.request(P.LOAD, b"\0") == (P.ERROR, bytes([P.ERR_LENGTH, P.LOAD]))

    run_host(dut, script)


# --- Conv models: the streaming core behind the same protocol -----------------------------------

def conv_model(rng):
    """A small conv model: a 6x5 image of 3-bit pixels, a 3x3 conv with padding 1 and 3 channels,
    a 2x2 max-pool, a dense layer of 4."""
    return random_model(rng, shape=(6, 5, 1), bits=3, encoding="integer", name="conv",
                        layers=(LayerPlan("conv2d", 3, kernel=(3, 3), padding=(1, 1)),
                                LayerPlan("maxpool2d", kernel=(2, 2), stride=(2, 2)), LayerPlan("dense", 4)))


def test_conv_model_through_the_uart_matches_golden():
    """A conv model's streaming core behind the host interface, through its UART: INFO says it
    streams, every INFER_SCORES gives the golden model's prediction and scores and the core's
    latency from the last pixel, and a batch RUN gives every prediction and one sample per
    ``pixels + image_gap`` clocks."""
    rng = np.random.default_rng(1)
    model = conv_model(rng)
    x = random_inputs(rng, model.input, 5)
    core = StreamingCore(model)
    info = CoreInfo.from_core(core)
    assert info.streaming and (info.pixels, info.pixel_bits, info.sample_bits) == (30, 3, 90)
    dut = HostInterface(core, info, divisor=DIVISOR, clock_hz=100_000_000, baud=25_000_000, digest=b"12345678",
                        name=model.name, batch_depth=4, timeout=3000)
    expected = golden.infer(model, x)
    nbytes = P.sample_bytes(model.input)
    samples = [pack_sample(model.input, s).to_bytes(nbytes, "big") for s in x]

    async def script(host):
        kind, payload = await host.request(P.INFO)
        got = P.Info.decode(payload)
        assert (got.streaming, got.scores, got.sample_bits, got.sample_bytes, got.latency, got.batch_depth) == \
            (True, True, 90, nbytes, core.latency, 4)
        for n, sample in enumerate(samples):
            kind, payload = await host.request(P.INFER_SCORES, sample)
            assert (kind, payload[0], struct.unpack(">I", payload[1:5])[0]) == \
                (P.INFER_SCORES | 0x80, expected.predictions[n], core.latency)
            scores = [int.from_bytes(payload[5 + j * info.score_bytes:5 + (j + 1) * info.score_bytes], "big",
                                     signed=True) for j in range(4)]
            assert scores == expected.scores[n].tolist()
            if n < 4:
                assert await host.request(P.LOAD, struct.pack(">H", n) + sample) == (P.LOAD | 0x80, struct.pack(">H", n))
        kind, payload = await host.request(P.RUN, struct.pack(">H", 4))
        assert (kind, payload) == (P.RUN | 0x80, struct.pack(">HI", 4, 3 * info.period + core.latency)
                                   + bytes(expected.predictions[:4].tolist()))
        assert await host.request(P.LOAD, struct.pack(">H", 4) + samples[0]) == (P.ERROR, bytes([P.ERR_RANGE, P.LOAD]))

    run_host(dut, script)


def _host_rtlil(info, depth):
    host = HostInterface(CoreInstance("core", info), info, divisor=4, clock_hz=100_000_000, baud=25_000_000,
                         digest=bytes(8), name="m", batch_depth=depth, timeout=1000)
    return rtlil.convert(host, ports=[host.rx, host.tx, host.busy], emit_src=False)


def _flop_widths(info, depth):
    """The widths of the flip-flop cells of a host interface around a black-box core (its RTLIL)."""
    return [int(w) for w in re.findall(r"cell \$a?dff\S* \S+\n\s+parameter \\WIDTH (\d+)", _host_rtlil(info, depth))]


def _host_registers(info, depth):
    """``(flip-flop bits, widest wire)`` of a host interface around a black-box core (its RTLIL),
    without the pixel memory banks' read registers (``bank_word<b>``), which place and route
    folds into the block RAMs (sbnn_hdl.outreg)."""
    text = _host_rtlil(info, depth)
    cells = re.findall(r"cell \$a?dff\S* \S+\n\s+parameter \\WIDTH (\d+)\n(.*?)\n\s+end\n", text, re.S)
    flops = sum(int(w) for w, body in cells if not re.search(r"connect \\Q \\bank_word\d+\b", body))
    return flops, max(int(w) for w in re.findall(r"wire width (\d+)", text))


@pytest.mark.parametrize("shape, bits, planes", [((28, 28, 1), 8, (7, 6, 5)), ((16, 16, 3), 8, None)])
def test_streaming_host_has_no_register_as_wide_as_a_sample(shape, bits, planes):
    """A conv model's samples are kept in block RAM, a pixel at a time in registers: the host's
    flip-flops stay far below a sample's bits (measured: 1,066 and 1,294 bits with a batch memory
    of 64 samples, of which about a word per four banks of the pixel memory is its registered
    selection, 864 and 903 without, for 6,272- and 6,144-bit samples), and no wire is a tenth as
    wide as a sample (the widest, about 300 bits, is a reply's fixed part). A dense core's host
    holds the bits read of a sample in a register, and as many again around its batch memory."""
    h, w, c = shape
    read = [ch * bits + k for ch in range(c) for k in sorted(planes or range(bits))]
    info = StreamCoreInfo(pixels=h * w, pixel_bits=c * bits, classes=10, score_width=12, latency=30,
                          prediction_width=4, pixel_read_bits=read)
    dense = CoreInfo(sample_bits=info.sample_bits, classes=10, score_width=12, latency=30, prediction_width=4,
                     read_bits=info.read_bits)
    for depth in (64, 0):   # (a deep pixel memory is slow to convert: Amaranth writes out its initial zeros)
        flops, widest = _host_registers(info, depth)
        assert flops < 1400 and widest < info.sample_bits / 10
    if planes:   # (once: a dense host is slow to convert)
        dense_flops, dense_widest = _host_registers(dense, 0)
        assert dense_widest >= info.feature_bits and dense_flops > info.feature_bits


def test_tunable_constants_behave_as_the_integers(small):
    """A board build gives the host's clock-dependent constants as tunables, sized for the first
    (highest) clock and set in the netlist for a lower one (sbnn_hdl.board.tunable): with wider
    bounds, the host interface's lines are the same, clock for clock, as with the plain integers
    (INFO with its clock field, INFER, and a frame abandoned at the timeout)."""
    from sbnn_hdl.board.top import tunable_host_args
    model, x = small
    nbytes = P.sample_bytes(model.input)
    args = dict(divisor=DIVISOR, clock_hz=100_000_000, baud=25_000_000, digest=b"12345678", name=model.name,
                batch_depth=8, timeout=700)
    bounds = dict(args, divisor=53, clock_hz=160_000_000, timeout=1_600_000)
    stimulus = (P.encode(P.INFO) + P.encode(P.INFER, pack_sample(model.input, x[0]).to_bytes(nbytes, "big"))
                + bytes(P.SYNC))

    def trace(host_args):
        core = NetworkCore(model)
        dut = HostInterface(core, CoreInfo.from_core(core), **host_args)
        lines = []

        async def bench(ctx):
            await send_bytes(ctx, dut.rx, stimulus)
            await ctx.tick().repeat(4000)

        async def record(ctx):
            async for _, _, tx, busy in ctx.tick().sample(dut.tx, dut.busy):
                lines.append((tx, busy))

        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(bench)
        sim.add_testbench(record, background=True)
        sim.run()
        return lines

    plain = trace(args)
    tuned = tunable_host_args(args, bounds)
    assert tuned["divisor"].bound == 53 and tuned["timeout"].width == 21
    assert trace(tuned) == plain
    # The replies that went out: INFO (its clock field the tunable's value), INFER, and the
    # timeout's error reply.
    line, data, n = [tx for tx, _ in plain], [], 0
    while n < len(line):
        if line[n]:
            n += 1
            continue
        data.append(sum(line[n + DIVISOR // 2 + DIVISOR * (k + 1)] << k for k in range(8)))
        n += 10 * DIVISOR
    frames = P.FrameReader().feed(bytes(data))
    assert [kind for kind, _ in frames] == [P.INFO | 0x80, P.INFER | 0x80, P.ERROR]
    assert P.Info.decode(frames[0][1]).clock_hz == 100_000_000


def test_dense_host_has_one_register_as_wide_as_a_sample():
    """A dense core's host keeps a sample in one register, the sample register, with or without
    a batch memory: the batch memory reaches it a word (72 bits) per clock, so every other
    register is a word or narrower, bar the reply's fixed part (about 300 bits), and the
    flip-flops are the sample register's plus about a thousand (2,352 kept bits of a 28 x 28 x
    8-bit image read as 3 planes: 2,376 in 33 words)."""
    read = [p * 8 + k for p in range(28 * 28) for k in (5, 6, 7)]
    info = CoreInfo(sample_bits=28 * 28 * 8, classes=10, score_width=12, latency=30, prediction_width=4,
                    read_bits=read)
    register = sample_words(info) * word_width(info)
    assert (info.feature_bits, register) == (2352, 2376)
    for depth in (16, 0):
        widths = _flop_widths(info, depth)
        assert [w for w in widths if w > 400] == [register]
        assert register < sum(widths) < register + 1300

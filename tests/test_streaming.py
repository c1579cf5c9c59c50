"""The streaming core of convolutional models against the golden model, in amaranth.sim: every
score, and the exact latency from each image's last pixel, with random pauses and back to back."""

import os

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator
from hypothesis import given, settings, strategies as st

from sbnn_hdl.gateware.argmax import SerialArgmax
from sbnn_hdl.gateware.phased import PhasedLayer
from sbnn_hdl.gateware.pool import PairPool
from sbnn_hdl.gateware.streaming import StreamingCore
from sbnn_hdl.hwplan import HardwareError
from sbnn_hdl.model import Conv2d, Dense, InputSpec, MaxPool2d, Model
from sbnn_hdl.simulation.pysim import check_core
from sbnn_hdl.streamplan import Geometry, plan_stream, schedule
from sbnn_hdl.testing import LayerPlan, random_inputs, random_model
from sbnn_hdl.testing.strategies import stream_models


def check_stream(model, x, *, every=2, idle=0.3, seed=0, share="auto"):
    return check_core(StreamingCore(model, every=every, share=share), x, idle=idle, seed=seed)


@settings(max_examples=int(os.environ.get("SBNN_SIM_EXAMPLES", "25")), deadline=None)
@given(model=stream_models(), every=st.integers(1, 3), idle=st.sampled_from([0.0, 0.0, 0.2, 0.6]),
       seed=st.integers(0, 2**16), share=st.sampled_from(["auto", "off", 2, 3, 16]))
def test_random_conv_models_match_golden(model, every, idle, seed, share):
    rng = np.random.default_rng(seed)
    core = check_stream(model, random_inputs(rng, model.input, 5), every=every, idle=idle, seed=seed, share=share)
    # Shared stages keep up: images may follow each other as closely as without sharing.
    assert core.image_gap == StreamingCore(model, every=every, share="off").image_gap


def _model(rng, layers, shape=(5, 7, 2), bits=2, encoding="bitplanes", **kwargs):
    return random_model(rng, shape=shape, bits=bits, encoding=encoding, layers=layers, **kwargs)


@pytest.mark.parametrize("idle", [0.0, 0.4])
def test_same_padding_conv_pool_conv_back_to_back_and_paused(idle):
    rng = np.random.default_rng(3)
    model = _model(rng, (LayerPlan("conv2d", 4, kernel=(3, 3), padding=(1, 1)),
                         LayerPlan("maxpool2d", kernel=(2, 2), stride=(2, 2)),
                         LayerPlan("conv2d", 3, kernel=(3, 3), padding=(1, 1), pad_value=1),
                         LayerPlan("dense", 4)), shape=(8, 9, 1), bits=3, encoding="integer", planes=(2, 1))
    core = check_stream(model, random_inputs(rng, model.input, 6), idle=idle)
    assert core.image_gap == 0   # images may follow back to back


def test_expanding_padding_spaces_images():
    """A 1x1 kernel with padding 2 has more output positions than input pixels: the core needs
    a gap between images of at least the difference, and says so."""
    rng = np.random.default_rng(4)
    model = _model(rng, (LayerPlan("conv2d", 2, kernel=(1, 1), padding=(2, 2)), LayerPlan("dense", 3)),
                   shape=(3, 4, 1))
    core = check_stream(model, random_inputs(rng, model.input, 4), idle=0.0)
    assert core.image_gap >= 7 * 8 - 3 * 4


def test_k0_kernels_cost_nothing_and_k1_kernels_are_wires():
    rng = np.random.default_rng(5)
    spec = InputSpec(shape=(6, 6, 2), bits=1, encoding="integer")
    mask = np.zeros((3, 3, 3, 2), np.uint8)
    mask[1, 1, 1, 0] = 1          # channel 1: one tap (K1 for input channel 0, K0 for channel 1)
    mask[2, :, :, 1] = 1          # channel 2: a full kernel on input channel 1
    conv = Conv2d("c", (6, 6, 2), mask, np.array([1, 1, 1]), np.array([0, 0, 0]), np.array([1, 1, 5]),
                  padding=(1, 1))
    dense = Dense("out", rng.integers(0, 2, (3, 6 * 6 * 3)), np.ones(3, np.int64), np.zeros(3, np.int64),
                  np.zeros(3, np.int64))
    model = Model("k", spec, [conv, dense])
    plan = plan_stream(model).stages[0].layer_plan
    # Channel 0 has no connection: a constant (0 >= 1 never fires), so it is not built.
    assert plan.outputs[0] == ("const", 0)
    wired = sorted(sum(c for _, c in unit.sources) for unit in plan.units)
    assert wired == [1, 9]
    check_stream(model, random_inputs(rng, spec, 4))


@pytest.mark.parametrize("hidden", [False, True])
def test_first_dense_q_is_summed_as_positions_pass(hidden):
    """The first dense layer's q (the sum of the whole last map) is a running sum on the stream:
    only the bits its neurons' p reads are collected."""
    rng = np.random.default_rng(7)
    spec = InputSpec(shape=(5, 6, 1), bits=2, encoding="integer")
    conv = Conv2d("c", (5, 6, 1), rng.integers(0, 2, (4, 3, 3, 1)), np.full(4, 2), np.full(4, -1),
                  rng.integers(-6, 7, 4), padding=(1, 1))
    features = 5 * 6 * 4
    mask = np.zeros((3, features), np.uint8)
    mask[0, [0, 17, 95]] = mask[1, [17, 40]] = mask[2, 119] = 1
    layers = [conv, Dense("d", mask, np.full(3, 3), np.full(3, -1), rng.integers(-30, 5, 3))]
    if hidden:
        layers.append(Dense("out", rng.integers(0, 2, (2, 3)), np.ones(2, np.int64), np.zeros(2, np.int64),
                            np.zeros(2, np.int64)))
    model = Model("q", spec, layers)
    plan = plan_stream(model)
    built = {k for k, (kind, _) in enumerate(plan.stages[0].layer_plan.outputs) if kind == "unit"}
    assert plan.dense[0].q_input == 5 * 6 * len(plan.q_channels) and plan.dense[0].q_sources == ()
    assert len(plan.q_channels) == len(built)
    read = {(i // 4, i % 4) for i in np.flatnonzero(mask.any(axis=0))}
    assert len(plan.collect) <= len(read) < 30
    check_stream(model, random_inputs(rng, spec, 6), idle=0.3)


def test_first_dense_q_counts_a_duplicate_channel_twice():
    """Two identical channels of the last conv layer are one stream channel, which the running q
    adds twice (as the dense layer's inputs read it twice)."""
    rng = np.random.default_rng(8)
    spec = InputSpec(shape=(5, 4, 1), bits=1, encoding="integer")
    mask = rng.integers(0, 2, (3, 3, 3, 1))
    mask[2] = mask[0]
    conv = Conv2d("c", (5, 4, 1), mask, np.array([2, 3, 2]), np.array([-1, -1, -1]), np.array([1, 2, 1]),
                  padding=(1, 1))
    dense = Dense("out", rng.integers(0, 2, (2, 5 * 4 * 3)), np.array([3, 2]), np.array([-2, -1]), np.zeros(2, np.int64))
    model = Model("dup", spec, [conv, dense])
    plan = plan_stream(model)
    assert len(plan.q_channels) == 3 and len(set(plan.q_channels)) == 2
    check_stream(model, random_inputs(rng, spec, 6), idle=0.0)


@pytest.mark.parametrize("conv", [False, True])
def test_pool_first_on_an_integer_input_above_plane_zero(conv):
    """A pool passes the input's integers on as the stream carries them (divided by 2**(lowest
    plane)): the first layer with weights after it, conv or dense, takes the factor."""
    rng = np.random.default_rng(9)
    layers = (LayerPlan("maxpool2d", kernel=(2, 2), stride=(1, 1)),)
    if conv:
        layers += (LayerPlan("conv2d", 3, kernel=(2, 2)),)
    model = _model(rng, layers + (LayerPlan("dense", 3),), shape=(4, 5, 2), bits=4, encoding="integer", planes=(2,))
    check_stream(model, random_inputs(rng, model.input, 8))


@pytest.mark.parametrize("count", [2, 5, 10])
def test_serial_argmax_ties_to_the_lowest_index_and_holds(count):
    """SerialArgmax's index is np.argmax's (the first maximum) exactly `latency` cycles after
    start, and holds until the next search starts; scores from a small range, so ties are common."""
    rng = np.random.default_rng(count)
    dut = SerialArgmax(6, count)
    cases = rng.integers(-3, 3, (40, count))
    seen = []

    async def bench(ctx):
        for scores in cases:
            for j, v in enumerate(scores):
                ctx.set(dut.scores[j], int(v))
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            for j in range(count):
                ctx.set(dut.scores[j], int(rng.integers(-32, 32)))   # read only on start
            await ctx.tick().repeat(max(dut.latency - 1, 0))
            held = []
            for _ in range(3):
                held.append(ctx.get(dut.index))
                await ctx.tick()
            seen.append(held)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [[int(np.argmax(scores))] * 3 for scores in cases]


@pytest.mark.parametrize("pool", [False, True])
def test_refuses_pad_value_one_on_an_integer_input_without_plane_zero(pool):
    """Also after pools, which pass the elements on to the first layer with weights."""
    rng = np.random.default_rng(6)
    first = (LayerPlan("maxpool2d", kernel=(2, 2), stride=(1, 1)),) if pool else ()
    planes = (2,) if pool else (3, 2)   # a pool reads bits: one plane
    model = _model(rng, first + (LayerPlan("conv2d", 2, kernel=(3, 3), padding=(1, 1), pad_value=1),
                                 LayerPlan("dense", 2)), bits=4, encoding="integer", planes=planes)
    name = "conv2d1" if pool else "conv2d0"
    with pytest.raises(HardwareError, match=rf"^layer '{name}': expected pad_value 0 when the integer input's "
                                            rf"lowest plane read is above 0, found pad_value 1 with planes "
                                            rf"\[{', '.join(map(str, planes))}\]$"):
        StreamingCore(model)


def test_schedule_of_a_same_convolution():
    """Windows of a 3x3 'same' convolution fire one cycle after the pixel below and to the
    right of their centre arrives, the last row's after the image's last pixel."""
    g = Geometry(3, 4, (3, 3), (1, 1), (1, 1))
    run = schedule([g], [0], [list(range(12))])
    assert run.fires[0] == [6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]
    assert run.last_out == [17]


# --- pools of pairs (PairPool) ------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(6, 8), (7, 9), (5, 6), (8, 7)])
@pytest.mark.parametrize("idle", [0.0, 0.4])
def test_pools_of_pairs_match_golden(shape, idle):
    """A 2x2 pool of stride 2 over bits keeps one row of pair ORs; with an odd size the image's
    last window is kept until the image's last pixel (which it does not read). Two such pools
    with a conv between them, back to back and paused."""
    rng = np.random.default_rng(sum(shape))
    model = _model(rng, (LayerPlan("conv2d", 3, kernel=(3, 3), padding=(1, 1)),
                         LayerPlan("maxpool2d", kernel=(2, 2), stride=(2, 2)),
                         LayerPlan("conv2d", 5, kernel=(3, 3), padding=(1, 1), pad_value=1),
                         LayerPlan("maxpool2d", kernel=(2, 2), stride=(2, 2)),
                         LayerPlan("dense", 4)), shape=(*shape, 2), density=0.5)
    core = check_stream(model, random_inputs(rng, model.input, 6), idle=idle, seed=shape[0])
    assert [type(w).__name__ for w in core.windows] == ["WindowStream", "PairPool", "WindowStream", "PairPool"]
    assert core.image_gap == 0
    Fragment.get(core, None)
    assert core.windows[1].stats["memory_bits"] == len(core.plan.stages[1].channels) * (shape[1] // 2)  # a row


def test_other_pools_use_the_window_generator():
    """Pairs only for 2x2 windows of stride 2: a 2x2 pool of stride 1 and a 3x3 one use the
    window generator; a 2x2 pool of stride 2 on the input's bit planes is one of pairs."""
    rng = np.random.default_rng(18)
    model = _model(rng, (LayerPlan("maxpool2d", kernel=(2, 2), stride=(2, 2)),
                         LayerPlan("conv2d", 3, kernel=(3, 3), padding=(1, 1)),
                         LayerPlan("maxpool2d", kernel=(2, 2), stride=(1, 1)),
                         LayerPlan("conv2d", 3, kernel=(1, 1)),
                         LayerPlan("maxpool2d", kernel=(3, 3), stride=(2, 2)),
                         LayerPlan("dense", 3)), shape=(10, 9, 1), bits=2, encoding="bitplanes")
    core = check_stream(model, random_inputs(rng, model.input, 4), idle=0.2, seed=5)
    assert [type(w).__name__ for w in core.windows] == ["PairPool"] + ["WindowStream"] * 4


def test_pair_pool_refuses_other_windows():
    with pytest.raises(ValueError, match=r"^geometry: expected a 2x2 window of stride 2 without padding, found "
                                         r"kernel \(3, 3\), stride \(2, 2\), padding \(0, 0\)$"):
        PairPool(Geometry(6, 6, (3, 3), (2, 2)), 4)
    with pytest.raises(ValueError, match=r"^channels: expected at least 1, found 0$"):
        PairPool(Geometry(6, 6, (2, 2), (2, 2)), 0)


# --- shared conv stages (PhasedLayer) ----------------------------------------------------------------

def _pooled_cnn(rng, channels=20, density=0.3):
    """conv, 2x2 pool, conv: the second conv sees a window every 4 cycles at most on average;
    with 20 channels and q, the shared layer's sums come in two groups of register copies."""
    return _model(rng, (LayerPlan("conv2d", 4, kernel=(3, 3), padding=(1, 1)),
                        LayerPlan("maxpool2d", kernel=(2, 2), stride=(2, 2)),
                        LayerPlan("conv2d", channels, kernel=(3, 3), padding=(1, 1), pad_value=1),
                        LayerPlan("dense", 4)), shape=(8, 10, 1), bits=3, encoding="integer", planes=(2, 1),
                  density=density)


@pytest.mark.parametrize("idle", [0.0, 0.4])
def test_a_stage_after_a_pool_is_shared_and_exact(idle):
    rng = np.random.default_rng(11)
    model = _pooled_cnn(rng)
    shared = check_stream(model, random_inputs(rng, model.input, 6), idle=idle, seed=1)
    assert [stage.share for stage in shared.plan.stages] == [1, 1, 4]   # 80 pixels, 20 positions
    assert len(shared.convs[2].lists) > 16   # two groups of phase and enable copies
    assert shared.convs[2].latches == 2   # p waits longer than a window: in two registers each
    assert shared.image_gap == 0   # still back to back
    unshared = check_stream(model, random_inputs(rng, model.input, 6), idle=idle, seed=1, share="off")
    assert [stage.share for stage in unshared.plan.stages] == [1, 1, 1]
    # The shared stage costs fewer adder bits; the first stage is the same either way.
    Fragment.get(shared, None), Fragment.get(unshared, None)
    adders = [sum(part.stats["adder_bits"] for part in (core.convs[2], *core.convs[2].parts))
              for core in (shared, unshared)]
    assert adders[0] < adders[1]


@pytest.mark.parametrize("share", [2, 3])
def test_sums_wait_for_the_split_of_q_in_one_register_per_window(share):
    """The thresholds work on q for p_stage cycles while p waits: in p_stage // share + 1
    registers per unit, each written once per window, however the windows are spaced."""
    rng = np.random.default_rng(16)
    model = _pooled_cnn(rng, channels=6)
    core = check_stream(model, random_inputs(rng, model.input, 6), idle=0.3, seed=3, share=share)
    layer = core.convs[2]
    assert layer.latches == layer.comparisons.p_stage // share + 1 >= 2


def test_a_first_layer_of_few_input_bits_delays_its_inputs_not_its_sums():
    """12 channels of a 3x3 window of 3-bit pixels: 27 input bits wait for the split of q
    instead of twelve sums of 5 bits."""
    rng = np.random.default_rng(17)
    model = _model(rng, (LayerPlan("conv2d", 12, kernel=(3, 3), padding=(1, 1)), LayerPlan("dense", 3)),
                   shape=(5, 6, 1), bits=3, encoding="integer", planes=(2, 1, 0), density=0.5)
    core = check_stream(model, random_inputs(rng, model.input, 5), idle=0.3, seed=4)
    layer = core.convs[0]
    assert layer.shared_latency and layer.late_units == frozenset(
        k for k, unit in enumerate(layer.plan.units) if unit.comparison.kind == "pq")
    assert layer.late_units


def test_a_stage_after_two_pools_selects_in_two_steps():
    """16 pixels per position after two pools: a share of 16, each selection in two registered
    steps of 4 (PhasedLayer.select_stages)."""
    rng = np.random.default_rng(15)
    model = _model(rng, (LayerPlan("conv2d", 3, kernel=(3, 3), padding=(1, 1)),
                         LayerPlan("maxpool2d", kernel=(2, 2), stride=(2, 2)),
                         LayerPlan("conv2d", 4, kernel=(3, 3), padding=(1, 1)),
                         LayerPlan("maxpool2d", kernel=(2, 2), stride=(2, 2)),
                         LayerPlan("conv2d", 18, kernel=(3, 3), padding=(1, 1)),
                         LayerPlan("dense", 3)), shape=(8, 8, 1), bits=1, encoding="bitplanes", density=0.4)
    core = check_stream(model, random_inputs(rng, model.input, 4), idle=0.2, seed=2, share=16)
    assert [stage.share for stage in core.plan.stages] == [1, 1, 4, 1, 16]
    assert core.convs[4].select_stages == 2 and core.convs[2].select_stages == 1
    assert core.image_gap == 0


def test_share_is_bounded_by_pixels_per_position():
    rng = np.random.default_rng(12)
    model = _pooled_cnn(rng)
    core = StreamingCore(model, share=16)
    assert [stage.share for stage in core.plan.stages] == [1, 1, 4]
    assert StreamingCore(model, share=3).plan.stages[2].share == 3
    # The first conv layer reads 2-bit integers: never shared.
    assert StreamingCore(model, share=16).plan.stages[0].share == 1


def test_windows_fire_spaced_by_the_share():
    """A 1x1 kernel could fire on the cycle after each pixel; spaced by 3, the scanner falls
    behind and fires every third cycle, which the line buffers must absorb."""
    g = Geometry(2, 3, (1, 1), (1, 1))
    run = schedule([g], [0], [list(range(6))], spacings=[3])
    assert run.fires[0] == [1, 4, 7, 10, 13, 16]
    assert run.rows[0] >= 2


def test_phased_layer_refusals():
    rng = np.random.default_rng(13)
    stages = plan_stream(_pooled_cnn(rng)).stages
    with pytest.raises(ValueError, match=r"^share: expected at least 2 cycles per window, found 1$"):
        PhasedLayer(stages[2].layer_plan, 1)
    with pytest.raises(ValueError, match=r"^layer 'conv2d0': expected binary sources for a shared layer, found "
                                         r"largest values up to 3$"):
        PhasedLayer(stages[0].layer_plan, 2)   # the integer input's layer


def test_share_option_is_checked():
    rng = np.random.default_rng(14)
    with pytest.raises(ValueError, match=r"^share: expected one of auto, off or a number of cycles, found 0$"):
        StreamingCore(_pooled_cnn(rng), share=0)


@pytest.mark.parametrize("idle", [0.0, 0.4])
def test_a_held_window_wider_than_one_enable_copy_is_exact(idle):
    """A shared stage holds its window between firings; a 3x3 window of more than 64 bits (some
    of the 16 channels may be constant or unread) is held by copies of the enable
    (WindowStream.HOLD_GROUP bits each)."""
    rng = np.random.default_rng(19)
    model = _model(rng, (LayerPlan("conv2d", 16, kernel=(3, 3), padding=(1, 1)),
                         LayerPlan("maxpool2d", kernel=(2, 2), stride=(2, 2)),
                         LayerPlan("conv2d", 5, kernel=(3, 3), padding=(1, 1), pad_value=1),
                         LayerPlan("dense", 3)), shape=(8, 10, 1), bits=2, encoding="bitplanes", density=0.5)
    core = check_stream(model, random_inputs(rng, model.input, 5), idle=idle, seed=6)
    window = core.windows[2]
    assert window.spacing > 1 and len(window.window) > window.HOLD_GROUP
    assert core.image_gap == 0

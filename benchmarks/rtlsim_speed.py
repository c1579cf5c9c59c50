"""RTL simulation throughput: the Fashion-MNIST-sized test set through the RTL of a 256-256-10 core.

    ./dev python benchmarks/rtlsim_speed.py [--samples 10000] [--sim verilator|icarus] [--density 0.05] [--jobs N]
    ./dev python benchmarks/rtlsim_speed.py --model examples/fmnist_mlp95.sbnn --inputs x.npy
    ./dev python benchmarks/rtlsim_speed.py --model examples/fmnist_cnn.sbnn --inputs fashion-mnist [--head serial] [--share off]

Without ``--model``: a random 784-input 8-bit (integer encoding), 256-256-10 model with
coefficients shaped as a trained SBNN exports them, and random 8-bit samples. Prints, for the
bulk mode (vectors read inside the simulator): the generation and build times (first run; a
second run finds the generated core and the build cached), the simulation time and vectors/s, and checks every output
against the golden model. ``--inputs fashion-mnist`` takes the data set's test images (for a
convolutional model, whose streaming core takes them one pixel per clock). ``--cocotb N`` also runs N samples through the cocotb testbench
(driver, monitor and scoreboard in Python) and prints its vectors/s.
"""

import argparse
import tempfile
import time

import numpy as np

from sbnn_hdl import datasets, golden, load
from sbnn_hdl._cli import share_option
from sbnn_hdl.simulation.bulk import BulkSimulator
from sbnn_hdl.simulation.cores import generated_core
from sbnn_hdl.testing import LayerPlan, random_inputs, random_model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--sim", default="verilator", choices=["verilator", "icarus"])
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--model", help="a .sbnn file instead of the random model")
    parser.add_argument("--inputs", help="its samples (.npy), or a data set's name for its test images; "
                                         "default: random")
    parser.add_argument("--cache", help="build cache folder (default: a fresh temporary folder, so the "
                                        "first run builds)")
    parser.add_argument("--jobs", type=int, help="simulator processes (default: one per 2,000 samples, "
                                                 "at most one per CPU core)")
    parser.add_argument("--head", choices=["unrolled", "serial"], default="unrolled",
                        help="a conv model's first dense layer: unrolled or serial (docs/hardware.md)")
    parser.add_argument("--share", type=share_option, default="auto", metavar="auto|off|N",
                        help="a conv model's shared conv stages, as generate --share (docs/hardware.md)")
    parser.add_argument("--cocotb", type=int, default=0, metavar="N", help="also run N samples in cocotb mode")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    if args.model:
        model = load(args.model)
    else:
        model = random_model(rng, shape=(784,), bits=8, density=args.density, edge_cases=False, shared_ratio=True,
                             layers=(LayerPlan("dense", 256), LayerPlan("dense", 256), LayerPlan("dense", 10)))
    if args.inputs in datasets.NAMES:
        x = datasets.load(args.inputs).x_test.reshape(-1, *model.input.shape)[:args.samples]
    elif args.inputs:
        x = np.load(args.inputs)[:args.samples]
    else:
        x = random_inputs(rng, model.input, args.samples)
    print(f"model {model.name}: {model.input.shape} {model.input.bits}-bit {model.input.encoding}, "
          f"{model.connections:,} connections; {len(x):,} samples; simulator {args.sim}")

    with tempfile.TemporaryDirectory() as scratch:
        cache = args.cache or scratch
        for attempt in ("first run", "second run"):
            start = time.perf_counter()
            generated = generated_core(model, cache=cache, head=args.head, share=args.share)
            generate = time.perf_counter() - start
            simulator = BulkSimulator(generated.report, [("core.v", generated.verilog)], simulator=args.sim,
                                      cache=cache)
            start = time.perf_counter()
            built = simulator.build()
            build = time.perf_counter() - start
            start = time.perf_counter()
            predictions, scores = simulator.run(model, x, jobs=args.jobs)
            run = time.perf_counter() - start
            expected = golden.infer(model, x)
            exact = np.array_equal(predictions, expected.predictions) and np.array_equal(scores, expected.scores)
            print(f"  bulk {attempt}: generate {generate:.1f} s ({'generated' if generated.core else 'cached'}, "
                  f"{len(generated.verilog) / 1e6:.1f} MB), build {build:.1f} s ({'built' if built else 'cached'}), "
                  f"simulate {run:.1f} s = {len(x) / run:,.0f} vectors/s; total {generate + build + run:.1f} s; "
                  f"{'bit-exact' if exact else 'MISMATCH'} against the golden model")
            if not exact:
                raise SystemExit(1)
        if args.cocotb:
            from sbnn_hdl.simulation.testbench import run_cocotb
            start = time.perf_counter()
            result = run_cocotb(model, x[:args.cocotb], generated=generated, simulator=args.sim,
                                build_dir=f"{cache}/cocotb")
            total = time.perf_counter() - start
            print(f"  cocotb: {args.cocotb} samples in {result.sim_seconds:.1f} s simulation "
                  f"= {args.cocotb / result.sim_seconds:,.0f} vectors/s ({total:.1f} s with build); "
                  f"{'bit-exact' if result.passed else 'MISMATCH'}")


if __name__ == "__main__":
    main()

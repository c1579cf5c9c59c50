"""Generation time of the hardware for a 784-input 8-bit, 256-256-10 model at 95% sparsity.

    ./dev python benchmarks/generate_speed.py [--density 0.05] [--every 2]

The model is random, with coefficients shaped as a trained SBNN exports them (one ratio
``b/a`` per layer). Prints the time of each step (planning and building the core, elaborating and converting to
Verilog) and the size of the result. One core: the generator is single-threaded.
"""

import argparse
import time

import numpy as np

from sbnn_hdl.gateware.verilog import generate_verilog
from sbnn_hdl.hwplan import DEFAULT_EVERY
from sbnn_hdl.testing import LayerPlan, random_model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--every", type=int, default=DEFAULT_EVERY)
    parser.add_argument("--encoding", default="integer", choices=["integer", "bitplanes"])
    parser.add_argument("--planes", type=int, nargs="+", help="bit planes read (default: all 8)")
    args = parser.parse_args()
    model = random_model(np.random.default_rng(0), shape=(784,), bits=8, encoding=args.encoding, planes=args.planes,
                         density=args.density, edge_cases=False, shared_ratio=True,
                         layers=(LayerPlan("dense", 256), LayerPlan("dense", 256), LayerPlan("dense", 10)))
    start = time.perf_counter()
    marks = []
    generated = generate_verilog(model, every=args.every,
                                 progress=lambda message: marks.append((time.perf_counter(), message)))
    end = time.perf_counter()
    marks.append((end, "done"))
    planes = ",".join(map(str, model.input.planes))
    print(f"784x8-bit {args.encoding} (planes {planes}), 256-256-10, density {args.density}: "
          f"{model.connections:,} connections")
    for (t0, message), (t1, _) in zip(marks, marks[1:]):
        print(f"  {message}: {t1 - t0:.1f} s")
    print(f"  total {end - start:.1f} s; Verilog {len(generated.verilog) / 1e6:.1f} MB, latency "
          f"{generated.core.latency} cycles, estimate {generated.report['estimate_ecp5']}")


if __name__ == "__main__":
    main()

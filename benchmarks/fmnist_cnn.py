"""A small binary CNN on Fashion-MNIST: per-layer shares of 3x3 kernels by Hamming weight (the
SBNN paper's Fig. 2) and K0/K1 (its Table 2 columns), as a table and a PNG plot.

    ./dev python benchmarks/fmnist_cnn.py --out build/cnn

trains ``python -m sbnn_hdl.train --data fashion-mnist --arch cnn:16,p,32,p,fc64 --planes 7,6
--sparsity S ...`` for each target S (a model already in OUT is reused), then prints the table and
writes ``OUT/kernels.png`` and ``OUT/kernels.json``. A kernel is one (output channel, input
channel) 3x3 slice of a conv layer's mask; K0 and K1 are the shares with Hamming weight 0 and 1.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sbnn_hdl import Conv2d, datasets, modelfile  # noqa: E402
from sbnn_hdl.tables import format_table  # noqa: E402
from sbnn_hdl._files import write_atomic  # noqa: E402


def kernel_histogram(layer):
    """Shares of the layer's 3x3 kernels with Hamming weight 0..9."""
    hamming = layer.kernel_hamming_weights.ravel()
    return np.bincount(hamming, minlength=layer.kernel[0] * layer.kernel[1] + 1) / hamming.size


def main():
    from sbnn_hdl.train.loop import Config, export_model, train
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="cnn:16,p,32,p,fc64")
    parser.add_argument("--targets", default="dense,0.9,0.99")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-limit", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--controller", choices=("ramp", "fixed"), default="ramp",
                        help="the trainer's sparsity controller (the results in docs/results.md predate it: fixed)")
    parser.add_argument("--gamma", type=float, help="Eq. 18 gamma, with --controller fixed (default: the trainer's)")
    parser.add_argument("--out", default="build/cnn")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    data = datasets.load("fashion-mnist")
    results, rows = {}, []
    for target in args.targets.split(","):
        sparsity = None if target == "dense" else float(target)
        output = os.path.join(args.out, f"cnn_{target}.sbnn")
        if not os.path.exists(output):
            argv = ["python", "-m", "sbnn_hdl.train", "--data", "fashion-mnist", "--arch", args.arch,
                    "--planes", "7,6", *(["--sparsity", target] if sparsity else []), "--epochs", str(args.epochs),
                    "--train-limit", str(args.train_limit), "--threads", str(args.threads),
                    "--controller", args.controller,
                    *(["--gamma", str(args.gamma)] if args.gamma is not None else []), "-o", output]
            config = Config(arch=args.arch, planes=[7, 6], sparsity=sparsity, epochs=args.epochs,
                            train_limit=args.train_limit, threads=args.threads, controller=args.controller,
                            gamma=args.gamma, name="fmnist_cnn",
                            argv=argv)
            net, _, log = train(config, log_path=output[:-5] + ".log.json", data=data)
            export_model(net, data, config, log, output)
        model = modelfile.load(output)
        layers = {}
        for layer in model.layers:
            if isinstance(layer, Conv2d):
                hist = kernel_histogram(layer)
                layers[layer.name] = {"hamming_shares": hist.tolist(), "k0": hist[0], "k1": hist[1],
                                      "density": layer.connections / layer.weights}
                rows.append([target, layer.name, f"{100 * layer.connections / layer.weights:.1f}%",
                             f"{100 * hist[0]:.1f}%", f"{100 * hist[1]:.1f}%", f"{100 * hist[2:].sum():.1f}%",
                             f"{100 * model.metadata['test_accuracy']:.2f}%"])
        results[target] = {"test_accuracy": model.metadata["test_accuracy"], "sparsity": model.metadata["sparsity"],
                           "layers": layers}
    write_atomic(os.path.join(args.out, "kernels.json"), (json.dumps(results, indent=1) + "\n").encode())
    print(format_table(["target", "layer", "density", "K0", "K1", "K>=2", "test acc"], rows))

    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    names = sorted({n for r in results.values() for n in r["layers"]})
    fig, axes = plt.subplots(len(names), len(results), figsize=(3.2 * len(results), 2.4 * len(names)),
                             squeeze=False, sharey=True)
    for col, (target, r) in enumerate(results.items()):
        for row, name in enumerate(names):
            ax = axes[row][col]
            shares = 100 * np.array(r["layers"][name]["hamming_shares"])
            ax.bar(range(len(shares)), shares, color=["#c0392b", "#e67e22"] + ["#2c3e50"] * (len(shares) - 2))
            ax.set_title(f"{name}, {'dense BNN' if target == 'dense' else f'{float(target):.0%} target'}",
                         fontsize=9)
            ax.set_xticks(range(len(shares)))
            if col == 0:
                ax.set_ylabel("% of kernels")
            if row == len(names) - 1:
                ax.set_xlabel("Hamming weight of the 3x3 kernel")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "kernels.png"), dpi=110)
    print(f"wrote {os.path.join(args.out, 'kernels.png')}")


if __name__ == "__main__":
    main()

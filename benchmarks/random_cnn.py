"""Write a random convolutional model file, for measuring hardware before a trained model exists.

    ./dev python benchmarks/random_cnn.py --shape 28,28,1 --arch 16,p,32,p,32,p --classes 10 \\
        --density 0.1 --seed 10 -o build/cnn_16_32_32_d10.sbnn

The input is 8-bit pixels read as ``--planes`` (default 7, 6, 5: one 3-bit integer per pixel, as
the trained CNNs read them); ``--arch`` lists 3x3 conv layers (padding 1) by their channels, ``p``
for a 2x2 max-pool and ``fcN`` for a hidden dense layer of N neurons, as ``train --arch cnn:``
does; a dense output layer of ``--classes`` follows. Every weight is 1-valued with probability
``--density``: one share, or one per layer with weights (the output layer last), e.g. the
per-layer densities of a trained model to estimate its shape at another sparsity
(:func:`sbnn_hdl.testing.random_model`, with one ratio ``b/a`` per layer as training gives).

    ./dev python benchmarks/random_cnn.py --arch 64,p,128,p,128,p,fc128 --planes 7,6,5,4,3,2,1,0 \\
        --density 0.3,0.05,0.05,0.05,0.3 -o build/cnnB_like_95.sbnn
"""

import argparse

import numpy as np

from sbnn_hdl import save
from sbnn_hdl.testing import LayerPlan, random_model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="28,28,1", help="H,W,C (default 28,28,1)")
    parser.add_argument("--arch", default="16,p,32,p,32,p",
                        help="conv channels, p for a pool, fcN for a hidden dense layer (default 16,p,32,p,32,p)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--density", default="0.1", help="one share, or one per layer with weights (default 0.1)")
    parser.add_argument("--planes", default="7,6,5", help="the bit planes read, as one integer (default 7,6,5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", required=True, metavar="MODEL.sbnn")
    args = parser.parse_args()
    layers = [LayerPlan("maxpool2d", kernel=(2, 2), stride=(2, 2)) if token == "p" else
              LayerPlan("dense", int(token[2:])) if token.startswith("fc") else
              LayerPlan("conv2d", int(token), kernel=(3, 3), padding=(1, 1)) for token in args.arch.split(",")]
    density = [float(v) for v in args.density.split(",")]
    name = args.output.rsplit("/", 1)[-1].removesuffix(".sbnn")
    weighted = sum(plan.kind != "maxpool2d" for plan in layers) + 1
    if len(density) not in (1, weighted):
        parser.error(f"--density: expected one share or {weighted} (one per layer with weights), found {len(density)}")
    model = random_model(np.random.default_rng(args.seed), shape=tuple(int(v) for v in args.shape.split(",")),
                         bits=8, encoding="integer", planes=tuple(int(v) for v in args.planes.split(",")),
                         density=density[0] if len(density) == 1 else density, edge_cases=False,
                         shared_ratio=True, name=name, layers=(*layers, LayerPlan("dense", args.classes)))
    save(model, args.output)
    print(f"wrote {args.output}: {model.connections:,} connections")


if __name__ == "__main__":
    main()

"""A Brevitas TFC (bnn_pynq's W1A1 784-64-64-64-10) trained on Fashion-MNIST, exported as QONNX,
converted with ``python -m sbnn_hdl.convert``: accuracy in Brevitas, after conversion (golden model,
10,000 test images), qonnx against golden, and the LUT4 estimates of both datapaths.

    ./dev python benchmarks/brevitas_tfc.py --epochs 60 --out build/brevitas_tfc

As bnn_pynq: pixels in [0, 1], ``2*x - 1``, a 1-bit input quantizer (so the model reads the bit
``pixel >= 128``), 1-bit weights and activations, batch norm, TensorNorm at the end, weights
clipped to [-1, 1] after each step; Adam with a cosine schedule and cross-entropy (bnn_pynq uses a
squared hinge loss). One torch thread. Prints the figures docs/convert.md reports. ``--input-bits 8``
quantizes the pixels to 8-bit unsigned integers instead (the first layer then reads integers).
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sbnn_hdl import datasets  # noqa: E402
from sbnn_hdl.qonnx_import import check, convert  # noqa: E402
from sbnn_hdl.testing import brevitas_nets  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--hidden", default="64,64,64", help="hidden layer sizes (TFC 64, SFC 256, LFC 1024)")
    parser.add_argument("--input-bits", type=int, default=1,
                        help="1: bnn_pynq's binary input; 8: the pixels as 8-bit unsigned integers (the converted "
                             "model's 'integer' input)")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="build/brevitas_tfc")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    data = datasets.load("fashion-mnist")
    flat = lambda x: torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / 255)  # noqa: E731
    x_train, y_train = flat(data.x_train), torch.from_numpy(data.y_train)
    x_test, y_test = data.x_test.reshape(len(data.x_test), -1).astype(np.float32) / 255, data.y_test
    hidden = tuple(int(n) for n in args.hidden.split(","))
    net = brevitas_nets.fc(hidden, input_bits=args.input_bits)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    steps = args.epochs * (len(x_train) // args.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    started = time.perf_counter()
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(x_train))
        for start in range(0, len(order) - args.batch_size + 1, args.batch_size):
            batch = order[start:start + args.batch_size]
            loss = torch.nn.functional.cross_entropy(net(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():  # bnn_pynq's clip_weights
                for module in net.modules():
                    if hasattr(module, "quant_weight"):
                        module.weight.clamp_(-1, 1)
        net.eval()
        with torch.no_grad():
            accuracy = float((net(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, Brevitas test accuracy {100 * accuracy:.2f}% "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    train_seconds = time.perf_counter() - started
    onnx_path = os.path.join(args.out, "tfc.onnx")
    brevitas_nets.export(net, onnx_path, (784,))
    np.save(os.path.join(args.out, "x_test.npy"), x_test)
    np.save(os.path.join(args.out, "y_test.npy"), y_test)
    sbnn_path = os.path.join(args.out, "tfc.sbnn")
    command = [sys.executable, "-m", "sbnn_hdl.convert", onnx_path, "-o", sbnn_path, "--check",
               os.path.join(args.out, "x_test.npy"), "--name", "brevitas_tfc"]
    print("+", " ".join(command[1:]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    convert_seconds = time.perf_counter() - started
    report = check(convert(onnx_path), x_test)
    golden_accuracy = float((report["predictions"] == y_test).mean())
    graph_accuracy = float((report["graph_predictions"] == y_test).mean())
    print(f"\ntraining: {args.epochs} epochs in {train_seconds:.0f} s ({args.threads} thread)")
    print(f"Brevitas (PyTorch) test accuracy: {100 * accuracy:.2f}%")
    print(f"qonnx execution of the exported graph: {100 * graph_accuracy:.2f}%")
    print(f"converted model in the golden model: {100 * golden_accuracy:.2f}% "
          f"({report['ties']} of 10,000 test images tie in the graph's float scores)")
    print(f"convert --check took {convert_seconds:.0f} s")


if __name__ == "__main__":
    main()

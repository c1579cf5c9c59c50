"""The reference set: brevitas_examples.bnn_pynq's own W1A1 TFC, SFC, LFC (MNIST-sized MLPs) and CNV
(CIFAR-10-sized CNN), untrained, with random batch-norm statistics, exported with ``export_qonnx``,
converted, and checked against qonnx's execution on 1,000 random inputs each.

    ./dev python benchmarks/bnn_pynq_reference.py [tfc sfc lfc cnv]

Prints, per network, the conversion time, the model's layers and connections, and the check.
One torch thread.
"""

import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sbnn_hdl.qonnx_import import check, convert  # noqa: E402
from sbnn_hdl.testing import brevitas_nets  # noqa: E402


def main():
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        for which in sys.argv[1:] or ["tfc", "sfc", "lfc", "cnv"]:
            torch.manual_seed(0)
            net, shape = brevitas_nets.bnn_pynq(which)
            brevitas_nets.randomize_batch_norms(net, torch.Generator().manual_seed(1))
            path = brevitas_nets.export(net, os.path.join(folder, f"{which}.onnx"), shape)
            started = time.perf_counter()
            conversion = convert(path)
            seconds = time.perf_counter() - started
            model = conversion.model
            x = np.random.default_rng(0).random((1000, *shape), dtype=np.float32)
            started = time.perf_counter()
            report = check(conversion, x)
            print(f"{which}: converted in {seconds:.1f} s: {len(model.layers)} layers "
                  f"({', '.join(l.kind for l in model.layers)}), input {list(model.input.shape)} x {model.input.bits} "
                  f"bits, {model.connections:,} connections; check on 1,000 random inputs in "
                  f"{time.perf_counter() - started:.1f} s: {report['compared']} compared, {report['ties']} tied, "
                  f"{len(report['differ'])} differ", flush=True)


if __name__ == "__main__":
    main()

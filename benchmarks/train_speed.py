"""Training speed: seconds per epoch of the Fashion-MNIST 784-256-256-10 MLP (4 bit planes, so
3,136 binary inputs; 55,000 images, batch 256, learned domain, 95% target) on the CPU.

    ./dev python benchmarks/train_speed.py [--threads 1,2] [--epochs 1]

Prints one line per thread count: seconds per epoch (the log's figure: training steps plus the
validation pass) and steps per second. The figures depend on what else runs on the machine.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sbnn_hdl import datasets  # noqa: E402


def main():
    from sbnn_hdl.train.loop import Config, train
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    data = datasets.load("fashion-mnist")
    print(f"cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} at start")
    for threads in map(int, args.threads.split(",")):
        config = Config(sparsity=0.95, epochs=args.epochs, threads=threads)
        start = time.perf_counter()
        _, _, log = train(config, progress=False, data=data)
        total = time.perf_counter() - start
        per_epoch = sum(e["seconds"] for e in log) / len(log)
        steps = -(-len(data.x_train) // config.batch_size)
        print(f"threads {threads}: {per_epoch:.1f} s/epoch ({steps / per_epoch:.1f} steps/s, batch "
              f"{config.batch_size}); {total:.1f} s in all with setup; load average now {os.getloadavg()[0]:.2f}",
              flush=True)


if __name__ == "__main__":
    main()

"""Fashion-MNIST sweep: the 784-256-256-10 MLP as a dense BNN and as SBNNs at several target
sparsities, in each of the three weight domains. Prints a table (test accuracy, sparsity reached,
bits/weight, connections, seconds per epoch) and writes it, with every run's figures, to
``OUT/results.json``; each model is exported (exactly, golden-checked) to ``OUT/<run>.sbnn``.

    ./dev python benchmarks/fmnist_sweep.py --epochs 6 --batch-size 512 --threads 1 --out build/sweep

A run whose ``.sbnn`` exists is not trained again (delete it to redo it). Every run is the same as
``python -m sbnn_hdl.train --data fashion-mnist --arch mlp:256,256 --domain D --sparsity S
--epochs E --batch-size B --threads T --controller C -o OUT/<run>.sbnn``, which is recorded in each
model's metadata.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sbnn_hdl import datasets, modelfile  # noqa: E402
from sbnn_hdl.tables import format_table  # noqa: E402
from sbnn_hdl._files import write_atomic  # noqa: E402

SPARSITIES = (0.95, 0.5, 0.75, 0.9, 0.98, 0.99)
DOMAINS = ("learned", "closed-form", "symmetric")


def runs():
    yield "dense", None, "learned"
    for sparsity in SPARSITIES:
        for domain in DOMAINS:
            yield f"{domain}_{round(sparsity * 100)}", sparsity, domain


def main():
    from sbnn_hdl.train.loop import Config, export_model, train
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--out", default="build/sweep")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    parser.add_argument("--only", help="comma-separated run names")
    parser.add_argument("--controller", choices=("ramp", "fixed"), default="ramp",
                        help="the trainer's sparsity controller (the results in docs/results.md predate it: fixed)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    data = datasets.load("fashion-mnist")
    results_path = os.path.join(args.out, "results.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    for name, sparsity, domain in runs():
        if args.only and name not in args.only.split(","):
            continue
        output = os.path.join(args.out, f"{name}.sbnn")
        if not os.path.exists(output):
            argv = ["python", "-m", "sbnn_hdl.train", "--data", "fashion-mnist", "--arch", "mlp:256,256",
                    "--domain", domain, *(["--sparsity", str(sparsity)] if sparsity else []),
                    "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--threads",
                    str(args.threads), "--controller", args.controller, "-o", output]
            config = Config(data="fashion-mnist", arch="mlp:256,256", domain=domain, sparsity=sparsity,
                            epochs=args.epochs, batch_size=args.batch_size, threads=args.threads, name="fmnist_mlp",
                            controller=args.controller, argv=argv)
            stem = output[:-5]
            net, _, log = train(config, checkpoint=stem + ".ckpt", log_path=stem + ".log.json", data=data,
                                resume=os.path.exists(stem + ".ckpt"))
            export_model(net, data, config, log, output)
            with open(stem + ".log.json") as file:
                log = json.load(file)
            results[name] = {"seconds_per_epoch": sum(e["seconds"] for e in log) / len(log)}
        model = modelfile.load(output)
        meta = model.metadata
        results.setdefault(name, {}).update(
            domain=domain, target=sparsity, test_accuracy=meta["test_accuracy"], sparsity=meta["sparsity"],
            bits_per_weight=meta["entropy_bits_per_weight"], connections=model.connections,
            gamma=meta["gamma"], epochs=meta["epochs"])
        write_atomic(results_path, (json.dumps(results, indent=1) + "\n").encode())
        print(f"{name}: {100 * meta['test_accuracy']:.2f}%", flush=True)
    rows = []
    for name, r in results.items():
        rows.append([name, r["domain"], "-" if r["target"] is None else f"{100 * r['target']:.0f}%",
                     f"{100 * r['test_accuracy']:.2f}%", f"{100 * r['sparsity']:.2f}%",
                     f"{r['bits_per_weight']:.3f}", f"{r['connections']:,}", r["gamma"],
                     f"{r.get('seconds_per_epoch', float('nan')):.1f}"])
    print(format_table(["run", "domain", "target", "test acc", "sparsity", "bits/w", "connections", "gamma",
                        "s/epoch"], rows))


if __name__ == "__main__":
    main()

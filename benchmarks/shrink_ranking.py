"""Which neurons to keep when shrinking (docs/bitprune.md, "Shrinking"): the most-used ones
(:func:`sbnn_hdl.train.shrink.neuron_usage`) against the least-used ones and the first ``w`` by
index, before any fine-tune (re-calibrated only), on a trained checkpoint.

    ./dev python benchmarks/shrink_ranking.py examples/fmnist_mlp95.ckpt --widths 192,128,96,64

Prints the exact validation accuracy of each shrunk net; the usage is measured on the training
split the run used (the calibration samples of ``bitprune``).
"""

import argparse

from sbnn_hdl.tables import format_table
from sbnn_hdl.train.loop import exact_accuracy, load_net
from sbnn_hdl.train.shrink import candidate_widths, hidden_widths, most_used, neuron_usage, parse_widths, shrink_net
from sbnn_hdl.train.tune import calibrate


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--widths", default="0.75,0.5,0.375,0.25")
    args = parser.parse_args()
    net, config, data, _ = load_net(args.checkpoint, threads=1)
    x = data.x_train[:config.train_limit] if config.train_limit else data.x_train
    usage = neuron_usage(net, x)
    rankings = {"most used": lambda u, w: most_used(u, w), "least used": lambda u, w: most_used(-u, w),
                "first by index": lambda u, w: list(range(w))}
    rows = []
    for widths in candidate_widths(hidden_widths(net), parse_widths(args.widths)):
        row = [",".join(map(str, widths))]
        for choose in rankings.values():
            shrunk, _ = shrink_net(net, config, data, [choose(u, w) for u, w in zip(usage, widths)])
            calibrate(shrunk, x)
            row.append(f"{100 * exact_accuracy(shrunk, data.x_val, data.y_val):.2f}%")
        rows.append(row)
    print(format_table(["widths", *rankings], rows))


if __name__ == "__main__":
    main()

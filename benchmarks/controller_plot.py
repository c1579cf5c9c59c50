"""The sparsity controller at work: sparsity (reached, and the scheduled target) and validation
accuracy against the epoch, one line per run, from the training logs, as a PNG.

    ./dev python benchmarks/controller_plot.py build/a.log.json build/b.log.json -o build/controller.png

Each ``LOG`` is the ``OUTPUT.log.json`` that ``python -m sbnn_hdl.train`` writes (a list with one
object per epoch). A run's line is labelled with the file's name (or ``--labels``); its scheduled
target (the log's ``target``, absent for a dense run or a log from before the controller) is
drawn dashed in the same colour. Per-layer sparsity, with ``--layers``, goes into a third panel,
dotted, in the run's colour with a marker per layer.
"""

import argparse
import io
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sbnn_hdl._files import write_atomic  # noqa: E402


def read_log(path):
    """The epochs of log ``path``; ValueError naming the file if it is not a training log."""
    with open(path) as file:
        try:
            log = json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: expected a training log (JSON), found {error.msg}") from None
    if not isinstance(log, list) or not log or not all(isinstance(e, dict) and "epoch" in e and "sparsity" in e
                                                       and "val_accuracy" in e for e in log):
        raise ValueError(f"{path}: expected a training log (a list of epochs with 'epoch', 'sparsity' and "
                         f"'val_accuracy'), found something else")
    return log


def label_of(path):
    name = os.path.basename(path)
    return name[:-len(".log.json")] if name.endswith(".log.json") else name


def plot(runs, output, *, layers=False):
    """Draw ``runs``, ``[(label, log)]``, into the PNG ``output``."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    panels = 3 if layers else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.0))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, (label, log) in enumerate(runs):
        colour = colours[n % len(colours)]
        epochs = [e["epoch"] for e in log]
        axes[0].plot(epochs, [100 * e["sparsity"] for e in log], "o-", color=colour, label=label)
        if all(e.get("target") is not None for e in log):
            axes[0].plot(epochs, [100 * e["target"] for e in log], "--", color=colour, alpha=0.7)
        axes[1].plot(epochs, [100 * e["val_accuracy"] for e in log], "o-", color=colour, label=label)
        if layers:
            names = list(log[-1].get("layer_density", {}))
            for name, marker in zip(names, "os^vDP*X" * len(names)):  # a marker per layer, a colour per run
                axes[2].plot(epochs, [100 * (1 - e["layer_density"][name]) for e in log], ":", marker=marker,
                             color=colour, label=f"{label} {name}")
    axes[0].set_title("sparsity: reached (solid), scheduled target (dashed)", fontsize=10)
    axes[0].set_ylabel("share of 0-valued weights (%)")
    axes[1].set_title("validation accuracy", fontsize=10)
    axes[1].set_ylabel("%")
    if layers:
        axes[2].set_title("per-layer sparsity", fontsize=10)
        axes[2].set_ylabel("share of 0-valued weights (%)")
        axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_atomic(output, buffer.getvalue())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="+", metavar="LOG", help="OUTPUT.log.json files of sbnn_hdl.train runs")
    parser.add_argument("-o", "--output", required=True, metavar="PLOT.png")
    parser.add_argument("--labels", help="comma-separated labels, one per log (default: the file names)")
    parser.add_argument("--layers", action="store_true", help="a third panel with every layer's sparsity")
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else [label_of(p) for p in args.logs]
    if len(labels) != len(args.logs):
        parser.error(f"--labels: expected {len(args.logs)} labels, found {len(labels)}")
    try:
        runs = [(label, read_log(path)) for label, path in zip(labels, args.logs)]
    except (OSError, ValueError) as error:
        parser.error(str(error))
    plot(runs, args.output, layers=args.layers)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

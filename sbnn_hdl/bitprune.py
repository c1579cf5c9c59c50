"""``python -m sbnn_hdl.bitprune CHECKPOINT [--budget 0.01] [--finetune N] -o pruned.sbnn [--report DIR]``

Bit-plane input pruning (issue #7, after Li et al., "Build a compact binary neural network through
bit-level sensitivity and data pruning"): measures how much each input bit plane of a trained SBNN
matters, removes planes greedily while the validation accuracy stays within a budget of the
unpruned network's, optionally fine-tunes, and exports the smaller network exactly (the same
per-neuron proof and golden-model check as training). See docs/bitprune.md.

Removing a plane: with ``bitplanes`` the first layer loses that plane's block of inputs (and their
weights); with ``integer`` the plane's bit is cleared in every pixel (the weights stay; the
input's scale ``1/plane_mask`` changes, which the re-calibration absorbs). Either way the model's
``input.planes`` lists only the kept planes, so the generator builds nothing for the others.
After every removal all normalisation statistics (batch norm, and the output layer's shared
``out_mean``/``out_var``) are re-computed, layer by layer, as exact population statistics over the
calibration samples (:func:`calibrate`): the thresholds of the export follow from them.

This module imports torch (like :mod:`sbnn_hdl.train` and :mod:`sbnn_hdl.export`).
"""

import argparse
import io
import json
import math
import os
import sys
from dataclasses import dataclass, field, replace

import numpy as np

from ._cli import command, format_table
from ._files import write_atomic
from .errors import SbnnError

__all__ = ["BitpruneError", "Candidate", "remove_planes", "calibrate", "population_moments", "analyse",
           "choose", "finetune", "main"]

#: The fine-tune's learning rate, as a share of the checkpoint's (the run starts from a trained
#: net: a full rate would undo much of what it learned before the sparsity penalty settles).
FINETUNE_LR_SHARE = 0.1


class BitpruneError(SbnnError):
    """Bad pruning settings."""


# --- the operations -------------------------------------------------------------------------------

def remove_planes(net, config, data, keep):
    """A new net that reads only the planes ``keep`` of ``config.planes`` (their order kept).

    Every parameter and statistic is copied; for ``bitplanes`` the first layer's weight columns of
    the removed planes are dropped (features are plane-major: block ``q`` holds the ``q``-th listed
    plane). For ``integer`` the weights stay as they are. Returns ``(net, config)``; the
    statistics are those of ``net`` until :func:`calibrate` replaces them.
    """
    import torch

    from .train.loop import build_net
    planes = [k for k in config.planes if k in keep]
    if not planes or len(planes) != len(set(keep)):
        raise BitpruneError(f"planes to keep: expected a non-empty subset of {config.planes}, found {sorted(keep)}")
    reduced_config = replace(config, planes=planes)
    reduced = build_net(reduced_config, data)
    state = {name: value.clone() for name, value in net.state_dict().items()}
    if config.encoding == "bitplanes":
        key = "binary_layers.0.weight"
        w = state[key]
        blocks = w.reshape(w.shape[0], len(config.planes), -1, *w.shape[2:])
        index = torch.tensor([config.planes.index(k) for k in planes])
        state[key] = blocks[:, index].reshape(w.shape[0], -1, *w.shape[2:]).contiguous()
    reduced.load_state_dict(state)
    reduced.eval()
    return reduced, reduced_config


class _Moments:
    """Mean and sum of squared deviations per channel, merged batch by batch in float64 (Chan et
    al.'s pairwise update: no cancellation, unlike a running sum of squares)."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, None, None

    def add(self, z, dims):
        z = z.double()
        n = math.prod(z.shape[d] for d in dims)
        mean = z.mean(dim=dims)
        m2 = ((z - mean.reshape([1 if d in dims else -1 for d in range(z.dim())])) ** 2).sum(dim=dims)
        if self.count == 0:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.count * n / total)
        self.count = total


def _normalised_dims(layer, z):
    """The dimensions that a layer's normalisation averages over: all but the channel for batch
    norm, all for the output layer's single shared statistic."""
    return list(range(z.dim())) if layer.last else [d for d in range(z.dim()) if d != 1]


def population_moments(net, layer, x, *, batch=2048):
    """``(mean, variance)`` (float64 tensors) of ``layer``'s output before its normalisation over
    all samples ``x`` (uint8 ``[N, *input.shape]``), with the layers before it in evaluation mode.
    The variance is the unbiased one (divisor ``N - 1``), the convention of PyTorch's
    ``running_var`` and of the output layer's ``out_var``."""
    import torch

    from .train.nets import encode_batch
    moments = _Moments()
    with torch.no_grad():
        for start in range(0, len(x), batch):
            z = net(encode_batch(net.spec, x[start:start + batch], net.conv_first), until=layer)
            moments.add(z, _normalised_dims(layer, z))
    if moments.count < 2:
        raise BitpruneError(f"calibration: expected at least 2 values per statistic, found {moments.count}")
    return moments.mean, moments.m2 / (moments.count - 1)


def calibrate(net, x, *, batch=2048):
    """Replace every normalisation statistic of ``net`` by the exact population statistics of its
    input over samples ``x``, first layer first (each layer sees the re-calibrated layers before
    it), not by momentum updates. Returns ``{layer name: (mean, var)}`` as float64 arrays."""
    import torch
    net.eval()
    stats = {}
    for layer in net.binary_layers:
        mean, var = population_moments(net, layer, x, batch=batch)
        with torch.no_grad():
            if layer.last:
                layer.out_mean.copy_(mean.float())
                layer.out_var.copy_(var.float())
            else:
                layer.bn.running_mean.copy_(mean.float())
                layer.bn.running_var.copy_(var.float())
        stats[layer.name] = (mean.numpy(), var.numpy())
    return stats


# --- the analysis ---------------------------------------------------------------------------------

@dataclass
class Candidate:
    """A net reading ``planes``, re-calibrated, with its validation accuracy (exact integer form)."""

    planes: tuple
    val_accuracy: float
    net: object = field(repr=False)
    config: object = field(repr=False)


class _Evaluator:
    """Builds, re-calibrates and scores the net of a plane set, once per set."""

    def __init__(self, net, config, data, calibration, progress=None):
        self.net, self.config, self.data, self.calibration = net, config, data, calibration
        self.progress = progress or (lambda: None)
        self.seen = {}

    def __call__(self, planes):
        from .train.loop import _accuracy
        key = frozenset(planes)
        if key not in self.seen:
            net, config = remove_planes(self.net, self.config, self.data, key)
            calibrate(net, self.calibration)
            accuracy = _accuracy(net, self.data.x_val, self.data.y_val)
            self.seen[key] = Candidate(tuple(config.planes), accuracy, net, config)
            self.progress()
        return self.seen[key]


def analyse(net, config, data, calibration, *, progress=None):
    """Sensitivity and the greedy curve of ``net`` (planes ``config.planes``).

    Returns ``(base, sensitivity, curve)``: the unpruned net re-calibrated; for each plane the
    candidate without it; and the greedy path from all planes down to one, where each step
    removes the plane whose removal leaves the highest validation accuracy (ties: the lowest
    plane, the least significant). Every candidate is re-calibrated on ``calibration``.
    ``progress()`` is called once per candidate evaluated (``analysis_steps(P)`` in all).
    """
    evaluate = _Evaluator(net, config, data, calibration, progress)
    planes = tuple(config.planes)
    base = evaluate(planes)
    sensitivity = [evaluate([k for k in planes if k != removed]) for removed in planes]
    curve, kept = [base], planes
    while len(kept) > 1:
        options = [evaluate([k for k in kept if k != removed]) for removed in kept]
        best = max(zip(options, kept), key=lambda pair: (pair[0].val_accuracy, -pair[1]))[0]
        curve.append(best)
        kept = best.planes
    return base, sensitivity, curve


def analysis_steps(planes):
    """How many candidates :func:`analyse` evaluates for ``planes`` planes: the base, then
    ``P + (P-1) + ... + 2`` (the first greedy step is the sensitivity analysis)."""
    return 1 + sum(range(2, planes + 1))


def choose(curve, base, budget):
    """The smallest plane set of ``curve`` whose validation accuracy is at most ``budget`` (a
    share, 0.01 = 1 point) below ``base``'s. The curve's first entry is ``base`` itself, so there
    always is one."""
    fits = [c for c in curve if base.val_accuracy - c.val_accuracy <= budget + 1e-12]
    return min(fits, key=lambda c: len(c.planes))


def finetune(candidate, data, epochs, *, threads, seed, calibration, progress=True):
    """Train ``candidate``'s net ``epochs`` more epochs with the checkpoint's settings (sparsity
    target, gamma, domain, estimator, batch size) at :data:`FINETUNE_LR_SHARE` of its learning rate
    (cosine to 0), then re-calibrate. Returns ``(net, config, log)``."""
    from .train.loop import train
    config = replace(candidate.config, epochs=epochs, lr=candidate.config.lr * FINETUNE_LR_SHARE,
                     threads=threads, seed=seed)
    net, _, log = train(config, data=data, init=candidate.net.state_dict(), progress=progress)
    calibrate(net, calibration)
    return net, config, log


# --- figures of a net -------------------------------------------------------------------------------

def hardware_figures(net, name="candidate"):
    """``{"first_layer": connections, "connections": all, "lut4": estimate or None}`` of ``net``'s
    folded form as the export folds it (the LUT4 estimate of :func:`sbnn_hdl.generate.estimate_model`; None for a model
    that the generator cannot build)."""
    from .export import fold, to_model
    from .generate import estimate_model
    from .hwplan import HardwareError
    model = to_model(net, fold(net, search=True), name)  # the export's (narrowest proven) coefficients
    try:
        lut4 = estimate_model(model)["lut4"]
    except HardwareError:
        lut4 = None
    return {"first_layer": int(model.layers[0].mask.sum()), "connections": model.connections, "lut4": lut4}


# --- the report -------------------------------------------------------------------------------------

def _pct(x):
    return "-" if x is None else f"{100 * x:.2f}%"


def _count(x):
    return "-" if x is None else f"{x:,}"


def _planes(planes):
    return ",".join(map(str, planes))


def tables(report):
    """``[(title, header, rows)]``: the report's tables (terminal and Markdown)."""
    base = report["base"]["val_accuracy"]
    sensitivity = [[f"{entry['removed']}", _planes(entry["planes"]), _pct(entry["val_accuracy"]),
                    f"{100 * (base - entry['val_accuracy']):+.2f}"] for entry in report["sensitivity"]]
    tuned = {tuple(t["planes"]): t["val_accuracy"] for t in report["finetune"]}
    exported = report["exported"]["planes"]
    curve = [[len(c["planes"]), _planes(c["planes"]), _pct(c["val_accuracy"]),
              f"{100 * (base - c['val_accuracy']):+.2f}", _pct(tuned.get(tuple(c["planes"]))),
              _count(c["first_layer"]), _count(c["connections"]), _count(c["lut4"]),
              " ".join(["selected"] * (c["planes"] == report["chosen"]["planes"])
                       + ["exported"] * (c["planes"] == exported))]
             for c in report["curve"]]
    summary = [[row["model"], _planes(row["planes"]), _pct(row["val_accuracy"]), _pct(row["test_accuracy"]),
                _count(row["first_layer"]), _count(row["connections"]), _count(row["lut4"])]
               for row in report["summary"]]
    return [
        ("Sensitivity: each plane removed alone (re-calibrated)",
         ["removed plane", "planes kept", "val accuracy", "drop (points)"], sensitivity),
        ("Greedy removal", ["planes", "kept", "val accuracy", "drop (points)", "after fine-tune",
                            "first-layer conn", "all conn", "LUT4 est", ""], curve),
        ("Before and after", ["model", "planes", "val accuracy", "test accuracy", "first-layer conn",
                              "all conn", "LUT4 est"], summary),
    ]


def markdown_table(header, rows):
    """A GitHub Markdown table."""
    line = lambda row: "| " + " | ".join(str(c) for c in row) + " |"
    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows)])


def format_markdown(report):
    """``bitprune.md``: the settings, the tables and what they mean."""
    s = report["settings"]
    out = [f"# Bit-plane pruning of `{os.path.basename(s['checkpoint'])}`", "",
           f"Command: `{report['command']}`", "",
           f"Planes {_planes(report['base']['planes'])} ({s['encoding']} encoding); budget {100 * s['budget']:g} "
           f"points of validation accuracy below the re-calibrated unpruned net "
           f"({_pct(report['base']['val_accuracy'])}); {s['calibration_samples']:,} calibration samples; "
           f"validation {s['val_samples']:,}, test {s['test_samples']:,} samples. Accuracies are of the exact "
           f"integer form (what the hardware computes); LUT4 is the generator's estimate, not synthesis."]
    for title, header, rows in tables(report):
        out += ["", f"## {title}", "", markdown_table(header, rows)]
    out += ["", "![validation accuracy against planes kept](bitprune.png)", ""]
    return "\n".join(out)


def plot(report):
    """``bitprune.png`` as bytes: validation accuracy against planes kept, with the budget line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = report["curve"]
    base = report["base"]["val_accuracy"]
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    x = [len(c["planes"]) for c in curve]
    axes.plot(x, [100 * c["val_accuracy"] for c in curve], "o-", color="tab:blue", label="greedy removal (re-calibrated)")
    for count, c in zip(x, curve):
        axes.annotate(_planes(c["planes"]), (count, 100 * c["val_accuracy"]), fontsize=7, xytext=(4, 4),
                      textcoords="offset points")
    axes.axhline(100 * (base - report["settings"]["budget"]), color="tab:red", lw=1, ls="--",
                 label=f"budget ({100 * report['settings']['budget']:g} points below all planes)")
    tuned = report["finetune"]
    if tuned:
        axes.plot([len(t["planes"]) for t in tuned], [100 * t["val_accuracy"] for t in tuned], "^",
                  color="tab:green", label=f"fine-tuned ({report['settings']['finetune_epochs']} epoch(s)), re-calibrated")
    exported = report["exported"]
    axes.plot([len(exported["planes"])], [100 * exported["val_accuracy"]], "o", ms=12, mfc="none", color="k",
              label="exported")
    axes.set_xticks(sorted(set(x)))
    axes.invert_xaxis()
    axes.set_xlabel("input bit planes kept")
    axes.set_ylabel("validation accuracy (%)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return buffer.getvalue()


def write_report(report, folder):
    """``bitprune.json``, ``bitprune.md`` and ``bitprune.png`` in ``folder`` (each atomically)."""
    os.makedirs(folder, exist_ok=True)
    write_atomic(os.path.join(folder, "bitprune.json"), (json.dumps(report, indent=1) + "\n").encode())
    write_atomic(os.path.join(folder, "bitprune.md"), format_markdown(report).encode())
    write_atomic(os.path.join(folder, "bitprune.png"), plot(report))


# --- the command --------------------------------------------------------------------------------------

def _calibration_samples(data, config, count, seed):
    """The training samples the statistics are taken over: the run's training split (its first
    ``train_limit`` samples when it had one), or ``count`` of them drawn without replacement."""
    x = data.x_train[:config.train_limit] if config.train_limit else data.x_train
    if count is None or count >= len(x):
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), count, replace=False))]


def _check_options(args):
    if not 0 <= args.budget < 1:
        raise BitpruneError(f"option --budget: expected a share of accuracy in [0, 1) (0.01 = 1 point), "
                            f"found {args.budget}")
    for key in ("finetune", "calibration", "keep", "threads"):
        value = getattr(args, key)
        if value is not None and value < (0 if key == "finetune" else 1):
            raise BitpruneError(f"option --{key}: expected a {'non-negative' if key == 'finetune' else 'positive'} "
                                f"number, found {value}")
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise BitpruneError(f"output {args.output!r}: expected an existing folder {folder!r}, found none")


def _bar(total, desc, enabled):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True, leave=False)


def _fine_tuned(curve, chosen, base, args, data, calibration, progress):
    """With ``--finetune``: fine-tune ``chosen``, then each smaller set of the curve in turn, and
    stop at the first whose fine-tuned validation accuracy is more than the budget below ``base``
    (with ``--keep``: ``chosen`` alone, accepted whatever its accuracy). Returns the list of
    ``{"candidate", "net", "config", "log", "val_accuracy", "within_budget"}`` tried, in order."""
    from .train.loop import _accuracy
    tried = []
    for candidate in curve[curve.index(chosen):]:
        net, config, log = finetune(candidate, data, args.finetune, threads=args.threads, seed=args.seed,
                                    calibration=calibration, progress=progress)
        accuracy = _accuracy(net, data.x_val, data.y_val)
        fits = args.keep is not None or base.val_accuracy - accuracy <= args.budget + 1e-12
        tried.append({"candidate": candidate, "net": net, "config": config, "log": log,
                      "val_accuracy": accuracy, "within_budget": fits})
        if args.keep is not None or not fits:
            break
    return tried


def run(args, argv):
    """The command's work; returns the report (also written to ``--report``)."""
    from .train.loop import _accuracy, export, load_net

    net, config, data, log = load_net(args.checkpoint, threads=args.threads)
    if args.data is not None and args.data != config.data:
        raise BitpruneError(f"option --data: expected the checkpoint's data set {config.data!r}, found {args.data!r}")
    if args.keep is not None and args.keep > len(config.planes):
        raise BitpruneError(f"option --keep: expected at most the checkpoint's {len(config.planes)} planes, "
                            f"found {args.keep}")
    calibration = _calibration_samples(data, config, args.calibration, args.seed)
    command = ["python", "-m", "sbnn_hdl.bitprune", *argv]
    name = args.name or f"{config.name}_pruned"

    bar = _bar(analysis_steps(len(config.planes)), "sensitivity and greedy removal", not args.quiet)
    base, sensitivity, curve = analyse(net, config, data, calibration, progress=bar.update if bar else None)
    if bar:
        bar.close()
    chosen = curve[len(config.planes) - args.keep] if args.keep else choose(curve, base, args.budget)

    tried = _fine_tuned(curve, chosen, base, args, data, calibration, not args.quiet) if args.finetune else []
    accepted = [t for t in tried if t["within_budget"]]
    final = accepted[-1] if accepted else {"candidate": chosen, "net": chosen.net, "config": chosen.config,
                                           "log": [], "val_accuracy": chosen.val_accuracy}
    history = {"from_checkpoint": os.path.basename(args.checkpoint), "from_planes": list(config.planes),
               "planes": list(final["config"].planes), "budget": args.budget, "keep": args.keep,
               "calibration_samples": int(len(calibration)),
               "finetune_epochs": args.finetune if accepted else 0,
               "finetune_lr": final["config"].lr if accepted else None}
    model, exported = export(final["net"], data, replace(final["config"], argv=command, name=name), log + final["log"],
                             args.output, name=name,
                             metadata={"val_accuracy": final["val_accuracy"], "bitprune": history})

    nets = [net, *[c.net for c in curve], *[t["net"] for t in tried]]
    bar = _bar(len(nets), "hardware estimates", not args.quiet)
    figures = {}
    for item in nets:
        figures[id(item)] = hardware_figures(item, name)
        if bar:
            bar.update()
    if bar:
        bar.close()

    def row(label, item, val, test=None):
        test = _accuracy(item, data.x_test, data.y_test) if test is None else test
        return {"model": label, "planes": list(item.spec.planes), "val_accuracy": val, "test_accuracy": test,
                **figures[id(item)]}

    summary = [row("checkpoint (as trained)", net, _accuracy(net, data.x_val, data.y_val)),
               row("all planes, re-calibrated", base.net, base.val_accuracy),
               row("selected, re-calibrated", chosen.net, chosen.val_accuracy)]
    summary += [row(f"{len(t['candidate'].planes)} planes + fine-tune", t["net"], t["val_accuracy"])
                for t in tried]
    report = {
        "command": " ".join(command), "output": args.output, "model": model.name,
        "settings": {"checkpoint": args.checkpoint, "data": config.data, "encoding": config.encoding,
                     "budget": args.budget, "keep": args.keep, "calibration_samples": int(len(calibration)),
                     "val_samples": int(len(data.x_val)), "test_samples": int(len(data.x_test)),
                     "finetune_epochs": args.finetune, "finetune_lr": config.lr * FINETUNE_LR_SHARE,
                     "threads": args.threads, "seed": args.seed},
        "base": {"planes": list(base.planes), "val_accuracy": base.val_accuracy},
        "sensitivity": [{"removed": removed, "planes": list(c.planes), "val_accuracy": c.val_accuracy}
                        for removed, c in zip(config.planes, sensitivity)],
        "curve": [{"planes": list(c.planes), "val_accuracy": c.val_accuracy, **figures[id(c.net)]} for c in curve],
        "chosen": {"planes": list(chosen.planes), "val_accuracy": chosen.val_accuracy},
        "finetune": [{"planes": list(t["candidate"].planes), "val_accuracy": t["val_accuracy"],
                      "within_budget": t["within_budget"], "log": t["log"]} for t in tried],
        "exported": {"planes": list(model.input.planes), "val_accuracy": final["val_accuracy"],
                     "fine_tuned": bool(accepted), "test_accuracy": exported["accuracy"],
                     "connections": model.connections, "first_layer": int(model.layers[0].mask.sum()),
                     "proof": exported["proof"]},
        "summary": summary,
    }
    write_report(report, args.report or os.path.dirname(os.path.abspath(args.output)))
    return report


@command("sbnn_hdl.bitprune")
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m sbnn_hdl.bitprune", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint written by python -m sbnn_hdl.train (full or slim)")
    parser.add_argument("--data", help="data set (default and only accepted value: the checkpoint's)")
    parser.add_argument("--budget", type=float, default=0.01,
                        help="largest validation-accuracy drop accepted, as a share (0.01 = 1 point)")
    parser.add_argument("--keep", type=int, help="keep the greedy curve's set of this many planes instead "
                                                 "of the budget's choice")
    parser.add_argument("--finetune", type=int, default=0, metavar="EPOCHS",
                        help=f"epochs of fine-tuning of the chosen net at {FINETUNE_LR_SHARE:g} of the "
                             f"checkpoint's learning rate")
    parser.add_argument("--calibration", type=int, metavar="N",
                        help="training samples for the statistics (default: the whole training split)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration subset and the fine-tune")
    parser.add_argument("--name", help="model name (default: the checkpoint's with _pruned)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-o", "--output", required=True, metavar="PRUNED.sbnn")
    parser.add_argument("--report", metavar="DIR", help="report folder (default: the output's folder)")
    args = parser.parse_args(argv)
    _check_options(args)
    report = run(args, argv)
    for title, header, rows in tables(report):
        print(f"{title}\n{format_table(header, rows)}\n")
    e = report["exported"]
    print(f"{args.output}: {report['model']}, planes {_planes(e['planes'])}, {e['connections']:,} connections, "
          f"test accuracy {100 * e['test_accuracy']:.2f}% (exact folding proven, PyTorch and golden agree "
          f"on every test prediction and score)")


if __name__ == "__main__":
    sys.exit(main())

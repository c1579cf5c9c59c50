"""Bit-plane input pruning (after Li et al., "Build a compact binary neural network through
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

The command line is ``python -m sbnn_hdl.bitprune`` (:mod:`sbnn_hdl.bitprune`).
"""

import json
import os
import sys
from dataclasses import dataclass, field, replace

import numpy as np

import torch
from tqdm import tqdm

from .._files import write_atomic
from ..plots import new_axes, png_bytes
from ..tables import markdown_table
from .loop import build_net, exact_accuracy, export_model, load_net
from .shrink import (DEFAULT_WIDTHS, INITS, SHRINK_LR_SHARE, hidden_widths, parse_sparsities, parse_widths, plot_shrink,
                     search, select, shrink_candidates, shrink_table)
from .tune import FINETUNE_LR_SHARE, BitpruneError, calibrate, finetune, hardware_figures, population_moments

__all__ = ["BitpruneError", "Settings", "Candidate", "remove_planes", "calibrate", "population_moments",
           "analyse", "choose", "finetune", "prune", "tables", "describe_planes"]

@dataclass
class Settings:
    """What to prune and how: the options of ``python -m sbnn_hdl.bitprune``, with their defaults.

    ``budget``: the largest validation-accuracy drop accepted, as a share (0.01 = 1 point);
    ``keep``: take the greedy curve's set of this many planes instead of the budget's choice;
    ``finetune``: epochs of fine-tuning at :data:`FINETUNE_LR_SHARE` of the checkpoint's rate;
    ``calibration``: training samples for the statistics (None: the whole training split);
    ``data``: the data set, which must be the checkpoint's; ``report``: the report folder (None:
    the output's folder); ``quiet``: no progress bars. ``shrink``: then search smaller hidden
    widths (:mod:`.shrink`): ``widths`` (None: :data:`~.shrink.DEFAULT_WIDTHS`), fine-tuned
    ``shrink_epochs`` epochs (None: 3) at ``shrink_lr`` (None: :data:`~.shrink.SHRINK_LR_SHARE`) of
    the checkpoint's learning rate, at each sparsity target of ``shrink_sparsity`` (None: the
    checkpoint's).
    """

    checkpoint: str
    output: str
    budget: float = 0.01
    keep: int = None
    finetune: int = 0
    calibration: int = None
    threads: int = 1
    seed: int = 0
    data: str = None
    name: str = None
    report: str = None
    quiet: bool = False
    shrink: bool = False
    widths: str = None
    shrink_epochs: int = None
    shrink_lr: float = None
    shrink_init: str = None
    shrink_sparsity: str = None

    def check(self):
        """Refuse settings out of range, and an output folder that does not exist, with
        :class:`BitpruneError`."""
        if not 0 <= self.budget < 1:
            raise BitpruneError(f"option --budget: expected a share of accuracy in [0, 1) (0.01 = 1 point), "
                                f"found {self.budget}")
        for key in ("finetune", "calibration", "keep", "threads"):
            value = getattr(self, key)
            if value is not None and value < (0 if key == "finetune" else 1):
                raise BitpruneError(f"option --{key}: expected a {'non-negative' if key == 'finetune' else 'positive'} "
                                    f"number, found {value}")
        for key in ("widths", "shrink_epochs", "shrink_lr", "shrink_init", "shrink_sparsity"):
            if getattr(self, key) is not None and not self.shrink:
                raise BitpruneError(f"option --{key.replace('_', '-')}: expected --shrink as well, found none")
        if self.shrink_epochs is not None and self.shrink_epochs < 0:
            raise BitpruneError(f"option --shrink-epochs: expected a non-negative number, found {self.shrink_epochs}")
        if self.shrink_lr is not None and not 0 < self.shrink_lr <= 1:
            raise BitpruneError(f"option --shrink-lr: expected a share of the checkpoint's learning rate in (0, 1], "
                                f"found {self.shrink_lr}")
        if self.shrink_init is not None and self.shrink_init not in INITS:
            raise BitpruneError(f"option --shrink-init: expected {' or '.join(INITS)}, found {self.shrink_init!r}")
        parse_widths(self.widths or DEFAULT_WIDTHS)
        if self.shrink_sparsity is not None:
            parse_sparsities(self.shrink_sparsity)
        folder = os.path.dirname(os.path.abspath(self.output))
        if not os.path.isdir(folder):
            raise BitpruneError(f"output {self.output!r}: expected an existing folder {folder!r}, found none")


# --- the operations -------------------------------------------------------------------------------

def remove_planes(net, config, data, keep):
    """A new net that reads only the planes ``keep`` of ``config.planes`` (their order kept).

    Every parameter and statistic is copied; for ``bitplanes`` the first layer's weight columns of
    the removed planes are dropped (features are plane-major: block ``q`` holds the ``q``-th listed
    plane). For ``integer`` the weights stay as they are. Returns ``(net, config)``; the
    statistics are those of ``net`` until :func:`calibrate` replaces them.
    """
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
        key = frozenset(planes)
        if key not in self.seen:
            net, config = remove_planes(self.net, self.config, self.data, key)
            calibrate(net, self.calibration)
            accuracy = exact_accuracy(net, self.data.x_val, self.data.y_val)
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


# --- figures of a net -------------------------------------------------------------------------------

# --- the report -------------------------------------------------------------------------------------

def _pct(x):
    return "-" if x is None else f"{100 * x:.2f}%"


def _count(x):
    return "-" if x is None else f"{x:,}"


def describe_planes(planes):
    return ",".join(map(str, planes))


def tables(report):
    """``[(title, header, rows)]``: the report's tables (terminal and Markdown)."""
    base = report["base"]["val_accuracy"]
    sensitivity = [[f"{entry['removed']}", describe_planes(entry["planes"]), _pct(entry["val_accuracy"]),
                    f"{100 * (base - entry['val_accuracy']):+.2f}"] for entry in report["sensitivity"]]
    tuned = {tuple(t["planes"]): t["val_accuracy"] for t in report["finetune"]}
    exported = report["exported"]["planes"]
    curve = [[len(c["planes"]), describe_planes(c["planes"]), _pct(c["val_accuracy"]),
              f"{100 * (base - c['val_accuracy']):+.2f}", _pct(tuned.get(tuple(c["planes"]))),
              _count(c["first_layer"]), _count(c["connections"]), _count(c["lut4"]),
              " ".join(["selected"] * (c["planes"] == report["chosen"]["planes"])
                       + ["exported"] * (c["planes"] == exported))]
             for c in report["curve"]]
    summary = [[row["model"], describe_planes(row["planes"]), ",".join(map(str, row["widths"])),
                _pct(row["val_accuracy"]), _pct(row["test_accuracy"]), _count(row["first_layer"]),
                _count(row["connections"]), _count(row["lut4"])]
               for row in report["summary"]]
    shrinking = [shrink_table(report, _pct, _count, describe_planes)] if report.get("shrink") else []
    return [
        ("Sensitivity: each plane removed alone (re-calibrated)",
         ["removed plane", "planes kept", "val accuracy", "drop (points)"], sensitivity),
        ("Greedy removal", ["planes", "kept", "val accuracy", "drop (points)", "after fine-tune",
                            "first-layer conn", "all conn", "LUT4 est", ""], curve),
        ("Before and after", ["model", "planes", "widths", "val accuracy", "test accuracy", "first-layer conn",
                              "all conn", "LUT4 est"], summary),
        *shrinking,
    ]


def format_markdown(report):
    """``bitprune.md``: the settings, the tables and what they mean."""
    s = report["settings"]
    out = [f"# Bit-plane pruning of `{os.path.basename(s['checkpoint'])}`", "",
           f"Command: `{report['command']}`", "",
           f"Planes {describe_planes(report['base']['planes'])} ({s['encoding']} encoding); budget {100 * s['budget']:g} "
           f"points of validation accuracy below the re-calibrated unpruned net "
           f"({_pct(report['base']['val_accuracy'])}); {s['calibration_samples']:,} calibration samples; "
           f"validation {s['val_samples']:,}, test {s['test_samples']:,} samples. Accuracies are of the exact "
           f"integer form (what the hardware computes); LUT4 is the generator's estimate, not synthesis."]
    for title, header, rows in tables(report):
        out += ["", f"## {title}", "", markdown_table(header, rows)]
    out += ["", "![validation accuracy against planes kept](bitprune.png)", ""]
    if report.get("shrink"):
        out += ["![accuracy against the LUT4 estimate](shrink.png)", ""]
    return "\n".join(out)


def plot(report):
    """``bitprune.png`` as bytes: validation accuracy against planes kept, with the budget line."""
    curve = report["curve"]
    base = report["base"]["val_accuracy"]
    figure, axes = new_axes()
    x = [len(c["planes"]) for c in curve]
    axes.plot(x, [100 * c["val_accuracy"] for c in curve], "o-", color="tab:blue", label="greedy removal (re-calibrated)")
    for count, c in zip(x, curve):
        axes.annotate(describe_planes(c["planes"]), (count, 100 * c["val_accuracy"]), fontsize=7, xytext=(4, 4),
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
    return png_bytes(figure, axes)


def write_report(report, folder):
    """``bitprune.json``, ``bitprune.md``, ``bitprune.png`` and (with a shrink search) ``shrink.png`` in
    ``folder`` (each atomically)."""
    os.makedirs(folder, exist_ok=True)
    write_atomic(os.path.join(folder, "bitprune.json"), (json.dumps(report, indent=1) + "\n").encode())
    write_atomic(os.path.join(folder, "bitprune.md"), format_markdown(report).encode())
    write_atomic(os.path.join(folder, "bitprune.png"), plot(report))
    if report.get("shrink"):
        write_atomic(os.path.join(folder, "shrink.png"), plot_shrink(report))


# --- the whole run ------------------------------------------------------------------------------------

def _calibration_samples(data, config, count, seed):
    """The training samples the statistics are taken over: the run's training split (its first
    ``train_limit`` samples when it had one), or ``count`` of them drawn without replacement."""
    x = data.x_train[:config.train_limit] if config.train_limit else data.x_train
    if count is None or count >= len(x):
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), count, replace=False))]


def _bar(total, desc, enabled):
    if not enabled:
        return None
    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True, leave=False)


def _fine_tuned(curve, chosen, base, settings, data, calibration, progress):
    """With ``--finetune``: fine-tune ``chosen``, then each smaller set of the curve in turn, and
    stop at the first whose fine-tuned validation accuracy is more than the budget below ``base``
    (with ``--keep``: ``chosen`` alone, accepted whatever its accuracy). Returns the list of
    ``{"candidate", "net", "config", "log", "val_accuracy", "within_budget"}`` tried, in order."""
    tried = []
    for candidate in curve[curve.index(chosen):]:
        net, config, log = finetune(candidate.net, candidate.config, data, settings.finetune, threads=settings.threads,
                                    seed=settings.seed, calibration=calibration, progress=progress)
        accuracy = exact_accuracy(net, data.x_val, data.y_val)
        fits = settings.keep is not None or base.val_accuracy - accuracy <= settings.budget + 1e-12
        tried.append({"candidate": candidate, "net": net, "config": config, "log": log,
                      "val_accuracy": accuracy, "within_budget": fits})
        if settings.keep is not None or not fits:
            break
    return tried


def prune(settings, command):
    """Prune the checkpoint's input bit planes as ``settings`` (:class:`Settings`) say, export the
    result exactly to ``settings.output`` and write the report (tables, JSON, plot) to
    ``settings.report``; ``command`` (a list of words) is recorded as the one that asked for it.
    Returns the report."""
    net, config, data, log = load_net(settings.checkpoint, threads=settings.threads)
    if settings.data is not None and settings.data != config.data:
        raise BitpruneError(f"option --data: expected the checkpoint's data set {config.data!r}, found {settings.data!r}")
    if settings.keep is not None and settings.keep > len(config.planes):
        raise BitpruneError(f"option --keep: expected at most the checkpoint's {len(config.planes)} planes, "
                            f"found {settings.keep}")
    calibration = _calibration_samples(data, config, settings.calibration, settings.seed)
    name = settings.name or f"{config.name}_pruned"
    shrink_epochs = 3 if settings.shrink_epochs is None else settings.shrink_epochs
    shrink_lr = SHRINK_LR_SHARE if settings.shrink_lr is None else settings.shrink_lr
    sparsities = parse_sparsities(settings.shrink_sparsity) if settings.shrink_sparsity else None
    candidates = shrink_candidates(hidden_widths(net), parse_widths(settings.widths or DEFAULT_WIDTHS), sparsities,
                                   config.sparsity) if settings.shrink else []

    bar = _bar(analysis_steps(len(config.planes)), "sensitivity and greedy removal", not settings.quiet)
    base, sensitivity, curve = analyse(net, config, data, calibration, progress=bar.update if bar else None)
    if bar:
        bar.close()
    chosen = curve[len(config.planes) - settings.keep] if settings.keep else choose(curve, base, settings.budget)

    tried = _fine_tuned(curve, chosen, base, settings, data, calibration, not settings.quiet) if settings.finetune else []
    accepted = [t for t in tried if t["within_budget"]]
    final = accepted[-1] if accepted else {"candidate": chosen, "net": chosen.net, "config": chosen.config,
                                           "log": [], "val_accuracy": chosen.val_accuracy}
    history = {"from_checkpoint": os.path.basename(settings.checkpoint), "from_planes": list(config.planes),
               "planes": list(final["config"].planes), "budget": settings.budget, "keep": settings.keep,
               "calibration_samples": int(len(calibration)),
               "finetune_epochs": settings.finetune if accepted else 0,
               "finetune_lr": final["config"].lr if accepted else None}

    shrunk, shrink_tried = None, []
    if settings.shrink:
        announce = None if settings.quiet else (
            lambda w, s: print(f"shrinking to {','.join(map(str, w))}"
                               + ("" if s == config.sparsity else f" at sparsity {s:g}"), file=sys.stderr, flush=True))
        start_config = replace(final["config"], lr=config.lr)  # the rates are shares of the checkpoint's
        shrink_tried = search(final["net"], start_config, data, calibration, candidates, epochs=shrink_epochs,
                              reference=base.val_accuracy, budget=settings.budget, threads=settings.threads,
                              seed=settings.seed, lr_share=shrink_lr, init=settings.shrink_init or "kept",
                              progress=not settings.quiet, announce=announce)
        shrunk = select(shrink_tried)
        history["shrink"] = {"from_widths": hidden_widths(final["net"]),
                             "widths": list(shrunk.widths) if shrunk else None,
                             "sparsity": shrunk.sparsity if shrunk else None,
                             "candidates": [{"widths": list(w), "sparsity": s} for w, s in candidates],
                             "epochs": shrink_epochs,
                             "init": settings.shrink_init or "kept",
                             "lr": config.lr * shrink_lr}
    out = final if shrunk is None else {"net": shrunk.net, "config": shrunk.config,
                                         "log": final["log"] + shrunk.log, "val_accuracy": shrunk.val_accuracy}
    model, exported = export_model(out["net"], data, replace(out["config"], argv=command, name=name), log + out["log"],
                                   settings.output, name=name,
                                   metadata={"val_accuracy": out["val_accuracy"], "bitprune": history})

    nets = [net, *[c.net for c in curve], *[t["net"] for t in tried]]
    bar = _bar(len(nets), "hardware estimates", not settings.quiet)
    figures = {id(c.net): c.figures for c in shrink_tried}
    for item in nets:
        figures[id(item)] = hardware_figures(item, name)
        if bar:
            bar.update()
    if bar:
        bar.close()

    def row(label, item, val, test=None, sparsity=config.sparsity):
        test = exact_accuracy(item, data.x_test, data.y_test) if test is None else test
        return {"model": label, "planes": list(item.spec.planes), "widths": hidden_widths(item), "sparsity": sparsity,
                "val_accuracy": val, "test_accuracy": test, **figures[id(item)]}

    summary = [row("checkpoint (as trained)", net, exact_accuracy(net, data.x_val, data.y_val)),
               row("all planes, re-calibrated", base.net, base.val_accuracy),
               row("selected, re-calibrated", chosen.net, chosen.val_accuracy)]
    summary += [row(f"{len(t['candidate'].planes)} planes + fine-tune", t["net"], t["val_accuracy"])
                for t in tried]
    if shrunk is not None:
        summary.append(row("shrunk + fine-tune", shrunk.net, shrunk.val_accuracy, shrunk.test_accuracy,
                           shrunk.sparsity))
    report = {
        "command": " ".join(command), "output": settings.output, "model": model.name,
        "settings": {"checkpoint": settings.checkpoint, "data": config.data, "encoding": config.encoding,
                     "budget": settings.budget, "keep": settings.keep, "calibration_samples": int(len(calibration)),
                     "val_samples": int(len(data.x_val)), "test_samples": int(len(data.x_test)),
                     "finetune_epochs": settings.finetune, "finetune_lr": config.lr * FINETUNE_LR_SHARE,
                     "threads": settings.threads, "seed": settings.seed},
        "base": {"planes": list(base.planes), "val_accuracy": base.val_accuracy},
        "sensitivity": [{"removed": removed, "planes": list(c.planes), "val_accuracy": c.val_accuracy}
                        for removed, c in zip(config.planes, sensitivity)],
        "curve": [{"planes": list(c.planes), "val_accuracy": c.val_accuracy, **figures[id(c.net)]} for c in curve],
        "chosen": {"planes": list(chosen.planes), "val_accuracy": chosen.val_accuracy},
        "finetune": [{"planes": list(t["candidate"].planes), "val_accuracy": t["val_accuracy"],
                      "within_budget": t["within_budget"], "log": t["log"]} for t in tried],
        "exported": {"planes": list(model.input.planes), "widths": hidden_widths(out["net"]),
                     "sparsity_target": out["config"].sparsity,
                     "val_accuracy": out["val_accuracy"], "shrunk": shrunk is not None,
                     "fine_tuned": bool(accepted), "test_accuracy": exported["accuracy"],
                     "connections": model.connections, "first_layer": int(model.layers[0].mask.sum()),
                     "lut4": figures[id(out["net"])]["lut4"], "proof": exported["proof"]},
        "summary": summary,
    }
    if settings.shrink:
        report["settings"].update(shrink_epochs=shrink_epochs, shrink_lr=config.lr * shrink_lr,
                                  shrink_init=settings.shrink_init or "kept",
                                  widths=[list(w) for w, _ in candidates],
                                  shrink_sparsity=sparsities)
        report["shrink"] = {
            "reference_val_accuracy": base.val_accuracy, "unpruned": summary[0],
            "start": row("planes pruned", final["net"], final["val_accuracy"]),
            "candidates": [{"planes": list(c.net.spec.planes), "widths": list(c.widths), "sparsity": c.sparsity,
                            "val_accuracy": c.val_accuracy,
                            "test_accuracy": c.test_accuracy, "within_budget": c.within_budget, **c.figures,
                            "kept": [list(map(int, k)) for k in c.kept], "proof": c.proof, "log": c.log}
                           for c in shrink_tried],
            "selected": list(shrunk.widths) if shrunk else None,
            "selected_sparsity": shrunk.sparsity if shrunk else None}
    write_report(report, settings.report or os.path.dirname(os.path.abspath(settings.output)))
    return report

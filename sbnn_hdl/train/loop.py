"""The training loop: Adam with a cosine schedule, the sparsity regulariser (Eq. 16 to 18, driven by
:mod:`.controller`: a ramp with feedback by default, or the paper's fixed gamma), optional
data augmentation (random shifts and horizontal flips) and mixup, a JSON log per epoch,
checkpoints every epoch with exact resume, and the export.

Determinism: the weights are initialised from ``torch.manual_seed(seed)``; epoch ``e`` shuffles
(and draws augmentation and mixup) from ``numpy.random.default_rng([seed, e])``; the learning
rate, IR-Net's ``t`` and the sparsity controller's schedule are functions of the step number, and
the controller's own state (the starting sparsities, its pushes and gradient averages) is saved
in every checkpoint. A run resumed from the checkpoint of epoch ``e`` thus continues exactly as
the uninterrupted run, and the same seed, data and thread count give the same model
(``torch.use_deterministic_algorithms``).
"""

import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from .. import __version__, datasets, modelfile
from .._files import write_atomic
from .fold import check_agreement, exact_scores, fold, to_model
from ..stats import binary_entropy
from .nets import POOLS, SbnnNet, encode_batch, input_spec, parse_arch
from .controller import CONTROLLERS, RAMP_SHAPES, BudgetError, SparsityController, budgets, kernel_shares
from .quant import DOMAINS, STES, ir_net_t
from .common import TrainError, _checkpoint_bytes, _load_checkpoint, _setup, _unusable, augment, cosine_rate
from .teacher import distillation_loss, load_teacher, teacher_input

__all__ = ["TrainError", "Config", "default_gamma", "parse_layer_sparsity", "augment", "build_net", "budget_groups",
           "train", "load_net", "export", "export_checkpoint"]


def default_gamma(sparsity):
    """The Eq. 18 ``gamma`` of the fixed controller when none is given (see docs/training.md for
    how it was chosen)."""
    if sparsity is None:
        return 0.0
    return 0.2 if sparsity <= 0.965 else 0.4 if sparsity <= 0.98 else 0.5


def parse_layer_sparsity(items):
    """``["conv1=0.5", "out=0.8"]`` (``--layer-sparsity``, repeatable) -> ``{"conv1": 0.5, "out": 0.8}``;
    None for none. Raises :class:`TrainError` for a malformed item or a layer named twice."""
    if not items:
        return None
    targets = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            target = float(value)
        except ValueError:
            target = None
        if not name or target is None:
            raise TrainError(f"option --layer-sparsity: expected NAME=VALUE such as conv1=0.5, found {item!r}")
        if name in targets:
            raise TrainError(f"option --layer-sparsity: expected each layer once, found {name!r} twice")
        targets[name] = target
    return targets


#: Settings that a checkpoint written before they existed implies: those runs had the fixed
#: controller with one global budget (the dataclass defaults would make them ramp runs).
_LEGACY = {"controller": "fixed", "edge_budgets": False}


@dataclass
class Config:
    """Every setting of a run; stored in checkpoints and in the model's metadata."""

    data: str = "fashion-mnist"
    arch: str = "mlp:256,256"
    encoding: str = "bitplanes"
    planes: list = None          # default: the top 4 planes (all for 4-bit data)
    domain: str = "learned"
    ste: str = "ste"
    pool: str = "values"         # max-pool the normalised "values" before the sign, or the "bits" after it
    sparsity: float = None       # target share of 0-valued weights; None: a dense BNN
    gamma: float = None          # fixed controller: Eq. 18's gamma, None: default_gamma(sparsity)
    controller: str = "ramp"     # "ramp" (schedule + feedback) or "fixed" (the paper's fixed gamma)
    ramp: float = 0.5            # the share of the steps over which the ramp controller's targets move
    ramp_shape: str = "cosine"   # "cosine" or "linear"
    layer_sparsity: dict = None  # {layer name: target}: layers with budgets of their own
    edge_budgets: bool = None    # the default rule for the first and last layers; None: on with the ramp
    epochs: int = 15
    batch_size: int = 256
    lr: float = 2e-3
    mixup: float = 0.0           # Beta(alpha, alpha) mixup; 0 disables it
    shift: int = 0               # random translation of each training image by up to this many pixels
    flip: bool = False           # random horizontal flips of the training images
    seed: int = 0
    threads: int = 2
    pad_value: int = 0
    teacher: str = None          # a real-valued teacher's file (sbnn_hdl.train.teacher): distillation
    distill: float = 0.5         # the soft-target term's share of the task loss, with a teacher
    temperature: float = 4.0     # the softmax temperature of distillation
    name: str = None
    train_limit: int = None      # use only the first N training samples (tests)
    argv: list = field(default_factory=list)

    @classmethod
    def from_saved(cls, settings):
        """The Config of a checkpoint's ``settings`` (a dict); one written before the controller
        existed gets the settings it was trained with (:data:`_LEGACY`), not today's defaults.
        Raises TypeError for unknown keys."""
        if "controller" not in settings:
            settings = {**_LEGACY, **settings}
        if "pool" not in settings:  # written before the option: those runs pooled the bits
            settings = {**settings, "pool": "bits"}
        return cls(**settings)

    def check(self, bits):
        def bad(key, expected, found):
            return TrainError(f"option --{key}: expected {expected}, found {found}")
        try:
            parse_arch(self.arch)
        except ValueError as error:
            raise bad("arch", *str(error).removeprefix("expected ").split(", found ", 1)) from None
        if self.domain not in DOMAINS:
            raise bad("domain", " or ".join(DOMAINS), repr(self.domain))
        if self.ste not in STES:
            raise bad("ste", " or ".join(STES), repr(self.ste))
        if self.pool not in POOLS:
            raise bad("pool", " or ".join(POOLS), repr(self.pool))
        if self.encoding not in ("integer", "bitplanes"):
            raise bad("encoding", "integer or bitplanes", repr(self.encoding))
        if self.sparsity is not None and not 0 < self.sparsity < 1:
            raise bad("sparsity", "a share strictly between 0 and 1", self.sparsity)
        if self.gamma is not None and not 0 <= self.gamma < 1:
            raise bad("gamma", "a value in [0, 1)", self.gamma)
        if self.controller not in CONTROLLERS:
            raise bad("controller", " or ".join(CONTROLLERS), repr(self.controller))
        if self.gamma is not None and self.controller != "fixed":
            raise bad("gamma", "--controller fixed as well (the ramp controller sets its push by feedback)",
                      f"--controller {self.controller}")
        if not 0 <= self.ramp <= 1:
            raise bad("ramp", "a share of the steps in [0, 1]", self.ramp)
        if self.ramp_shape not in RAMP_SHAPES:
            raise bad("ramp-shape", " or ".join(RAMP_SHAPES), repr(self.ramp_shape))
        if self.layer_sparsity:
            if self.sparsity is None:
                raise bad("layer-sparsity", "--sparsity as well (the share of all weights)", "none")
            for name, target in self.layer_sparsity.items():
                if not 0 < target < 1:
                    raise bad("layer-sparsity", f"a share strictly between 0 and 1 for {name}", target)
        if self.planes is None:
            self.planes = list(range(bits - 1, max(bits - 5, -1), -1))
        if not self.planes or len(set(self.planes)) != len(self.planes) or \
                any(not 0 <= k < bits for k in self.planes):
            raise bad("planes", f"distinct plane numbers in [0, {bits})", self.planes)
        if self.shift < 0:
            raise bad("shift", "a number of pixels, 0 or more", self.shift)
        if not 0 <= self.distill <= 1:
            raise bad("distill", "a share in [0, 1]", self.distill)
        if not self.temperature > 0:
            raise bad("temperature", "a positive temperature", self.temperature)
        for key in ("epochs", "batch_size", "threads"):
            if getattr(self, key) < 1:
                raise bad(key.replace("_", "-"), "a positive number", getattr(self, key))
        if self.gamma is None and self.controller == "fixed":
            self.gamma = default_gamma(self.sparsity)
        if self.edge_budgets is None:
            self.edge_budgets = self.controller == "ramp"
        if self.name is None:
            self.name = "".join(c if c.isalnum() else "_" for c in f"{self.data}_{self.arch.split(':')[0]}")


def build_net(config, data):
    kind, _ = parse_arch(config.arch)
    spec = input_spec(kind, data.image_shape, data.bits, config.encoding, config.planes)
    return SbnnNet(spec, config.arch, len(data.classes), config.domain, config.ste, config.pad_value,
                   config.pool)


def budget_groups(config, net):
    """:func:`sbnn_hdl.train.controller.budgets` of ``net``'s layers for ``config``, with layer indices
    instead of names: ``[(group, [layer indices], target)]``; None for a dense BNN. Raises
    :class:`TrainError` (naming ``--layer-sparsity``) for budgets that cannot be met."""
    if config.sparsity is None:
        return None
    names = [layer.name for layer in net.binary_layers]
    try:
        groups = budgets([(layer.name, layer.weight.numel()) for layer in net.binary_layers], config.sparsity,
                         config.layer_sparsity, config.edge_budgets)
    except BudgetError as error:
        raise TrainError(f"option --layer-sparsity: {error}") from None
    return [(name, [names.index(layer) for layer in layers], target) for name, layers, target in groups]


def layer_figures(net):
    """Per binary layer of ``net``: ``{"sparsity": share of 0-valued weights}`` and, for a conv layer,
    the kernel shares K0, K1, K>=2 (:func:`sbnn_hdl.train.controller.kernel_shares`)."""
    figures = {}
    with torch.no_grad():
        for layer in net.binary_layers:
            mask = layer.weight >= 0
            figures[layer.name] = {"sparsity": 1 - float(mask.float().mean()),
                                   **(kernel_shares(mask) if layer.kind == "conv" else {})}
    return figures


def _postfix(entry):
    """The progress bar's summary of a log entry: accuracy, sparsity (reached/scheduled) and per
    layer the sparsity in percent, with K0/K1/K>=2 in percent for conv layers."""
    text = f"val {entry['val_accuracy']:.4f} sparsity {entry['sparsity']:.4f}"
    if entry.get("target") is not None:
        text += f"/{entry['target']:.4f} gamma {entry['gamma']:.2f}"
    for name, figures in entry["layers"].items():
        text += f" {name} {100 * figures['sparsity']:.0f}%"
        if "k0" in figures:
            text += " K{:.0f}/{:.0f}/{:.0f}".format(*(100 * figures[k] for k in ("k0", "k1", "k2plus")))
    return text


def exact_accuracy(net, x, y):
    """The share of ``x`` that ``net``, folded exactly as the export folds it, classifies as ``y``."""
    folded = fold(net)
    return float((exact_scores(net, folded, x).argmax(axis=1) == y).mean())


def train(config, *, checkpoint=None, resume=False, log_path=None, progress=True, data=None, stop_after=None,
          init=None):
    """Train (or resume) a model as ``config`` says. Returns ``(net, data, log)``.

    ``stop_after``: return after that many epochs (of ``config.epochs``), as an interrupted run would.
    ``init``: a state dict (of a net that ``config`` builds) to start from instead of fresh weights,
    with a fresh optimiser and schedule (a fine-tune, as :mod:`sbnn_hdl.bitprune` runs; the ramp
    controller's targets start from the sparsity of ``init``).
    Writes ``checkpoint`` (when given) after every epoch and ``log_path`` (JSON, a list with one
    object per epoch) likewise, both atomically.
    """
    data = data or datasets.load(config.data)
    config.check(data.bits)
    _setup(config)
    state = None
    if resume:
        state = _load_checkpoint(checkpoint)
        if not isinstance(state, dict) or "optimizer" not in state:
            raise TrainError(f"checkpoint {checkpoint!r}: expected a full checkpoint (with the optimiser state) "
                             f"to resume from, found a slim one without it (it can be exported or pruned, "
                             f"not resumed)")
        try:
            saved = Config.from_saved(state["config"])
        except (KeyError, TypeError) as error:
            raise _unusable(checkpoint, error) from None
        try:
            saved.check(data.bits)  # the defaults filled in as for this run
        except TrainError as error:
            raise _unusable(checkpoint, error) from None
        differ = [k for k, v in asdict(config).items() if k not in ("epochs", "argv") and getattr(saved, k) != v]
        if differ:
            raise TrainError(f"checkpoint {checkpoint!r}: expected the settings of this run, found a run "
                             f"with other settings ({saved.arch}, {saved.domain}, seed {saved.seed}; differing: "
                             f"{'; '.join(f'{k} {getattr(saved, k)!r}, here {getattr(config, k)!r}' for k in differ)})")
    teacher = load_teacher(config.teacher, data)[0] if config.teacher else None
    torch.manual_seed(config.seed)
    net = build_net(config, data)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    log, start = [], 0
    if init is not None:
        net.load_state_dict(init)
    if state is not None:
        try:
            net.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            log, start = list(state["log"]), int(state["epoch"]) + 1
        except (KeyError, TypeError, RuntimeError, ValueError, AttributeError) as error:
            raise _unusable(checkpoint, error) from None
    x, y = data.x_train, data.y_train
    if config.train_limit:
        x, y = x[:config.train_limit], y[:config.train_limit]
    batches = math.ceil(len(x) / config.batch_size)
    total_steps = config.epochs * batches
    groups, controller = budget_groups(config, net), None
    if groups is not None:
        controller = SparsityController(groups, [layer.weight.numel() for layer in net.binary_layers],
                                        mode=config.controller, gamma=config.gamma, ramp=config.ramp,
                                        shape=config.ramp_shape, total_steps=total_steps)
        if state is None:
            controller.start_from(net.density())
        else:
            try:
                controller.load_state_dict(state["controller"])
            except (KeyError, TypeError, AttributeError) as error:
                # A checkpoint from before the controller: the fixed controller keeps no state.
                if config.controller != "fixed" or "controller" in state:
                    raise _unusable(checkpoint, error) from None
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total_steps, initial=start * batches, unit="step", file=sys.stderr, dynamic_ncols=True,
                   desc=f"{config.domain} {config.sparsity or 'dense'}")
    for epoch in range(start, config.epochs if stop_after is None else min(stop_after, config.epochs)):
        began = time.perf_counter()
        rng = np.random.default_rng([config.seed, epoch])
        order = rng.permutation(len(x))
        net.train()
        sums = {"loss": 0.0, "task_loss": 0.0, "lambda": 0.0}
        group_lambda, penalty_share = {name: 0.0 for name, _, _ in groups or ()}, 0.0
        for i in range(batches):
            step = epoch * batches + i
            for group in optimizer.param_groups:
                group["lr"] = cosine_rate(config.lr, step, total_steps)
            net.t = ir_net_t(step / max(total_steps - 1, 1))
            idx = order[i * config.batch_size:(i + 1) * config.batch_size]
            images = augment(x[idx], rng, shift=config.shift, flip=config.flip)
            v, target = encode_batch(net.spec, images, net.conv_first), torch.from_numpy(y[idx])
            mix = lambda t: t  # noqa: E731
            if config.mixup > 0:
                lam = float(rng.beta(config.mixup, config.mixup))
                perm = torch.from_numpy(rng.permutation(len(idx)))
                mix = lambda t: lam * t + (1 - lam) * t[perm]  # noqa: E731
                scores = net(mix(v))
                task = lam * F.cross_entropy(scores, target) + (1 - lam) * F.cross_entropy(scores, target[perm])
            else:
                scores = net(v)
                task = F.cross_entropy(scores, target)
            if teacher is not None:
                with torch.no_grad():
                    soft = teacher(mix(teacher_input(teacher, images, data.bits)))
                task = (1 - config.distill) * task + config.distill * distillation_loss(scores, soft,
                                                                                        config.temperature)
            loss = task
            lam_reg = 0.0
            if controller is not None:
                term, used = controller.penalty(task, net.binary_weights(), step)
                loss = task + term
                if torch.is_tensor(term):  # the penalty's share of the loss: Eq. 18's gamma, as it came out
                    penalty_share += float(term.detach()) / float(loss.detach())
                lam_reg = sum(used.values())
                for name, lam in used.items():
                    group_lambda[name] += lam
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if controller is not None:
                controller.observe([layer.weight.grad for layer in net.binary_layers])
            optimizer.step()
            net.clamp_()
            sums["loss"] += float(loss.detach())
            sums["task_loss"] += float(task.detach())
            sums["lambda"] += lam_reg
            if bar is not None:
                bar.update()
        net.eval()
        density = net.density()
        ones, weights = sum(o for o, _ in density), sum(w for _, w in density)
        entry = {"epoch": epoch + 1, **{k: v / batches for k, v in sums.items()},
                 "lr_end": optimizer.param_groups[0]["lr"], "irnet_t": net.t,
                 "sparsity": 1 - ones / weights, "entropy_bits_per_weight": binary_entropy(ones / weights),
                 "layer_density": {layer.name: o / w for layer, (o, w) in zip(net.binary_layers, density)},
                 "layers": layer_figures(net)}
        if controller is not None:
            last = (epoch + 1) * batches - 1  # the epoch's last step
            entry.update(target=controller.overall(last), gamma=penalty_share / batches,
                         groups={name: {"layers": [net.binary_layers[i].name for i in layers], "target": target,
                                        "scheduled": controller.scheduled(name, target, last),
                                        "sparsity": 1 - sum(density[i][0] for i in layers) /
                                        sum(density[i][1] for i in layers),
                                        "lambda": group_lambda[name] / batches,
                                        **({"push": controller.push[name]} if config.controller == "ramp" else {})}
                                 for name, layers, target in groups})
        entry.update(val_accuracy=exact_accuracy(net, data.x_val, data.y_val),
                     seconds=round(time.perf_counter() - began, 2))
        log.append(entry)
        if bar is not None:
            bar.set_postfix_str(_postfix(entry))
        if checkpoint:
            write_atomic(checkpoint, _checkpoint_bytes({"config": asdict(config), "epoch": epoch,
                                                         "model": net.state_dict(),
                                                         "optimizer": optimizer.state_dict(), "log": log,
                                                         "controller": controller.state_dict() if controller
                                                         else None}))
        if log_path:
            write_atomic(log_path, (json.dumps(log, indent=1) + "\n").encode())
    if bar is not None:
        bar.close()
    net.eval()
    return net, data, log


def versions():
    return {"sbnn_hdl": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def export_model(net, data, config, log, output, *, name=None, metadata=None):
    """Fold, verify neuron by neuron, check the PyTorch model against the golden model on the whole
    test set, and save ``output``. Returns ``(model, report)``; raises ExportError on any mismatch.

    ``metadata``: entries added to (or replacing) the model's metadata (a pruned model's history)."""
    config.check(data.bits)  # fills in the defaults (name, planes, gamma) when train() did not see this object
    folded = fold(net, search=True)
    proof = {"layers": {f.name: f.proof for f in folded}}
    density = net.density()
    ones, weights = sum(o for o, _ in density), sum(w for _, w in density)
    with torch.no_grad():  # the real-valued model in float32 (batch norm as trained), for the record
        float_predictions = np.concatenate([
            net(encode_batch(net.spec, data.x_test[i:i + 2048], net.conv_first)).argmax(1).numpy()
            for i in range(0, len(data.x_test), 2048)])
    metadata = {
        "dataset": data.name, "dataset_source": data.source, "command": " ".join(config.argv) or None,
        "seed": config.seed, "arch": config.arch, "domain": config.domain, "ste": config.ste,
        **({"pool": config.pool} if "p" in config.arch.split(":")[1].split(",") else {}),
        "target_sparsity": config.sparsity, "gamma": config.gamma,
        **({"controller": config.controller,
            "budgets": {name: {"layers": [net.binary_layers[i].name for i in layers], "target": round(target, 6)}
                        for name, layers, target in budget_groups(config, net)}}
           if config.sparsity is not None else {}),
        **({"distillation": _distillation(config, data)} if config.teacher else {}),
        "epochs": len(log),
        "sparsity": round(1 - ones / weights, 6),
        "entropy_bits_per_weight": round(binary_entropy(ones / weights), 6),
        "val_accuracy": log[-1]["val_accuracy"] if log else None, "versions": versions(),
        **(metadata or {}),
    }
    classes = list(data.classes)
    draft = to_model(net, folded, name or config.name, classes, metadata)
    predictions, accuracy = check_agreement(net, folded, draft, data.x_test, data.y_test)
    metadata.update(test_accuracy=round(accuracy, 6), test_samples=int(len(data.x_test)),
                    float32_eval_disagreements=int((float_predictions != predictions).sum()))
    model = to_model(net, folded, name or config.name, classes, metadata)
    modelfile.save(model, output)
    return model, {"accuracy": accuracy, "proof": proof, **metadata}


def _distillation(config, data):
    """The metadata of a distilled run: the teacher (its file's name and SHA-256, its test accuracy,
    when the file is at hand), the weight and the temperature."""
    entry = {"teacher": config.teacher, "weight": config.distill, "temperature": config.temperature}
    if os.path.exists(config.teacher):
        entry.update(load_teacher(config.teacher, data)[1])
    return entry


def load_net(path, *, threads=None, data=None):
    """The trained net of checkpoint ``path`` (full or slim: the optimiser state is not needed), in
    evaluation mode. Returns ``(net, config, data, log)``; ``threads`` overrides the run's thread count,
    ``data`` the data set it names (already loaded). Raises :class:`TrainError` for a file that is not
    such a checkpoint."""
    state = _load_checkpoint(path)
    try:
        config = Config.from_saved(state["config"])
        if threads is not None:
            config.threads = threads
        log = list(state["log"])
        data = data or datasets.load(config.data)
        _setup(config)
        net = build_net(config, data)
        net.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError, ValueError, AttributeError) as error:
        raise _unusable(path, error) from None
    net.eval()
    return net, config, data, log


def export_checkpoint(path, output, *, name=None):
    """Rebuild the net of checkpoint ``path`` and export it to ``output`` as :func:`export_model`
    does; returns ``(model, report)``."""
    net, config, data, log = load_net(path)
    return export_model(net, data, config, log, output, name=name)


def summary(model, report, output):
    """Two lines on an exported model: its size, sparsity and test accuracy, and its folding."""
    layers = ", ".join(f"{n}: {'exact ratio' if r['exact_ratio'] else 'ratio'} {r['ratio'][1]}/{r['ratio'][0]}"
                       for n, r in report["proof"]["layers"].items())
    return (f"{output}: {model.name}, {model.connections:,} connections, sparsity {100 * report['sparsity']:.2f}%, "
            f"test accuracy {100 * report['accuracy']:.2f}% ({report['test_samples']} samples; PyTorch and golden "
            f"agree on every prediction and score)\nexact folding checked per neuron ({layers})")

"""A full-precision teacher for knowledge distillation (``sbnn_hdl.train --teacher``).

A binary network trained on the labels alone learns from one-hot targets; trained to follow a
real-valued network's softened scores as well (Hinton et al., "Distilling the knowledge in a
neural network", 2015) it learns which classes resemble which, which binary networks are known
to profit from (Real-to-Binary, ReActNet). The teacher is never exported or built: it only shapes
the student's loss during training.

:class:`TeacherNet` follows the student's ``--arch`` string with real weights: 3x3 convolutions
(padding 1) with batch norm and ReLU, 2x2 max-pools, dense layers with batch norm and ReLU, and a
linear output layer. It reads the whole image (every bit of every pixel, scaled to [0, 1]), not
the student's bit planes: the teacher should know as much as it can.

``python -m sbnn_hdl.train.teacher --data fashion-mnist --arch cnn:64,p,128,p,128,p,fc128 -o t.pt``
trains one (Adam, cosine schedule, the student's augmentation options), writes its log after every
epoch (``t.log.json``) and then a file of plain tensors and data (``torch.load(weights_only=True)``
reads it), atomically.
"""

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .. import datasets
from .._cli import command
from .._files import write_atomic
from .common import TrainError, _checkpoint_bytes, _load_checkpoint, _setup, augment, cosine_rate
from .nets import parse_arch

__all__ = ["TeacherNet", "TeacherConfig", "teacher_input", "train_teacher", "save_teacher", "load_teacher",
           "distillation_loss", "main"]

#: What a teacher file says it is (a checkpoint of the student is refused as a teacher, and back).
KIND = "sbnn-hdl teacher"


class TeacherNet(nn.Module):
    """The real-valued network of ``arch`` (``mlp:...`` or ``cnn:...``) for images of
    ``image_shape`` (``(H, W, C)``) and ``classes`` classes; ``forward`` takes
    :func:`teacher_input` and returns the class scores (logits)."""

    def __init__(self, arch, image_shape, classes):
        super().__init__()
        kind, plan = parse_arch(arch)
        self.arch, self.image_shape, self.classes = arch, tuple(image_shape), classes
        self.conv_first = kind == "cnn"
        layers = []
        h, w, c = self.image_shape
        width = None if self.conv_first else h * w * c
        for what, size in plan:
            if what == "conv":
                layers += [nn.Conv2d(c, size, 3, padding=1, bias=False), nn.BatchNorm2d(size), nn.ReLU()]
                c = size
            elif what == "pool":
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            else:
                if width is None:
                    layers.append(nn.Flatten())
                    width = h * w * c
                layers += [nn.Linear(width, size, bias=False), nn.BatchNorm1d(size), nn.ReLU()]
                width = size
        if width is None:
            layers.append(nn.Flatten())
            width = h * w * c
        layers.append(nn.Linear(width, classes))
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)


def teacher_input(net, images, bits):
    """Images (``[N, H, W, C]`` integers of ``bits`` bits) as the float tensor ``net`` reads:
    scaled to [0, 1], NCHW for a convolutional teacher, flattened for an MLP."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32) / ((1 << bits) - 1))
    x = x.reshape(len(images), *net.image_shape)
    return x.permute(0, 3, 1, 2) if net.conv_first else x.flatten(1)


def distillation_loss(student, teacher, temperature):
    """Hinton's soft-target term: ``T**2 * KL(softmax(teacher/T) || softmax(student/T))``,
    averaged over the batch (the ``T**2`` keeps its gradients on the scale of the hard loss's)."""
    return F.kl_div(F.log_softmax(student / temperature, dim=1), F.log_softmax(teacher / temperature, dim=1),
                    reduction="batchmean", log_target=True) * temperature ** 2


@dataclass
class TeacherConfig:
    """The settings of a teacher run (stored in its file)."""

    data: str = "fashion-mnist"
    arch: str = "mlp:256,256"
    epochs: int = 10
    batch_size: int = 256
    lr: float = 2e-3
    shift: int = 0
    flip: bool = False
    seed: int = 0
    threads: int = 2
    train_limit: int = None
    argv: list = field(default_factory=list)


def _accuracy(net, x, y, bits):
    with torch.no_grad():
        scores = torch.cat([net(teacher_input(net, x[i:i + 2048], bits)) for i in range(0, len(x), 2048)])
    return float((scores.argmax(1).numpy() == y).mean())


def train_teacher(config, *, data=None, progress=True, log_path=None):
    """Train a :class:`TeacherNet` as ``config`` says; returns ``(net, data, log)`` (one dict per
    epoch: loss, validation accuracy, seconds), also written to ``log_path`` (JSON) after every
    epoch when given. Deterministic for a seed and thread count."""
    data = data or datasets.load(config.data)
    try:
        parse_arch(config.arch)
    except ValueError as error:
        raise TrainError(f"option --arch: {error}") from None
    for key in ("epochs", "batch_size", "threads"):
        if getattr(config, key) < 1:
            raise TrainError(f"option --{key.replace('_', '-')}: expected a positive number, found {getattr(config, key)}")
    if config.shift < 0:
        raise TrainError(f"option --shift: expected a number of pixels, 0 or more, found {config.shift}")
    _setup(config)
    torch.manual_seed(config.seed)
    net = TeacherNet(config.arch, data.image_shape, len(data.classes))
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    x, y = data.x_train.reshape(len(data.x_train), *data.image_shape), data.y_train
    if config.train_limit:
        x, y = x[:config.train_limit], y[:config.train_limit]
    batches = math.ceil(len(x) / config.batch_size)
    total = config.epochs * batches
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True, desc="teacher")
    log = []
    for epoch in range(config.epochs):
        began = time.perf_counter()
        rng = np.random.default_rng([config.seed, epoch])
        order = rng.permutation(len(x))
        net.train()
        loss_sum = 0.0
        for i in range(batches):
            step = epoch * batches + i
            for group in optimizer.param_groups:
                group["lr"] = cosine_rate(config.lr, step, total)
            idx = order[i * config.batch_size:(i + 1) * config.batch_size]
            images = augment(x[idx], rng, shift=config.shift, flip=config.flip)
            loss = F.cross_entropy(net(teacher_input(net, images, data.bits)), torch.from_numpy(y[idx]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach())
            if bar is not None:
                bar.update()
        net.eval()
        val = data.x_val.reshape(len(data.x_val), *data.image_shape)
        log.append({"epoch": epoch + 1, "loss": loss_sum / batches,
                    "val_accuracy": _accuracy(net, val, data.y_val, data.bits),
                    "seconds": round(time.perf_counter() - began, 2)})
        if bar is not None:
            bar.set_postfix_str(f"val {log[-1]['val_accuracy']:.4f}")
        if log_path:
            write_atomic(log_path, (json.dumps(log, indent=1) + "\n").encode())
    if bar is not None:
        bar.close()
    net.eval()
    return net, data, log


def save_teacher(path, net, config, data, log):
    """Write the teacher (its settings, weights, log and test accuracy) to ``path`` atomically, as
    plain tensors and data. Returns the test accuracy."""
    test = _accuracy(net, data.x_test.reshape(len(data.x_test), *data.image_shape), data.y_test, data.bits)
    state = {"kind": KIND, "config": asdict(config), "data": data.name, "image_shape": list(data.image_shape),
             "classes": len(data.classes), "model": net.state_dict(), "log": log, "test_accuracy": test}
    write_atomic(path, _checkpoint_bytes(state))
    return test


def load_teacher(path, data):
    """The :class:`TeacherNet` of file ``path``, in evaluation mode, for a student trained on
    ``data``; and a summary dict (file name, SHA-256, test accuracy) for the student's metadata.
    Raises :class:`~sbnn_hdl.train.common.TrainError` for a file that is not a teacher, or a
    teacher of another data set."""
    if not os.path.isfile(path):
        raise TrainError(f"teacher {path!r}: expected a teacher file (python -m sbnn_hdl.train.teacher), "
                         f"found no such file")
    try:
        state = _load_checkpoint(path)
    except TrainError as error:  # the checkpoint loader's refusals, about this file as a teacher
        raise TrainError(str(error).replace(f"checkpoint {path!r}", f"teacher {path!r}", 1)) from None
    if state.get("kind") != KIND:
        raise TrainError(f"teacher {path!r}: expected a teacher written by python -m sbnn_hdl.train.teacher, "
                         f"found {'a student checkpoint' if 'optimizer' in state or 'controller' in state else 'another file'}")
    if state.get("data") != data.name or tuple(state.get("image_shape", ())) != tuple(data.image_shape) \
            or state.get("classes") != len(data.classes):
        raise TrainError(f"teacher {path!r}: expected a teacher of {data.name} ({len(data.classes)} classes of "
                         f"{'x'.join(map(str, data.image_shape))} images), found one of {state.get('data')} "
                         f"({state.get('classes')} classes of {'x'.join(map(str, state.get('image_shape', ())))} images)")
    try:
        net = TeacherNet(state["config"]["arch"], data.image_shape, len(data.classes))
        net.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError, ValueError) as error:
        raise TrainError(f"teacher {path!r}: expected a teacher written by python -m sbnn_hdl.train.teacher, "
                         f"found {type(error).__name__}") from None
    net.eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    with open(path, "rb") as file:
        digest = hashlib.sha256(file.read()).hexdigest()
    return net, {"file": os.path.basename(path), "sha256": digest, "arch": state["config"]["arch"],
                 "test_accuracy": state.get("test_accuracy")}


@command("sbnn_hdl.train.teacher")
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sbnn_hdl.train.teacher",
                                     description="Trains a full-precision teacher for sbnn_hdl.train --teacher "
                                                 "(knowledge distillation). See docs/training.md.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", choices=datasets.NAMES, default="fashion-mnist", help="data set")
    parser.add_argument("--arch", default="mlp:256,256", help="mlp:W1,W2,... or cnn:C1,p,C2,p,fcW (real-valued)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (cosine schedule to 0)")
    parser.add_argument("--shift", type=int, default=0, metavar="PIXELS", help="augmentation: random shifts")
    parser.add_argument("--flip", action="store_true", help="augmentation: mirror half of the training images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--train-limit", type=int, help="use only the first N training samples")
    parser.add_argument("-o", "--output", required=True, metavar="TEACHER.pt")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise TrainError(f"output {args.output!r}: expected an existing folder {folder!r}, found none")
    config = TeacherConfig(data=args.data, arch=args.arch, epochs=args.epochs, batch_size=args.batch_size,
                           lr=args.lr, shift=args.shift, flip=args.flip, seed=args.seed, threads=args.threads,
                           train_limit=args.train_limit,
                           argv=["python", "-m", "sbnn_hdl.train.teacher", *(sys.argv[1:] if argv is None else argv)])
    stem = args.output[:-3] if args.output.endswith(".pt") else args.output
    net, data, log = train_teacher(config, progress=not args.quiet, log_path=stem + ".log.json")
    test = save_teacher(args.output, net, config, data, log)
    print(f"{args.output}: real-valued teacher {config.arch} on {data.name}, validation accuracy "
          f"{100 * log[-1]['val_accuracy']:.2f}%, test accuracy {100 * test:.2f}%")


if __name__ == "__main__":
    sys.exit(main())

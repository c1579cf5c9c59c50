"""``python -m sbnn_hdl.train --data DATA --arch ARCH [options] -o model.sbnn``

Trains an SBNN, writes a checkpoint and a JSON log after every epoch, then exports the model as an
exact ``.sbnn`` file: folded into integers, checked neuron by neuron, and checked against the golden
model on the whole test set (any difference fails the export). See docs/training.md.
"""

import argparse
import os
import sys

from .._cli import command
from ..datasets import NAMES
from .controller import CONTROLLERS, RAMP_SHAPES
from .loop import Config, TrainError, export_model, parse_layer_sparsity, summary, train
from .nets import POOLS
from .quant import DOMAINS, STES

__all__ = ["main"]


def _planes(text):
    try:
        return [int(k) for k in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected plane numbers like 7,6,5,4, found {text!r}") from None


@command("sbnn_hdl.train")
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sbnn_hdl.train", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", choices=NAMES, default="fashion-mnist", help="data set")
    parser.add_argument("--arch", default="mlp:256,256", help="mlp:W1,W2,... or cnn:C1,p,C2,p,fcW")
    parser.add_argument("--encoding", choices=("bitplanes", "integer"), default="bitplanes",
                        help="how the first layer reads the pixels")
    parser.add_argument("--planes", type=_planes, help="bit planes read, e.g. 7,6,5,4 (default: the top 4)")
    parser.add_argument("--domain", choices=DOMAINS, default="learned", help="binary weight domain")
    parser.add_argument("--ste", choices=STES, default="ste", help="activation gradient estimator")
    parser.add_argument("--pool", choices=POOLS, default="values",
                        help="how training max-pools: the normalised values, then the sign (the gradient to each "
                             "window's largest value), or the bits after the sign; the same bits either way")
    parser.add_argument("--sparsity", type=float, help="target sparsity (share of 0 weights); omit for a dense BNN")
    parser.add_argument("--controller", choices=CONTROLLERS, default="ramp",
                        help="ramp: the targets move from the starting sparsity to the final ones over --ramp of "
                             "the steps, the push set by feedback; fixed: the paper's fixed target and --gamma")
    parser.add_argument("--ramp", type=float, default=0.5, metavar="SHARE",
                        help="the share of the steps over which the ramp controller reaches the targets")
    parser.add_argument("--ramp-shape", choices=RAMP_SHAPES, default="cosine",
                        help="progress along the ramp (geometric in density)")
    parser.add_argument("--gamma", type=float,
                        help="Eq. 18 gamma, with --controller fixed only (default: 0.2 up to 96.5%%, 0.4 up to 98%%, "
                             "else 0.5)")
    parser.add_argument("--layer-sparsity", action="append", metavar="NAME=VALUE",
                        help="a budget of its own for layer NAME (conv1, fc2, out, ...); repeatable. The other "
                             "layers' target is solved so that --sparsity is the share of all weights")
    parser.add_argument("--edge-budgets", choices=("on", "off"),
                        help="the default rule: gentler budgets of their own for the first and last layers when "
                             "they hold fewer weights than the middle layers (default: on with --controller ramp, "
                             "off with fixed)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (cosine schedule to 0)")
    parser.add_argument("--mixup", type=float, default=0.0, help="mixup Beta(alpha, alpha); 0 disables it")
    parser.add_argument("--shift", type=int, default=0, metavar="PIXELS",
                        help="augmentation: move each training image by up to this many pixels")
    parser.add_argument("--flip", action="store_true", help="augmentation: mirror half of the training images")
    parser.add_argument("--teacher", metavar="TEACHER.pt",
                        help="distil from this real-valued teacher (python -m sbnn_hdl.train.teacher)")
    parser.add_argument("--distill", type=float, default=0.5,
                        help="with --teacher: the soft-target term's share of the task loss")
    parser.add_argument("--temperature", type=float, default=4.0, help="with --teacher: the softmax temperature")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (results depend on it)")
    parser.add_argument("--pad-value", type=int, choices=(0, 1), default=0, help="conv padding bit value")
    parser.add_argument("--train-limit", type=int, help="use only the first N training samples")
    parser.add_argument("--name", help="model name (default: from data and arch)")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL.sbnn")
    parser.add_argument("--checkpoint", help="checkpoint path (default: OUTPUT with .ckpt)")
    parser.add_argument("--log", help="JSON log path (default: OUTPUT with .log.json)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    stem = args.output[:-5] if args.output.endswith(".sbnn") else args.output
    for path in (args.output, args.checkpoint, args.log):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and not os.path.isdir(folder):  # fail now, not after hours of training
            raise TrainError(f"output {path!r}: expected an existing folder {folder!r}, found none")
    config = Config(data=args.data, arch=args.arch, encoding=args.encoding, planes=args.planes,
                    domain=args.domain, ste=args.ste, pool=args.pool, sparsity=args.sparsity, gamma=args.gamma,
                    controller=args.controller, ramp=args.ramp, ramp_shape=args.ramp_shape,
                    layer_sparsity=parse_layer_sparsity(args.layer_sparsity),
                    edge_budgets=None if args.edge_budgets is None else args.edge_budgets == "on",
                    epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, mixup=args.mixup,
                    shift=args.shift, flip=args.flip, teacher=args.teacher, distill=args.distill,
                    temperature=args.temperature,
                    seed=args.seed, threads=args.threads, pad_value=args.pad_value, name=args.name,
                    train_limit=args.train_limit,
                    argv=["python", "-m", "sbnn_hdl.train", *(sys.argv[1:] if argv is None else argv)])
    checkpoint = args.checkpoint or stem + ".ckpt"
    net, data, log = train(config, checkpoint=checkpoint, resume=args.resume,
                           log_path=args.log or stem + ".log.json", progress=not args.quiet)
    model, report = export_model(net, data, config, log, args.output)
    print(summary(model, report, args.output))


if __name__ == "__main__":
    sys.exit(main())

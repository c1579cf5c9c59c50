"""``python -m sbnn_hdl.bitprune CHECKPOINT [--budget 0.01] [--finetune N] [--shrink] -o pruned.sbnn [--report DIR]``

Bit-plane input pruning (after Li et al., "Build a compact binary neural network through
bit-level sensitivity and data pruning"): measures how much each input bit plane of a trained SBNN
matters, removes planes greedily while the validation accuracy stays within a budget of the
unpruned network's, optionally fine-tunes and then (``--shrink``) searches smaller hidden widths,
and exports the smaller network exactly (the same per-neuron proof and golden-model check as
training). See docs/bitprune.md; the methods are :mod:`sbnn_hdl.train.planes` and
:mod:`sbnn_hdl.train.shrink`.
"""

import argparse
import sys
from dataclasses import fields

from ._cli import command
from .tables import format_table
from .train.planes import FINETUNE_LR_SHARE, Settings, describe_planes, prune, tables
from .train.shrink import DEFAULT_WIDTHS, SHRINK_LR_SHARE

__all__ = ["main"]


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
    shrink = parser.add_argument_group("shrinking (after the planes: fewer hidden neurons or conv channels, "
                                       "or sparser layers)")
    shrink.add_argument("--shrink", action="store_true",
                        help="search smaller hidden widths (an MLP's neurons; a CNN's conv channels, then its "
                             "dense neurons) and export the smallest (LUT4 estimate) within the budget")
    shrink.add_argument("--widths", metavar="LIST", default=argparse.SUPPRESS,
                        help=f"candidates: widths for every hidden layer (integers), shares of each layer's "
                             f"width (in (0, 1)) or one width per hidden layer (W1:W2), e.g. 192,128,96,64:128 "
                             f"(default {DEFAULT_WIDTHS})")
    shrink.add_argument("--shrink-epochs", type=int, metavar="EPOCHS", default=argparse.SUPPRESS,
                        help="fine-tune epochs of each candidate (default 3)")
    shrink.add_argument("--shrink-init", metavar="HOW", default=argparse.SUPPRESS,
                        help="kept: fine-tune from the most-used neurons or channels (default); scratch: train "
                             "each candidate anew with the recipe and the kept planes")
    shrink.add_argument("--shrink-lr", type=float, metavar="SHARE", default=argparse.SUPPRESS,
                        help=f"the candidates' learning rate as a share of the checkpoint's "
                             f"(default {SHRINK_LR_SHARE:g})")
    shrink.add_argument("--shrink-sparsity", metavar="LIST", default=argparse.SUPPRESS,
                        help="sparsity targets of the candidates, e.g. 0.95,0.985: every width at each, and the "
                             "unshrunk widths too at targets other than the checkpoint's (default: the checkpoint's "
                             "target alone)")
    args = parser.parse_args(argv)
    settings = Settings(**{f.name: getattr(args, f.name, f.default) for f in fields(Settings)})  # shrink options: absent unless given
    settings.check()
    report = prune(settings, ["python", "-m", "sbnn_hdl.bitprune", *argv])
    for title, header, rows in tables(report):
        print(f"{title}\n{format_table(header, rows)}\n")
    e = report["exported"]
    target = "" if e["sparsity_target"] is None else f" (sparsity target {100 * e['sparsity_target']:g}%)"
    print(f"{args.output}: {report['model']}, planes {describe_planes(e['planes'])}, hidden widths "
          f"{','.join(map(str, e['widths']))}, {e['connections']:,} connections{target}, "
          f"test accuracy {100 * e['test_accuracy']:.2f}% (exact folding proven, PyTorch and golden agree "
          f"on every test prediction and score)")


if __name__ == "__main__":
    sys.exit(main())

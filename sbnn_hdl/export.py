"""``python -m sbnn_hdl.export CHECKPOINT -o model.sbnn``

Exports a training checkpoint (written by ``python -m sbnn_hdl.train``) as an exact ``.sbnn``
file, checked neuron by neuron and against the golden model on the whole test set; the folding
is :mod:`sbnn_hdl.train.fold`'s.
"""

import argparse
import sys

from ._cli import command
from .train.loop import export_checkpoint, summary

__all__ = ["main"]


@command("sbnn_hdl.export")
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sbnn_hdl.export", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint written by python -m sbnn_hdl.train")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL.sbnn")
    parser.add_argument("--name", help="model name (default: from the checkpoint)")
    args = parser.parse_args(argv)
    model, report = export_checkpoint(args.checkpoint, args.output, name=args.name)
    print(summary(model, report, args.output))


if __name__ == "__main__":
    sys.exit(main())

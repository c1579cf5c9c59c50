"""``python -m sbnn_hdl.inspect model.sbnn [--json]``: what a model holds, layer by layer.

Per layer: kind, shapes, 1-valued connections, density, weight entropy (bits/weight), for conv
layers the share of kernels with Hamming weight 0, 1, and 2 or more (K0, K1, K>=2), coefficient
ranges, and binary operations against a dense BNN of the same shape. See :mod:`sbnn_hdl.stats`.
"""

import argparse
import json
import sys

from . import modelfile
from ._cli import command
from .stats import format_report, model_stats

__all__ = ["format_report", "main"]


@command("sbnn_hdl.inspect")
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sbnn_hdl.inspect", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the .sbnn file")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    args = parser.parse_args(argv)
    stats = model_stats(modelfile.load(args.model))
    if args.json:
        print(json.dumps(stats, indent=2, ensure_ascii=False))
    else:
        print(format_report(stats))


if __name__ == "__main__":
    sys.exit(main())

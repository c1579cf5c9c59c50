"""``python -m sbnn_hdl.convert MODEL.onnx -o MODEL.sbnn [--check INPUTS.npy] [--name NAME]``

Converts a binary network exported as QONNX (Brevitas ``export_qonnx``: BipolarQuant or 1-bit
Quant weights and activations, Gemm/MatMul, Conv, MaxPool, batch norm) into an exact ``.sbnn``
model, each neuron's threshold folded and proven as ``export`` does; prints how to feed it, the
``inspect`` table and what the sparse and the XNOR datapaths cost. ``--check`` runs the graph with
qonnx's executor and the golden model on the same inputs and requires the same predictions.
An unsupported graph is refused with one line naming the node (exit status 2), and nothing is
written. See docs/convert.md; the reading and folding are :mod:`sbnn_hdl.qonnx_import`.
"""

import argparse
import sys

from . import modelfile
from ._cli import command, load_array
from ._files import write_atomic
from .errors import SbnnError
from .gateware.verilog import estimate_model
from .qonnx_import import ConvertError, check, convert
from .stats import format_report, model_stats

__all__ = ["main"]


def _check_text(report, path):
    lines = [f"check: {report['compared']:,} of {report['samples']:,} samples from {path} give the same prediction "
             f"in qonnx's execution of the graph and in the golden model"]
    if report["ties"]:
        lines.append(f"  {report['ties']:,} samples not compared: their float scores tie at the top in the graph "
                     f"(the golden model takes the lowest class, as argmax does)")
    return "\n".join(lines)


def _costs(model):
    lines = []
    for arch in ("sparse", "xnor"):
        try:
            estimate = estimate_model(model, arch=arch)
            lines.append(f"  --arch {arch:6}: {estimate['lut4']:,} LUT4, {estimate['ff']:,} FF (ECP5 estimate)")
        except SbnnError as error:
            lines.append(f"  --arch {arch:6}: not buildable: {error}")
    return lines


@command("sbnn_hdl.convert")
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sbnn_hdl.convert", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx", metavar="MODEL.onnx", help="a QONNX graph (brevitas.export.export_qonnx)")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL.sbnn")
    parser.add_argument("--check", metavar="INPUTS.npy",
                        help="graph inputs [N, *input shape] to run through qonnx and the golden model")
    parser.add_argument("--name", help="model name (default: the ONNX file's name)")
    parser.add_argument("--no-estimate", action="store_true", help="skip the LUT4 estimates (large networks)")
    args = parser.parse_args(argv)
    inputs = load_array(args.check, "inputs") if args.check else None
    conversion = convert(args.onnx, name=args.name)
    model = conversion.model
    report = None
    if inputs is not None:
        report = check(conversion, inputs)
        if len(report["differ"]):
            i = int(report["differ"][0])
            raise ConvertError(f"check: expected qonnx and the golden model to predict the same class on all "
                               f"{report['compared']} compared samples of {args.check}, found {len(report['differ'])} "
                               f"that differ (first: sample {i}, graph {int(report['graph_predictions'][i])}, golden "
                               f"{int(report['predictions'][i])}); nothing written")
    write_atomic(args.output, modelfile.dumps(model))
    stats = model_stats(model)
    print(f"{args.output}: {model.name} from {args.onnx}, {len(model.layers)} layers, every threshold folded "
          f"exactly (per-neuron proof)")
    print(conversion.feeding)
    if report is not None:
        print(_check_text(report, args.check))
    print()
    print(format_report(stats))
    t = stats["totals"]
    print(f"\nsparsity: {100 * (1 - t['density']):.1f}% of the weights are 0-valued connections (-1 weights); the "
          f"sparse datapath wires the {t['connections']:,} 1-valued ones, --arch xnor all {t['weights']:,}")
    if not args.no_estimate:
        print("hardware (python -m sbnn_hdl.generate MODEL.sbnn --verilog --arch sparse|xnor):")
        print("\n".join(_costs(model)))
    print("a plain BNN has about half its weights +1; for a sparse network that costs far less, train one with "
          "python -m sbnn_hdl.train --sparsity 0.9 (docs/training.md)")


if __name__ == "__main__":
    sys.exit(main())

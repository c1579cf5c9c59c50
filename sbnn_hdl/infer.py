"""``python -m sbnn_hdl.infer model.sbnn --inputs x.npy --out y.npy [--scores s.npy] [--labels l.npy]``

Runs the golden model on an ``.npy`` array of samples (shape ``[N, *input.shape]``, unsigned
integers below ``2**bits``) and writes the predictions (``int64 [N]``) and, on request, the
scores (``int64 [N, classes]``). Output files are written atomically.
"""

import sys
import time


from . import golden, modelfile
from ._cli import command, load_array, parser_for
from ._files import save_npy
from .errors import InputError

__all__ = ["main"]


@command("sbnn_hdl.infer")
def main(argv=None):
    parser = parser_for(__doc__, "sbnn_hdl.infer")
    parser.add_argument("--labels", metavar="L.npy", help="true labels [N]: print the accuracy")
    args = parser.parse_args(argv)

    model = modelfile.load(args.model)
    x = golden.check_inputs(model, load_array(args.inputs, "inputs"), where=f"inputs file {args.inputs!r}")
    labels = None
    if args.labels:
        labels = load_array(args.labels, "labels")
        if labels.shape != (len(x),) or labels.dtype.kind not in "iu":
            raise InputError(f"labels file {args.labels!r}", f"{len(x)} integer labels (shape [{len(x)}])",
                             f"shape {list(labels.shape)}, dtype {labels.dtype}")
    start = time.perf_counter()
    result = golden.infer(model, x)
    elapsed = time.perf_counter() - start
    save_npy(args.out, result.predictions)
    if args.scores:
        save_npy(args.scores, result.scores)
    rate = f", {len(x) / elapsed:,.0f} samples/s" if elapsed > 0 and len(x) else ""
    print(f"{model.name}: {len(x)} samples -> {args.out}" + (f", scores -> {args.scores}" if args.scores else "")
          + rate)
    if labels is not None:
        correct = int((result.predictions == labels).sum())
        print(f"accuracy: {correct}/{len(x)} = {100 * correct / max(len(x), 1):.2f}%")


if __name__ == "__main__":
    sys.exit(main())

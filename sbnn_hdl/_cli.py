"""Plumbing shared by the command-line tools: one-line errors, exit status 2, input files."""

import argparse
import functools
import os
import sys

import numpy as np

from .errors import InputError, SbnnError
from .hwplan import ARCHS, DEFAULT_EVERY
from .streamplan import HEADS, SHARES

__all__ = ["command", "parser_for", "add_core_options", "check_core_options", "share_option", "load_array"]

EXIT_USAGE = 2


def command(prog):
    """Decorate a ``main(argv)`` so that user errors print one line and exit with status 2."""

    def wrap(main):
        @functools.wraps(main)
        def run(argv=None):
            try:
                return main(argv) or 0
            except SbnnError as error:
                print(f"{prog}: error: {error}", file=sys.stderr)
                return EXIT_USAGE
            except OSError as error:  # writing an output file
                name = f" {error.filename!r}" if error.filename else ""
                print(f"{prog}: error: cannot write{name}: {error.strerror or error}", file=sys.stderr)
                return EXIT_USAGE
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return 130
        return run

    return wrap


def parser_for(module_doc, prog):
    """An argument parser for ``python -m <prog>`` described by the module's docstring, with the
    arguments that the tools which run a model on samples share: the model file, ``--inputs``,
    ``--out`` and ``--scores``."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=module_doc.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the .sbnn file")
    parser.add_argument("--inputs", required=True, metavar="X.npy", help="input samples, [N, *input.shape]")
    parser.add_argument("--out", required=True, metavar="Y.npy", help="where to write the predictions")
    parser.add_argument("--scores", metavar="S.npy", help="where to write the last layer's scores")
    return parser


def add_core_options(parser, *, many_archs=False):
    """The options that shape a generated core, shared by every command that builds one:
    ``--every``, ``--relay``, ``--arch`` (several datapaths at once with ``many_archs``),
    ``--head`` and ``--share``. Check them with :func:`check_core_options` after parsing."""
    group = parser.add_argument_group("core")
    group.add_argument("--every", type=int, default=DEFAULT_EVERY, metavar="K",
                       help=f"adder levels per register stage (default {DEFAULT_EVERY})")
    group.add_argument("--relay", type=int, default=0, metavar="N",
                       help="extra register stages on every layer's inputs, and a register copy of the layer's "
                            "shared split next to each neuron, for a faster clock (default 0)")
    if many_archs:
        group.add_argument("--arch", nargs="+", choices=ARCHS, default=["sparse"],
                           help="datapaths (default sparse)")
    else:
        group.add_argument("--arch", choices=ARCHS, default="sparse",
                           help="datapath: sparse (default), or xnor: the dense BNN baseline, for models in the "
                                "symmetric +-1 domain")
    group.add_argument("--head", choices=HEADS, default="unrolled",
                       help="for a model with conv2d or maxpool2d layers: the first dense layer's sums as "
                            "adder trees (unrolled, default) or from a serial engine over the last feature "
                            "map, a few neurons per clock between images (serial: far fewer LUT4, block RAM)")
    group.add_argument("--share", type=share_option, default="auto", metavar="auto|off|N",
                       help="for a model with conv2d layers after pools or strides: compute a conv stage's sums "
                            "over up to as many cycles as it has input pixels per output position (auto, "
                            "default: as many as the estimate finds smallest; N: up to N whatever the "
                            "estimate), or one window per cycle (off)")
    return group


def share_option(text):
    """``--share``: ``auto``, ``off`` or a number of cycles (1 or more)."""
    if text in SHARES:
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected auto, off or a number of cycles (1 or more), found {text!r}")
    return value


def check_core_options(parser, args):
    """Refuse core options out of range through ``parser.error`` (exit status 2)."""
    if args.every < 1:
        parser.error(f"--every: expected at least 1, found {args.every}")
    if args.relay < 0:
        parser.error(f"--relay: expected 0 or more register stages, found {args.relay}")


def load_array(path, what):
    """Load a ``.npy`` file without pickles; any failure becomes an :class:`InputError`."""
    where = f"{what} file {os.fspath(path)!r}"
    try:
        array = np.load(path, allow_pickle=False)
    except OSError as error:
        raise InputError(where, "a readable .npy file", error.strerror or str(error)) from None
    except (ValueError, EOFError) as error:
        raise InputError(where, "a NumPy .npy array", f"unreadable data ({error})") from None
    if not isinstance(array, np.ndarray):
        raise InputError(where, "a NumPy .npy array", f"a {type(array).__name__} archive")
    return array

"""Plumbing shared by the command-line tools: one-line errors, exit status 2, input files."""

import functools
import os
import sys

import numpy as np

from .errors import InputError, SbnnError

__all__ = ["command", "parser_for", "load_array", "format_table"]

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
    import argparse
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=module_doc.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the .sbnn file")
    parser.add_argument("--inputs", required=True, metavar="X.npy", help="input samples, [N, *input.shape]")
    parser.add_argument("--out", required=True, metavar="Y.npy", help="where to write the predictions")
    parser.add_argument("--scores", metavar="S.npy", help="where to write the last layer's scores")
    return parser


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


def format_table(header, rows):
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row):
        return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])

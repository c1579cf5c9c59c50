"""Where the testbench sources are: the cocotb code (``core_tests.py``, ``sbnn_cocotb.py``) and the
board bridge's C++ (``board_bridge.cpp``).

They live in the repository's top-level ``sim/`` folder, which ``pyproject.toml`` maps onto the
subpackage ``sbnn_hdl.testbenches`` (``package-dir``), so a wheel ships them as package data and an
editable install's finder maps the name onto ``sim/``. :func:`testbench_sources` finds them with
:mod:`importlib.resources`.
"""

import importlib.resources
from contextlib import contextmanager
from pathlib import Path

from ..synth import ToolError

__all__ = ["PACKAGE", "testbench_sources", "testbench_folder"]

#: The package that holds the testbench sources (``sim/`` in the repository).
PACKAGE = "sbnn_hdl.testbenches"

_EXPECTED = ("core_tests.py", "sbnn_cocotb.py", "board_bridge.cpp")


def testbench_sources():
    """The folder of the testbench sources, as an :class:`importlib.resources.abc.Traversable`
    (a :class:`~pathlib.Path` for any installed, unzipped package, editable or not).

    Raises :class:`ToolError` when the package does not provide them.
    """
    try:
        sources = importlib.resources.files(PACKAGE)
    except ModuleNotFoundError:
        sources = None
    if sources is None or not all(sources.joinpath(name).is_file() for name in _EXPECTED):
        raise ToolError(f"testbench: expected {', '.join(_EXPECTED)} in the package {PACKAGE} (the repository's "
                        f"sim/ folder; reinstall sbnn-hdl), found {'none' if sources is None else 'them missing'}")
    return sources


@contextmanager
def testbench_folder():
    """A real folder holding the testbench sources, for the duration of the ``with`` block (a
    temporary copy only if the package is not on the file system, e.g. zipped)."""
    sources = testbench_sources()
    if isinstance(sources, Path):
        yield sources
    else:
        with importlib.resources.as_file(sources) as folder:  # a folder needs Python 3.12
            yield Path(folder)

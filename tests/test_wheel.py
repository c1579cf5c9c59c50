"""A wheel install runs the commands that need the testbench sources of sim/: the package is built
as a wheel, installed into a fresh virtual environment and run from a folder outside the
repository, so nothing comes from the source tree. ``simulate --mode cocotb`` needs the cocotb
code and ``board simulate`` the bridge's C++, both shipped as the package data
``sbnn_hdl.testbenches``.

The fresh environment gets its dependencies (amaranth, cocotb, verilator, numpy, pyserial, ...)
from this interpreter's site-packages through a ``.pth`` file: a path line there adds the folder
to ``sys.path`` without processing the ``.pth`` files inside it, so an editable ``sbnn_hdl`` of this
environment stays out (checked below). Nothing is downloaded."""

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sbnn_hdl import golden, load
from sbnn_hdl.synth import ToolError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

try:
    from sbnn_hdl.simulation.tools import configure
    configure("verilator")
except ToolError as error:
    pytest.skip(str(error), allow_module_level=True)


class Installed:
    """The wheel, the fresh environment's ``python``, a working folder outside the repository and
    the environment variables to run it with."""

    def __init__(self, base):
        self.base = base
        self.wheel = self.python = None
        self.work = base / "work"
        # Nothing from this process's set-up: no source tree on the path, and the installed package
        # configures Verilator for itself (VERILATOR_ROOT is what configure() above set here).
        self.env = {key: value for key, value in os.environ.items()
                    if key not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "VERILATOR_ROOT")}
        # A fresh simulation cache: the builds run from the installed sources (cocotb builds beside it).
        self.env["SBNN_SIM_CACHE"] = str(base / "cache" / "rtlsim")

    def run(self, *args, timeout=1800):
        return subprocess.run([str(self.python), *args], cwd=self.work, env=self.env, capture_output=True,
                              text=True, timeout=timeout)


def _build_wheel(into):
    """The wheel, built from a copy of the sources (the build leaves build/ and *.egg-info behind)."""
    source = into / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("sbnn_hdl", "sim"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    out = into / "dist"
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                             "--no-cache-dir", "-q", "-w", str(out), str(source)],
                            capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stdout + result.stderr
    wheels = list(out.glob("sbnn_hdl-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    setup = Installed(tmp_path_factory.mktemp("wheel"))
    setup.wheel = _build_wheel(setup.base)
    venv = setup.base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    setup.python = venv / "bin" / "python"
    # This environment's pip installs into the fresh one (before the .pth below exists, so that pip
    # does not see this environment's sbnn-hdl as already installed).
    result = subprocess.run([sys.executable, "-m", "pip", "--python", str(setup.python), "install", "--no-deps",
                             "--no-index", "--no-cache-dir", "-q", str(setup.wheel)],
                            capture_output=True, text=True, env=setup.env)
    assert result.returncode == 0, result.stdout + result.stderr
    purelib = subprocess.run([str(setup.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, env=setup.env).stdout.strip()
    ours = sysconfig.get_paths()
    lines = dict.fromkeys([ours["purelib"], ours["platlib"]])  # this interpreter's site-packages, in order
    (Path(purelib) / "sbnn_test_dependencies.pth").write_text("".join(f"{line}\n" for line in lines))
    setup.work.mkdir()
    for name in ("digits.sbnn", "digits_x.npy"):
        shutil.copy2(EXAMPLES / name, setup.work / name)
    return setup


class Server:
    """``python -m sbnn_hdl.board simulate`` of the fresh environment, started at once (so that its
    Verilator build overlaps the cocotb run); :meth:`url` waits for the line that names the port."""

    def __init__(self, setup):
        self.log = open(setup.base / "board-simulate.log", "w")
        self.process = subprocess.Popen([str(setup.python), "-m", "sbnn_hdl.board", "simulate", "digits.sbnn"],
                                        cwd=setup.work, env=setup.env, stdout=subprocess.PIPE, stderr=self.log,
                                        text=True, start_new_session=True,
                                        # A shell's background job ignores SIGINT, and its children
                                        # inherit that: the server must take Ctrl-C however the
                                        # tests were started.
                                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def url(self, timeout=1200):
        try:
            while (line := self.lines.get(timeout=timeout)) is not None:
                if line.startswith("board simulation of digits.sbnn on socket://"):
                    return line.split(" on ", 1)[1].split()[0]
        except queue.Empty:
            pass
        self.log.flush()
        raise AssertionError(f"board simulate: expected 'board simulation of digits.sbnn on socket://...', found "
                             f"none; its stderr: {Path(self.log.name).read_text()[-2000:]}")

    def stop(self):
        """Ctrl-C, as a user stops it (the command then stops the bridge). Returns True if a process
        of its session was left running (then killed)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, 0)
            left = True
        except ProcessLookupError:
            left = False
        if left:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()
        return left


@pytest.fixture(scope="module")
def server(installed):
    board = Server(installed)
    yield board
    board.stop()


def test_wheel_holds_the_package_and_the_testbench_sources(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    modules = {path.relative_to(ROOT).as_posix() for path in (ROOT / "sbnn_hdl").rglob("*.py")
               if "__pycache__" not in path.parts}
    assert modules - names == set(), "expected every module of sbnn_hdl/ in the wheel (pyproject.toml packages)"
    sources = {"__init__.py", "core_tests.py", "sbnn_cocotb.py", "board_bridge.cpp"}
    assert {f"sbnn_hdl/testbenches/{name}" for name in sources} <= names
    assert not any(name.startswith("sim/") for name in names)


def test_the_fresh_environment_imports_the_wheel(installed):
    result = installed.run("-c", "import json, sys, sbnn_hdl\n"
                           "from sbnn_hdl.simulation.sources import testbench_sources\n"
                           "import amaranth, cocotb, numpy, serial, verilator\n"
                           "print(json.dumps([sbnn_hdl.__file__, str(testbench_sources()), sys.prefix,\n"
                           "                  [repr(finder) for finder in sys.meta_path]]))")
    assert result.returncode == 0, result.stderr
    package, sources, prefix, finders = json.loads(result.stdout)
    venv = installed.python.parent.parent
    assert Path(prefix) == venv
    assert Path(package).is_relative_to(venv / "lib") and Path(sources).is_relative_to(venv / "lib")
    assert Path(sources).name == "testbenches"
    # This environment's .pth files (its editable sbnn_hdl among them) were not processed.
    assert not any("editable" in finder.lower() for finder in finders)


def test_cocotb_mode_from_the_wheel(installed, server):
    out = installed.work / "predictions.npy"
    result = installed.run("-m", "sbnn_hdl.simulate", "digits.sbnn", "--inputs", "digits_x.npy", "--out", str(out),
                           "--mode", "cocotb", "--check", "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "check: all 360 predictions and scores bit-exact against the golden model" in result.stdout
    expected = golden.infer(load(EXAMPLES / "digits.sbnn"), np.load(EXAMPLES / "digits_x.npy")).predictions
    np.testing.assert_array_equal(np.load(out), expected)


def test_board_simulation_from_the_wheel(installed, server):
    url = server.url()
    out = installed.work / "run.json"
    result = installed.run("-m", "sbnn_hdl.board", "run", "--port", url, "--model", "digits.sbnn",
                           "--inputs", "digits_x.npy", "--limit", "20", "--json", str(out), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["ok"] and report["agree"] == report["samples"] == 20
    assert "digits: 20/20 predictions agree with the golden model" in result.stdout
    left = server.stop()
    assert server.process.returncode == 130 and not left, Path(server.log.name).read_text()  # 130: Ctrl-C

"""Running the cocotb testbench (``core_tests.py`` of ``sim/``) on a generated core, from Python.

:func:`run_cocotb` builds the core's Verilog with ``cocotb_tools.runner`` for Verilator or Icarus,
runs the test (driver with random idle cycles, monitor, scoreboard against the golden model) and
returns what the core produced. Python runs every clock cycle here, so this mode is for protocol
checks and a few thousand vectors; :mod:`sbnn_hdl.simulation.bulk` is the bulk mode.

The cocotb code lives in the repository's ``sim/`` folder, shipped as the package data
``sbnn_hdl.testbenches`` (:mod:`.sources` finds it).
"""

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..modelfile import save
from ..synth import ToolError
from .bulk import default_cache
from .sources import testbench_folder, testbench_sources
from .tools import configure

__all__ = ["CocotbResult", "run_cocotb"]


@dataclass
class CocotbResult:
    """What the cocotb run produced: ``predictions`` and ``scores`` (``None`` without a scores port)
    in sample order, each output's ``latencies`` in cycles, ``passed`` (the in-simulator
    scoreboard found no mismatch), ``sim_seconds`` (the time from the first sample driven to the
    last output seen) and the ``log`` file."""
    predictions: np.ndarray
    scores: np.ndarray
    latencies: np.ndarray
    passed: bool
    sim_seconds: float
    log: Path


def run_cocotb(model, x, *, generated, simulator="verilator", build_dir=None, idle=0.25, seed=0):
    """Run the samples ``x`` through ``generated`` (a :class:`~sbnn_hdl.gateware.verilog.GeneratedCore`
    of ``model``) in cocotb on ``simulator``.

    ``build_dir`` defaults to a folder in the simulation cache named by the hash of the Verilog,
    so a second run of the same core does not rebuild it. Raises :class:`ToolError` when the
    simulator is missing or the build or the run breaks down (not when outputs mismatch: see
    ``passed``).
    """
    testbench_sources()  # raises ToolError before anything is built if the testbench is missing
    configure(simulator)
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    top = generated.report["top"]
    key = hashlib.sha256((simulator + "\0" + generated.verilog).encode()).hexdigest()[:16]
    build = Path(build_dir) if build_dir else default_cache().parent / "cocotb" / f"{simulator}-{top}-{key}"
    build.mkdir(parents=True, exist_ok=True)
    (build / f"{top}.v").write_text(generated.verilog)
    run = build / "run"
    run.mkdir(exist_ok=True)
    save(model, run / "model.sbnn")
    (run / "report.json").write_text(json.dumps(generated.report))
    np.save(run / "inputs.npy", np.asarray(x))
    outputs = run / "outputs.npz"
    outputs.unlink(missing_ok=True)
    config = dict(model=str(run / "model.sbnn"), report=str(run / "report.json"), inputs=str(run / "inputs.npy"),
                  outputs=str(outputs), idle=idle, seed=seed)
    (run / "config.json").write_text(json.dumps(config))

    runner = get_runner(simulator)
    log = run / "cocotb.log"
    (run / "results.xml").unlink(missing_ok=True)
    build_args = ["-Wno-fatal", "-Wno-lint", "-Wno-style"] if simulator == "verilator" else []
    makeflags = os.environ.get("MAKEFLAGS")
    try:
        # Python, not the compiled model, sets the pace here: compile the C++ fast, not well.
        os.environ["MAKEFLAGS"] = f"{makeflags or ''} OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0".strip()
        runner.build(sources=[build / f"{top}.v"], hdl_toplevel=top, build_dir=build, build_args=build_args,
                     timescale=("1ns", "1ps"), log_file=build / "build.log")
    except (SystemExit, RuntimeError, OSError) as error:
        raise ToolError(f"cocotb ({simulator}): the build of {top} failed ({error}); see {build / 'build.log'}") from None
    finally:
        if makeflags is None:
            del os.environ["MAKEFLAGS"]
        else:
            os.environ["MAKEFLAGS"] = makeflags
    started = time.perf_counter()
    with testbench_folder() as folder:
        # The runner passes this process's sys.path to the simulator's Python as PYTHONPATH, and the
        # simulator imports the test module core_tests (which imports sbnn_cocotb) from there.
        sys.path.insert(0, str(folder))
        try:
            runner.test(test_module="core_tests", hdl_toplevel=top, build_dir=build, test_dir=run,
                        extra_env={"SBNN_COCOTB_CONFIG": str(run / "config.json")}, log_file=log, seed=seed,
                        results_xml=str(run / "results.xml"))
        except SystemExit:
            pass  # a failed test (under pytest the runner exits): the results file tells
        finally:
            sys.path.remove(str(folder))
    wall = time.perf_counter() - started
    if not (run / "results.xml").exists():
        raise ToolError(f"cocotb ({simulator}): the run of {top} ended without results; see {log}")
    tests, failed = get_results(run / "results.xml")
    if not outputs.exists():
        raise ToolError(f"cocotb ({simulator}): expected outputs from the test of {top}, found none; see {log}")
    data = np.load(outputs)
    has_scores = bool(generated.report["output"]["scores"])
    return CocotbResult(predictions=data["predictions"], scores=data["scores"] if has_scores else None,
                        latencies=data["latencies"], passed=tests > 0 and failed == 0,
                        sim_seconds=float(data["seconds"]) or wall, log=log)

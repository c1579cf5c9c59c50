"""Board-in-the-loop simulation: the board's top level (host interface, UART, core, for a dense
or a conv model; the PLL replaced by the simulator's clock) in Verilator, on a TCP port that pyserial opens as
``socket://127.0.0.1:PORT``, so that the host tool runs unchanged against real RTL.

The bridge (``board_bridge.cpp`` in ``sim/``, shipped as package data: :mod:`.sources`) turns TCP
bytes into UART frames on the design's ``rx`` pin and decodes its ``tx`` pin, so the UART RTL is
exercised bit by bit. To keep simulated serial traffic short, the simulation build uses
:data:`SIM_DIVISOR` clocks per bit instead of the board's ``clock / baud`` (the only difference
from the board's logic besides the PLL), a frame timeout of :data:`SIM_TIMEOUT` cycles and a
batch memory of :data:`SIM_BATCH` samples.
"""

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .. import modelfile
from ..board import protocol
from ..board.cores import core_info, generate_core
from ..board.top import simulation_verilog
from ..hwplan import DEFAULT_EVERY
from ..synth import ToolError
from .bulk import default_cache
from .sources import testbench_sources
from .tools import configure, version

__all__ = ["SIM_DIVISOR", "SIM_TIMEOUT", "SIM_BATCH", "SIM_CLOCK_HZ", "BoardSimulation"]

SIM_DIVISOR = 8
SIM_TIMEOUT = 40_000
SIM_BATCH = 64
#: The clock the simulated build reports (INFO): cycles convert to time as on a 100 MHz board.
SIM_CLOCK_HZ = 100_000_000


class BoardSimulation:
    """Build (cached) and run the board-in-the-loop simulation of ``model_path``.

    Use as a context manager: ``with BoardSimulation(path) as sim: ... sim.url ...``; the
    simulation process is stopped on exit. ``every``, ``scores``, ``head`` and ``share`` choose the core as
    ``generate --board`` does.
    """

    def __init__(self, model_path, *, every=DEFAULT_EVERY, scores=True, head="unrolled", share="auto", divisor=SIM_DIVISOR,
                 timeout=SIM_TIMEOUT, batch_depth=SIM_BATCH, cache=None, progress=None):
        with open(model_path, "rb") as file:
            model_bytes = file.read()
        model = modelfile.load(model_path)
        self.model = model
        generated = generate_core(model, every=every, scores=scores, head=head, share=share)   # a dense or a streaming (conv) core
        #: The core's generation report (its documented ``latency`` and ``throughput``) and what
        #: the host interface knows of it.
        self.report = generated.report
        self.info = core_info(generated)
        self.host_args = dict(divisor=divisor, clock_hz=SIM_CLOCK_HZ, baud=SIM_CLOCK_HZ // divisor,
                              digest=protocol.model_digest(model_bytes), name=model.name,
                              batch_depth=batch_depth, timeout=timeout)
        self.sources = [(f"{model.name}.v", generated.verilog),
                        ("sbnn_sim_top.v", simulation_verilog(model.name, self.info, self.host_args)),
                        ("board_bridge.cpp", testbench_sources().joinpath("board_bridge.cpp").read_text())]
        self.divisor, self.timeout = divisor, timeout
        key = hashlib.sha256(version("verilator").encode())
        for name, text in self.sources:
            key.update(name.encode() + b"\0" + text.encode() + b"\0")
        self.folder = Path(cache or default_cache()) / f"bridge-{model.name}-{key.hexdigest()[:16]}"
        self.process = None
        self.url = None
        self._progress = progress or (lambda message: None)

    @property
    def executable(self):
        return self.folder / "sbnn_bridge"

    def build(self):
        """Build unless cached; returns True if it built."""
        if self.executable.exists():
            return False
        program = configure("verilator")
        self._progress("building the board simulation (Verilator)")
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".bridge-", dir=self.folder.parent))
        try:
            for name, text in self.sources:
                (scratch / name).write_text(text)
            command = [program, "--cc", "--exe", "--build", "-Wno-fatal", "-Wno-lint", "-Wno-style",
                       "--top-module", "sbnn_sim_top", "-j", str(os.cpu_count() or 1), "-o", "sbnn_bridge",
                       "--Mdir", "obj_dir", "-MAKEFLAGS", "OPT_FAST=-O1 OPT_SLOW=-O0",
                       *[name for name, _ in self.sources]]
            result = subprocess.run(command, capture_output=True, text=True, cwd=scratch)
            built = scratch / "obj_dir" / "sbnn_bridge"
            if result.returncode != 0 or not built.exists():
                lines = [l for l in (result.stdout + result.stderr).splitlines() if "rror" in l][:8]
                raise ToolError(f"verilator: building the board simulation failed: {' | '.join(lines)}")
            final = scratch / "final"
            final.mkdir()
            shutil.move(str(built), final / "sbnn_bridge")
            try:
                os.rename(final, self.folder)
            except OSError:
                if not self.executable.exists():
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return True

    def start(self, port=0):
        """Start the simulation listening on ``port`` (0: any free one); returns the pyserial URL."""
        self.build()
        self.process = subprocess.Popen([str(self.executable), str(self.divisor), str(port),
                                         str(2 * self.timeout + 1000)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise ToolError(f"board simulation: expected 'listening on', found {line.strip()!r}")
        self.url = "socket://" + line.split()[-1]
        return self.url

    def stop(self):
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

"""Generated cores kept by content, so that simulating a model again starts at its simulator.

Generating the Verilog of a 28x28 CNN core takes 20 to 40 s, as long as a fifth of simulating the
whole Fashion-MNIST test set through it. :func:`generated_core` keeps each generated core (its
Verilog and its generation report) in the simulation cache, keyed by the model's bytes, the
generator's options, the tools' versions and the generator's code (:mod:`sbnn_hdl.digests`), so
that a second run of the same model is served at once and a changed generator generates anew.
"""

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from .. import __version__, modelfile
from ..digests import generator_digest, tool_versions
from ..gateware.verilog import GeneratedCore, generate_verilog
from .bulk import default_cache

__all__ = ["generated_core"]


def generated_core(model, *, cache=None, **options):
    """:func:`~sbnn_hdl.gateware.verilog.generate_verilog` of ``model`` with ``options``, served
    from ``cache`` (default :func:`~sbnn_hdl.simulation.bulk.default_cache`) when it was generated
    before. A core served from the cache has its ``verilog`` and ``report`` only (``core`` is
    ``None``). Raises what :func:`generate_verilog` raises, before anything is written."""
    text = json.dumps([hashlib.sha256(modelfile.dumps(model)).hexdigest(), sorted(options.items()),
                       __version__, tool_versions(), generator_digest()])
    folder = Path(cache or default_cache()) / f"verilog-{model.name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    if (folder / "report.json").exists():
        return GeneratedCore((folder / "core.v").read_text(), json.loads((folder / "report.json").read_text()), None)
    generated = generate_verilog(model, **options)
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        (scratch / "core.v").write_text(generated.verilog)
        (scratch / "report.json").write_text(json.dumps(generated.report))
        try:
            scratch.rename(folder)  # atomic: a half-written entry is never served
        except OSError:
            pass  # another process stored the same core first
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return generated

"""The hardware sweep's builds as tasks of a Dask distributed cluster (``bench hardware --cluster``).

:func:`builds` is the executor that :func:`sbnn_hdl.sweep.sweep` uses instead of its local process
pool when given a scheduler's address: each build (one model file on one datapath, measured by
the function the sweep hands over, pickled by name) becomes one task. A task carries the model
file's bytes, its file name and the build options, so a worker needs only the project's pip
install, no shared filesystem; it answers with the figures of :func:`sbnn_hdl.sweep.measure` and
the text of the tools' logs, which are written into the local logs folder here. The caller caches
the figures as it caches the local pool's.

Faults: a task that raises other than :class:`~sbnn_hdl.errors.SbnnError` is run again up to
``retries`` times (Dask's ``retries``); a task whose worker dies is run again on another worker
as often as the scheduler's ``distributed.scheduler.allowed-failures`` allows (default 3). A task
that fails past those bounds, or fails with an :class:`~sbnn_hdl.errors.SbnnError` (a tool's
error: the same on every worker, so not retried), comes back as a failure, ``{"failed": message,
"log_tail": lines}``, never as a result. For a task whose last worker died, the lines are what
its workers sent the scheduler's event log (the task's key is the topic), so they survive the
workers: the worker of each attempt, and the last :data:`TAIL_LINES` lines of the tools' logs,
sent every :data:`TAIL_SECONDS`. Dask is imported when a cluster is used, not with this module:
the local pool needs none.
"""

import tempfile
import threading
import time
import uuid
from pathlib import Path

from ._files import write_atomic
from .errors import InputError, SbnnError

__all__ = ["connect", "builds", "build", "TAIL_LINES", "TAIL_SECONDS", "STATUS_SECONDS"]

#: Lines of a build's logs that its worker keeps sending to the scheduler, for a failure report.
TAIL_LINES = 20
#: Seconds between two such reports. The scheduler keeps every report of a task until it stops:
#: every 30 s, an hour of nextpnr's routing is 120 reports of 20 lines, not thousands.
TAIL_SECONDS = 30.0
#: Seconds between two progress reports of :func:`builds` (running, queued).
STATUS_SECONDS = 2.0


def connect(address, timeout):
    """A :class:`distributed.Client` of the scheduler at ``address`` (``tcp://host:port``), or
    :class:`InputError` (a one-line message) when none answers within ``timeout`` seconds."""
    where = f"--cluster {address}"
    try:
        from distributed import Client
        from distributed.comm import parse_address
        from distributed.comm.registry import get_backend
    except ModuleNotFoundError as error:
        raise InputError(where, "Dask distributed installed (pip install sbnn-hdl[cluster])",
                         f"no module {error.name!r}") from None
    try:
        # Checked before a Client exists: one that fails on its address complains again when collected.
        get_backend(parse_address(address)[0])
    except ValueError as error:
        raise InputError(where, "a scheduler address such as tcp://host:8786", str(error)) from None
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as error:  # connection refused, unknown host, no answer in time
        found = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(where, f"a Dask scheduler answering within {timeout:g} s", f"none ({found})") from None


def _tail(folder):
    """The last :data:`TAIL_LINES` lines of the logs in ``folder``, the most recently written last."""
    lines = []
    for log in sorted(Path(folder).iterdir(), key=lambda f: f.stat().st_mtime):
        lines += [f"{log.name}: {line}" for line in log.read_text(errors="replace").splitlines()[-TAIL_LINES:]]
    return lines[-TAIL_LINES:]


def build(measure, environment, expected, model_bytes, name, arch, options, topic, tail_seconds=TAIL_SECONDS):
    """Runs on a worker: ``measure(path, arch, logs=folder, **options)`` of the model file
    ``model_bytes``, written as ``name`` in a scratch folder (the file name is the result's label).
    Returns ``{"result": figures, "logs": {file name: text}}``, or ``{"failed": message, "logs":
    ...}`` for an :class:`SbnnError`; ``file`` in the figures is the scratch file's. ``expected``
    is the client's ``environment()`` (for the sweep its tool versions and generator, which its
    cache key holds): a worker whose own differs refuses, as its figures would be cached under a
    key that does not describe them. While it runs, the logs' last lines go to the scheduler's
    event log under ``topic`` every ``tail_seconds`` (see :func:`builds`)."""
    from distributed import get_worker

    worker = get_worker()
    found = environment()
    if found != expected:
        differ = sorted(k for k in expected if found.get(k) != expected[k])
        return {"failed": f"worker {worker.address}: expected the client's {' and '.join(differ)} "
                          f"{[expected[k] for k in differ]}, found {[found.get(k) for k in differ]}", "logs": {}}
    worker.log_event(topic, {"kind": "start", "lines": [f"started {name} ({arch}) on {worker.address}"]})
    with tempfile.TemporaryDirectory(prefix="sbnn-cluster-") as folder:
        path, logs = Path(folder) / name, Path(folder) / "logs"
        path.write_bytes(model_bytes)
        logs.mkdir()
        stop = threading.Event()

        def report():
            sent = None
            while not stop.wait(tail_seconds):
                lines = _tail(logs)
                if lines and lines != sent:
                    worker.log_event(topic, {"kind": "tail", "lines": lines})
                    sent = lines

        reporter = threading.Thread(target=report, daemon=True)
        reporter.start()
        try:
            outcome = {"result": measure(path, arch, logs=logs, **options)}
        except SbnnError as error:
            outcome = {"failed": str(error)}
        finally:
            stop.set()
            reporter.join()
        outcome["logs"] = {log.name: log.read_text(errors="replace") for log in logs.iterdir()}
    return outcome


def _last_lines(client, topic):
    """What the workers of a task's attempts sent (see :func:`build`): a line per attempt naming
    its worker, then the last log lines of the last attempt, if it sent any."""
    events = [message for _, message in client.get_events(topic)]
    starts = [line for message in events if message["kind"] == "start" for line in message["lines"]]
    # The messages come back through msgpack: lists as tuples.
    return starts + (list(events[-1]["lines"]) if events and events[-1]["kind"] == "tail" else [])


def builds(address, jobs, measure, options, *, environment, logs=None, timeout=10, retries=2, status=None,
           tail_seconds=TAIL_SECONDS):
    """Run the builds ``jobs`` (``(path, arch)`` pairs) on the cluster at ``address``, each a
    :func:`build` of ``measure`` (:func:`sbnn_hdl.sweep.measure`) with ``options``, checked
    against ``environment``, sending its logs' last lines every ``tail_seconds``; yields ``(index
    in jobs, outcome)`` as they finish: the figures (``file`` being ``path``), or a failure (see
    the module docstring). The tools' logs are written into ``logs`` as the local pool's builds
    write them. ``status(running, queued)`` is called every :data:`STATUS_SECONDS` while builds
    are left: running, the builds that a worker is executing; queued, the others left. An
    unreachable scheduler is an :class:`InputError` (see :func:`connect`), raised before any
    build."""
    expected = environment()
    with connect(address, timeout) as client:
        futures = {}
        for index, (path, arch) in enumerate(jobs):
            # A new key for every sweep: a key the scheduler still remembers from an earlier sweep
            # (pure=True) would hand back that result instead of building again.
            key = f"sbnn-build-{Path(path).stem}-{arch}-{uuid.uuid4().hex[:12]}"
            future = client.submit(build, measure, environment, expected, Path(path).read_bytes(), Path(path).name,
                                   arch, options, key, tail_seconds, key=key, retries=retries, pure=False)
            futures[future] = index
        pending, reported = set(futures), time.monotonic()
        while pending:
            for future in [future for future in pending if future.done()]:
                pending.discard(future)
                index = futures[future]
                yield index, _outcome(client, future, jobs[index][0], logs)
            if pending and status and time.monotonic() - reported >= STATUS_SECONDS:
                # Not the scheduler's "processing": that counts the tasks a worker holds queued too.
                executing = {key for keys in client.run(_executing, on_error="ignore").values() for key in keys}
                running = sum(future.key in executing for future in pending)
                status(running, len(pending) - running)
                reported = time.monotonic()
            time.sleep(0.1 if pending else 0)


def _executing(dask_worker):
    """Runs on each worker (:meth:`distributed.Client.run`): the keys of the tasks it executes."""
    return [task.key for task in dask_worker.state.executing]


def _outcome(client, future, path, logs):
    """What the finished task ``future`` of the model file ``path`` yields (see :func:`builds`)."""
    if future.status == "finished":
        outcome = future.result()
        if logs is not None:
            for name, text in outcome["logs"].items():
                write_atomic(Path(logs) / name, text.encode())
        if "failed" in outcome:
            lines = [line for text in outcome["logs"].values() for line in text.splitlines()]
            return {"failed": outcome["failed"], "log_tail": lines[-TAIL_LINES:]}
        result = outcome["result"]
        result["file"] = str(path)
        return result
    error = future.exception() if future.status == "error" else None
    message = f"{type(error).__name__}: {error}" if error is not None else f"the task was {future.status}"
    return {"failed": " ".join(message.split()), "log_tail": _last_lines(client, future.key)}

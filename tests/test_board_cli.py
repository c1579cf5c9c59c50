"""python -m sbnn_hdl.board: what it says when there is no board, no tool or no bitstream, and how it
prints the on-board figures of an odd run."""

import re
import stat

from sbnn_hdl.board.__main__ import main


def _fake_loader(tmp_path, output, status):
    script = tmp_path / "openFPGALoader"
    script.write_text(f"#!/bin/sh\necho '{output}' >&2\nexit {status}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_program_without_openfpgaloader(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENFPGALOADER", str(tmp_path / "nowhere" / "openFPGALoader"))
    assert main(["program", "examples/digits.sbnn"]) == 2
    err = capsys.readouterr().err
    assert "expected openFPGALoader on PATH, found none; install it with 'sudo apt-get install openfpgaloader'" in err


def test_program_without_a_board(tmp_path, monkeypatch, capsys):
    bit = tmp_path / "x.bit"
    bit.write_bytes(b"\xff" * 16)
    monkeypatch.setenv("OPENFPGALOADER", _fake_loader(tmp_path, "unable to open ftdi device: -4 (usb_open() failed)", 1))
    assert main(["program", str(bit)]) == 2
    err = capsys.readouterr().err
    assert "sbnn_hdl.board: error: no ULX3S (Radiona) found by openFPGALoader: is it plugged in" in err
    assert "unable to open ftdi device" in err


def test_program_runs_the_loader_for_the_board(tmp_path, monkeypatch, capsys):
    bit = tmp_path / "x.bit"
    bit.write_bytes(b"\xff" * 16)
    monkeypatch.setenv("OPENFPGALOADER", _fake_loader(tmp_path, "Done", 0))
    assert main(["program", str(bit), "--flash"]) == 0
    captured = capsys.readouterr()
    assert f"openFPGALoader -b ulx3s -f {bit}" in captured.err
    assert main(["program", str(tmp_path / "missing.bit")]) == 2
    assert "expected a bitstream (build one with python -m sbnn_hdl.generate MODEL --board ulx3s)" in capsys.readouterr().err


def test_run_without_a_port(capsys):
    assert main(["run", "--port", "/dev/nonexistent-tty", "--model", "examples/digits.sbnn",
                 "--inputs", "examples/digits_x.npy"]) == 2
    assert "error: --port /dev/nonexistent-tty: cannot open it" in capsys.readouterr().err


def test_run_refuses_a_json_file_in_a_missing_folder_before_running(tmp_path, capsys):
    missing = tmp_path / "no" / "run.json"
    assert main(["run", "--port", "/dev/nonexistent-tty", "--model", "examples/digits.sbnn",
                 "--inputs", "examples/digits_x.npy", "--json", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err == (f"sbnn_hdl.board: error: --json {missing}: expected an existing folder for it, "
                   f"found no {missing.parent}\n")


def test_help_lists_the_subcommands():
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "sbnn_hdl.board", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: python -m sbnn_hdl.board" in result.stdout
    for job in ("run", "check", "program", "simulate"):
        assert job in result.stdout


def test_figures_of_an_odd_run_say_what_they_saw():
    """What the table says when the counters disagree with each other or with INFO, for a batch
    of one (no rate once full), and for a serial port (what its round trips include)."""
    from sbnn_hdl.board.client import board_figures, describe_link, format_figures
    from sbnn_hdl.board.protocol import Info
    info = Info(1, False, 256, 32, 10, 0, 23, 50_000_000, 3_000_000, 512, bytes(8), "digits")
    link = describe_link("/dev/ttyUSB0", info)
    assert link == ("the serial port /dev/ttyUSB0 (3 Mbaud, 10 bits a byte): the UART, the USB-serial adapter's "
                    "latency and the operating system")
    figures = board_figures(info, kind="INFER", cycles=[24, 24, 23], times=[0.002, 0.001, 0.003],
                            run={"count": 1, "cycles": 24, "load_times": [0.001], "time": 0.002}, link=link)
    assert figures["on_chip"]["INFER"] == {"latency_cycles": 24, "latency_ns": 480.0, "latency_cycles_seen": [23, 24],
                                           "info_latency_cycles": 23, "from": "the sample into the core"}
    assert figures["on_chip"]["RUN"] == {"samples": 1, "cycles": 24, "cycles_per_sample": None, "samples_per_s": None,
                                         "samples_per_s_with_fill": 2083333.3}
    # 32 + 5 payload bytes and 14 of framing, 10 bits each at 3 Mbaud
    assert figures["host"]["INFER"] == {"requests": 3, "round_trip_ms": {"median": 2.0, "p99": 2.98, "min": 1.0,
                                                                          "max": 3.0},
                                        "uart_ms": 0.17, "samples_per_s": 500.0}
    text = format_figures(figures)
    assert "on-board figures (clock 50 MHz, as INFO reports it):" in text
    assert "24 cycles = 480 ns from the sample into the core (counters read 23, 24) (INFO says 23)" in text
    assert re.search(r"^throughput +on chip +RUN of 1 +1 sample in 24 cycles = 2.08 M samples/s with the fill$",
                     text, re.M)
    assert "median 2.000 ms, p99 2.980, min 1.000, max 3.000 (its bytes on the line: 0.170 ms)" in text
    assert text.endswith("includes the serial port /dev/ttyUSB0 (3 Mbaud, 10 bits a byte): the UART, the USB-serial "
                         "adapter's latency and the operating system.")

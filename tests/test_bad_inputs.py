"""A corpus of bad inputs walked over every command: each gives one line on stderr naming the
problem, exit code 2, and no traceback (in-process, as the console entry point runs them)."""

import json
import os

import pytest
from typer.testing import CliRunner

from edgekd.cli.app import app
from edgekd.convert.onnx import to_onnx
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.models.io import save_checkpoint


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    model = build_model(ArchSpec(width=0.25, depth=1), 3, 3)
    onnx = to_onnx(model, d / "m.onnx", [1, 3, 16, 16])
    ckpt = d / "m.pt"
    save_checkpoint(ckpt, model, classes=["a", "b", "c"], bands=list("RGB"), image_size=16, dataset="random",
                    role="student")
    text = d / "notes.pt"
    text.write_text("these are my notes, not a checkpoint\n")
    garbage = d / "garbage.onnx"
    garbage.write_bytes(b"\x08\x01garbage" * 10)
    ro = d / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    bad_run = d / "bad_run"
    bad_run.mkdir()
    (bad_run / "report.json").write_text("{not json")
    wrong_run = d / "wrong_run"
    wrong_run.mkdir()
    (wrong_run / "report.json").write_text(json.dumps({"schema_version": 2, "hello": "world"}))
    token = d / "token"
    token.write_text("t0ken-for-tests-0123456789abcdef")
    token.chmod(0o600)
    yield {"d": d, "onnx": onnx, "ckpt": ckpt, "text": text, "garbage": garbage, "ro": ro, "bad_run": bad_run,
           "wrong_run": wrong_run, "token": token}
    ro.chmod(0o755)


CASES = {
    # profile
    "profile: a text file as a checkpoint": ["profile", "{text}", "--no-memory"],
    "profile: a file that is no ONNX model": ["profile", "{garbage}", "--no-memory"],
    "profile: a missing model": ["profile", "{d}/missing.onnx"],
    "profile: an unknown runtime": ["profile", "{onnx}", "--runtime", "onnxrun"],
    "profile: a malformed shape": ["profile", "{onnx}", "--shape", "1,x,16"],
    "profile: a shape the model cannot take": ["profile", "{onnx}", "--shape", "1,5,16,16", "--no-memory",
                                               "--runs", "1", "--min-seconds", "0", "--no-cache"],
    "profile: a read-only --json": ["profile", "{onnx}", "--no-memory", "--runs", "1", "--min-seconds", "0",
                                    "--json", "{ro}/out.json", "--no-cache"],
    "profile: a read-only --cache-dir": ["profile", "{onnx}", "--no-memory", "--runs", "1", "--min-seconds", "0",
                                         "--cache-dir", "{ro}/cache"],
    "profile: a --json that is a folder": ["profile", "{onnx}", "--no-memory", "--runs", "1", "--min-seconds", "0",
                                           "--json", "{d}", "--no-cache"],
    "profile: an unknown target": ["profile", "{onnx}", "--target", "jetsn"],
    "profile: an unknown energy meter": ["profile", "{onnx}", "--energy-meter", "wattmeter"],
    # export
    "export: a text file as a checkpoint": ["export", "{text}", "--out", "{d}/e1"],
    "export: a read-only --out": ["export", "{ckpt}", "--out", "{ro}/exports"],
    "export: an unknown format": ["export", "{ckpt}", "--out", "{d}/e2", "--formats", "onnx,tflite"],
    "export: a missing checkpoint": ["export", "{d}/nothing.pt", "--out", "{d}/e3"],
    # predict
    "predict: an unknown runtime": ["predict", "{onnx}", "--runtime", "tensorrtx"],
    "predict: an unknown precision": ["predict", "{onnx}", "--precision", "int3"],
    "predict: a file that is no ONNX model": ["predict", "{garbage}"],
    "predict: a read-only --json": ["predict", "{onnx}", "--json", "{ro}/p.json"],
    # benchmark
    "benchmark: a missing source": ["benchmark", "{d}/no-run"],
    "benchmark: a malformed --device-url": ["benchmark", "{onnx}", "--device-url", "http//board:8765",
                                            "--device-token-file", "{token}"],
    "benchmark: a device URL of another scheme": ["benchmark", "{onnx}", "--device-url", "ftp://board:8765",
                                                  "--device-token-file", "{token}"],
    "benchmark: a read-only --out": ["benchmark", "{onnx}", "--targets", "cpu", "--runs", "1", "--min-seconds", "0",
                                     "--out", "{ro}/bench"],
    # report
    "report: a folder without a run": ["report", "{d}"],
    "report: a report.json that is not JSON": ["report", "{bad_run}"],
    "report: a report.json of another shape": ["report", "{wrong_run}"],
    # optimize
    "optimize: a read-only --out": ["optimize", "--preset", "smoke", "--out", "{ro}/run"],
    "optimize: a missing data folder": ["optimize", "--preset", "smoke", "--data", "{d}/no-data", "--out", "{d}/r1"],
    "optimize: a malformed --device-url": ["optimize", "--preset", "smoke", "--device-url", "board:8765",
                                           "--device-token-file", "{token}", "--out", "{d}/r2"],
    "optimize: a text file as the teacher": ["optimize", "--preset", "smoke", "--teacher", "{text}", "--out",
                                             "{d}/r3"],
    "optimize: a NaN budget": ["optimize", "--preset", "smoke", "--budget-ms", "nan", "--out", "{d}/r4"],
    "optimize: a config file that is not YAML": ["optimize", "--config", "{garbage}", "--out", "{d}/r5"],
    # paths under a file (refused even for root, who writes into read-only folders)
    "profile: a --json under a file": ["profile", "{onnx}", "--no-memory", "--runs", "1", "--min-seconds", "0",
                                       "--json", "{text}/out.json", "--no-cache"],
    "profile: a --cache-dir under a file": ["profile", "{onnx}", "--no-memory", "--runs", "1", "--min-seconds", "0",
                                            "--cache-dir", "{text}/cache"],
    "export: an --out under a file": ["export", "{ckpt}", "--out", "{text}/exports"],
    "benchmark: an --out under a file": ["benchmark", "{onnx}", "--targets", "cpu", "--runs", "1", "--min-seconds",
                                         "0", "--out", "{text}/bench"],
    "optimize: an --out under a file": ["optimize", "--preset", "smoke", "--out", "{text}/run"],
    # calibrate, targets, agent
    "calibrate: an unknown target": ["calibrate", "--target", "jetsn"],
    "targets: an unknown target": ["targets", "show", "jetsn"],
    "agent: a missing token file": ["agent", "--token-file", "{d}/no-token"],
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_exit_2(name, files):
    if os.geteuid() == 0 and "read-only" in name:
        pytest.skip("root writes into read-only folders")
    args = [a.format(**files) for a in CASES[name]]
    result = CliRunner().invoke(app, args)
    err = result.stderr.strip()
    assert result.exit_code == 2, f"{name}: exit {result.exit_code}\n{result.stdout}\n{err}\n{result.exception!r}"
    assert "Traceback" not in err and "Traceback" not in result.stdout
    assert err.startswith("error:") or "Invalid value" in err or "Error" in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) <= 1 or "Usage:" in err, f"{name}: {len(lines)} lines:\n{err}"  # typer's usage panel aside
    assert not (files["d"] / "r1").exists() and not (files["d"] / "e2").exists()  # nothing half-written

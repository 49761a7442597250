"""Reports from a real run's report.json: every section, the numbers of the JSON, the schema,
the command that regenerates them, and a render in headless Chromium."""

import json
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from edgekd.report import Report, plots
from edgekd.report.html import render_html, summary
from edgekd.report.markdown import render_markdown
from edgekd.report.schema import SCHEMA_FILE, schema_text

from ..conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(smoke_run: Path) -> dict:
    return json.loads((smoke_run / "report.json").read_text())


def test_shipped_schema_is_the_one_the_model_generates():
    assert SCHEMA_FILE.read_text() == schema_text(), "run: python -m edgekd.report.schema"


def test_report_json_validates_against_the_shipped_schema(report):
    schema = json.loads(resources.files("edgekd.report").joinpath("report.schema.json").read_text())
    jsonschema.validate(report, schema)
    broken = json.loads(json.dumps(report))
    broken["candidates"][0]["measurement"]["source"]["latency"] = "guessed"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    broken = json.loads(json.dumps(report))
    broken["trials"][0]["status"] = "screened out: p90 too high"  # states are an enum, not prose
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_report_paths_resolve_from_the_run_directory(smoke_run, report, tmp_path):
    paths = [report["teacher"]["checkpoint"]] + [e["path"] for e in report["exports"]]
    paths += [p for c in report["candidates"] for p in (c["checkpoint"], c["onnx"])]
    for p in paths:
        assert not Path(p).is_absolute() and (smoke_run / p).is_file(), p
    moved = tmp_path / "moved"  # a moved run directory still works: benchmark reads its exports
    shutil.copytree(smoke_run, moved)
    proc = run_cli("benchmark", str(moved), "--targets", "jetson", "--out", str(tmp_path / "b"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "b" / "benchmark.json").read_text())
    assert all(r["size_mb"] for r in rows)


def test_html_has_every_section_and_the_json_numbers(report):
    page = render_html(Report.model_validate(report))
    for section in ("summary", "plots", "candidates", "exports", "config"):
        assert f'id="{section}"' in page
    for plot in ("pareto", "latency", "hardware_cost", "energy", "training"):
        assert re.search(rf'id="plot-{plot}"><img alt="[^"]+" src="data:image/png;base64,', page)
    assert "http://" not in page and "https://" not in page and "<script" not in page  # self-contained
    s = summary(Report.model_validate(report))
    assert s.selected == report["selected"]
    best = next(c for c in report["candidates"] if c["name"] == report["selected"])
    assert f"{best['val_accuracy']:.3f}" in page and f"{report['teacher']['val_accuracy']:.3f}" in page
    assert f"{best['measurement']['latency_ms']['p90']:.3f}" in page
    assert "Data set: synthetic" in page
    for e in report["exports"]:
        assert f"{e['parity']['top1_agreement']:.4f}" in page
    assert report["software"]["onnxruntime"] in page


def test_predicted_runs_say_so_at_the_top(report):
    pred = json.loads(json.dumps(report))
    pred["measurement"] = {"mode": "predicted", "runtime": "tensorrt", "how": "PREDICTED by the device model"}
    page = render_html(Report.model_validate(pred))
    assert page.index("PREDICTED by the device model") < page.index('id="summary"')
    assert render_markdown(Report.model_validate(pred)).splitlines()[2].startswith("> **Latency, memory and energy are "
                                                                                   "PREDICTED")


def test_report_command_regenerates_and_refuses_bad_input(smoke_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    (run / "report.html").unlink()
    (run / "report.md").unlink()
    proc = run_cli("report", str(run))
    assert proc.returncode == 0, proc.stderr
    assert (run / "report.html").is_file() and (run / "report.md").is_file()
    assert run_cli("report", str(tmp_path / "nowhere")).returncode == 2
    (run / "report.json").write_text('{"schema_version": 2, "cut": ')
    bad = run_cli("report", str(run))
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr
    edited = json.loads((smoke_run / "report.json").read_text())
    edited["candidates"][0]["measurement"]["latency_ms"]["p90"] = "fast"
    (run / "report.json").write_text(json.dumps(edited))
    bad = run_cli("report", str(run))
    assert bad.returncode == 2 and "does not match the report schema at candidates.0.measurement" in bad.stderr


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)")
def test_html_renders_in_headless_chromium_without_console_errors(smoke_run, tmp_path):
    page = (smoke_run / "report.html").resolve()
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Summary" in dom.stdout and dom.stdout.count("data:image/png;base64,") == len(plots.ALL)
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    shot = tmp_path / "phone.png"
    subprocess.run(flags + ["--window-size=412,915", f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120, check=True)
    assert shot.stat().st_size > 10_000  # a page with plots, not a blank one


def test_benchmark_command_local_and_predicted_rows(smoke_run, tmp_path):
    out = tmp_path / "bench"
    proc = run_cli("benchmark", str(smoke_run), "--targets", "cpu,jetson", "--runtimes", "onnxruntime,tensorrt",
                   "--runs", "10", "--min-seconds", "0", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((out / "benchmark.json").read_text())
    by = {(r["format"], r["target"], r["runtime"]): r for r in rows}
    assert by[("onnx", "cpu", "onnxruntime")]["source"] == "measured"
    assert by[("onnx", "cpu", "onnxruntime")]["throughput_ips"] > 0
    assert by[("openvino", "cpu", "openvino")]["source"] == "measured"
    assert by[("onnx", "cpu", "tensorrt")]["reason"]  # no TensorRT here: a row with the reason
    assert by[("onnx", "jetson-orin-nano-8gb", "tensorrt")]["source"] == "predicted"
    assert "does not run openvino" in by[("openvino", "jetson-orin-nano-8gb", "openvino")]["reason"]
    exports = json.loads((smoke_run / "report.json").read_text())["exports"]
    acc = {e["format"]: e["parity"]["accuracy_export"] for e in exports}
    assert by[("onnx", "cpu", "onnxruntime")]["accuracy"] == acc["onnx"]
    assert "PREDICTED" in (out / "benchmark.md").read_text()


def test_a_hand_edited_report_cannot_inject_markup_into_the_html(report):
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    edited = json.loads(json.dumps(report))
    old = edited["selected"]
    edited["selected"] = evil
    for c in edited["candidates"]:
        if c["name"] == old:
            c["name"] = evil
    edited["target"]["name"] = evil
    edited["budget_source"] = evil
    edited["selection_reason"] = evil
    edited["dataset"]["name"] = evil
    edited["teacher"]["origin"] = evil
    edited["exports"][0]["path"] = evil
    page = render_html(Report.model_validate(edited))
    assert "<script" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown as text

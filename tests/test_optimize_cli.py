"""Integration: the real CLI on --preset smoke, and every bad input of `optimize`."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import openvino as ov
import pytest
import torch

from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.models.io import load_checkpoint, save_checkpoint

from .conftest import RSSCN7, run_cli
from .data.test_folder import make_folder

pytestmark = pytest.mark.slow


def test_smoke_run_report_has_the_promised_keys(smoke_run: Path):
    r = json.loads((smoke_run / "report.json").read_text())
    assert r["schema_version"] == 2 and r["target"]["name"] == "cpu"
    assert 0 < r["budget_ms"] < 33.3  # the teacher's p50 / 1.5 (smoke): the cpu target's 33.3 ms would not bind
    assert set(r["objective"]) >= {"lambda", "gamma", "delta"}
    ds = r["dataset"]
    assert ds["synthetic"] is True and len(ds["classes"]) == 7 and ds["sizes"]["train"] > 0
    assert 0 <= r["teacher"]["val_accuracy"] <= 1
    assert r["teacher"]["measurement"]["source"]["latency"] == "measured"
    names = [c["name"] for c in r["candidates"]]
    # the budget is relative to the teacher: a student far over it is screened out before training
    screened = [t for t in r["trials"] if t["status"] == "screened_out"]
    assert len(r["trials"]) == 3 and len(names) + len(screened) == 3 and r["selected"] in names
    assert all(t["screen"]["reason_kind"] == "latency" for t in screened) and r["selection_reason"]
    for c in r["candidates"]:
        m = c["measurement"]
        lat = m["latency_ms"]
        assert lat["n"] >= 50 and lat["p50"] <= lat["p90"] <= lat["p99"] and lat["mean"] > 0 and lat["std"] >= 0
        assert m["peak_memory_mb"] > 0 and m["model_size_mb"] > 0 and m["threads"] >= 1
        assert m["source"]["latency"] == "measured"
        # no RAPL here: the energy figure must say it is an estimate
        assert m["source"]["energy"] in ("measured", "predicted")
        assert c["params"] > 0 and c["macs"] > 0 and "val_kd_loss" in c
        assert c["penalty"] == (0.0 if c["meets_budget"] else 10.0)
        assert c["meets_budget"] == (lat["p90"] <= r["budget_ms"])
        assert c["objective"] == pytest.approx(
            c["val_kd_loss"] + r["objective"]["lambda"] * c["c_hw"] + c["penalty"]
            + r["objective"]["delta"] * (c["measurement"]["energy_mj"] or 0))
    within = [c for c in r["candidates"] if c["meets_budget"]] or r["candidates"]
    assert r["selected"] == min(within, key=lambda c: c["objective"])["name"]
    assert {e["format"] for e in r["exports"]} == {"onnx", "openvino"}
    for e in r["exports"]:
        assert e["parity"]["top1_agreement"] >= 0.99 and e["parity"]["max_abs_diff"] < 1e-3
    assert set(r["stage_seconds"]) >= {"data", "teacher", "kd_training", "profiling", "export", "total"}
    assert "onnxruntime" in r["software"] and "openvino" in r["software"]
    for f in ("config.yaml", "teacher.pt", "report.md"):
        assert (smoke_run / f).is_file()
    md = (smoke_run / "report.md").read_text()
    assert "synthetic" in md and r["selected"] in md


def test_exports_run_in_onnxruntime_and_openvino_and_match_the_student(smoke_run: Path):
    r = json.loads((smoke_run / "report.json").read_text())
    student, meta = load_checkpoint(smoke_run / "candidates" / r["selected"] / "student.pt")
    x = np.random.default_rng(0).random((3, 4, 32, 32), dtype=np.float32)
    with torch.no_grad():
        ref = student(torch.from_numpy(x)).numpy()
    paths = {e["format"]: smoke_run / e["path"] for e in r["exports"]}
    sess = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input": x})[0], ref, atol=1e-4)
    props = sess.get_modelmeta().custom_metadata_map
    assert props["classes"].split(",") == meta["classes"] and props["run_id"] == r["run_id"]
    compiled = ov.Core().compile_model(str(paths["openvino"]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    np.testing.assert_allclose(compiled([x])[0], ref, atol=1e-4)


def test_given_teacher_is_reused_and_an_impossible_budget_is_reported(smoke_run: Path, tmp_path: Path):
    out = tmp_path / "run2"
    proc = run_cli("optimize", "--preset", "smoke", "--seed", "1", "--teacher", str(smoke_run / "teacher.pt"),
                   "--budget-ms", "0.0001", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # --quiet
    r = json.loads((out / "report.json").read_text())
    first = json.loads((smoke_run / "report.json").read_text())
    assert r["teacher"]["origin"].startswith("given")
    assert r["teacher"]["val_accuracy"] == first["teacher"]["val_accuracy"]
    # the same teacher bytes on the same target and runtime: answered by the measurement cache
    # (unless the host was contended while it was measured: such a figure is measured again)
    tm = r["teacher"]["measurement"]
    if not first["teacher"]["measurement"]["conditions"]["contended"]:
        assert tm["source"]["latency"] == "cached" and tm["cached_from"]
        assert tm["latency_ms"] == first["teacher"]["measurement"]["latency_ms"]
        assert tm["source"]["energy"] == "predicted"  # a cached estimate is still an estimate
    else:
        assert tm["source"]["latency"] == "measured"
    assert all(c["penalty"] == 10.0 and not c["meets_budget"] for c in r["candidates"])
    assert r["selection_reason"].startswith("no candidate meets the 0.0001 ms budget")
    assert r["selected"] == min(r["candidates"], key=lambda c: c["objective"])["name"]
    assert "**no**" in (out / "report.md").read_text()


@pytest.mark.skipif(not RSSCN7.is_dir(), reason="real data ../shared/data/rsscn7-64 is not present")
def test_real_image_folder_run(tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_samples_per_class: 20\ncandidates:\n  - {width: 0.25, depth: 1}\n  - {width: 0.5, depth: 1}\n")
    proc = run_cli("optimize", "--preset", "smoke", "--data", str(RSSCN7), "--config", str(cfg),
                   "--out", str(tmp_path / "run"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "run" / "report.json").read_text())
    assert r["dataset"]["synthetic"] is False and r["dataset"]["classes"][0] == "Field"
    assert r["dataset"]["sizes"]["train"] + r["dataset"]["sizes"]["val"] == 140
    assert r["dataset"]["subsampled"].startswith(f"at most 20 images per class of {RSSCN7}, at 32 px")
    assert "Data subsampled: at most 20 images per class" in (tmp_path / "run" / "report.md").read_text()
    assert len(r["trials"]) == 2 and r["candidates"]  # (one may be screened out by the teacher-relative budget)


def _foreign_teacher(path: Path) -> Path:
    m = build_model(ArchSpec(width=0.25, depth=1), 3, 2)
    save_checkpoint(path, m, classes=["x", "y"], bands=["R", "G", "B"], image_size=32, dataset="other", role="teacher")
    return path


BAD_INPUTS = {
    "unknown target": (lambda d: ["--target", "toaster"], "unknown target 'toaster'"),
    "zero budget": (lambda d: ["--budget-ms", "0"], "--budget-ms"),
    "negative budget": (lambda d: ["--budget-ms", "-5"], "positive"),
    "missing data": (lambda d: ["--data", str(d / "nowhere")], "does not exist"),
    "empty data": (lambda d: ["--data", str(d / "empty").strip()], "no class sub-folders"),
    "unreadable class": (lambda d: ["--data", str(d / "badclass")], "has no readable images"),
    "garbage teacher": (lambda d: ["--teacher", str(d / "garbage.pt")], "cannot be read safely"),
    "foreign teacher": (lambda d: ["--teacher", str(d / "foreign.pt")], "trained on classes"),
    "unwritable out": (lambda d: ["--out", "/sys/edgekd-run"], "cannot write"),
    "out under a file": (lambda d: ["--out", str(d / "garbage.pt" / "run")], "file"),
}


@pytest.fixture()
def bad_inputs(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    make_folder(tmp_path / "badclass")
    (tmp_path / "badclass" / "Void").mkdir()
    (tmp_path / "badclass" / "Void" / "x.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "garbage.pt").write_bytes(b"\x00" * 64)
    _foreign_teacher(tmp_path / "foreign.pt")
    return tmp_path


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_one_line_exit_2_and_existing_run_untouched(bad_inputs: Path, case: str):
    args_of, message = BAD_INPUTS[case]
    args = args_of(bad_inputs)
    run_dir = bad_inputs / "existing-run"
    run_dir.mkdir()
    (run_dir / "report.json").write_text('{"keep": true}')
    if "--out" not in args:
        args += ["--out", str(run_dir), "--overwrite"]
    proc = run_cli("optimize", "--preset", "smoke", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert (run_dir / "report.json").read_text() == '{"keep": true}'
    assert sorted(p.name for p in run_dir.iterdir()) == ["report.json"]


def test_existing_run_directory_is_not_overwritten_without_flag(tmp_path: Path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "teacher.pt").write_text("precious")
    proc = run_cli("optimize", "--preset", "smoke", "--out", str(run_dir))
    assert proc.returncode == 2 and "already holds files" in proc.stderr and "--overwrite" in proc.stderr
    assert (run_dir / "teacher.pt").read_text() == "precious"


def test_help_explains_the_options():
    proc = run_cli("optimize", "--help")
    assert proc.returncode == 0
    for flag in ("--target", "--data", "--teacher", "--budget-ms", "--lambda", "--gamma", "--delta", "--preset",
                 "--out", "--seed", "--config"):
        assert flag in proc.stdout
    assert shutil.which("edgekd") is None or run_cli("--version").stdout.startswith("edgekd ")


def test_int8_and_qat_are_search_dimensions_kept_only_when_faster(tmp_path: Path):
    out = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("candidates:\n  - {width: 0.5, depth: 1}\nprecisions: [fp32, int8, int8-qat]\n"
                   "export_formats: [onnx, openvino]\nbudget_ms: 0.0001\nscreen: false\nqat_epochs: 1\n")
    proc = run_cli("optimize", "--preset", "smoke", "--config", str(cfg), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "report.json").read_text())
    by = {c["name"]: c for c in r["candidates"]}
    assert set(by) == {"w0.5-d1-e2-k3", "w0.5-d1-e2-k3@int8", "w0.5-d1-e2-k3@int8-qat"}
    q = by["w0.5-d1-e2-k3@int8"]
    assert q["precision"] == "int8" and q["measurement"]["precision"] == "int8"
    assert q["onnx"].endswith(".int8.onnx") and q["measurement"]["source"]["latency"] == "measured"
    # scored with its own post-quantization accuracy, not the FP32 student's
    assert q["val_kd_loss"] != by["w0.5-d1-e2-k3"]["val_kd_loss"]
    qat = by["w0.5-d1-e2-k3@int8-qat"]
    assert qat["onnx"].endswith(".int8-qat.onnx") and qat["measurement"]["precision"] == "int8"
    assert qat["checkpoint"].endswith("rung0.qat.pt") and (out / qat["checkpoint"]).is_file()
    assert "qat_training" in r["stage_seconds"]
    # the precision record: every precision with its measured figures, kept iff faster than FP32
    [choice] = r["precisions"]
    tried = {t["precision"]: t for t in choice["tried"]}
    assert set(tried) == {"fp32", "int8", "int8-qat"}
    for p in ("int8", "int8-qat"):
        t, ref = tried[p], tried["fp32"]
        faster = (t["latency_ratio"] < ref["latency_ratio"] if t["latency_ratio"] and ref["latency_ratio"]
                  else t["p50_ms"] < ref["p50_ms"])
        assert t["kept"] == faster
        assert (by[f"w0.5-d1-e2-k3@{p}"]["status"] == "slower_than_fp32") == (not faster)
        assert f"{p} {'kept' if faster else 'dropped'}" in choice["reason"]
        if not faster:
            assert r["selected"] != f"w0.5-d1-e2-k3@{p}"
    assert "## Precisions" in (out / "report.md").read_text()
    assert 'id="precisions"' in (out / "report.html").read_text()
    if r["selected"].endswith("@int8"):  # the INT8 student is what ships: its INT8 file is exported
        assert any(e["precision"] == "int8" for e in r["exports"])


def test_a_selected_qat_student_ships_its_fake_quantized_model(tmp_path: Path):
    """The export stage's choice for an int8-qat selection: the fake-quantized model, in the QAT
    formats in place of the float ones."""
    from types import SimpleNamespace

    from edgekd.console import ConsoleObserver
    from edgekd.convert.qat import is_fake_quantized
    from edgekd.pipeline.stages import _export_model_and_formats
    from edgekd.search.candidates import Candidate

    out = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("candidates:\n  - {width: 0.25, depth: 1}\nprecisions: [int8-qat]\nexport_formats: [onnx]\n"
                   "budget_ms: 100\nscreen: false\nqat_epochs: 1\nbaseline: false\n")
    proc = run_cli("optimize", "--preset", "smoke", "--config", str(cfg), "--out", str(out), "--quiet")
    r = json.loads((out / "report.json").read_text()) if proc.returncode == 0 else None
    if r is None:  # measured no faster than FP32 and FP32 not searched: a clear error, nothing selected
        assert proc.returncode == 2 and "search fp32 too: --precisions fp32,int8-qat" in proc.stderr, proc.stderr
    else:
        assert r["selected"] == "w0.25-d1-e2-k3@int8-qat"
        assert [e["format"] for e in r["exports"]] == ["onnx-int8-qat"]
    cand = Candidate.model_validate(_qat_candidate(out))
    plan = SimpleNamespace(run_dir=out, export_formats=["onnx", "openvino", "tensorrt-fp16"],
                           input_shape=[1, 4, 32, 32])
    model, formats = _export_model_and_formats(plan, cand, ConsoleObserver(quiet=True))
    assert is_fake_quantized(model) and formats == ["onnx-int8-qat", "openvino-int8-qat"]


def _qat_candidate(run_dir: Path) -> dict:
    """A QAT candidate's record rebuilt from its rung file (the run stopped before report.json)."""
    rung = json.loads((run_dir / "candidates" / "w0.25-d1-e2-k3" / "rung0-int8-qat.json").read_text())
    return {**rung, "name": "w0.25-d1-e2-k3@int8-qat", "precision": "int8-qat",
            "arch": {"width": 0.25, "depth": 1}, "params": 1, "macs": 1, "status": "finished",
            "checkpoint": "candidates/w0.25-d1-e2-k3/rung0.qat.pt"}


def test_a_log_file_shows_steady_progress(smoke_run: Path):
    """Off a terminal (stdout piped to a file) there are no progress bars: every message has a
    timestamp, each epoch of the teacher and of each candidate is a line, each evaluated
    candidate a line with its accuracy, p90 and J, and the last line names report.html."""
    lines = (smoke_run.parent / "stdout.log").read_text().splitlines()
    stamped = [ln for ln in lines if re.match(r"^\d\d:\d\d:\d\d ", ln)]
    assert stamped and lines[-1] == stamped[-1] and "report.html" in lines[-1]
    teacher_epochs = [ln[9:].split(",")[0] for ln in stamped if ln[9:].startswith("teacher: epoch")]
    assert teacher_epochs == ["teacher: epoch 1/3", "teacher: epoch 2/3", "teacher: epoch 3/3"]
    report = json.loads((smoke_run / "report.json").read_text())
    for c in report["candidates"]:
        assert sum(ln[9:].startswith(f"KD {c['name']} r0: epoch") for ln in stamped) == 2  # smoke: 2 epochs
        (result,) = [ln for ln in stamped if ln[9:].startswith(f"{c['name']} r0 (2 epochs): val accuracy")]
        assert f"val accuracy {c['val_accuracy']:.3f}" in result and f"J {c['objective']:.3f}" in result
    assert not any(re.search(r"━+\s+\d+/\d+", ln) for ln in lines)  # no progress bar drawn into the log


def test_the_report_names_the_kd_terms_and_what_kd_added(smoke_run: Path):
    r = json.loads((smoke_run / "report.json").read_text())
    b, best = r["baseline"], next(c for c in r["candidates"] if c["name"] == r["selected"])
    assert b["name"] == r["selected"] and b["epochs"] == best["epochs"] and b["kd_accuracy"] == best["val_accuracy"]
    assert b["kd_gain_points"] == pytest.approx(100 * (b["kd_accuracy"] - b["no_kd_accuracy"]), abs=0.01)
    md, html = (smoke_run / "report.md").read_text(), (smoke_run / "report.html").read_text()
    for text in (md, html):
        assert "Students distilled with response (weight 1); response-type terms use alpha 0.5" in text
        gain = f"KD gain: {b['name']} reached {b['kd_accuracy']:.3f} with KD and {b['no_kd_accuracy']:.3f} without"
        assert gain in text
    # every candidate, not only the selected one, is exportable from the documented path
    assert all((smoke_run / "candidates" / c["name"] / "student.pt").is_file() for c in r["candidates"])
    assert r["budget_source"].startswith("the teacher's p50 ") and "/ --speedup 1.5" in r["budget_source"]
    assert r["budget_ms"] == pytest.approx(r["teacher"]["measurement"]["latency_ms"]["p50"] / 1.5, rel=1e-3)

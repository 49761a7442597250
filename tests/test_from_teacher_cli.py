"""Students cut from the teacher through the real CLI: `--students from-teacher,edgenet` end to
end (cut, screened, distilled, selected, exported, checkpointed weights-only), and the teachers
and settings it cannot work with refused before any work."""

import json
from pathlib import Path

import jsonschema
import pytest
import torch

from edgekd.models.arch import FROM_TEACHER_KEEPS, FromTeacherSpec, parse_students
from edgekd.models.io import load_checkpoint
from edgekd.models.space import SearchSpace
from edgekd.report.schema import SCHEMA_FILE

from .conftest import run_cli


def test_from_teacher_names_one_student_per_share_kept():
    edgenet, others = parse_students(["from-teacher", "edgenet"])
    assert edgenet and others == [FromTeacherSpec(keep=k) for k in FROM_TEACHER_KEEPS]
    assert [s.name for s in others] == ["teacher-k0.5", "teacher-k0.35", "teacher-k0.25"]
    import optuna

    trial = optuna.trial.FixedTrial({"family": "from-teacher", "resolution": 48, "keep": 0.35, "precision": "fp32"})
    spec, precision = SearchSpace(families=["edgenet", "from-teacher"], resolutions=[None, 48]).sample(trial)
    assert spec == FromTeacherSpec(keep=0.35, resolution=48) and spec.name == "teacher-k0.35-r48"


@pytest.mark.slow
def test_optimize_cuts_students_from_the_teacher_and_ships_one(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("optimize", "--preset", "smoke", "--students", "from-teacher,edgenet", "--speedup", "1",
                   "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "report.json").read_text())
    jsonschema.validate(r, json.loads(SCHEMA_FILE.read_text()))  # the shipped schema knows cut students
    cut = [c for c in r["candidates"] if c["name"].startswith("teacher-k")]
    assert cut and all(c["start"].startswith("cut from the teacher") for c in cut)
    assert all(c["params"] < r["teacher"]["params"] for c in cut)
    name = cut[0]["name"]
    model, meta = load_checkpoint(out / "candidates" / name / "student.pt")  # rebuilt from the plan, weights only
    assert meta["source"]["kind"] == "from-teacher" and meta["source"]["plan"]["cuts"]
    size = r["dataset"]["image_size"]
    assert model(torch.rand(2, meta["in_channels"], size, size)).shape == (2, len(meta["classes"]))
    # the report names what the cut removed when a cut student is the selected one
    from edgekd.report.markdown import render_markdown
    from edgekd.report.model import Report

    md = render_markdown(Report.model_validate(r).model_copy(update={"selected": name}))
    assert f"params {r['teacher']['params']:,} → {cut[0]['params']:,}" in md
    assert f"recovered by {cut[0]['epochs']} KD epochs from the unshrunk teacher" in md
    proc = run_cli("export", str(out / "candidates" / name / "student.pt"), "--formats", "onnx,onnx-int8",
                   "--out", str(tmp_path / "exports"))
    assert proc.returncode == 0, proc.stderr


def test_from_teacher_with_a_teacher_it_cannot_cut_is_refused_before_any_work(smoke_run: Path, tmp_path):
    r0 = json.loads((smoke_run / "report.json").read_text())
    onnx_teacher = smoke_run / next(e["path"] for e in r0["exports"] if e["format"] == "onnx")
    for args, says in [
        (["--teacher", str(onnx_teacher)], "an ONNX teacher cannot be cut into students"),
        (["--kd", "response,feature"], "takes response-type KD terms for now"),
        (["--task", "segmentation"], "cuts classifiers for now"),
        (["--teacher-bands", "R,G,B"], "needs a teacher that sees the students' bands"),
    ]:
        out = tmp_path / "bad"
        proc = run_cli("optimize", "--preset", "smoke", "--students", "from-teacher", *args, "--out", str(out))
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()

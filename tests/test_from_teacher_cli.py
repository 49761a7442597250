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

    trial = optuna.trial.FixedTrial({"family": "from-teacher", "resolution": 48, "keep": 0.35, "drop": 0.0,
                                     "precision": "fp32"})
    spec, precision = SearchSpace(families=["edgenet", "from-teacher"], resolutions=[None, 48]).sample(trial)
    assert spec == FromTeacherSpec(keep=0.35, resolution=48) and spec.name == "teacher-k0.35-r48"
    trial = optuna.trial.FixedTrial({"family": "from-teacher", "resolution": 0, "keep": 0.5, "drop": 0.25,
                                     "precision": "fp32"})  # depth is searched beside width and resolution
    spec, _ = SearchSpace(families=["from-teacher"]).sample(trial)
    assert spec == FromTeacherSpec(keep=0.5, drop=0.25) and spec.name == "teacher-k0.5-d0.25"


@pytest.mark.slow
def test_optimize_cuts_students_from_the_teacher_and_ships_one(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("optimize", "--preset", "smoke", "--students", "from-teacher,edgenet", "--speedup", "1",
                   "--kd", "response,feature", "--out", str(out), "--quiet")  # feature maps: the teacher's, cut
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "report.json").read_text())
    jsonschema.validate(r, json.loads(SCHEMA_FILE.read_text()))  # the shipped schema knows cut students
    cut = [c for c in r["candidates"] if c["name"].startswith("teacher-k")]
    assert cut and all(c["start"].startswith("cut from the teacher") for c in cut)
    assert "feature" in [t["name"] for t in r["objective"]["kd"]["terms"]]
    assert all(c["params"] < r["teacher"]["params"] for c in cut)
    # report.json records each cut: the plan's settings, and what it kept, read from the checkpoint
    assert all(c["cut"]["layers_cut"] > 0 and 0 < c["cut"]["channels_kept"] < 1 and c["cut"]["importance"] == "taylor"
               for c in cut)
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
    from edgekd.report.html import render_html

    html = render_html(Report.model_validate(r).model_copy(update={"selected": name}))
    assert 'id="cut">Cut from the teacher' in html and f"{cut[0]['params']:,}" in html
    proc = run_cli("export", str(out / "candidates" / name / "student.pt"), "--formats", "onnx,onnx-int8",
                   "--out", str(tmp_path / "exports"))
    assert proc.returncode == 0, proc.stderr


def test_from_teacher_with_a_teacher_it_cannot_cut_is_refused_before_any_work(smoke_run: Path, tmp_path):
    r0 = json.loads((smoke_run / "report.json").read_text())
    onnx_teacher = smoke_run / next(e["path"] for e in r0["exports"] if e["format"] == "onnx")
    for args, says in [
        (["--teacher", str(onnx_teacher)], "an ONNX teacher cannot be cut into students"),
        (["--teacher-bands", "R,G,B"], "needs a teacher that sees the students' bands"),
        # a cut student has the teacher's stages: a student stage beyond them is refused
        (["--kd", "response,feature", "--feature-pairs", "7=0"], "but student from-teacher has stages 0.."),
    ]:
        out = tmp_path / "bad"
        proc = run_cli("optimize", "--preset", "smoke", "--students", "from-teacher", *args, "--out", str(out))
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


def test_a_cut_student_has_the_teachers_stages_with_fewer_channels_and_taps_its_names():
    from edgekd.models.arch import TimmSpec
    from edgekd.models.shrink import cut_from_teacher
    from edgekd.models.sources import build_student
    from edgekd.search.students import KDTrainer

    teacher, _ = build_student(TimmSpec(model="mobilenetv3_small_050"), 3, 5, [0.0] * 3, [1.0] * 3, pretrained=False)
    student = cut_from_teacher(teacher.eval(), torch.rand(4, 3, 32, 32), 5, keep=0.5)
    assert student.has_features and len(student.stage_channels) == len(teacher.stage_channels)
    assert sum(student.stage_channels) < sum(teacher.stage_channels)
    logits, stages, emb = student.forward_features(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 5) and [s.shape[1] for s in stages] == student.stage_channels
    trainer = KDTrainer.__new__(KDTrainer)
    trainer.student_modules, trainer.teacher_modules = ["features.3"], ["inner.blocks.2"]
    assert trainer._taps(student) == ["inner.inner.blocks.2"]  # the teacher's own module, in the cut copy
    assert trainer._taps(teacher) == ["features.3"]
    assert "inner.inner.blocks.2" in dict(student.named_modules())


@pytest.mark.slow
def test_segmentation_students_are_cut_from_the_segmentation_teacher(tmp_path):
    out = tmp_path / "seg"
    proc = run_cli("optimize", "--task", "segmentation", "--preset", "smoke", "--students", "from-teacher",
                   "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "report.json").read_text())
    assert r["metric"] == "mIoU" and r["selected"].startswith("teacher-k")
    best = next(c for c in r["candidates"] if c["name"] == r["selected"])
    assert best["cut"]["layers_cut"] > 0 and best["params"] < r["teacher"]["params"] and best["val_accuracy"] > 0
    model, meta = load_checkpoint(out / "candidates" / r["selected"] / "student.pt")
    size = r["dataset"]["image_size"]
    x = torch.rand(1, meta["in_channels"], size, size)
    assert model(x).shape[1] == len(meta["classes"])  # dense logits for every class
    assert all(e["parity"]["metric"] == "mIoU" for e in r["exports"])

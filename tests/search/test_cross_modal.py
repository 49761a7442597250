"""Cross-modal distillation: the teacher sees more bands (R, G, B, NIR) than the students (R, G,
B), on the same images and split; every KD term works across the two."""

import json

import onnx
import pytest
import torch

from edgekd.models.io import load_checkpoint

from ..conftest import run_cli


@pytest.mark.slow
def test_an_rgbn_teacher_distils_rgb_students(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("optimize", "--preset", "smoke", "--teacher-bands", "R,G,B,NIR", "--student-bands", "R,G,B",
                   "--kd", "response,feature:0.5", "--out", str(out), "--quiet", "--no-baseline")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "report.json").read_text())
    assert r["dataset"]["bands"] == ["R", "G", "B"] and r["teacher"]["bands"] == ["R", "G", "B", "NIR"]
    assert r["teacher"]["measurement"]["input_shape"][1] == 4
    assert all(c["measurement"]["input_shape"][1] == 3 for c in r["candidates"])
    teacher, meta = load_checkpoint(out / "teacher.pt")
    assert meta["bands"] == ["R", "G", "B", "NIR"] and teacher(torch.rand(1, 4, 32, 32)).shape == (1, 7)
    onnx_export = next(e for e in r["exports"] if e["format"] == "onnx")
    assert onnx.load(str(out / onnx_export["path"])).graph.input[0].type.tensor_type.shape.dim[1].dim_value == 3
    assert "Cross-modal distillation: the teacher sees bands R, G, B, NIR" in (out / "report.md").read_text()
    teacher_figures = r["per_class"][0]
    assert teacher_figures["model"] == "teacher" and teacher_figures["validation"]["n"] == r["dataset"]["sizes"]["val"]


def test_unknown_bands_are_refused_before_any_work(tmp_path):
    proc = run_cli("optimize", "--preset", "smoke", "--student-bands", "R,G,SWIR", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "--student-bands SWIR: the data has bands R, G, B, NIR" in proc.stderr
    assert not (tmp_path / "o").exists()

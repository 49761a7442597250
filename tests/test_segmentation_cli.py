"""Integration: `edgekd optimize --task segmentation` end to end on the painted demo masks (ONNX
and OpenVINO exports passing parity in mIoU terms), resume, and bad segmentation inputs through
the real CLI (exit 2, one line, nothing written)."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from .conftest import assert_resumes_without_redoing_work, run_cli
from .data.test_masks import make_mask_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seg") / "run"
    proc = run_cli("optimize", "--task", "segmentation", "--preset", "smoke", "--out", str(out), "--kd",
                   "response,cwd:0.5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_segmentation_smoke_run_reports_miou_and_exports_dense_logits(seg_run: Path):
    r = json.loads((seg_run / "report.json").read_text())
    assert r["task"] == "segmentation" and r["metric"] == "mIoU" and r["dataset"]["task"] == "segmentation"
    assert r["config"]["task"] == "segmentation" and r["per_class"] == []
    teacher, student = r["per_class_iou"]
    assert teacher["model"] == "teacher" and student["model"] == r["selected"]
    v = student["validation"]
    assert len(v["classes"]) == 7 and 0 < v["miou"] <= 1 and 0 < v["pixel_accuracy"] <= 1
    ious = [c["iou"] for c in v["classes"] if c["iou"] is not None]
    assert v["miou"] == pytest.approx(sum(ious) / len(ious))
    best = next(c for c in r["candidates"] if c["name"] == r["selected"])
    assert best["val_accuracy"] == pytest.approx(v["miou"], abs=1e-6)  # the validation metric is the mIoU
    assert {e["format"] for e in r["exports"]} == {"onnx", "openvino"}
    for e in r["exports"]:
        p = e["parity"]
        assert p["metric"] == "mIoU" and p["top1_agreement"] >= 0.99 and abs(p["accuracy_delta"]) <= 0.01
    onnx_path = seg_run / next(e["path"] for e in r["exports"] if e["format"] == "onnx")
    meta = {m.key: m.value for m in onnx.load(str(onnx_path)).metadata_props}
    assert meta["task"] == "segmentation" and meta["ignore_index"] == "255" and meta["output_stride"] == "4"
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": np.random.default_rng(0).random((2, 4, 32, 32), dtype=np.float32)})[0]
    assert out.shape == (2, 7, 8, 8)  # N x K x h x w at the output stride
    md, page = (seg_run / "report.md").read_text(), (seg_run / "report.html").read_text()
    assert "mIoU" in md and "| class | IoU | pixels |" in md and "val mIoU" in md
    assert "Per class IoU" in page and page.count("data:image/png;base64,") >= 7  # the plots and the mask overlays
    assert (seg_run / "mask_overlays.png").is_file()
    terms = {t["name"]: t["weight"] for t in r["objective"]["kd"]["terms"]}
    assert terms == {"response": 1.0, "cwd": 0.5}  # what training used, as the report states it


def test_a_stopped_segmentation_run_resumes_without_redoing_work(seg_run: Path):
    assert_resumes_without_redoing_work(seg_run)


def test_large_scenes_train_on_tiles_and_are_evaluated_whole(tmp_path: Path):
    """--tile cuts each scene into overlapping tiles (the layout says segmentation); the report
    scores whole validation scenes by sliding window and states the cost per megapixel."""
    from edgekd.data.synthetic import CLASSES, generate_scenes

    root = tmp_path / "scenes"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    x, m = generate_scenes(5, 128, seed=0)
    for i in range(5):
        Image.fromarray((x[i, :3].transpose(1, 2, 0) * 255).astype(np.uint8)).save(root / "images" / f"s{i}.png")
        Image.fromarray(m[i]).save(root / "masks" / f"s{i}.png")
    (root / "classes.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES)))
    out = tmp_path / "run"
    proc = run_cli("optimize", "--data", str(root), "--preset", "smoke", "--tile", "64", "--tile-overlap", "16",
                   "--teacher-epochs", "1", "--student-epochs", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads((out / "report.json").read_text())
    assert r["task"] == "segmentation" and "64 px tiles overlapping by 16 px" in r["dataset"]["split"]
    assert r["dataset"]["sizes"]["train"] % 9 == 0  # 9 tiles of each 128 px scene
    assert [s["model"] for s in r["scenes"]] == ["teacher", r["selected"]]
    assert "sliding window" in r["scenes"][0]["validation"]["split"] and r["scenes"][1]["validation"]["n"] >= 1
    cost = r["scene_cost"]
    assert cost["tile"] == 64 and cost["overlap"] == 16 and cost["source"] == "measured"
    best = next(c for c in r["candidates"] if c["name"] == r["selected"])
    assert cost["student_ms_per_mp"] == pytest.approx(best["measurement"]["latency_ms"]["p50"] * 1e6 / 48**2, rel=1e-3)


def test_bad_segmentation_inputs_exit_2_and_write_nothing(tmp_path: Path):
    root = make_mask_folder(tmp_path / "tiles")
    Image.fromarray(np.full((32, 32), 9, dtype=np.uint8)).save(root / "masks" / "scene1_r0_c2.png")
    out = tmp_path / "run"
    # the layout says segmentation: no --task
    proc = run_cli("optimize", "--data", str(root), "--preset", "smoke", "--out", str(out))
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "scene1_r0_c2.png" in lines[0] and "neither a class" in lines[0]
    assert not out.exists()
    proc = run_cli("optimize", "--task", "segmentation", "--kd", "relation", "--preset", "smoke", "--out", str(out))
    assert proc.returncode == 2 and "relation does not apply to segmentation" in proc.stderr and not out.exists()
    proc = run_cli("optimize", "--students", "lraspp", "--preset", "smoke", "--out", str(out))
    assert proc.returncode == 2 and "segmentation student" in proc.stderr and not out.exists()

"""Integration: `edgekd optimize --task detection` end to end on the demo's painted objects (no
--data): COCO figures, exports passing parity in mAP50 terms, the ONNX graph with NMS inside
agreeing with PyTorch, stage times, the report; and a stopped run resumed."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from .conftest import assert_resumes_without_redoing_work, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def det_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("det") / "run"
    proc = run_cli("optimize", "--task", "detection", "--preset", "smoke", "--image-size", "64", "--det-head", "gfl",
                   "--kd", "head,ld", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_detection_smoke_run_reports_map_and_exports_with_nms(det_run: Path):
    r = json.loads((det_run / "report.json").read_text())
    assert r["task"] == "detection" and r["metric"] == "mAP50" and r["dataset"]["task"] == "detection"
    assert r["per_class"] == [] and r["per_class_iou"] == []
    kd = r["objective"]["kd"]
    assert {t["name"] for t in kd["terms"]} == {"head", "ld"} and kd["det_head"] == "gfl"
    assert "GFL-style box heads" in (det_run / "report.md").read_text()
    assert json.loads(next((det_run / "teacher_cache").glob("*/meta.json")).read_text())["edges"]  # LD's targets
    d = r["detection"]
    teacher, student = d["figures"]
    assert teacher["model"] == "teacher" and student["model"] == r["selected"]
    v = student["validation"]
    assert set(v["per_class_ap50"]) == {"vehicle", "storage_tank", "boat"} and 0 <= v["map"] <= v["map50"] <= 1
    best = next(c for c in r["candidates"] if c["name"] == r["selected"])
    assert best["val_accuracy"] == pytest.approx(v["map50"], abs=1e-6)  # the validation metric is mAP50
    for e in r["exports"]:
        assert e["parity"]["metric"] == "mAP50" and e["parity"]["top1_agreement"] >= 0.99
    # the deployable graph: raw [0, 1] input, boxes / scores / labels out, metadata to read them by
    graph = det_run / d["nms_export"]
    proto = onnx.load(str(graph))
    meta = {m.key: m.value for m in proto.metadata_props}
    assert meta["classes"] == "vehicle,storage_tank,boat" and meta["input_size"] == "64"
    assert "pad right and bottom" in meta["letterbox"] and float(meta["iou_threshold"]) > 0
    sess = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    boxes, scores, labels = sess.run(None, {"input": np.random.default_rng(0).random((1, 4, 64, 64), np.float32)})
    assert boxes.shape[1:] == (4,) and scores.shape == labels.shape == (len(boxes),)
    assert " 0 extra" in d["nms_agreement"]
    found, total = (int(v) for v in d["nms_agreement"].split(" PyTorch")[0].split(" of "))
    assert found == total
    # the same graph as OpenVINO IR (the run exports openvino), checked against PyTorch alike
    assert d["nms_openvino"].endswith(".nms.xml") and (det_run / d["nms_openvino"]).is_file()
    assert d["nms_openvino_agreement"].startswith(f"{total} of {total} PyTorch") and " 0 extra" in \
        d["nms_openvino_agreement"]
    st = d["stages"]
    assert st["source"].startswith("measured") and st["network_ms"] > 0 and st["postprocess_ms"] >= 0
    assert st["frame_ms"] == pytest.approx(st["preprocess_ms"] + st["network_ms"] + st["postprocess_ms"], abs=1e-3)
    assert (det_run / "detections.png").is_file()
    md, page = (det_run / "report.md").read_text(), (det_run / "report.html").read_text()
    assert "| class | AP50 |" in md and "decoding + NMS" in md and "Per class AP" in page


def test_a_stopped_detection_run_resumes_without_redoing_work(det_run: Path):
    assert_resumes_without_redoing_work(det_run)


def test_a_detection_checkpoint_exports_with_nms_inside(det_run: Path, tmp_path: Path):
    selected = json.loads((det_run / "report.json").read_text())["selected"]
    out = tmp_path / "exp"
    proc = run_cli("export", str(det_run / "candidates" / selected / "student.pt"), "--formats", "onnx", "--out",
                   str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "student.onnx").is_file() and (out / "student.nms.onnx").is_file()
    assert "onnx with NMS inside" in proc.stdout and " 0 extra" in proc.stdout
    assert not (out / "student.nms.xml").exists()  # OpenVINO's NMS graph comes with --formats openvino
    assert json.loads((out / "export.json").read_text())["exports"][0]["parity"]["metric"] == "mAP50"


def test_detection_students_are_cut_from_the_detection_teacher(tmp_path: Path):
    out = tmp_path / "cut"
    proc = run_cli("optimize", "--task", "detection", "--preset", "smoke", "--image-size", "64", "--students",
                   "from-teacher", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "report.json").read_text())
    best = next(c for c in r["candidates"] if c["name"] == r["selected"])
    assert r["selected"].startswith("teacher-k") and best["cut"]["layers_cut"] > 0
    assert best["params"] < r["teacher"]["params"] and (out / "exports" / f"student-{r['selected']}.nms.onnx").is_file()
    assert [t["name"] for t in r["objective"]["kd"]["terms"]] == ["head"]  # the task's default KD term
    # this teacher has FCOS's box head: LD, which distils GFL-style side distributions, is refused
    proc = run_cli("optimize", "--task", "detection", "--preset", "smoke", "--image-size", "64", "--teacher",
                   str(out / "teacher.pt"), "--det-head", "gfl", "--kd", "head,ld", "--out", str(tmp_path / "ld"))
    assert proc.returncode == 2 and "has no GFL-style box head" in proc.stderr and not (tmp_path / "ld").exists()


def test_large_frames_train_on_tiles_and_are_timed_per_frame(tmp_path: Path):
    """--tile cuts each image into overlapping windows (boxes clipped); the stage times cost a whole
    camera frame of the data's size: slices x (letterbox + network + NMS) + the merge."""
    from .data.test_boxes import make_coco

    root = make_coco(tmp_path / "big", n=8, w=256, h=128)
    out = tmp_path / "run"
    proc = run_cli("optimize", "--data", str(root), "--preset", "smoke", "--image-size", "64", "--tile", "128",
                   "--tile-overlap", "32", "--teacher-epochs", "1", "--student-epochs", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads((out / "report.json").read_text())
    assert r["task"] == "detection" and "128 px tiles overlapping by 32 px" in r["dataset"]["split"]
    assert (r["dataset"]["sizes"]["train"] + r["dataset"]["sizes"]["val"]) == 8 * 3  # x at 0, 96, 128
    st = r["detection"]["stages"]
    assert st["slices"] == 3 and st["frame"].startswith("256x128 px, cut into 3 slices") and st["merge_ms"] > 0
    assert st["frame_ms"] == pytest.approx(3 * (st["preprocess_ms"] + st["network_ms"] + st["postprocess_ms"])
                                           + st["merge_ms"], abs=1e-3)
    assert "x 3 slices + merge" in (out / "report.md").read_text()


def test_a_teacher_known_by_its_boxes_teaches_by_pseudo_boxes(det_run: Path, tmp_path: Path):
    """The run's own deployable graph (decoding and NMS inside) as the teacher: its detections are
    cached as rows, the default terms become pseudo-box; asking for head is refused."""
    graph = det_run / json.loads((det_run / "report.json").read_text())["detection"]["nms_export"]
    out = tmp_path / "boxes"
    proc = run_cli("optimize", "--task", "detection", "--preset", "smoke", "--image-size", "64", "--teacher",
                   str(graph), "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "teaches by pseudo-boxes alone" in proc.stdout
    r = json.loads((out / "report.json").read_text())
    assert [t["name"] for t in r["objective"]["kd"]["terms"]] == ["pseudo-box"]
    proc = run_cli("optimize", "--task", "detection", "--preset", "smoke", "--image-size", "64", "--teacher",
                   str(graph), "--kd", "head", "--out", str(tmp_path / "refused"))
    assert proc.returncode == 2 and "boxes only" in proc.stderr and "--kd pseudo-box" in proc.stderr
    assert not (tmp_path / "refused").exists()


def test_detection_refuses_what_it_does_not_do(tmp_path: Path):
    out = tmp_path / "run"
    for args, says in ((("--teacher-views", "4"), "leave --teacher-views at 1"),
                       (("--students", "edgenet,ssdlite"), "has 4 bands; use a timm:NAME student"),
                       (("--teacher", "torchvision:ssdlite320_mobilenet_v3_large"), "takes RGB images and the data "
                                                                                    "has 4 bands"),
                       (("--kd", "head,ld"), "add --det-head gfl")):
        proc = run_cli("optimize", "--task", "detection", "--preset", "smoke", *args, "--out", str(out))
        assert proc.returncode == 2 and says in proc.stderr and not out.exists(), proc.stderr
    proc = run_cli("optimize", "--preset", "smoke", "--feature-importance", "boxes", "--out", str(out))
    assert proc.returncode == 2 and "use it with --task detection" in proc.stderr and not out.exists()
    proc = run_cli("optimize", "--task", "detection", "--preset", "smoke", "--kd", "head,feature", "--feature-distance",
                   "cwd", "--feature-importance", "boxes", "--out", str(out))
    assert proc.returncode == 2 and "leave --feature-importance boxes out" in proc.stderr and not out.exists()


def test_an_ssdlite_student_is_searched_and_ships_its_own_graph(tmp_path: Path):
    """torchvision's SSDLite as the one student on RGB boxes: distilled by pseudo-boxes whatever
    --kd says, measured and shipped as its own graph with decoding and NMS inside (ONNX and
    OpenVINO, checked against PyTorch); other formats are not built for it, and said so."""
    from .data.test_boxes import make_coco

    data = make_coco(tmp_path / "coco", n=12)
    out = tmp_path / "run"
    proc = run_cli("optimize", "--task", "detection", "--data", str(data), "--preset", "smoke", "--image-size", "64",
                   "--students", "ssdlite", "--export-formats", "onnx,openvino,openvino-fp16", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "distilled by pseudo-boxes" in proc.stdout and "openvino-fp16 not built for it" in proc.stdout
    r = json.loads((out / "report.json").read_text())
    assert r["selected"] == "tv-ssdlite320_mobilenet_v3_large"
    assert sorted(e["format"] for e in r["exports"]) == ["onnx", "openvino"]
    for e in r["exports"]:
        assert e["parity"]["metric"] == "mAP50" and e["parity"]["top1_agreement"] == 1.0
    d = r["detection"]
    meta = {m.key: m.value for m in onnx.load(str(out / d["nms_export"])).metadata_props}
    assert meta["classes"] == "ship,plane" and float(meta["score_threshold"]) == 0.25
    assert " 0 extra" in d["nms_agreement"] and " 0 extra" in d["nms_openvino_agreement"]
    assert "own graph holds its decoding and NMS" in d["stages"]["source"] and d["stages"]["network_ms"] > 0
    exp = tmp_path / "exp"
    proc = run_cli("export", str(out / "candidates" / r["selected"] / "student.pt"), "--formats", "onnx", "--out",
                   str(exp))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (exp / "student.onnx").is_file() and (exp / "student.nms.onnx").is_file() and " 0 extra" in proc.stdout

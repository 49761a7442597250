import json

import onnx
import pytest
from onnx import TensorProto, helper

from edgekd.convert.onnx import to_onnx
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.models.io import save_checkpoint

from ..conftest import run_cli

FAST = ["--runs", "5", "--min-seconds", "0", "--warmup", "1", "--no-cache"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "student.pt"
    save_checkpoint(path, build_model(ArchSpec(width=0.25, depth=1), 3, 4), classes=list("abcd"),
                    bands=list("RGB"), image_size=16, dataset="t", role="student")
    return path


def test_checkpoint_on_three_runtimes_plus_an_unavailable_one(tmp_path, checkpoint):
    out = tmp_path / "p.json"
    proc = run_cli("profile", str(checkpoint), "--runtime", "onnxruntime,openvino,torch,tensorrt", *FAST,
                   "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert [m["runtime"] for m in r["measurements"]] == ["onnxruntime", "openvino", "torch"]
    assert r["input_shape"] == [1, 3, 16, 16]
    for m in r["measurements"]:
        assert m["latency_ms"]["n"] >= 5 and m["peak_memory_mb"] > 0 and m["source"]["latency"] == "measured"
    assert r["unavailable"][0]["runtime"] == "tensorrt" and r["unavailable"][0]["reason"]
    for word in ("onnxruntime", "openvino", "torch", "p90 ms", "CV", "tensorrt: unavailable"):
        assert word in proc.stdout


def test_onnx_file_with_torch_is_reported_unavailable(tmp_path, checkpoint):
    onnx_path = to_onnx(build_model(ArchSpec(width=0.25, depth=1), 3, 4), tmp_path / "m.onnx", [1, 3, 16, 16])
    out = tmp_path / "p.json"
    proc = run_cli("profile", str(onnx_path), "--runtime", "onnxruntime,torch", *FAST, "--no-memory", "--json",
                   str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert "needs an edgekd checkpoint" in r["unavailable"][0]["reason"]


def _dynamic_hw_model(path):
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [inp], [out])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_dynamic_shape_needs_and_accepts_shape(tmp_path):
    model = _dynamic_hw_model(tmp_path / "dyn.onnx")
    proc = run_cli("profile", str(model), "--runtime", "onnxruntime", *FAST, "--no-memory")
    assert proc.returncode == 2 and "dynamic shape" in proc.stderr and "--shape" in proc.stderr
    out = tmp_path / "p.json"
    proc = run_cli("profile", str(model), "--runtime", "onnxruntime", *FAST, "--no-memory", "--shape", "2,3,8,8",
                   "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["measurements"][0]["input_shape"] == [2, 3, 8, 8]


@pytest.mark.parametrize("case, message", [
    ("not onnx", "not a readable ONNX model"),
    ("truncated", "ONNX model"),
    ("unknown runtime", "unknown runtime 'tflite'"),
    ("missing", "does not exist"),
    ("bad shape", "is not a shape"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, case, message):
    good = to_onnx(build_model(ArchSpec(width=0.25, depth=1), 3, 4), tmp_path / "m.onnx", [1, 3, 16, 16])
    args = [str(good), "--runtime", "onnxruntime"]
    if case == "not onnx":
        (tmp_path / "x.onnx").write_text("hello, I am a text file")
        args[0] = str(tmp_path / "x.onnx")
    elif case == "truncated":
        data = good.read_bytes()
        (tmp_path / "t.onnx").write_bytes(data[: len(data) // 2])
        args[0] = str(tmp_path / "t.onnx")
    elif case == "unknown runtime":
        args[2] = "onnxruntime,tflite"
    elif case == "missing":
        args[0] = str(tmp_path / "nope.onnx")
    elif case == "bad shape":
        args += ["--shape", "1,a,3"]
    proc = run_cli("profile", *args, *FAST)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1

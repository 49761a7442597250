"""Every exporter on a tiny model: the file loads in its runtime, agrees with PyTorch within its
precision's tolerance, carries its metadata; INT8 files hold quantized operators."""

import json

import numpy as np
import onnx
import openvino as ov
import pytest
import torch

from edgekd.convert.onnx import to_onnx
from edgekd.data.dataset import make_dataset
from edgekd.errors import ExportError
from edgekd.export import FORMATS, parse_formats
from edgekd.export.base import QAT_FORMATS
from edgekd.export.run import export_formats
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.models.io import save_checkpoint
from edgekd.profilers import PROFILERS

from ..conftest import run_cli
from ..data.test_folder import make_folder


@pytest.fixture(scope="module")
def trained():
    """A tiny model trained enough that quantization has real decisions to keep."""
    from edgekd.distill.trainer import train

    g = np.random.default_rng(0)
    x = g.random((160, 3, 16, 16), dtype=np.float32)
    y = (x[:, 0].mean(axis=(1, 2)) > x[:, 2].mean(axis=(1, 2))).astype(np.int64)
    ds = make_dataset("tiny", ["a", "b"], ["R", "G", "B"], x, y, val_fraction=0.25, seed=0, synthetic=True,
                      source="test")
    torch.manual_seed(0)
    mean, std = ds.channel_stats()
    model = build_model(ArchSpec(width=0.25, depth=1), 3, 2, mean, std)
    train(model, ds.x_train, ds.y_train, epochs=12, batch_size=32, lr=1e-2, seed=0)
    return model, ds


CPU_FORMATS = [f for f, spec in FORMATS.items() if not spec.needs_gpu and f not in QAT_FORMATS]  # QAT: test_qat.py


def test_every_cpu_format_exports_loads_and_agrees(tmp_path, trained):
    model, ds = trained
    results = export_formats(model, ds, CPU_FORMATS, tmp_path, "m", {"classes": "a,b", "run_id": "r1"},
                             calibration_size=64, threads=1)
    by = {r.format: r for r in results}
    assert list(by) == ["onnx", "onnx-int8", "openvino", "openvino-fp16", "openvino-int8"]
    assert by["onnx"].parity.max_abs_diff < 1e-4 and by["openvino"].parity.max_abs_diff < 1e-4
    assert by["openvino-fp16"].parity.top1_agreement >= 0.97
    for r in results:
        assert r.parity.n == len(ds.y_val) and r.size_mb > 0
        assert r.tolerance == r.tolerance.model_validate(r.tolerance.model_dump())
    # metadata round-trips: ONNX metadata_props and OpenVINO rt_info
    props = {p.key: p.value for p in onnx.load(by["onnx"].path).metadata_props}
    assert props == {"classes": "a,b", "run_id": "r1"}
    ov_model = ov.Core().read_model(by["openvino"].path)
    assert ov_model.get_rt_info(["model_info", "classes"]).astype(str) == "a,b"
    # the onnx export is simplified and keeps a dynamic batch axis
    g = onnx.load(by["onnx"].path).graph
    assert g.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # INT8 files really are quantized
    ops = {n.op_type for n in onnx.load(by["onnx-int8"].path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    ov_int8 = ov.Core().read_model(by["openvino-int8"].path)
    assert any(op.get_type_name() == "FakeQuantize" for op in ov_int8.get_ops())
    fp16 = ov.Core().read_model(by["openvino-fp16"].path)
    constants = [op for op in fp16.get_ops() if op.get_type_name() == "Constant"]
    assert any(op.get_output_element_type(0) == ov.Type.f16 for op in constants)


def test_accuracy_controlled_int8(tmp_path, trained):
    model, ds = trained
    res = export_formats(model, ds, "openvino-int8", tmp_path, "m", {}, calibration_size=64, max_accuracy_drop=0.02)
    assert res[-1].format == "openvino-int8" and any("accuracy-controlled" in n for n in res[-1].notes)
    assert res[-1].parity.accuracy_delta >= -0.02 - 1e-9


def test_unsupported_operator_is_named(tmp_path):
    class Eigen(torch.nn.Module):
        def forward(self, x):
            f = x.flatten(2)
            return torch.linalg.eigh(f @ f.transpose(1, 2))[0]

    with pytest.raises(ExportError, match="linalg_eigh"):
        to_onnx(Eigen(), tmp_path / "e.onnx", [1, 3, 4, 4])


def test_format_names_and_order():
    assert parse_formats("openvino-int8,onnx") == ["onnx", "openvino-int8"]
    assert parse_formats("openvino") == ["onnx", "openvino"]  # built from the ONNX export
    with pytest.raises(ExportError, match="unknown export format tflite"):
        parse_formats("tflite")


TRT_MISSING = PROFILERS.get("tensorrt").unavailable()


def test_tensorrt_export_says_where_it_must_run(tmp_path, trained):
    if TRT_MISSING is None:
        pytest.skip("TensorRT is present: the GPU test below covers this format")
    model, ds = trained
    with pytest.raises(ExportError, match="built on the NVIDIA device they run on"):
        export_formats(model, ds, "tensorrt-fp16", tmp_path, "m", {})


@pytest.mark.gpu
@pytest.mark.skipif(TRT_MISSING is not None, reason=f"needs an NVIDIA GPU with TensorRT: {TRT_MISSING}")
def test_tensorrt_engines_export_and_agree(tmp_path, trained):
    model, ds = trained
    res = export_formats(model, ds, "tensorrt-fp16,tensorrt-int8", tmp_path, "m", {}, calibration_size=64)
    assert [r.format for r in res] == ["onnx", "tensorrt-fp16", "tensorrt-int8"]
    assert all(r.parity.top1_agreement >= 0.85 for r in res)


def test_export_command_from_a_checkpoint_alone(tmp_path, trained):
    model, _ = trained
    ckpt = tmp_path / "student.pt"
    # a checkpoint written by optimize names its data set: here the demo set, regenerated from the seed
    source = {"data": None, "seed": 0, "val_fraction": 0.2, "image_size": 16, "samples_per_class": 12,
              "max_samples_per_class": None}
    demo_model = build_model(ArchSpec(width=0.25, depth=1), 4, 7)
    save_checkpoint(ckpt, demo_model, classes=["water", "forest", "grassland", "cropland", "urban", "bare_soil",
                                               "cloud"], bands=list("RGBN"), image_size=16, dataset="demo",
                    role="student", data_source=source)
    out = tmp_path / "out"
    proc = run_cli("export", str(ckpt), "--formats", "onnx,openvino", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((out / "export.json").read_text())
    assert [e["format"] for e in rep["exports"]] == ["onnx", "openvino"]
    assert rep["dataset"]["sizes"]["val"] == 7 * 2  # the demo set regenerated: 12 tiles per class, 20% val
    assert (out / "student.onnx").is_file() and (out / "student.xml").is_file()
    bad = run_cli("export", str(ckpt), "--formats", "tflite", "--out", str(out))
    assert bad.returncode == 2 and "unknown export format tflite" in bad.stderr
    before = (out / "student.onnx").stat().st_mtime_ns
    again = run_cli("export", str(ckpt), "--formats", "onnx", "--out", str(out))
    assert again.returncode == 2 and "already holds export.json, student.onnx; pass --overwrite" in again.stderr
    assert (out / "student.onnx").stat().st_mtime_ns == before  # nothing replaced
    wrong = run_cli("export", str(ckpt), "--data", str(make_folder(tmp_path / "folder")), "--out", str(out),
                    "--overwrite")
    assert wrong.returncode == 2 and "the data set has classes ['Forest', 'River']" in wrong.stderr


def test_the_format_table_and_the_exporters_cannot_drift_apart():
    from edgekd.export import EXPORTERS, FORMATS

    assert set(FORMATS) == set(EXPORTERS.names())
    with pytest.raises(Exception, match="did you mean 'openvino-int8'"):
        from edgekd.export import parse_formats

        parse_formats("onnx,openvino-int")

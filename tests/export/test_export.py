import numpy as np
import onnx
import pytest
import torch

import edgekd.export.base as export_base
from edgekd.errors import ExportError
from edgekd.export import export_model
from edgekd.export.base import ExportContext
from edgekd.export.parity import ParityTolerance
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    model = build_model(ArchSpec(width=0.25, depth=1), 4, 3).eval()
    x = torch.rand(16, 4, 16, 16)
    y = model(x).argmax(1)
    return model, x, y


def test_onnx_then_openvino_pass_parity_and_carry_metadata(tmp_path, tiny):
    model, x, y = tiny
    ctx = ExportContext(input_shape=[1, 4, 16, 16], metadata={"classes": "a,b,c", "run_id": "r1"})
    tol = ParityTolerance()
    onnx_res = export_model("onnx", model, tmp_path, "m", ctx, x, y, tol)
    ov_res = export_model("openvino", model, tmp_path, "m", ctx, x, y, tol)
    assert onnx_res.parity.top1_agreement == 1.0 and onnx_res.parity.max_abs_diff < 1e-4
    assert ov_res.parity.top1_agreement == 1.0 and ov_res.parity.accuracy_delta == 0.0
    proto = onnx.load(onnx_res.path)
    assert {p.key: p.value for p in proto.metadata_props} == {"classes": "a,b,c", "run_id": "r1"}
    assert proto.opset_import[0].version >= 17
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic batch
    assert (tmp_path / "m.bin").is_file() and ov_res.size_mb > 0


def test_export_that_disagrees_fails_loudly(tmp_path, tiny, monkeypatch):
    model, x, y = tiny
    real_load = export_base.load_runtime

    def off_by_a_bit(*args):
        loaded = real_load(*args)
        good = loaded.run
        loaded.run = lambda batch: good(batch) + np.float32(0.05)  # a subtly wrong runtime
        return loaded

    monkeypatch.setattr(export_base, "load_runtime", off_by_a_bit)
    ctx = ExportContext(input_shape=[1, 4, 16, 16], metadata={})
    with pytest.raises(ExportError, match=r"onnx export .* disagrees .*max \|logit difference\| 0\.05"):
        export_model("onnx", model, tmp_path, "m", ctx, x, y, ParityTolerance(max_abs_diff=1e-3))


def test_openvino_needs_the_onnx_export_first(tmp_path, tiny):
    model, x, y = tiny
    with pytest.raises(ExportError, match="export 'onnx' first"):
        export_model("openvino", model, tmp_path, "m", ExportContext([1, 4, 16, 16], {}), x, y, ParityTolerance())
    with pytest.raises(ExportError, match="unknown export format"):
        export_model("tflite", model, tmp_path, "m", ExportContext([1, 4, 16, 16], {}), x, y, ParityTolerance())


def test_openvino_parity_names_the_execution_precision_it_holds_for(tmp_path, tiny, monkeypatch):
    """The FP32 IR is checked with the f32 hint; the IR and the note say so and how to set it; where
    OpenVINO's own default differs (bf16 on CPUs with bf16 units) its agreement is measured too."""
    import openvino as ov

    from edgekd.profilers.base import LoadedModel
    from edgekd.profilers.openvino import OpenVINORuntime

    model, x, y = tiny
    ctx = ExportContext(input_shape=[1, 4, 16, 16], metadata={"run_id": "r1"})
    export_model("onnx", model, tmp_path, "m", ctx, x, y, ParityTolerance())
    res = export_model("openvino", model, tmp_path, "m", ctx, x, y, ParityTolerance())
    assert res.execution == {"device": "CPU", "INFERENCE_PRECISION_HINT": "f32"}
    ir = ov.Core().read_model(res.path)
    assert ir.get_rt_info(["model_info", "inference_precision_hint"]).astype(str) == "f32"
    assert any("'INFERENCE_PRECISION_HINT': 'f32'" in n and "-infer_precision f32" in n for n in res.notes)

    real = OpenVINORuntime.load_plugin_default

    def bf16_default(self, path, threads):  # a CPU whose default is bf16, and whose bf16 logits drift
        loaded = real(self, path, threads)
        return LoadedModel(run=lambda a: loaded.run(a) + np.linspace(0, 3, 3, dtype=np.float32), close=loaded.close,
                           execution={"device": "CPU", "INFERENCE_PRECISION_HINT": "bf16"})

    monkeypatch.setattr(OpenVINORuntime, "load_plugin_default", bf16_default)
    drift = export_model("openvino", model, tmp_path / "b", "m", ctx, x, y, ParityTolerance())
    assert drift.parity.top1_agreement == 1.0  # the figures for f32 are unchanged
    assert drift.parity_plugin_default is not None and drift.parity_plugin_default.max_abs_diff > 1.0
    assert any("OpenVINO's default here is bf16" in n for n in drift.notes)


def test_one_failing_format_does_not_skip_the_others(tmp_path, tiny, monkeypatch):
    """openvino-fp16 is made to disagree: onnx and openvino after it are still built and checked,
    and the error names the failed format and lists those that passed."""
    from edgekd.data import Dataset
    from edgekd.errors import ExportFailures
    from edgekd.export.run import export_formats

    model, x, y = tiny
    real_load = export_base.load_runtime

    def broken_fp16(runtime, path, *args):
        loaded = real_load(runtime, path, *args)
        if str(path).endswith(".fp16.xml"):
            good = loaded.run
            loaded.run = lambda batch: good(batch) * -1.0
        return loaded

    monkeypatch.setattr(export_base, "load_runtime", broken_fp16)
    ds = Dataset(name="t", classes=["a", "b", "c"], bands=["R", "G", "B", "N"], x_train=x, y_train=y, x_val=x,
                 y_val=y, synthetic=True, source="test")
    done = []
    with pytest.raises(ExportFailures) as info:
        export_formats(model, ds, "onnx,openvino-fp16,openvino", tmp_path, "m", {}, on_done=done.append)
    assert [f for f, _ in info.value.failed] == ["openvino-fp16"]
    assert [r.format for r in info.value.done] == [r.format for r in done] == ["onnx", "openvino"]
    assert (tmp_path / "m.xml").is_file() and "built and checked: onnx, openvino" in str(info.value)

"""Quantization-aware distillation: BatchNorm folding, NNCF fake quantization fine-tuned with a
KD term, the INT8 exports and their parity against the fake-quantized PyTorch model."""

import onnx
import pytest
import torch
from torch import nn

from edgekd.convert.qat import fold_batchnorm, load_qat, prepare_qat, save_qat
from edgekd.distill.trainer import cached_targets, train
from edgekd.errors import ExportError
from edgekd.export import export_model
from edgekd.export.base import ExportContext, parse_formats
from edgekd.export.parity import default_tolerance
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model

SHAPE = [1, 3, 16, 16]


@pytest.fixture(scope="module")
def distilled():
    """A teacher, images labelled by it, and a student distilled from it for two epochs."""
    torch.manual_seed(0)
    teacher = build_model(ArchSpec(width=0.5, depth=1), 3, 3).eval()
    x = torch.rand(96, 3, 16, 16)
    with torch.no_grad():
        t_logits = teacher(x) * 4
    y = t_logits.argmax(1)
    student = build_model(ArchSpec(width=0.25, depth=1), 3, 3)
    train(student, x, y, epochs=2, batch_size=32, lr=1e-2, seed=0, teacher=cached_targets(t_logits))
    return student.eval(), x, y, t_logits


def test_fold_batchnorm_keeps_outputs_and_removes_every_batchnorm(distilled):
    student, x, _, _ = distilled
    folded, n = fold_batchnorm(student, x[:8])
    assert n > 0 and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        assert torch.allclose(folded(x), student(x), atol=1e-4)
    assert any(isinstance(m, nn.BatchNorm2d) for m in student.modules())  # the original is untouched


class Misregistered(nn.Module):
    """A BatchNorm registered right after a convolution it does not follow in the data flow."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.other = nn.Conv2d(3, 4, 3, padding=1)
        self.bn.running_mean.uniform_(-1, 1)
        self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        return self.conv(x) + self.bn(self.other(x))


def test_fold_batchnorm_refuses_a_fold_that_changes_the_outputs():
    model = Misregistered().eval()
    folded, n = fold_batchnorm(model, torch.rand(2, 3, 8, 8))
    assert n == 0 and isinstance(folded.bn, nn.BatchNorm2d)


def test_qat_student_exports_int8_with_quantized_ops_and_parity(distilled, tmp_path):
    student, x, y, t_logits = distilled
    qmodel, folded = prepare_qat(student, x[:64])
    assert folded > 0
    before = {k: v.clone() for k, v in qmodel.state_dict().items()}
    hist = train(qmodel, x, y, epochs=1, batch_size=32, lr=1e-3, seed=1, teacher=cached_targets(t_logits),
                 terms=[("response", 1.0)])
    assert len(hist.epoch_loss) == 1 and hist.epoch_loss[0] > 0
    changed = [k for k, v in qmodel.state_dict().items() if not torch.equal(v, before[k])]
    assert any("weight" in k for k in changed)  # the KD loss trained through the fake quantizers
    with torch.no_grad():
        assert not torch.allclose(qmodel(x), student(x), atol=1e-6)  # quantization is in the forward pass

    ctx = ExportContext(input_shape=SHAPE, metadata={"classes": "a,b,c"})
    onnx_res = export_model("onnx-int8-qat", qmodel, tmp_path, "s", ctx, x, y)
    ops = {n.op_type for n in onnx.load(onnx_res.path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert onnx_res.precision == "int8" and not onnx_res.parity.violations(default_tolerance("int8"))
    # ONNX Runtime runs every convolution in INT8 (per-tensor activation scales; per-channel ones
    # at depthwise inputs left those convolutions in float)
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(onnx_res.path, opts, providers=["CPUExecutionProvider"])
    run_ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "QLinearConv" in run_ops and not {"Conv", "FusedConv"} & set(run_ops), run_ops
    assert onnx_res.parity.top1_agreement >= 0.95  # integer kernels round where fake quantization does not
    ov_res = export_model("openvino-int8-qat", qmodel, tmp_path, "s", ctx, x, y)
    assert ov_res.precision == "int8" and not ov_res.parity.violations(default_tolerance("int8"))

    save_qat(tmp_path / "s.qat.pt", qmodel, {"qat_epochs": 1})
    again = load_qat(tmp_path / "s.qat.pt", build_model(ArchSpec(width=0.25, depth=1), 3, 3), SHAPE)
    with torch.no_grad():
        assert torch.equal(again(x), qmodel(x))


def test_qat_formats_refuse_a_float_model_and_mixing(distilled, tmp_path):
    student, x, y, _ = distilled
    with pytest.raises(ExportError, match="int8-qat"):
        export_model("onnx-int8-qat", student, tmp_path, "f", ExportContext(input_shape=SHAPE, metadata={}), x, y)
    with pytest.raises(ExportError, match="quantization-aware"):
        parse_formats("onnx,onnx-int8-qat")
    assert parse_formats("openvino-int8-qat") == ["onnx-int8-qat", "openvino-int8-qat"]


def test_load_qat_rejects_other_files(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError, match="cannot read"):
        load_qat(tmp_path / "x.pt", build_model(ArchSpec(width=0.25, depth=1), 3, 3), SHAPE)
    torch.save({"state_dict": {}}, tmp_path / "y.pt")
    with pytest.raises(ExportError, match="not an edgekd quantization-aware checkpoint"):
        load_qat(tmp_path / "y.pt", build_model(ArchSpec(width=0.25, depth=1), 3, 3), SHAPE)

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.convert.onnx import to_onnx
from edgekd.errors import TargetError
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.profilers.predictor import fit_factors, graph_costs, predict, predict_model
from edgekd.profilers.predictor.calibration import (
    Calibration,
    calibration_dir,
    default_factors,
    load_calibration,
    now,
    save_calibration,
)
from edgekd.profilers.predictor.graph import fit_kind
from edgekd.profilers.predictor.roofline import latency_s, peak_figures
from edgekd.targets import Target, get_target

from ..conftest import run_cli


def small_graph(path):
    """x[1,4,8,8] -> Conv 3x3 (8 out, bias) -> Relu -> depthwise 3x3 -> Add(x8) -> GAP -> Flatten -> Gemm(8->5)."""
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.random((8, 4, 3, 3), dtype=np.float32), "w1"),
            numpy_helper.from_array(np.zeros(8, np.float32), "b1"),
            numpy_helper.from_array(rng.random((8, 1, 3, 3), dtype=np.float32), "w2"),
            numpy_helper.from_array(rng.random((5, 8), dtype=np.float32), "w3"),
            numpy_helper.from_array(np.zeros(5, np.float32), "b3")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=8, name="dw"),
             helper.make_node("Add", ["c2", "r1"], ["a"], name="add"),
             helper.make_node("GlobalAveragePool", ["a"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1, name="fc")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])], init)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_flops_and_bytes_by_hand(tmp_path):
    cost = graph_costs(small_graph(tmp_path / "g.onnx"), [1, 4, 8, 8])
    n = {c.name: c for c in cost.nodes}
    assert n["conv"].kind == "conv" and n["conv"].flops == 2 * 512 * 4 * 9 + 512 and n["conv"].channels == 8
    assert fit_kind(n["conv"]) == "conv_u"  # 8 output channels: not a whole block of 16
    assert n["conv"].bytes == (256 + 288 + 8 + 512) * 4
    assert n["relu"].kind == "fused" and n["relu"].bytes == 0  # fused into the conv before it
    assert n["dw"].kind == "dwconv" and n["dw"].flops == 2 * 512 * 1 * 9
    assert n["add"].kind == "eltwise" and n["add"].flops == 512 and n["add"].bytes == 3 * 512 * 4
    assert n["gap"].kind == "pool" and n["gap"].flops == 512
    assert n["flat"].kind == "layout" and n["flat"].flops == 0 and n["flat"].bytes == 0
    assert n["fc"].kind == "gemm" and n["fc"].flops == 2 * 1 * 5 * 8
    assert cost.weights_bytes == (288 + 8 + 72 + 40 + 5) * 4
    # batch 2 doubles activations and FLOPs, not weights
    cost2 = graph_costs(tmp_path / "g.onnx", [2, 4, 8, 8])
    assert cost2.flops == pytest.approx(2 * cost.flops) and cost2.weights_bytes == cost.weights_bytes


def test_the_device_model_by_hand(tmp_path):
    cost = graph_costs(small_graph(tmp_path / "g.onnx"), [1, 4, 8, 8])
    target = Target(name="t", device_class="drone", runtimes=["onnxruntime"], default_budget_ms=10,
                    peak_gflops={"fp32": 1.0}, memory_bandwidth_gbps=1.0,
                    power_modes=[{"name": "p", "watts": 2.0}], default_power_mode="p")
    f = default_factors(target, 1.0, 1.0)
    expected = f.per_inference_s
    for node in cost.nodes:
        k = fit_kind(node)
        expected += f.per_gflop_s[k] * node.flops / 1e9 + f.per_mb_s[k] * node.bytes / 1e6 + f.per_node_s[k]
    p = predict(cost, target)
    assert p.latency_ms == pytest.approx(expected * 1000)
    assert p.energy_mj == pytest.approx(2.0 * expected * 1000)
    assert "uncalibrated" in p.calibration
    # the defaults are a roofline: 1 GFLOP/s at 30 % for a 3x3 conv, 1 GB/s at half speed
    assert f.per_gflop_s["conv"] == pytest.approx(1 / 0.3) and f.per_mb_s["conv"] == pytest.approx(1 / 500)


def test_calibration_recovers_known_factors_and_cross_validates(tmp_path):
    target = get_target("drone-rpi5")
    costs, groups = [], []
    for i, (w, d, k, e, r) in enumerate([(0.25, 1, 3, 2, 16), (0.5, 1, 5, 3, 16), (1.0, 2, 3, 4, 32),
                                         (2.0, 1, 3, 3, 16), (0.5, 3, 3, 2, 32), (1.0, 1, 5, 3, 24),
                                         (1.5, 2, 5, 4, 16), (0.25, 3, 5, 6, 32), (2.0, 2, 3, 2, 24),
                                         (0.75, 1, 3, 3, 32), (1.25, 3, 3, 4, 16), (0.5, 2, 5, 6, 24)]):
        arch = ArchSpec(width=w, depth=d, kernel=k, expansion=e)
        path = to_onnx(build_model(arch, 3, 5), tmp_path / f"m{i}.onnx", [1, 3, r, r])
        costs.append(graph_costs(path, [1, 3, r, r]))
        groups.append(f"w{w}")
    prior = default_factors(target, *peak_figures(target, "fp32"))
    truth = prior.model_copy(deep=True)
    truth.per_gflop_s.update({"conv1x1": 0.9 * prior.per_gflop_s["conv1x1"], "dwconv": 2 * prior.per_gflop_s["dwconv"]})
    truth.per_inference_s = 4e-5
    measured = [latency_s(c, truth) for c in costs]
    fit = fit_factors(costs, measured, prior, prior_weight=1e-6, groups=groups)
    assert fit.median_abs_error_pct < 1.0
    assert fit.factors.per_inference_s == pytest.approx(4e-5, rel=0.25)
    assert fit.cv_median_abs_error_pct is not None and fit.cv_median_abs_error_pct < 5.0  # noiseless: it generalises
    assert len(fit.cv_errors_pct) == len(costs)
    # a measurement set the model cannot explain shows in the cross-validated error, not hidden in-sample
    noisy = [m * (1.6 if i % 3 == 0 else 1.0) for i, m in enumerate(measured)]
    bad = fit_factors(costs, noisy, prior, prior_weight=1e-6, groups=groups)
    assert bad.cv_median_abs_error_pct > fit.cv_median_abs_error_pct
    with pytest.raises(ValueError, match="at least 3 models"):
        fit_factors(costs[:2], measured[:2], prior)


def test_saved_calibration_is_used_automatically(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_CALIBRATION_DIR", str(tmp_path / "cal"))
    model = to_onnx(build_model(ArchSpec(width=0.5, depth=1), 3, 5), tmp_path / "m.onnx", [1, 3, 32, 32])
    target = get_target("jetson")
    before = predict_model(model, target, [1, 3, 32, 32], "tensorrt")
    assert load_calibration(target.name, "tensorrt", "fp32") is None
    defaults = default_factors(target, *peak_figures(target, "fp32"))
    slow = defaults.model_copy(update={"per_inference_s": 0.01})
    save_calibration(Calibration(target=target.name, runtime="tensorrt", precision="fp32", factors=slow, n_models=32,
                                 fitted_at=now(), in_sample_median_abs_error_pct=3.0, cv_median_abs_error_pct=7.5,
                                 conditions={"threads": 4}))
    after = predict_model(model, target, [1, 3, 32, 32], "tensorrt")
    extra_ms = (0.01 - defaults.per_inference_s) * 1000
    assert after.latency_ms.p50 == pytest.approx(before.latency_ms.p50 + extra_ms, rel=1e-6)
    assert set(after.source.values()) <= {"predicted", "measured"} and after.source["latency"] == "predicted"
    assert "calibration of jetson-orin-nano-8gb/tensorrt/fp32" in after.notes[0]
    assert "in-sample 3.0%, cross-validated 7.5%" in after.notes[0] and after.threads == 4
    # a calibration of the earlier device model's form is not read: predictions say uncalibrated
    path = next(calibration_dir().glob("*.json"))
    path.write_text(json.dumps({"target": target.name, "runtime": "tensorrt", "precision": "fp32", "n_models": 32,
                                "fitted_at": now(), "in_sample_median_abs_error_pct": 17.9,
                                "factors": {"compute": {}, "memory": {}, "overhead_s": {},
                                            "overhead_inference_s": 1e-4, "memory_base_mb": 10}}))
    assert load_calibration(target.name, "tensorrt", "fp32") is None
    assert "uncalibrated" in predict_model(model, target, [1, 3, 32, 32], "tensorrt").notes[0]


def test_predict_command_and_missing_figures(tmp_path, monkeypatch):
    model = to_onnx(build_model(ArchSpec(width=0.5, depth=1), 3, 5), tmp_path / "m.onnx", [1, 3, 32, 32])
    out = tmp_path / "p.json"
    proc = run_cli("predict", str(model), "--target", "drone", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "PREDICTED" in proc.stdout
    m = json.loads(out.read_text())
    assert m["source"]["latency"] == "predicted" and m["latency_ms"]["p50"] > 0 and m["target"] == "drone-rpi5"
    for args, says in [(["--runtime", "tensorrt"], "--runtime tensorrt: drone-rpi5 runs onnxruntime"),
                       (["--precision", "fp8"], "--precision fp8: choose fp32, fp16 or int8")]:
        bad = run_cli("predict", str(model), "--target", "drone", *args)
        assert bad.returncode == 2 and says in bad.stderr, bad.stderr
    bare = Target(name="bare", device_class="gpu", runtimes=["tensorrt"], default_budget_ms=10)
    with pytest.raises(TargetError, match="no peak compute"):
        predict(graph_costs(model, [1, 3, 32, 32]), bare)


def test_a_squeeze_and_excite_block_costs_a_layout_round_trip(tmp_path):
    import torch
    from torch import nn

    class SE(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc1, self.fc2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)

        def forward(self, x):
            y = self.conv(x)
            s = torch.sigmoid(self.fc2(torch.relu(self.fc1(y.mean((2, 3), keepdim=True)))))
            return (y * s).mean((2, 3))  # the final average feeds no convolution: no round trip

    path = to_onnx(SE().eval(), tmp_path / "se.onnx", [1, 3, 8, 8])
    reorders = [n for n in graph_costs(path, [1, 3, 8, 8]).nodes if n.kind == "reorder"]
    assert len(reorders) == 1 and reorders[0].bytes == 2 * 2 * 16 * 8 * 8 * 4
    plain = to_onnx(build_model(ArchSpec(width=0.5, depth=1), 3, 5), tmp_path / "m.onnx", [1, 3, 16, 16])
    assert not [n for n in graph_costs(plain, [1, 3, 16, 16]).nodes if n.kind == "reorder"]


def test_fit_kinds_split_convolutions_by_channel_blocks_and_map_size():
    from edgekd.profilers.predictor.graph import NodeCost

    assert fit_kind(NodeCost("a", "Conv", "conv1x1", 1.0, 1.0, channels=64, pixels=256)) == "conv1x1"
    assert fit_kind(NodeCost("b", "Conv", "dwconv", 1.0, 1.0, channels=72, pixels=256)) == "dwconv_u"
    assert fit_kind(NodeCost("c", "Conv", "conv", 1.0, 1.0, channels=512, pixels=4)) == "conv_t"
    assert fit_kind(NodeCost("d", "Conv", "conv", 1.0, 1.0, channels=24, pixels=16)) == "conv_u_t"
    assert fit_kind(NodeCost("e", "Add", "eltwise", 1.0, 1.0)) == "eltwise"

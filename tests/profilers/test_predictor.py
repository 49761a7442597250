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
from edgekd.profilers.predictor.calibration import Calibration, default_factors, load_calibration, now, save_calibration
from edgekd.profilers.predictor.roofline import latency_s
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
    assert n["conv"].kind == "conv" and n["conv"].flops == 2 * 512 * 4 * 9 + 512
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


def test_roofline_by_hand(tmp_path):
    cost = graph_costs(small_graph(tmp_path / "g.onnx"), [1, 4, 8, 8])
    target = Target(name="t", device_class="drone", runtimes=["onnxruntime"], default_budget_ms=10,
                    peak_gflops={"fp32": 1.0}, memory_bandwidth_gbps=1.0,
                    power_modes=[{"name": "p", "watts": 2.0}], default_power_mode="p")
    f = default_factors(target)
    expected = f.overhead_inference_s
    for node in cost.nodes:
        tc = node.flops / (1e9 * f.compute[node.kind]) if node.flops else 0
        tm = node.bytes / (1e9 * f.memory[node.kind]) if node.bytes else 0
        expected += max(tc, tm) + f.overhead_s[node.kind]
    p = predict(cost, target)
    assert p.latency_ms == pytest.approx(expected * 1000)
    assert p.energy_mj == pytest.approx(2.0 * expected * 1000)
    assert "uncalibrated" in p.calibration


def test_calibration_recovers_known_factors(tmp_path):
    target = get_target("drone-rpi5")
    costs = []
    for i, (w, d, k, r) in enumerate([(0.25, 1, 3, 16), (0.5, 1, 5, 16), (1.0, 2, 3, 32), (2.0, 1, 3, 16),
                                      (0.5, 3, 3, 32), (1.0, 1, 5, 24), (1.5, 2, 5, 16), (0.25, 3, 5, 32),
                                      (2.0, 2, 3, 24), (0.75, 1, 3, 32), (1.25, 3, 3, 16), (0.5, 2, 5, 24)]):
        path = to_onnx(build_model(ArchSpec(width=w, depth=d, kernel=k), 3, 5), tmp_path / f"m{i}.onnx", [1, 3, r, r])
        costs.append(graph_costs(path, [1, 3, r, r]))
    truth = default_factors(target).model_copy(deep=True)
    truth.compute.update({"conv": 0.31, "conv1x1": 0.62, "dwconv": 0.07})
    truth.overhead_inference_s = 4e-5
    measured = [latency_s(c, truth, 153.6, 17.0) for c in costs]
    fit = fit_factors(costs, measured, target, prior_weight=1e-4)
    assert fit.median_abs_error_pct < 1.0
    assert fit.factors.compute["conv1x1"] == pytest.approx(0.62, rel=0.1)  # the dominant, compute-bound kind
    assert fit.factors.overhead_inference_s == pytest.approx(4e-5, rel=0.25)


def test_saved_calibration_is_used_automatically(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_CALIBRATION_DIR", str(tmp_path / "cal"))
    model = to_onnx(build_model(ArchSpec(width=0.5, depth=1), 3, 5), tmp_path / "m.onnx", [1, 3, 32, 32])
    target = get_target("jetson")
    before = predict_model(model, target, [1, 3, 32, 32], "tensorrt")
    assert load_calibration(target.name, "tensorrt", "fp32") is None
    slow = default_factors(target).model_copy(update={"overhead_inference_s": 0.01})
    save_calibration(Calibration(target=target.name, runtime="tensorrt", precision="fp32", factors=slow, n_models=32,
                                 fitted_at=now(), in_sample_median_abs_error_pct=3.0))
    after = predict_model(model, target, [1, 3, 32, 32], "tensorrt")
    extra_ms = (0.01 - default_factors(target).overhead_inference_s) * 1000
    assert after.latency_ms.p50 == pytest.approx(before.latency_ms.p50 + extra_ms, rel=1e-6)
    assert set(after.source.values()) <= {"predicted", "measured"} and after.source["latency"] == "predicted"
    assert "calibration of jetson-orin-nano-8gb/tensorrt/fp32" in after.notes[0]


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

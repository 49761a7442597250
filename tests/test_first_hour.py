"""What a new user meets first: a budget that binds by default, energy estimates that cannot
decide a pick unasked, the export set of the target, early and plain errors, and help that
shows defaults."""

import pytest

from edgekd.config import RunConfig, build_config
from edgekd.errors import ConfigError
from edgekd.pipeline.plan import RunPlan, resolve_exports
from edgekd.profilers.measurement import LatencyStats, Measurement
from edgekd.search.candidates import costs_of
from edgekd.targets import get_target

from .conftest import run_cli


def _plan(cfg: RunConfig, target: str = "cpu") -> RunPlan:
    t = get_target(target)
    budget = cfg.budget_ms if cfg.budget_ms is not None else t.default_budget_ms
    return RunPlan(cfg=cfg, resume=False, target=t, budget_ms=budget, budget_source="not yet bound",
                   terms=[], needs=frozenset(), run_dir=None, measurer=None, threads=1, ds=None,  # type: ignore[arg-type]
                   unlabeled_x=None, teachers=None, kd=None)  # type: ignore[arg-type]


def test_without_budget_ms_the_budget_is_the_teachers_p90_over_the_speedup():
    plan = _plan(build_config({})).bind_budget(0.8)
    assert plan.budget_ms == pytest.approx(0.16)
    assert plan.budget_source.startswith("the teacher's p50 0.800 ms / --speedup 5")
    plan = _plan(build_config({"speedup": 4})).bind_budget(0.8)
    assert plan.budget_ms == pytest.approx(0.2)
    slow = _plan(build_config({})).bind_budget(500.0)  # the target's own budget (33.3 ms) is tighter
    assert slow.budget_ms == pytest.approx(33.3) and slow.budget_source.startswith("target cpu's budget")
    assert _plan(build_config({"budget_ms": 5.0})).bind_budget(0.8).budget_ms == 5.0  # --budget-ms wins


def _measurement(p50: float, energy: float, meter: str) -> Measurement:
    stats = LatencyStats(n=50, warmup=5, mean=p50 * 3, std=p50, min=p50 / 2, max=p50 * 50, p50=p50, p90=p50 * 1.2,
                         p99=p50 * 2, cv=0.3, total_s=1.0)
    return Measurement(target="cpu", runtime="onnxruntime", runtime_version="1", device="cpu", precision="fp32",
                       batch=1, input_shape=[1, 3, 8, 8], threads=1, latency_ms=stats, peak_memory_mb=10.0,
                       model_size_mb=1.0, energy_mj=energy, mean_power_w=15.0, energy_meter=meter,
                       source={"latency": "measured", "energy": "measured" if meter != "estimate" else "predicted"})


def test_a_predicted_energy_enters_j_only_when_asked():
    est = _measurement(0.1, 1.5, "estimate")
    assert costs_of(est, delta=0.0).energy_mj is None  # shown in the report, left out of C_hw
    assert costs_of(est, delta=0.1).energy_mj == 1.5  # --delta asks for energy
    assert costs_of(_measurement(0.1, 1.5, "rapl"), delta=0.0).energy_mj == 1.5  # a sensor's reading counts


def test_a_busy_hosts_spread_is_named():
    quiet = _measurement(0.1, 1.0, "estimate").latency_ms
    assert quiet.spread_warning is None
    busy = quiet.model_copy(update={"p90": 1.1})  # p90 eleven times p50
    assert busy.spread_warning is not None and "p90 = 11.0 x p50" in busy.spread_warning


@pytest.mark.parametrize("target, formats, note", [
    ("cpu", ["onnx", "openvino"], None),
    ("drone-rpi5", ["onnx"], None),
    ("jetson-orin-nano", ["onnx"], "edgekd export student.pt --formats tensorrt-fp16"),
])
def test_the_default_exports_are_what_the_target_runs(target, formats, note):
    got, said = resolve_exports(build_config({"target": target}), get_target(target))
    assert got == formats
    assert (said is None) if note is None else (note in said and "trtexec" in said)


def test_given_export_formats_are_checked_before_any_work():
    with pytest.raises(ConfigError, match="--export-formats: unknown export format bogus"):
        resolve_exports(build_config({"export_formats": ["onnx", "bogus"]}), get_target("cpu"))


def test_bad_flags_fail_before_any_work_in_plain_words(tmp_path):
    out = tmp_path / "run"
    empty = tmp_path / "empty.yaml"
    empty.write_text("candidates: []\n")
    for args, says in [(["--export-formats", "onnx,bogus"], "--export-formats: unknown export format bogus"),
                       (["--precisions", "fp64"], "invalid value 'fp64' for --precisions: input should be"),
                       (["--feature-pairs", "x"], "invalid value 'x' for --feature-pairs: 'x' is not STUDENT=TEACHER"),
                       (["--energy-meter", "rapll"], "unknown energy meter 'rapll'; did you mean 'rapl'?"),
                       (["--students", "edgenet", "--config", str(empty)], "the grid search has no candidates")]:
        proc = run_cli("optimize", "--preset", "smoke", *args, "--out", str(out))
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
        assert "Value error" not in proc.stderr and "precisions.0" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_optimize_help_shows_defaults_and_flags_without_values():
    proc = run_cli("optimize", "--help", env={"COLUMNS": "200"})
    assert proc.returncode == 0
    text = proc.stdout
    for shown in ("(default: 0.5)", "(default: 5; smoke preset: 1.5)", "(default: 0)", "smoke preset: False)"):
        assert shown in text, shown
    overwrite = next(line for line in text.splitlines() if "--overwrite" in line)
    assert "<bool>" not in overwrite

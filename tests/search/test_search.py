import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from edgekd.distill.teacher import TeacherOutputs, apply_view
from edgekd.distill.trainer import feature_pairs
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.search.engine import rung_epochs, survivors
from edgekd.search.pareto import pareto_front

from ..conftest import run_cli


def test_rung_schedule_and_survivors():
    assert rung_epochs(8, 3, 2) == [2, 4, 8]
    assert rung_epochs(9, 3, 3) == [1, 3, 9]
    assert rung_epochs(2, 3, 2) == [1, 2]  # never below one epoch, no repeated rung
    assert survivors([("a", 3.0), ("b", 1.0), ("c", 2.0)], eta=2) == ["b", "c"]  # ceil(3/2) best by J
    assert survivors([("a", 3.0), ("b", 1.0), ("c", 2.0), ("d", 0.5)], eta=3) == ["d", "b"]


def test_pareto_front_by_hand():
    # (error, p90 ms, energy)
    pts = [(0.1, 5.0, 1.0), (0.2, 2.0, 1.0), (0.1, 6.0, 1.0), (0.3, 2.0, 2.0), (0.05, 9.0, 3.0)]
    assert pareto_front(pts) == [0, 1, 4]


def test_feature_pairs_by_relative_depth():
    assert feature_pairs(3, 3) == [(0, 0), (1, 1), (2, 2)]
    assert feature_pairs(2, 4) == [(0, 1), (1, 3)]  # a deeper teacher layer guides a shallower student layer


def test_dihedral_views_are_the_eight_distinct_symmetries():
    x = torch.arange(9.0).view(1, 1, 3, 3)
    views = {tuple(apply_view(x, v).flatten().tolist()) for v in range(8)}
    assert len(views) == 8 and tuple(apply_view(x, 0).flatten().tolist()) == tuple(range(9))


def test_teacher_outputs_are_memory_mapped_and_reused(tmp_path):
    torch.manual_seed(0)
    teacher = build_model(ArchSpec(width=0.25, depth=1), 3, 4).eval()
    x = torch.rand(10, 3, 16, 16)
    out = TeacherOutputs.build(tmp_path, [teacher], x, views=4, features=True, embedding=True, batch_size=4)
    assert isinstance(out.logits[0], np.memmap) and out.logits[0].shape == (4, 10, 4)
    assert len(out.feats) == 3 and out.emb.shape[:2] == (4, 10)
    idx = torch.tensor([7, 2])
    b = out.batch(idx, 3, apply_view(x[idx], 3))
    with torch.no_grad():
        expected = teacher(apply_view(x[idx], 3))
    assert torch.allclose(b.logits[0], expected, atol=1e-5)  # the cached target belongs to the viewed image
    again = TeacherOutputs.build(tmp_path, [teacher], x, views=4, features=True, embedding=True)
    assert again.folder == out.folder and len(list(tmp_path.iterdir())) == 1  # reused, not recomputed


SEARCH_YAML = """search: tpe
trials: 6
bracket_size: 3
rungs: 2
student_epochs: 2
search_space: {widths: [0.25, 0.5, 2.0], stage_depths: [1, 3], kernels: [3], expansions: [2, 6], precisions: [fp32]}
"""


@pytest.mark.slow
def test_tpe_search_screens_halves_and_records_every_trial(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(SEARCH_YAML)
    proc = run_cli("optimize", "--preset", "smoke", "--config", str(cfg), "--budget-ms", "0.12", "--out",
                   str(tmp_path / "run"), "--quiet", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "run" / "report.json").read_text())
    assert r["search"]["mode"] == "tpe" and r["search"]["rung_epochs"] == [1, 2]
    assert len(r["trials"]) == 6
    statuses = [t["status"] for t in r["trials"]]
    for t in r["trials"]:
        if t["status"] == "screened_out":
            assert t["rungs"] == [] and t["screen"]["p90_ms"] > 0.12 * 1.5  # no training spent on it
            assert t["screen"]["reason_kind"] == "latency" and t["detail"].startswith("screened out: p90")
    # successive halving: of each bracket's trained trials, only the better half reaches rung 1
    assert "stopped_at_rung" in statuses or statuses.count("finished") <= 4
    assert r["selected"] in [c["name"] for c in r["candidates"]]
    assert set(r["pareto_front"]) <= {c["name"] for c in r["candidates"]} and r["pareto_front"]
    assert (tmp_path / "run" / "optuna.db").is_file()


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_finished_work(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(SEARCH_YAML.replace("trials: 6\nbracket_size: 3", "trials: 4\nbracket_size: 2"))  # two brackets
    run = tmp_path / "run"
    env = {**os.environ, "EDGEKD_CACHE_DIR": str(tmp_path / "cache")}
    args = ["optimize", "--preset", "smoke", "--config", str(cfg), "--budget-ms", "1000", "--train-threads", "1",
            "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "edgekd.cli", *args, "--out", str(run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(run.glob("candidates/*/rung0-*.json"))) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up
    proc.wait()
    done = {p: p.stat().st_mtime_ns for p in run.glob("candidates/*/rung*.json")}
    assert len(done) >= 2 and not (run / "report.json").exists()
    teacher_mtime = (run / "teacher.pt").stat().st_mtime_ns
    before = json.loads((run / "stage_seconds.json").read_text())["seconds"]  # kept as the stopped run went
    assert before["teacher"] > 0 and before["kd_training"] > 0
    res = run_cli("optimize", "--resume", str(run), env={"EDGEKD_CACHE_DIR": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stderr
    assert "(resumed)" in res.stdout
    for p, mtime in done.items():
        assert p.stat().st_mtime_ns == mtime, f"{p} was redone"
    assert (run / "teacher.pt").stat().st_mtime_ns == teacher_mtime  # the teacher was not retrained
    r = json.loads((run / "report.json").read_text())
    assert r["resumed"] is True and len(r["trials"]) == 4
    assert "retrained" not in res.stdout
    # the report keeps what the stopped run did: the teacher's curve and the time of its stages
    assert len(r["teacher"]["train_loss"]) == r["config"]["teacher_epochs"] and "resumed" in r["teacher"]["origin"]
    assert all(r["stage_seconds"][k] >= v for k, v in before.items())
    # the same run without the stop: the same proposals, and every student trained to the same weights
    # (each unit of work seeds its own RNG; the sampler is seeded per bracket)
    whole = run_cli(*args, "--out", str(tmp_path / "whole"), env={"EDGEKD_CACHE_DIR": str(tmp_path / "cache")})
    assert whole.returncode == 0, whole.stderr
    w = json.loads((tmp_path / "whole" / "report.json").read_text())
    assert [t["name"] for t in w["trials"]] == [t["name"] for t in r["trials"]]
    first_rung = {t["name"]: t["rungs"][0]["val_accuracy"] for t in r["trials"] if t["rungs"]}
    assert first_rung and first_rung == {t["name"]: t["rungs"][0]["val_accuracy"] for t in w["trials"] if t["rungs"]}


def test_resume_of_a_folder_that_is_not_a_run(tmp_path):
    proc = run_cli("optimize", "--resume", str(tmp_path))
    assert proc.returncode == 2 and "holds no config.yaml" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kd, extra", [
    ("response:1,feature:0.5,relation:0.5", []),
    ("robust", []),
    ("multi-teacher", ["--teacher-extra", "TEACHER"]),
    ("semi-supervised", ["--unlabeled", "UNLABELED"]),
    ("response,feature:0.5", ["--kd-weighting", "entropy", "--feature-distance", "l1", "--feature-importance",
                              "attention"]),
])
def test_each_kd_method_runs_end_to_end(tmp_path, smoke_run, kd, extra):
    from ..data.test_folder import make_folder

    args = [a.replace("TEACHER", str(smoke_run / "teacher.pt")) for a in extra]
    if "UNLABELED" in args:
        # unlabelled images must have the data set's bands: an RGB folder beside an RGB data set
        from PIL import Image

        unl = tmp_path / "unl"
        unl.mkdir()
        for i in range(8):
            Image.fromarray(np.full((20, 20, 3), 30 * i, np.uint8)).save(unl / f"{i}.png")
        args = ["--unlabeled", str(unl), "--data", str(make_folder(tmp_path / "data", classes=("A", "B"), n=6)),
                "--image-size", "16"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("candidates:\n  - {width: 0.25, depth: 1}\nteacher_views: 2\n")
    proc = run_cli("optimize", "--preset", "smoke", "--kd", kd, *args, "--config", str(cfg), "--seed", "1",
                   "--out", str(tmp_path / "run"), "--quiet", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "run" / "report.json").read_text())
    assert [t["name"] for t in r["objective"]["kd"]["terms"]] == [k.split(":")[0] for k in kd.split(",")]
    assert r["candidates"][0]["val_kd_loss"] > 0
    if "--kd-weighting" in extra:  # the report names the weighting and the feature distance
        kd_summary = r["objective"]["kd"]
        assert kd_summary["weighting"] == "entropy" and kd_summary["feature_importance"] == "attention"
        md = (tmp_path / "run" / "report.md").read_text()
        assert "weighted per sample by the teacher's entropy" in md and "feature distance l1" in md


@pytest.mark.parametrize("kd, message", [("multi-teacher", "--teacher-extra"), ("semi-supervised", "--unlabeled"),
                                         ("attention", "unknown KD loss 'attention'"),
                                         ("response --kd-weighting hardness", "kd-weighting"),
                                         ("feature --feature-distance l3", "feature-distance")])
def test_kd_methods_that_lack_their_inputs(tmp_path, kd, message):
    kd, *more = kd.split(" ")
    proc = run_cli("optimize", "--preset", "smoke", "--kd", kd, *more, "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "run").exists()

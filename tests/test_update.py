"""`edgekd update`: incremental distillation end to end on tiny image folders, the head
extension, the history term, and the errors of a run directory that cannot be updated."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from edgekd.distill.losses import history_loss, soft_kl
from edgekd.distill.trainer import History, cached_targets, train
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.models.heads import extend_head
from edgekd.models.io import load_checkpoint

from .conftest import run_cli

COLOURS = {"water": (30, 60, 160), "forest": (30, 120, 40), "urban": (150, 150, 150), "sand": (210, 190, 120)}


def image_folder(root: Path, classes: list[str], n: int, seed: int) -> Path:
    """Tiny RGB tiles, one colour per class plus noise: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            tile = np.clip(np.array(COLOURS[c]) + rng.normal(0, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(tile).save(root / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("update")
    old = image_folder(root / "old", ["water", "forest", "urban"], 24, seed=0)
    cfg = root / "c.yaml"
    cfg.write_text("candidates:\n  - {width: 0.25, depth: 1}\nbaseline: false\nimage_size: 16\n"
                   "export_formats: [onnx]\nbudget_ms: 50\n")
    out = root / "run1"
    proc = run_cli("optimize", "--preset", "smoke", "--data", str(old), "--config", str(cfg), "--out", str(out),
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out


def test_extend_head_keeps_the_old_rows():
    torch.manual_seed(0)
    m = build_model(ArchSpec(width=0.25, depth=1), 3, 3)
    w, b = m.classifier.weight.detach().clone(), m.classifier.bias.detach().clone()
    extend_head(m, 3, 2)
    assert m.classifier.out_features == 5
    assert torch.equal(m.classifier.weight[:3], w) and torch.equal(m.classifier.bias[:3], b)
    assert m(torch.rand(2, 3, 16, 16)).shape == (2, 5)


def test_history_loss_by_hand():
    s = torch.tensor([[1.0, 0.0, 3.0]])  # the third output is a new class: no history
    p = torch.tensor([[0.0, 1.0]])
    t = 2.0
    ps, pp = torch.softmax(s[:, :2] / t, 1), torch.softmax(p / t, 1)
    by_hand = t * t * float((pp * (pp.log() - ps.log())).sum())
    assert history_loss(s, p, t).item() == pytest.approx(by_hand, rel=1e-5)
    assert history_loss(s, p, t).item() == pytest.approx(soft_kl(s[:, :2], p, t).item())


def test_the_history_term_changes_training_and_needs_one_view():
    torch.manual_seed(0)
    x, y = torch.rand(32, 3, 16, 16), torch.randint(0, 3, (32,))
    t_logits = torch.randn(32, 3)
    prev = torch.randn(32, 2) * 3
    losses = []
    for mu in (0.0, 1.0):
        m = build_model(ArchSpec(width=0.25, depth=1), 3, 3)
        torch.manual_seed(1)
        m = build_model(ArchSpec(width=0.25, depth=1), 3, 3)
        hist = train(m, x, y, epochs=1, batch_size=16, lr=1e-3, seed=0, teacher=cached_targets(t_logits),
                     history=History(prev, mu))
        losses.append(hist.epoch_loss[0])
    assert losses[1] > losses[0]  # the same run plus a non-negative KL term
    with pytest.raises(ValueError, match="one view"):
        train(build_model(ArchSpec(width=0.25, depth=1), 3, 3), x, y, epochs=1, batch_size=16, lr=1e-3, seed=0,
              teacher=SimpleNamespace(views=2), history=History(prev, 1.0))
    # cross-entropy training (how a teacher is fine-tuned) takes the history term too
    ce = []
    for mu in (0.0, 1.0):
        torch.manual_seed(1)
        m = build_model(ArchSpec(width=0.25, depth=1), 3, 3)
        ce.append(train(m, x, y, epochs=1, batch_size=16, lr=1e-3, seed=0, history=History(prev, mu)).epoch_loss[0])
    assert ce[1] > ce[0]


@pytest.mark.slow
def test_update_adds_classes_keeps_old_ones_and_ships_the_student(first_run, tmp_path):
    new = image_folder(tmp_path / "new", ["water", "sand"], 24, seed=1)
    out = tmp_path / "run2"
    proc = run_cli("update", str(first_run), "--data", str(new), "--out", str(out), "--epochs", "20", "--lr", "0.01",
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "update.json").read_text())
    assert r["previous_classes"] == ["forest", "urban", "water"]
    assert r["classes"] == ["forest", "urban", "water", "sand"] and r["classes_added"] == ["sand"]
    assert "history:1" in r["kd_terms"] and r["mu"] == 1.0
    assert r["replay_images"] > 0  # the first run's folder is still there
    assert r["before"]["new_classes"] == 0.0  # the previous student has no output for sand
    assert r["after"]["new_classes"] > 0 and r["after"]["old_classes"] is not None  # it learned the new class
    assert r["after"]["all"] > r["before"]["all"]
    assert r["forgetting_points"] == pytest.approx(100 * (r["before"]["old_classes"] - r["after"]["old_classes"]),
                                                   abs=0.01)
    assert r["measurement"]["source"]["latency"] == "measured" and r["measurement"]["latency_ms"]["n"] >= 50
    assert r["exports"] and r["exports"][0]["parity"]["top1_agreement"] == 1.0
    student, meta = load_checkpoint(out / r["student"]["checkpoint"])
    assert meta["classes"] == r["classes"] and student(torch.rand(1, 3, 16, 16)).shape == (1, 4)
    teacher, tmeta = load_checkpoint(out / "teacher.pt")
    assert tmeta["classes"] == r["classes"]
    assert "Forgetting" in (out / "update.md").read_text()
    assert len(r["lineage"]) == 2

    # plain fine-tuning for comparison: no history term; and an update of the update (the lineage grows)
    plain = tmp_path / "plain"
    proc = run_cli("update", str(first_run), "--data", str(new), "--out", str(plain), "--epochs", "1", "--mu", "0",
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    p = json.loads((plain / "update.json").read_text())
    assert not any(t.startswith("history") for t in p["kd_terms"])
    assert "plain fine-tuning" in (plain / "update.md").read_text()
    more = image_folder(tmp_path / "more", ["water", "forest", "urban", "sand"], 8, seed=2)
    proc = run_cli("update", str(out), "--data", str(more), "--out", str(tmp_path / "run3"), "--epochs", "1",
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    r3 = json.loads((tmp_path / "run3" / "update.json").read_text())
    assert r3["classes_added"] == [] and len(r3["lineage"]) == 3 and r3["replay_images"] > 0


def test_update_errors_name_the_problem(first_run, tmp_path):
    new = image_folder(tmp_path / "new", ["sand"], 4, seed=3)
    empty = tmp_path / "stopped"
    empty.mkdir()
    (empty / "config.yaml").write_text("target: cpu\n")
    proc = run_cli("update", str(empty), "--data", str(new), "--out", str(tmp_path / "o1"))
    assert proc.returncode == 2 and "no report.json, so no selected student" in proc.stderr
    assert "edgekd optimize --resume" in proc.stderr and not (tmp_path / "o1").exists()
    proc = run_cli("update", str(first_run), "--data", str(new), "--out", str(first_run))
    assert proc.returncode == 2 and "--out is the run being updated" in proc.stderr
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x.txt").write_text("mine")
    proc = run_cli("update", str(first_run), "--data", str(new), "--out", str(busy))
    assert proc.returncode == 2 and "already holds files" in proc.stderr and (busy / "x.txt").read_text() == "mine"
    proc = run_cli("update", str(first_run), "--data", str(new), "--out", str(tmp_path / "o2"), "--teacher",
                   str(first_run / "teacher.pt"))
    assert proc.returncode == 2 and "pass a teacher trained on every class" in proc.stderr
    assert not (tmp_path / "o2" / "update.json").exists()
    (tmp_path / "nothing").mkdir()  # bad new data: refused before --out is created (no folder, no .lock)
    proc = run_cli("update", str(first_run), "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o3"))
    assert proc.returncode == 2 and not (tmp_path / "o3").exists(), proc.stderr


def _killed_when(args: list[str], progress: Path, stage: str, ctrl_c: bool = False) -> str:
    """Run `edgekd update ARGS` and SIGKILL it (or Ctrl-C it: SIGINT) as soon as
    OUT/update_progress.json records `stage`; returns what it printed on stderr."""
    # Ctrl-C as a terminal delivers it: a test run started in the background (which ignores SIGINT, and
    # children inherit that) must not make the update deaf to it
    proc = subprocess.Popen([sys.executable, "-m", "edgekd.cli", "update", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 600  # a bound on the wait, not a speed check
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if stage in json.loads(progress.read_text())["stages"]:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        assert proc.poll() is None, f"the update ended before it could be killed: {proc.stderr.read()}"
        if ctrl_c:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=300) == 130
            return proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    return ""


@pytest.mark.serial
def test_a_killed_update_resumes_without_training_again(first_run, tmp_path):
    new = image_folder(tmp_path / "new", ["water", "sand"], 24, seed=1)
    out = tmp_path / "run2"
    args = [str(first_run), "--data", str(new), "--out", str(out), "--epochs", "8", "--teacher-epochs", "2"]
    said = _killed_when(args, out / "update_progress.json", "teacher", ctrl_c=True)  # Ctrl-C while the student trains
    assert f"what finished is kept in {out}" in said and f"--out {out} --epochs 8 --teacher-epochs 2 --resume" in said
    teacher_made = (out / "teacher.pt").stat().st_mtime_ns
    proc = run_cli("update", *args)
    assert proc.returncode == 2 and "holds an interrupted update; continue it with --resume" in proc.stderr
    proc = run_cli("update", *args, "--resume", "--mu", "0.5")
    assert proc.returncode == 2 and "was started with --mu 1.0, not 0.5" in proc.stderr
    proc = run_cli("update", *args, "--resume", "--overwrite")
    assert proc.returncode == 2 and "pass one of them" in proc.stderr
    _killed_when([*args, "--resume"], out / "update_progress.json", "student")  # killed while it is measured
    proc = run_cli("update", *args, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "teacher: kept from the interrupted update" in proc.stdout
    assert "student: kept from the interrupted update" in proc.stdout
    assert (out / "teacher.pt").stat().st_mtime_ns == teacher_made  # not trained again
    r = json.loads((out / "update.json").read_text())
    assert r["resumed"] and r["classes_added"] == ["sand"] and len(r["train_loss"]) == 8
    proc = run_cli("update", *args, "--resume")
    assert proc.returncode == 2 and "holds a finished update" in proc.stderr
    proc = run_cli("update", str(first_run), "--data", str(new), "--out", str(tmp_path / "fresh"), "--resume")
    assert proc.returncode == 2 and "holds no interrupted update" in proc.stderr


@pytest.mark.slow
def test_a_student_cut_from_the_teacher_updates_with_a_new_class(tmp_path):
    old = image_folder(tmp_path / "old", ["water", "forest", "urban"], 24, seed=0)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("baseline: false\nimage_size: 16\nexport_formats: [onnx]\nbudget_ms: 50\n")
    run = tmp_path / "run1"
    proc = run_cli("optimize", "--preset", "smoke", "--data", str(old), "--config", str(cfg), "--students",
                   "from-teacher", "--out", str(run), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "report.json").read_text())["selected"].startswith("teacher-k")
    new = image_folder(tmp_path / "new", ["water", "sand"], 24, seed=1)
    out = tmp_path / "run2"
    proc = run_cli("update", str(run), "--data", str(new), "--out", str(out), "--epochs", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "update.json").read_text())
    assert r["classes_added"] == ["sand"] and r["exports"][0]["parity"]["top1_agreement"] == 1.0
    student, meta = load_checkpoint(out / r["student"]["checkpoint"])  # the plan replayed, the head extended
    assert meta["source"]["kind"] == "from-teacher" and student(torch.rand(2, 3, 16, 16)).shape == (2, 4)

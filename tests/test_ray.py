"""Candidate training on Ray (`--workers`), one student data-parallel on Ray Train
(`--data-parallel`), a killed worker retried, a killed driver resumed, and a missing Ray refused.
Every test that starts Ray points it at a temporary folder of its own (RAY_TMPDIR) and leaves
no process of it behind."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import psutil
import pytest
import torch

from .conftest import run_cli

ray = pytest.importorskip("ray", reason="Ray is an extra: pip install 'edgekd[ray]' (CI installs it)")

# latency and the real-time penalty do not decide here: the selection depends on training alone
CONFIG = ("candidates:\n  - {width: 0.25, depth: 1}\n  - {width: 0.5, depth: 1}\n  - {width: 0.25, depth: 2}\n"
          "baseline: false\nscreen: false\nbudget_ms: 1000\nlambda: 0\nexport_formats: [onnx]\n")


def ray_processes(root: str) -> list[psutil.Process]:
    """Processes of the Ray instance whose temporary folder is under `root`, and its workers."""
    found = []
    for p in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            env = p.info["environ"] or {}
        except (psutil.Error, TypeError):
            continue
        if root in cmd or env.get("RAY_TMPDIR", "").startswith(root):
            found.append(p)
    return found


@pytest.fixture
def ray_env(tmp_path):
    """A RAY_TMPDIR of this test's own (short: Ray's socket paths must fit 107 characters); at the
    end, nothing of that Ray instance may still run."""
    root = tempfile.mkdtemp(prefix="ekr", dir="/tmp")
    cfg = tmp_path / "ray.yaml"
    cfg.write_text(CONFIG)
    yield {"RAY_TMPDIR": root}, cfg
    deadline = time.time() + 30
    while ray_processes(root) and time.time() < deadline:
        time.sleep(0.5)
    left = ray_processes(root)
    for p in left:
        p.kill()
    assert not left, f"Ray processes left running: {[p.pid for p in left]}"


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> dict:
    """The same search in one process, one training thread (as each Ray task trains)."""
    d = tmp_path_factory.mktemp("seq")
    (d / "c.yaml").write_text(CONFIG)
    proc = run_cli("optimize", "--preset", "smoke", "--config", str(d / "c.yaml"), "--train-threads", "1",
                   "--out", str(d / "run"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return json.loads((d / "run" / "report.json").read_text())


def trained(report: dict) -> dict[str, tuple[float, float]]:
    return {c["name"]: (c["val_accuracy"], c["val_kd_loss"], c["train_loss"]) for c in report["candidates"]}


def optimize_on_two_workers(ray_env, out) -> subprocess.Popen:
    """`edgekd optimize --workers 2` started in the background (a test kills part of it)."""
    env, cfg = ray_env
    return subprocess.Popen([sys.executable, "-m", "edgekd.cli", "optimize", "--preset", "smoke", "--config", str(cfg),
                             "--workers", "2", "--out", str(out), "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env})


@pytest.mark.slow
def test_workers_with_a_killed_task_give_the_sequential_selection(ray_env, sequential, tmp_path):
    env, _ = ray_env
    out = tmp_path / "run"
    proc = optimize_on_two_workers(ray_env, out)
    killed: list[int] = []

    def kill_one_training_task():  # SIGKILL the first worker seen training a candidate
        while proc.poll() is None and not killed:
            for p in ray_processes(env["RAY_TMPDIR"]):
                try:
                    if "train_candidate_rung" in " ".join(p.cmdline()):
                        p.send_signal(signal.SIGKILL)
                        killed.append(p.pid)
                        break
                except psutil.Error:
                    continue
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_one_training_task)
    watcher.start()
    _, err = proc.communicate(timeout=900)
    watcher.join()
    assert proc.returncode == 0, err
    assert killed, "no training task was seen to kill"
    r = json.loads((out / "report.json").read_text())
    assert r["selected"] == sequential["selected"]
    assert trained(r) == trained(sequential)  # the retried task trained exactly what it would have
    assert r["parallelism"]["training_workers"] == 2
    assert "2 training worker(s)" in (out / "report.md").read_text()


@pytest.mark.slow
def test_resume_after_the_driver_is_killed_keeps_finished_rungs(ray_env, sequential, tmp_path):
    env, _ = ray_env
    out = tmp_path / "run"
    proc = optimize_on_two_workers(ray_env, out)
    deadline = time.time() + 600
    while not list(out.glob("candidates/*/rung0.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for p in ray_processes(env["RAY_TMPDIR"]):  # a killed driver cannot stop the Ray instance it started
        p.kill()
    done = {f: f.stat().st_mtime_ns for f in out.glob("candidates/*/rung0.*")}
    assert done, "the driver was killed before any rung finished"
    resumed = run_cli("optimize", "--resume", str(out), "--quiet", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert all(f.stat().st_mtime_ns == t for f, t in done.items())  # nothing finished was recomputed
    r = json.loads((out / "report.json").read_text())
    assert r["selected"] == sequential["selected"] and trained(r) == trained(sequential)


def _shard_losses(config):
    """Ray Train loop: this rank's KD loss on its slice of a fixed batch and the averaged gradients."""
    import ray.train

    from edgekd.distill.losses import KDInputs, combined_loss
    from edgekd.distill.trainer import Shard

    ctx = ray.train.get_context()
    shard = Shard(ctx.get_world_rank(), ctx.get_world_size())
    model, x, y, t = config["model"], config["x"], config["y"], config["teacher"]
    model.eval()  # BatchNorm from running statistics: the loss of a slice does not depend on the others
    [idx] = shard.split([torch.arange(len(y))])
    loss = combined_loss([("response", 1.0)], KDInputs(student_logits=model(x[idx]), labels=y[idx],
                                                       teacher_logits=[t[idx]]), config["kd"])
    loss.backward()
    params = list(model.parameters())
    shard.average_gradients(params)
    total, seen = shard.sum(loss.item() * len(idx), len(idx))
    if shard.rank == 0:
        torch.save({"loss": total / seen, "grads": [p.grad for p in params], "own": loss.item()}, config["out"])


def test_data_parallel_loss_and_gradients_are_those_of_the_whole_batch(ray_env, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from edgekd.distill.losses import KDInputs, KDSettings, combined_loss
    from edgekd.models.arch import ArchSpec
    from edgekd.models.family import build_model

    env, _ = ray_env
    torch.manual_seed(0)
    model = build_model(ArchSpec(width=0.25, depth=1), 3, 4)
    x, y, t = torch.rand(8, 3, 16, 16), torch.arange(8) % 4, torch.randn(8, 4)
    kd = KDSettings()
    os.environ["RAY_TMPDIR"] = env["RAY_TMPDIR"]
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        TorchTrainer(_shard_losses, train_loop_config={"model": model, "x": x, "y": y, "teacher": t, "kd": kd,
                                                       "out": str(tmp_path / "o.pt")},
                     scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 1}),
                     run_config=RunConfig(storage_path=str(tmp_path / "train"), name="shards")).fit()
    finally:
        ray.shutdown()
        del os.environ["RAY_TMPDIR"]
    got = torch.load(tmp_path / "o.pt")
    model.eval()
    whole = combined_loss([("response", 1.0)], KDInputs(student_logits=model(x), labels=y, teacher_logits=[t]), kd)
    whole.backward()
    assert got["loss"] == pytest.approx(whole.item(), rel=1e-5)  # the mean of the two shards' losses
    assert got["own"] != pytest.approx(whole.item(), rel=1e-3)  # a shard alone is not the whole batch
    for g, p in zip(got["grads"], model.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-6)


@pytest.mark.slow
def test_optimize_data_parallel_trains_every_student_on_two_workers(ray_env, sequential, tmp_path):
    env, cfg = ray_env
    out = tmp_path / "run"
    # a relative --out (Ray Train workers run elsewhere), and --quiet holds back Ray's own notices too
    proc = run_cli("optimize", "--preset", "smoke", "--config", str(cfg), "--data-parallel", "2", "--out", "run",
                   "--quiet", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Token authentication" not in proc.stderr + proc.stdout
    r = json.loads((out / "report.json").read_text())
    assert r["parallelism"]["training_workers"] == 2
    infos = [json.loads(f.read_text()) for f in out.glob("candidates/*/rung0.json")]
    assert infos and all(i["data_parallel"] == 2 for i in infos)
    chance = 1 / len(r["dataset"]["classes"])
    assert all(c["val_accuracy"] > chance for c in r["candidates"])  # each learned from the averaged gradients
    assert set(trained(r)) == set(trained(sequential))


def test_ray_options_without_ray_or_together_are_refused(tmp_path):
    fake = tmp_path / "noray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = {"PYTHONPATH": str(fake.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = run_cli("optimize", "--preset", "smoke", "--workers", "2", "--out", str(tmp_path / "a"), env=env)
    assert proc.returncode == 2 and "pip install 'edgekd[ray]'" in proc.stderr and "--workers" in proc.stderr
    proc = run_cli("optimize", "--preset", "smoke", "--data-parallel", "2", "--out", str(tmp_path / "b"), env=env)
    assert proc.returncode == 2 and "--data-parallel runs on Ray" in proc.stderr
    proc = run_cli("optimize", "--preset", "smoke", "--workers", "2", "--data-parallel", "2", "--out",
                   str(tmp_path / "c"))
    assert proc.returncode == 2 and "choose one" in proc.stderr
    assert not any((tmp_path / d).exists() for d in "abc")

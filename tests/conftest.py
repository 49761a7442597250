import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RSSCN7 = REPO.parent / "shared" / "data" / "rsscn7-64"

# the measurement cache of the tests never touches the user's
os.environ["EDGEKD_CACHE_DIR"] = tempfile.mkdtemp(prefix="edgekd-test-cache-")


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real console entry point in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "edgekd.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=900)


def assert_resumes_without_redoing_work(run_dir: Path) -> None:
    """A finished run with its reports removed (as if stopped before them): --resume writes them
    again with the same selection and neither retrains the teacher nor a rung."""
    import json

    teacher_mtime = (run_dir / "teacher.pt").stat().st_mtime_ns
    rung = next((run_dir / "candidates").glob("*/rung0.pt"))
    rung_mtime = rung.stat().st_mtime_ns
    selected = json.loads((run_dir / "report.json").read_text())["selected"]
    for name in ("report.json", "report.md", "report.html"):
        (run_dir / name).unlink()
    proc = run_cli("optimize", "--resume", str(run_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (run_dir / "teacher.pt").stat().st_mtime_ns == teacher_mtime and rung.stat().st_mtime_ns == rung_mtime
    assert json.loads((run_dir / "report.json").read_text())["selected"] == selected


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """One `edgekd optimize --preset smoke` run shared by the integration tests."""
    out = tmp_path_factory.mktemp("smoke") / "run"
    proc = run_cli("optimize", "--preset", "smoke", "--out", str(out), "--seed", "1", "--baseline")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (out.parent / "stdout.log").write_text(proc.stdout)  # what a log file of the run holds (not a terminal)
    return out

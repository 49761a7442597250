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


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """One `edgekd optimize --preset smoke` run shared by the integration tests."""
    out = tmp_path_factory.mktemp("smoke") / "run"
    proc = run_cli("optimize", "--preset", "smoke", "--out", str(out), "--seed", "1", "--baseline")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (out.parent / "stdout.log").write_text(proc.stdout)  # what a log file of the run holds (not a terminal)
    return out

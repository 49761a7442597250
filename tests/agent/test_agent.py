"""The agent on loopback, started as a user starts it (`edgekd agent`), and its client."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from edgekd.agent.client import AgentClient, AgentError, read_token
from edgekd.agent.protocol import ProfileRequest
from edgekd.convert.onnx import to_onnx
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.profilers import ProfileSettings, profile_model
from edgekd.targets import get_target

from ..conftest import run_cli

TOKEN = "t0ken-for-tests-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_agent(tmp_path_factory, job_timeout: int):
    d = tmp_path_factory.mktemp("agent")
    token_file = d / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edgekd.cli", "agent", "--port", str(port), "--token-file",
                             str(token_file), "--max-body-mb", "1", "--job-timeout", str(job_timeout), "--queue", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):  # up to two minutes: a busy machine imports slowly
        if proc.poll() is not None:
            pytest.fail("the agent exited: " + proc.stdout.read().decode())
        try:
            if httpx.get(f"{url}/v1/info", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("the agent did not start: " + proc.stdout.read().decode())
    return proc, {"url": url, "token_file": token_file, "dir": d}


@contextlib.contextmanager
def running_agent(tmp_path_factory, job_timeout: int):
    proc, info = start_agent(tmp_path_factory, job_timeout)
    try:
        yield info
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    """The loopback agent real jobs go to: a limit no busy machine reaches (a test must not fail
    because the machine is slow; the limit's behaviour has its own agent below)."""
    with running_agent(tmp_path_factory, job_timeout=600) as info:
        yield info


@pytest.fixture(scope="module")
def short_agent(tmp_path_factory):
    """An agent with a 3 s job limit, for a deliberately slow job."""
    with running_agent(tmp_path_factory, job_timeout=3) as info:
        yield info


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return to_onnx(build_model(ArchSpec(width=0.25, depth=1), 3, 4), tmp_path_factory.mktemp("m") / "m.onnx",
                   [1, 3, 16, 16])


def post(agent, data: bytes, request: dict | str, token: str = TOKEN) -> httpx.Response:
    req = request if isinstance(request, str) else json.dumps(request)
    return httpx.post(f"{agent['url']}/v1/profile", headers={"Authorization": f"Bearer {token}"},
                      files={"model": ("m.onnx", data)}, data={"request": req}, timeout=60)


QUICK = {"runs": 10, "min_seconds": 0, "warmup": 1, "measure_memory": False, "energy_meter": "none"}


def test_info_needs_the_token(agent):
    ok = httpx.get(f"{agent['url']}/v1/info", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    info = ok.json()
    assert info["target"]["name"] == "cpu" and info["runtimes"]["onnxruntime"]["available"] is True
    assert info["runtimes"]["tensorrt"]["reason"] and info["agent"]["queue_size"] == 1
    assert httpx.get(f"{agent['url']}/v1/info").status_code == 401
    bad = httpx.get(f"{agent['url']}/v1/info", headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"


def test_profile_round_trip_matches_a_local_measurement(agent, model):
    client = AgentClient(agent["url"], read_token(agent["token_file"]))
    remote = client.profile(model, ProfileRequest(**QUICK))
    local = profile_model(model, get_target("cpu"), "onnxruntime", [1, 3, 16, 16],
                          ProfileSettings(threads=remote.threads, warmup=1, min_runs=10, min_seconds=0,
                                          measure_memory=False, energy_meter="none"))
    assert set(remote.model_dump()) == set(local.model_dump())
    assert remote.input_shape == local.input_shape and remote.runtime == local.runtime
    assert remote.latency_ms.n >= 10 and remote.source["latency"] == "remote"
    assert any("edgekd agent" in n for n in remote.notes)


def test_wrong_token_on_profile_is_401_and_the_client_says_so(agent, model):
    assert post(agent, model.read_bytes(), QUICK, token="nope").status_code == 401
    with pytest.raises(AgentError, match="refused the token"):
        AgentClient(agent["url"], "nope-nope-nope-nope").info()


def test_oversized_body_is_413(agent):
    r = post(agent, b"\0" * (2 * 2**20), QUICK)
    assert r.status_code == 413 and "limit" in r.json()["detail"]


@pytest.mark.parametrize("data, request_part, message", [
    (b"PK\x03\x04 a pickle or a zip, not ONNX", QUICK, "not an ONNX model"),
    (None, QUICK, "ONNX"),  # a truncated ONNX file
    ("model", {"runs": -1}, "runs"),
    ("model", "{not json", "bad request"),
])
def test_bad_uploads_are_400(agent, model, data, request_part, message):
    if data is None:
        data = model.read_bytes()[:200]
    elif data == "model":
        data = model.read_bytes()
    r = post(agent, data, request_part)
    assert r.status_code == 400, r.text
    assert message in r.json()["detail"]


def test_job_over_its_time_limit_fails_and_the_agent_stays_up(short_agent, model):
    r = post(short_agent, model.read_bytes(), {**QUICK, "min_seconds": 600})  # far past the 3 s limit, by design
    assert r.status_code == 504 and "time limit of 3 s" in r.json()["detail"]
    assert httpx.get(f"{short_agent['url']}/v1/info", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_concurrent_requests_are_serialised_and_the_queue_is_bounded(agent, model):
    results: dict[int, httpx.Response] = {}

    def send(i: int) -> None:
        results[i] = post(agent, model.read_bytes(), {**QUICK, "min_seconds": 1.5})

    threads = []
    for i in range(3):
        t = threading.Thread(target=send, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(0.4)  # 0 runs, 1 waits (queue 1), 2 finds the queue full
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results.values())
    assert codes == [200, 200, 429]
    jobs = sorted((r.json()["job"] for r in results.values() if r.status_code == 200), key=lambda j: j["started"])
    assert jobs[0]["finished"] <= jobs[1]["started"]  # the second job ran after the first, never beside it
    assert jobs[1]["queued_s"] > 0.5


def test_client_reports_an_unreachable_agent():
    client = AgentClient(f"http://127.0.0.1:{free_port()}", TOKEN, retries=1, backoff_s=0.01)
    with pytest.raises(AgentError, match="cannot reach the device agent .* after 2 tries"):
        client.info()


def test_client_retries_transient_errors():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503 if len(calls) < 3 else 200, json={"agent": {}, "detail": "busy"})

    client = AgentClient("http://agent.test", TOKEN, backoff_s=0.001, transport=httpx.MockTransport(handler))
    assert client.info() == {"agent": {}, "detail": "busy"} and len(calls) == 3


def test_agent_refuses_to_start_without_a_token(tmp_path):
    proc = run_cli("agent", "--port", str(free_port()), env={"EDGEKD_AGENT_TOKEN": ""})
    assert proc.returncode == 2 and "no agent token" in proc.stderr
    short = tmp_path / "t"
    short.write_text("abc")
    proc = run_cli("agent", "--token-file", str(short))
    assert proc.returncode == 2 and "shorter than 16" in proc.stderr


@pytest.mark.slow
def test_optimize_measures_every_candidate_through_the_agent(agent, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("optimize", "--preset", "smoke", "--device-url", agent["url"], "--device-token-file",
                   str(agent["token_file"]), "--out", str(out), "--no-cache", "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "report.json").read_text())
    assert r["measurement"]["mode"] == "remote"
    assert r["teacher"]["measurement"]["source"]["latency"] == "remote"
    assert all(c["measurement"]["source"]["latency"] == "remote" for c in r["candidates"])


def test_optimize_with_an_unreachable_agent_fails_before_training(tmp_path):
    tok = tmp_path / "tok"
    tok.write_text(TOKEN)
    proc = run_cli("optimize", "--preset", "smoke", "--target", "jetson", "--device-url",
                   f"http://127.0.0.1:{free_port()}", "--device-token-file", str(tok), "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and "cannot reach the device agent" in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_benchmark_through_the_loopback_agent(agent, smoke_run, tmp_path):
    out = tmp_path / "bench"
    proc = run_cli("benchmark", str(smoke_run), "--targets", "cpu", "--device-url", agent["url"],
                   "--device-token-file", str(agent["token_file"]), "--runs", "10", "--min-seconds", "0",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = {r["format"]: r for r in json.loads((out / "benchmark.json").read_text())}
    assert rows["onnx"]["source"] == "remote" and rows["onnx"]["p50_ms"] > 0
    assert "the agent profiles ONNX models" in rows["openvino"]["reason"]

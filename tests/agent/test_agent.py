"""The agent on loopback, started as a user starts it (`edgekd agent`), and its client."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from edgekd.agent.client import AgentClient, AgentError, read_token
from edgekd.agent.protocol import ProfileRequest
from edgekd.convert.onnx import to_onnx
from edgekd.errors import EdgeKDError
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


def token_file_in(d, token: str = TOKEN):
    f = d / "token"
    f.write_text(token + "\n")
    f.chmod(0o600)
    return f


def start_agent(tmp_path_factory, job_timeout: int, *extra: str):
    d = tmp_path_factory.mktemp("agent")
    token_file = token_file_in(d)
    jobs = d / "tmp"  # the agent's temporary folder: job folders must not stay behind in it
    jobs.mkdir()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edgekd.cli", "agent", "--port", str(port), "--token-file",
                             str(token_file), "--max-body-mb", "1", "--job-timeout", str(job_timeout), "--queue", "1",
                             *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(jobs)})
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
    return proc, {"url": url, "token_file": token_file, "dir": d, "jobs": jobs}


@contextlib.contextmanager
def running_agent(tmp_path_factory, job_timeout: int, *extra: str):
    proc, info = start_agent(tmp_path_factory, job_timeout, *extra)
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
    """An agent with a 3 s job limit, for a deliberately slow job, and tight connection bounds."""
    with running_agent(tmp_path_factory, 3, "--max-connections", "8", "--request-timeout", "1") as info:
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
    short.chmod(0o600)
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
    onnx = next(e for e in r["exports"] if e["format"] == "onnx")  # checked on the device too
    assert onnx["device_parity"]["precision"] == "fp32" and onnx["device_parity"]["parity"]["n"] > 0
    assert "parity on the device" in (out / "report.md").read_text()


def test_optimize_with_an_unreachable_agent_fails_before_training(tmp_path):
    tok = token_file_in(tmp_path)
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
    assert rows["onnx"]["sources"]["energy"] == "predicted"  # the agent's estimate, not a remote reading
    assert rows["onnx"]["device_accuracy"] is not None and "on the device" in rows["onnx"]["device_parity"]
    assert "parity on the device" in (out / "benchmark.md").read_text()
    assert "the agent profiles ONNX models" in rows["openvino"]["reason"]


# -- hardening: authenticate first, bounded bodies, shapes and connections, no leaks ----------------


def test_a_malformed_upload_without_the_token_is_401_not_400(agent):
    r = httpx.post(f"{agent['url']}/v1/profile", content=b"--not multipart at all",
                   headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_no_schema_or_docs_are_served(agent, path):
    assert httpx.get(agent["url"] + path).status_code == 401
    assert httpx.get(agent["url"] + path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


def test_an_oversized_chunked_upload_is_413(agent):
    def chunks():
        for _ in range(40):
            yield b"\0" * 65536  # 2.5 MB against the 1 MB limit, with no Content-Length

    r = httpx.post(f"{agent['url']}/v1/profile", content=chunks(),
                   headers={"Authorization": f"Bearer {TOKEN}", "content-type": "application/octet-stream"})
    assert r.status_code == 413 and "limit of 1 MB" in r.json()["detail"]


def test_a_huge_requested_shape_is_400(agent, model):
    r = post(agent, model.read_bytes(), {**QUICK, "shape": [64, 3, 16384, 16384]})
    assert r.status_code == 400 and "elements" in r.json()["detail"]


def test_a_shape_the_model_cannot_take_is_422_without_agent_paths(agent, model):
    r = post(agent, model.read_bytes(), {**QUICK, "shape": [1, 5, 16, 16]})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "shape" in detail and "edgekd-job" not in detail and str(agent["jobs"]) not in detail
    assert len(detail) < 400 and "Traceback" not in detail


def test_half_open_connections_are_dropped_and_the_agent_keeps_serving(short_agent):
    port = int(short_agent["url"].rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(30)]  # never send a byte
    try:
        for s in idle:
            s.settimeout(15)
        closed = 0
        for s in idle:
            try:
                closed += s.recv(1) == b""
            except ConnectionResetError:
                closed += 1
        assert closed == len(idle)  # past --max-connections at once, the rest after --request-timeout
    finally:
        for s in idle:
            s.close()
    ok = httpx.get(f"{short_agent['url']}/v1/info", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200


def test_no_job_folder_outlives_its_job(agent, model):
    # the agent with the long job limit: a quick job on a busy host can pass the short one's 3 s
    assert post(agent, model.read_bytes(), {**QUICK, "shape": [1, 5, 16, 16]}).status_code == 422
    assert post(agent, model.read_bytes(), QUICK).status_code == 200
    assert not list(agent["jobs"].glob("edgekd-job-*"))


@pytest.mark.parametrize("mode, content, message", [
    (0o644, TOKEN, "chmod 600"),
    (0o620, TOKEN, "chmod 600"),
    (0o600, TOKEN + "\nsecond-token-0123456789", "one token on one line"),
])
def test_loose_or_multi_line_token_files_are_refused(tmp_path, mode, content, message):
    f = token_file_in(tmp_path, content)
    f.chmod(mode)
    with pytest.raises(AgentError, match=message):
        read_token(f)
    proc = run_cli("agent", "--port", str(free_port()), "--token-file", str(f))
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_group_readable_token_file_is_accepted(tmp_path):
    f = token_file_in(tmp_path)
    f.chmod(0o640)
    assert read_token(f) == TOKEN


@pytest.mark.parametrize("flag, value", [("--port", "0"), ("--port", "70000"), ("--max-body-mb", "-1"),
                                         ("--job-timeout", "0"), ("--max-connections", "1")])
def test_agent_flags_are_validated(tmp_path, flag, value):
    proc = run_cli("agent", "--token-file", str(token_file_in(tmp_path)), flag, value)
    assert proc.returncode == 2 and flag in proc.stderr and "Traceback" not in proc.stderr


GRANDCHILD_JOB = """
import subprocess, sys, time, pathlib
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # its own pipes, as the probe
pathlib.Path(sys.argv[1], "..", "grandchild.pid").resolve().write_text(str(child.pid))
time.sleep(120)
"""


def test_a_timed_out_job_is_killed_with_everything_it_started(tmp_path, model, monkeypatch):
    """The job's own children (the memory probe, in a real job) die with it: the whole process group."""
    import asyncio

    from edgekd.agent.server import AgentConfig, create_app

    script = tmp_path / "job.py"
    script.write_text(GRANDCHILD_JOB)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(jobs))
    cfg = AgentConfig(token=TOKEN, job_timeout_s=3, job_command=(sys.executable, str(script)))

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(cfg)), base_url="http://a") as c:
            return await c.post("/v1/profile", headers={"Authorization": f"Bearer {TOKEN}"},
                                files={"model": ("m.onnx", model.read_bytes())}, data={"request": json.dumps(QUICK)})

    r = asyncio.run(call())
    assert r.status_code == 504
    pid = int((jobs / "grandchild.pid").read_text())
    for _ in range(50):  # SIGKILL is delivered at once; reaping by init may take a moment
        if not _alive(pid):
            break
        time.sleep(0.1)
    assert not _alive(pid)
    assert not list(jobs.glob("edgekd-job-*"))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is dead, waiting to be reaped
    except FileNotFoundError:
        return False


# -- parity where the model runs -----------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small trained-looking model, its ONNX export and its INT8 (QDQ) export, checked here."""
    import torch

    from edgekd.export import export_model
    from edgekd.export.base import ExportContext
    from edgekd.export.parity import ParityTolerance

    torch.manual_seed(0)
    net = build_model(ArchSpec(width=0.25, depth=1), 3, 4).eval()
    x = torch.rand(40, 3, 16, 16)
    with torch.no_grad():
        y = net(x).argmax(1)
    d = tmp_path_factory.mktemp("exp")
    ctx = ExportContext([1, 3, 16, 16], {}, calibration=x[:16].numpy())
    tol = {"fp32": ParityTolerance(), "int8": ParityTolerance(max_abs_diff=None, min_top1_agreement=0.5)}
    fp32 = export_model("onnx", net, d, "m", ctx, x, y, tol["fp32"])
    int8 = export_model("onnx-int8", net, d, "m", ctx, x, y, tol["int8"])
    return net, x, y, fp32, int8


def device(agent):
    from edgekd.measurers import AgentMeasurer

    return AgentMeasurer(get_target("cpu"), "onnxruntime", ProfileSettings(threads=1), agent["url"],
                         read_token(agent["token_file"])).connect()


def test_the_device_returns_the_logits_its_runtime_computes(agent, exported):
    import numpy as np

    from edgekd.profilers import load_runtime

    net, x, y, fp32, _ = exported
    logits, resp = device(agent).logits(Path(fp32.path), x.numpy())
    local = load_runtime("onnxruntime", Path(fp32.path), 1, "fp32", [1, 3, 16, 16])
    try:
        here = np.concatenate([local.run(x[i:i + 1].numpy()) for i in range(len(x))])
    finally:
        local.close()
    assert logits.shape == (40, 4) and np.allclose(logits, here, atol=1e-5)
    assert resp.runtime == "onnxruntime" and resp.precision == "fp32" and resp.job.finished >= resp.job.started


def test_device_parity_passes_at_the_exports_precision(agent, exported):
    from edgekd.export.device import check_on_device

    net, x, y, fp32, int8 = exported
    checked = check_on_device(device(agent), net, [fp32, int8], x, y)
    dp = checked[0].device_parity
    assert dp.precision == "fp32" and not dp.fell_back and dp.parity.top1_agreement == 1.0
    assert dp.parity.n == 40 and any(n.startswith("parity on the device") for n in checked[0].notes)
    assert checked[1].device_parity.requested == "int8"


def test_a_precision_that_fails_on_the_device_falls_back(agent, exported):
    """INT8 held to a tolerance no INT8 model meets fails on the device; the FP32 model passes
    there, and the result says it fell back and why."""
    from edgekd.export.device import check_on_device
    from edgekd.export.parity import ParityTolerance

    net, x, y, fp32, int8 = exported
    strict = {"int8": ParityTolerance(max_abs_diff=1e-9, min_top1_agreement=1.0, flip_images=0)}
    dp = check_on_device(device(agent), net, [fp32, int8], x, y, strict)[1].device_parity
    assert [t.precision for t in dp.tried] == ["int8", "fp32"]  # ONNX Runtime builds no FP16 from FP32
    assert dp.tried[0].problems and "max |logit difference|" in dp.tried[0].problems[0]
    assert dp.precision == "fp32" and dp.fell_back and "FELL BACK from int8" in dp.summary()


def test_an_export_that_fails_on_the_device_at_every_precision_is_refused(agent, exported):
    from edgekd.errors import ExportError
    from edgekd.export.device import check_on_device
    from edgekd.export.parity import ParityTolerance

    net, x, y, fp32, _ = exported
    impossible = {"fp32": ParityTolerance(min_top1_agreement=1.01, flip_images=0)}  # no model meets it
    with pytest.raises(ExportError, match="passed parity here but not on the device"):
        check_on_device(device(agent), net, [fp32], x, y, impossible)


@pytest.mark.parametrize("inputs, message", [
    (b"not an array", "not a .npy array"),
    ("ints", "float32 images"),
    ("too many", "N <= 512"),
])
def test_bad_parity_inputs_are_400(agent, model, inputs, message):
    import io

    import numpy as np

    if inputs == "ints":
        buf = io.BytesIO()
        np.save(buf, np.zeros((2, 3, 16, 16), dtype=np.int64))
        inputs = buf.getvalue()
    elif inputs == "too many":
        buf = io.BytesIO()
        np.save(buf, np.zeros((513, 3, 1, 1), dtype=np.float32))
        inputs = buf.getvalue()
    r = httpx.post(f"{agent['url']}/v1/parity", headers={"Authorization": f"Bearer {TOKEN}"},
                   files={"model": ("m.onnx", model.read_bytes()), "inputs": ("x.npy", inputs)},
                   data={"request": json.dumps({"runtime": "onnxruntime"})}, timeout=60)
    assert r.status_code == 400 and message in r.json()["detail"]


@pytest.mark.slow
def test_export_checks_parity_on_the_device_too(agent, smoke_run, tmp_path):
    selected = json.loads((smoke_run / "report.json").read_text())["selected"]
    ckpt = smoke_run / "candidates" / selected / "student.pt"
    out = tmp_path / "exports"
    proc = run_cli("export", str(ckpt), "--formats", "onnx,onnx-int8", "--out", str(out), "--device-url",
                   agent["url"], "--device-token-file", str(agent["token_file"]), "--quiet")
    assert proc.returncode == 0, proc.stderr
    exports = {e["format"]: e for e in json.loads((out / "export.json").read_text())["exports"]}
    assert exports["onnx"]["device_parity"]["precision"] == "fp32"
    assert exports["onnx-int8"]["device_parity"]["requested"] == "int8"


def test_device_logits_stay_under_the_agents_body_limit(agent, exported):
    """Images go in as few requests as fit the agent's limit, four at most; the rest are not sent."""
    net, x, y, fp32, _ = exported
    dev = device(agent)
    per_image = 3 * 16 * 16 * 4
    dev._max_body_bytes = Path(fp32.path).stat().st_size + 256 * 1024 + 10 * per_image  # 10 images a request
    whole, _ = dev.logits(Path(fp32.path), x.numpy())
    assert whole.shape == (40, 4)  # four requests of ten
    dev._max_body_bytes = Path(fp32.path).stat().st_size + 256 * 1024 + 5 * per_image
    part, _ = dev.logits(Path(fp32.path), x.numpy())
    assert part.shape == (20, 4) and (part == whole[:20]).all()
    dev._max_body_bytes = Path(fp32.path).stat().st_size  # not even one image fits
    with pytest.raises(EdgeKDError, match="larger --max-body-mb"):
        dev.logits(Path(fp32.path), x.numpy())

"""A pool of boards on loopback: real agents (one stopped mid-run, one given the wrong token) and
stub boards that answer like an agent but too slowly or with a throttled board's figures. Jobs
spread over the boards, every measurement says which board made it, a failing board leaves the
pool and its job goes to another, disagreeing boards are reported."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from edgekd.convert.onnx import to_onnx
from edgekd.errors import ConfigError, ProfilingError
from edgekd.measurers import measurer_for
from edgekd.measurers.pool import BoardPool, BoardSpec, read_devices
from edgekd.models.arch import ArchSpec
from edgekd.models.family import build_model
from edgekd.profilers import ProfileSettings
from edgekd.search.engine import measure_all
from edgekd.targets import get_target

from .test_agent import TOKEN, running_agent, token_file_in

QUICK = ProfileSettings(threads=1, warmup=1, min_runs=10, min_seconds=0.0, measure_memory=False, energy_meter="none")
SHAPE = [1, 3, 16, 16]


@pytest.fixture(scope="module")
def agents(tmp_path_factory):
    with running_agent(tmp_path_factory, 600) as a, running_agent(tmp_path_factory, 600) as b:
        yield a, b


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return [to_onnx(build_model(ArchSpec(width=w, depth=1), 3, 4), d / f"m{i}.onnx", SHAPE)
            for i, w in enumerate((0.25, 0.5, 0.25, 0.5, 0.25))]


@pytest.fixture(scope="module")
def recorded(agents, models):
    """What a real agent answers (info, and a profile), for the stub boards to replay."""
    url, headers = agents[0]["url"], {"Authorization": f"Bearer {TOKEN}"}
    info = httpx.get(f"{url}/v1/info", headers=headers).json()
    req = json.dumps({"runs": 10, "min_seconds": 0, "warmup": 1, "measure_memory": False, "energy_meter": "none"})
    profile = httpx.post(f"{url}/v1/profile", headers=headers, files={"model": ("m.onnx", models[0].read_bytes())},
                         data={"request": req}, timeout=120).json()
    return info, profile


def stub_board(info: dict, profile: dict, delay_s: float = 0.0, slower: float = 1.0, status: int = 200):
    """An HTTP server on loopback that answers like an agent: /v1/info at once, /v1/profile after
    `delay_s` with the recorded figures times `slower` (a throttled board), or with `status` and
    an error detail (a job the board's runtime cannot run)."""
    lat = profile["measurement"]["latency_ms"]
    answer = {**profile, "measurement": {**profile["measurement"], "latency_ms": {
        k: (v * slower if isinstance(v, float) and k not in ("cv",) else v) for k, v in lat.items()}}}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, body: dict, code: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send(info)

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(delay_s)
            try:
                self._send(answer) if status == 200 else self._send({"detail": "the runtime cannot run it"}, status)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its time limit)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def pool(specs, token_file, **kw) -> BoardPool:
    return BoardPool(get_target("cpu"), "onnxruntime", QUICK, specs, token_file, 1, **kw).connect()


def test_devices_file_and_its_errors(tmp_path):
    f = tmp_path / "boards.yaml"
    f.write_text("boards:\n  - {url: 'http://orin-1:8765/', token_file: orin.token, target: jetson-orin-nano, "
                 "label: orin-1}\n  - url: http://orin-2:8765\n")
    boards = read_devices(f)
    assert [b.url for b in boards] == ["http://orin-1:8765", "http://orin-2:8765"]
    assert boards[0].token_file == tmp_path / "orin.token" and boards[0].label == "orin-1"
    for text, match in (("boards: []\n", "lists no boards"), ("- {url: orin:8765}\n", r"board 1: url: must be an "
                        "http"), ("- {url: 'http://a:1', colour: red}\n", "board 1: colour"),
                        ("- {url: 'http://a:1'}\n- {url: 'http://a:1'}\n", "more than once"), ("[: x", "as YAML")):
        f.write_text(text)
        with pytest.raises(ConfigError, match=match):
            read_devices(f)
    with pytest.raises(ConfigError, match="does not exist"):
        read_devices(tmp_path / "none.yaml")


def test_jobs_spread_over_two_boards_and_each_says_which_made_it(agents, models):
    a, b = agents
    p = pool([BoardSpec(url=a["url"], label="board-a"), BoardSpec(url=b["url"], label="board-b")], a["token_file"])
    ms = measure_all(p, [(m, SHAPE, "fp32") for m in models])
    assert [m.source["latency"] for m in ms] == ["remote"] * len(models)
    assert {m.board for m in ms} == {"board-a", "board-b"}  # both boards took jobs
    jobs = {r["board"]: r["jobs"] for r in p.summary()}
    assert sum(jobs.values()) == len(models) and all(v > 0 for v in jobs.values())
    assert "2 board(s) of cpu" in p.describe


def test_a_board_stopped_mid_run_leaves_the_pool_and_the_run_completes(tmp_path_factory, agents, models):
    a = agents[0]
    with running_agent(tmp_path_factory, 600) as c:
        p = pool([BoardSpec(url=a["url"], label="a"), BoardSpec(url=c["url"], label="c")], a["token_file"])
        assert len(p.ready) == 2
    # c is stopped now: its next health check fails, it leaves the pool, its jobs go to a
    ms = p.measure_many([(m, SHAPE, "fp32") for m in models[:3]])
    assert [m.board for m in ms] == ["a"] * 3
    out = {r["board"]: r for r in p.summary()}
    assert out["c"]["state"] == "out" and "cannot reach" in out["c"]["why"] and out["a"]["jobs"] == 3


def test_a_board_that_refuses_the_token_is_left_out_and_said(agents, models, tmp_path):
    a, b = agents
    wrong = token_file_in(tmp_path, "not-the-token-0123456789")
    p = pool([BoardSpec(url=a["url"], label="a"), BoardSpec(url=b["url"], label="b", token_file=wrong)],
             a["token_file"])
    assert [x.name for x in p.ready] == ["a"] and "refused the token" in p.summary()[1]["why"]
    assert p.measure(models[0], SHAPE).board == "a"
    assert any("board b left out" in n for n in p.notes)
    with pytest.raises(ProfilingError, match=r"no board of target cpu can be reached: b: .*refused the token"):
        pool([BoardSpec(url=b["url"], label="b", token_file=wrong)], None)


def test_a_board_slow_past_the_time_limit_leaves_the_pool(agents, models, recorded):
    a = agents[0]
    server, url = stub_board(*recorded, delay_s=30.0)
    try:
        p = pool([BoardSpec(url=url, label="slow", timeout_s=1.0), BoardSpec(url=a["url"], label="a")],
                 a["token_file"])
        ms = p.measure_many([(m, SHAPE, "fp32") for m in models[:2]])
        assert [m.board for m in ms] == ["a", "a"]
        slow = next(r for r in p.summary() if r["board"] == "slow")
        assert slow["state"] == "out" and "ReadTimeout" in slow["why"] and slow["jobs"] == 0
    finally:
        server.shutdown()


def test_a_job_a_board_answers_with_an_error_is_tried_elsewhere_once(agents, models, recorded):
    a = agents[0]
    bad, bad_url = stub_board(*recorded, status=422)
    worse, worse_url = stub_board(*recorded, status=422)
    try:
        p = pool([BoardSpec(url=bad_url, label="bad"), BoardSpec(url=a["url"], label="a")], a["token_file"])
        assert p.measure(models[0], SHAPE).board == "a"  # the job went on to the other board
        assert [b.name for b in p.ready] == ["bad", "a"]  # an answered error is the job's, not the board's
        both = pool([BoardSpec(url=bad_url, label="bad"), BoardSpec(url=worse_url, label="worse")], a["token_file"])
        with pytest.raises(ProfilingError, match=r"m0.onnx failed on 2 board\(s\): bad: .*422.*worse: .*422"):
            both.measure(models[0], SHAPE)
    finally:
        bad.shutdown()
        worse.shutdown()


def test_boards_whose_figures_disagree_are_reported(agents, models, recorded):
    a = agents[0]
    server, url = stub_board(*recorded, slower=3.0)
    try:
        p = pool([BoardSpec(url=a["url"], label="a"), BoardSpec(url=url, label="throttled")], a["token_file"])
        p.measure(models[0], SHAPE)
        [d] = p.disagreements
        assert set(d["boards"]) == {"a", "throttled"} and d["tolerance"] == 0.25
        assert any("disagree" in n and "throttled" in n for n in p.notes)
    finally:
        server.shutdown()


def test_boards_of_another_target_are_not_used(agents, tmp_path):
    a = agents[0]
    f = tmp_path / "boards.yaml"
    f.write_text(f"boards:\n  - {{url: '{a['url']}', label: here}}\n  - {{url: 'http://127.0.0.1:9', target: "
                 "jetson-orin-nano, label: orin}\n")
    m = measurer_for(get_target("cpu"), QUICK, device_url=None, token_file=a["token_file"], devices_file=f)
    assert isinstance(m, BoardPool) and [b.name for b in m.ready] == ["here"]
    assert any("orin is a jetson-orin-nano, not a cpu" in n for n in m.notes)


@pytest.mark.slow
def test_optimize_on_a_pool_of_two_boards_records_the_boards(agents, tmp_path):
    from ..conftest import run_cli

    a, b = agents
    out = tmp_path / "run"
    proc = run_cli("optimize", "--preset", "smoke", "--device-url", a["url"], "--device-url", b["url"],
                   "--device-token-file", str(a["token_file"]), "--out", str(out), "--no-cache", "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "report.json").read_text())
    m = r["measurement"]
    assert m["mode"] == "remote" and [x["state"] for x in m["boards"]] == ["ready", "ready"]
    boards = {a["url"], b["url"]}
    assert r["teacher"]["measurement"]["board"] in boards
    assert all(c["measurement"]["board"] in boards for c in r["candidates"])
    assert sum(x["jobs"] for x in m["boards"]) >= len(r["candidates"]) and r["parallelism"]["boards"] >= 1
    md = (out / "report.md").read_text()
    assert "## Boards" in md and "board(s) measured" in md
    assert "<h3>Boards</h3>" in (out / "report.html").read_text()


def test_optimize_refuses_a_bad_devices_file_before_any_work(tmp_path):
    from ..conftest import run_cli

    f = tmp_path / "boards.yaml"
    f.write_text("boards:\n  - {url: 'orin:8765'}\n")
    proc = run_cli("optimize", "--preset", "smoke", "--devices", str(f), "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and "board 1: url: must be an http(s) URL" in proc.stderr
    assert not (tmp_path / "run").exists()

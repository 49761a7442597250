"""`edgekd agent`: FastAPI service that profiles ONNX models on this device.

Security: the bearer token is checked (in constant time) before any of the body is read; no
/docs or OpenAPI schema; bound to 127.0.0.1 unless told otherwise; request bodies capped,
chunked ones included; open connections and the time to send a request head bounded; the model
is checked with the ONNX checker (and refused if it points at external data files) before any
runtime sees it; ONNX only, never pickles; each job runs in a child process group with a time
limit, killed whole when it ends; one job at a time, a bounded queue, 429 past it; error
messages never show the agent's paths."""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from pydantic import ValidationError

from .. import __version__
from ..files import first_line
from .protocol import (
    API_VERSION,
    MAX_PARITY_IMAGES,
    JobTiming,
    ParityRequest,
    ParityResponse,
    ProfileRequest,
    ProfileResponse,
)


@dataclass(frozen=True)
class AgentConfig:
    token: str
    target: str = "cpu"
    max_body_mb: float = 64.0
    job_timeout_s: float = 300.0
    queue_size: int = 4
    job_command: tuple[str, ...] = (sys.executable, "-m", "edgekd.agent.job")  # + JOB_DIR TARGET


class Gate:
    """ASGI middleware in front of everything: the token is checked before a byte of the body is
    read (401), then the body is read up to the limit (413 past it, whether or not a
    Content-Length said so, chunked uploads included) and replayed to the app."""

    def __init__(self, app, token: str, limit_bytes: int):
        self.app, self.token, self.limit = app, token.encode(), limit_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given, self.token):
            return await _answer(send, 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _answer(send, 413, self._too_large())
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                return await _answer(send, 413, self._too_large())
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"request body over the agent's limit of {self.limit / 2**20:g} MB"


async def _answer(send, status: int, detail: str, extra: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body})


def validate_onnx(data: bytes) -> None:
    """400 unless `data` is a self-contained, valid ONNX model."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_from_string(data)
    except (DecodeError, ValueError, RuntimeError):
        raise HTTPException(400, "the model part is not an ONNX model (send ONNX bytes; pickles are never "
                                 "accepted)") from None
    if not model.graph.node:
        raise HTTPException(400, "the model part is not an ONNX model: its graph is empty")
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise HTTPException(400, "the ONNX model refers to external data files; send a self-contained model")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = first_line(exc, default="invalid")
        raise HTTPException(400, f"the ONNX model is malformed: {first}") from None


def create_app(cfg: AgentConfig) -> FastAPI:
    # No /docs, /redoc or /openapi.json: the agent describes itself only to its token (GET /v1/info).
    app = FastAPI(title="edgekd agent", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    run_lock = asyncio.Lock()
    state = {"waiting": 0}

    @app.get(f"/{API_VERSION}/info")
    def info() -> dict:
        from ..profilers import PROFILERS
        from ..profilers.energy import open_meter
        from ..targets import get_target

        target = get_target(cfg.target)
        runtimes = {}
        for name in PROFILERS.names():
            reason = PROFILERS.get(name).unavailable()
            runtimes[name] = {"available": reason is None, "reason": reason,
                              "version": PROFILERS.get(name).version() if reason is None else None}
        return {"agent": {"edgekd": __version__, "api": API_VERSION, "python": platform.python_version(),
                          "platform": platform.platform(), "max_body_mb": cfg.max_body_mb,
                          "job_timeout_s": cfg.job_timeout_s, "queue_size": cfg.queue_size, "busy": run_lock.locked(),
                          "waiting": state["waiting"]},
                "target": target.model_dump(mode="json"), "runtimes": runtimes,
                "energy_meter": open_meter("auto", target).name}

    async def queued(files: dict[str, bytes], request_json: str, what: str) -> tuple[dict, JobTiming]:
        """Wait for the one job slot (429 past the queue), then run the job."""
        if state["waiting"] >= cfg.queue_size:
            raise HTTPException(429, f"the agent is busy: {state['waiting']} jobs already wait; retry later",
                                headers={"Retry-After": "5"})
        state["waiting"] += 1
        t_queued = time.time()
        try:
            await run_lock.acquire()  # one job at a time: measurements never overlap
        finally:
            state["waiting"] -= 1
        try:
            return await _run_job(cfg, files, request_json, t_queued, what)
        finally:
            run_lock.release()

    @app.post(f"/{API_VERSION}/profile")
    async def profile(model: UploadFile = File(...), request: str = Form(...)) -> ProfileResponse:
        req = _parse(ProfileRequest, request)
        data = await model.read()
        validate_onnx(data)
        out, timing = await queued({"model.onnx": data}, req.model_dump_json(), "profiling")
        return ProfileResponse(measurement=out, job=timing)

    @app.post(f"/{API_VERSION}/parity")
    async def parity(model: UploadFile = File(...), inputs: UploadFile = File(...),
                     request: str = Form(...)) -> ParityResponse:
        """Run the model on a validation slice in this device's runtime and return the logits:
        the host compares them with its PyTorch model (parity where the model runs)."""
        req = _parse(ParityRequest, request)
        data = await model.read()
        validate_onnx(data)
        arr = await inputs.read()
        validate_inputs(arr)
        out, timing = await queued({"model.onnx": data, "inputs.npy": arr}, req.model_dump_json(), "parity")
        return ParityResponse(**out, job=timing)

    return Gate(app, cfg.token, int(cfg.max_body_mb * 2**20))  # type: ignore[return-value]


async def _run_job(cfg: AgentConfig, files: dict[str, bytes], request_json: str, t_queued: float,
                   what: str) -> tuple[dict, JobTiming]:
    """Run one job in a child process of its own process group; the whole group (the memory
    probe the job starts included) is killed when the job ends or times out, and the job
    folder is removed in every path. Messages never show the agent's temporary paths."""
    try:
        job_dir = Path(tempfile.mkdtemp(prefix="edgekd-job-"))
    except OSError as exc:
        raise HTTPException(503, f"the agent cannot start a job now ({exc.strerror}); retry later",
                            headers={"Retry-After": "5"}) from None
    proc = None
    try:
        for name, data in files.items():
            (job_dir / name).write_bytes(data)
        (job_dir / "request.json").write_text(request_json)
        started = time.time()
        proc = await asyncio.create_subprocess_exec(
            *cfg.job_command, str(job_dir), cfg.target, start_new_session=True,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=cfg.job_timeout_s)
        except asyncio.TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            raise HTTPException(504, f"the {what} job exceeded the agent's time limit of {cfg.job_timeout_s:g} s; "
                                     "ask for fewer runs or a shorter --min-seconds") from None
        finished = time.time()
        if proc.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines() or ["no output"]
            status = 422 if proc.returncode == 2 else 500
            raise HTTPException(status, f"{what} failed on the device: {_scrub(lines[-1], job_dir)}")
        result = json.loads(out.decode().strip().splitlines()[-1])
        return result, JobTiming(queued_s=started - t_queued, started=started, finished=finished)
    except OSError as exc:  # out of descriptors, disk full: the agent's trouble, not the request's
        raise HTTPException(503, f"the agent cannot run the job now ({exc.strerror}); retry later",
                            headers={"Retry-After": "5"}) from None
    finally:
        if proc is not None:
            _kill_group(proc.pid)  # nothing the job started outlives its answer
        shutil.rmtree(job_dir, ignore_errors=True)


def _parse(model: type[ProfileRequest] | type[ParityRequest], text: str):
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise HTTPException(400, f"bad request part: {'.'.join(map(str, err['loc'])) or 'body'}: "
                                 f"{err['msg']}") from None


def validate_inputs(data: bytes) -> None:
    """400 unless `data` is a float32 .npy array of images, N x C x H x W, N <= MAX_PARITY_IMAGES."""
    import io

    import numpy as np

    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise HTTPException(400, "the inputs part is not a .npy array (numpy.save of float32 images; pickles are "
                                 "never accepted)") from None
    if arr.dtype != np.float32 or arr.ndim != 4 or not 1 <= arr.shape[0] <= MAX_PARITY_IMAGES:
        raise HTTPException(400, f"the inputs part must be float32 images N x C x H x W with 1 <= N <= "
                                 f"{MAX_PARITY_IMAGES}, not {arr.dtype} {list(arr.shape)}")


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _scrub(message: str, job_dir: Path) -> str:
    """One short line without the agent's temporary paths."""
    text = message.replace(str(job_dir) + os.sep, "").replace(str(job_dir), "the job folder")
    return re.sub(r"(/[^\s/:'\"]+)+/(model\.onnx)", r"\2", text)[:300]


def guarded_protocol(max_connections: int, request_timeout_s: float) -> type:
    """uvicorn's h11 protocol with two bounds uvicorn lacks: past `max_connections` open
    connections a new one is closed at once, and a connection that has not sent a whole request
    head within `request_timeout_s` is closed (half-open and slow-header connections cannot pile
    up until the agent runs out of file descriptors). Idle keep-alive connections are closed by
    uvicorn's own keep-alive timeout."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            if len(self.connections) >= max_connections:
                self.transport = transport
                transport.abort()
                return
            super().connection_made(transport)
            self._deadline = self.loop.call_later(request_timeout_s, self._drop_without_request)

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            super().connection_lost(exc)

        def _drop_without_request(self) -> None:
            self._deadline = None
            if self.cycle is None and not self.transport.is_closing():
                self.transport.abort()

    return GuardedH11


def raise_fd_limit() -> None:
    """Use the hard limit on open files, not the (often 1024) soft one."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
        except (ValueError, OSError):
            pass

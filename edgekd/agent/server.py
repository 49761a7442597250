"""`edgekd agent`: FastAPI service that profiles ONNX models on this device.

Security: bearer token compared in constant time; bound to 127.0.0.1 unless told otherwise;
request bodies capped; the model is checked with the ONNX checker (and refused if it points at
external data files) before any runtime sees it; ONNX only, never pickles; each job runs in a
child process with a time limit; one job at a time, a bounded queue, 429 past it."""

from __future__ import annotations

import asyncio
import hmac
import json
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from pydantic import ValidationError

from .. import __version__
from ..files import first_line
from .protocol import API_VERSION, JobTiming, ProfileRequest, ProfileResponse


@dataclass(frozen=True)
class AgentConfig:
    token: str
    target: str = "cpu"
    max_body_mb: float = 64.0
    job_timeout_s: float = 300.0
    queue_size: int = 4


class BodyLimit:
    """ASGI middleware: 413 for a body over the limit, whether or not Content-Length says so."""

    def __init__(self, app, limit_bytes: int):
        self.app, self.limit = app, limit_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _too_large(send, self.limit)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await _too_large(send, self.limit)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send, limit: int) -> None:
    body = json.dumps({"detail": f"request body over the agent's limit of {limit / 2**20:g} MB"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
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
    app = FastAPI(title="edgekd agent", version=__version__)
    run_lock = asyncio.Lock()
    state = {"waiting": 0}

    def authorised(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), cfg.token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.get(f"/{API_VERSION}/info", dependencies=[Depends(authorised)])
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

    @app.post(f"/{API_VERSION}/profile", dependencies=[Depends(authorised)])
    async def profile(model: UploadFile = File(...), request: str = Form(...)) -> ProfileResponse:
        try:
            req = ProfileRequest.model_validate_json(request)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise HTTPException(400, f"bad request part: {'.'.join(map(str, err['loc'])) or 'body'}: "
                                     f"{err['msg']}") from None
        data = await model.read()
        validate_onnx(data)
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
            return await _run_job(cfg, data, req, t_queued)
        finally:
            run_lock.release()

    return BodyLimit(app, int(cfg.max_body_mb * 2**20))  # type: ignore[return-value]


async def _run_job(cfg: AgentConfig, data: bytes, req: ProfileRequest, t_queued: float) -> ProfileResponse:
    job_dir = Path(tempfile.mkdtemp(prefix="edgekd-job-"))
    try:
        (job_dir / "model.onnx").write_bytes(data)
        (job_dir / "request.json").write_text(req.model_dump_json())
        started = time.time()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edgekd.agent.job", str(job_dir), cfg.target,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=cfg.job_timeout_s)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise HTTPException(504, f"the profiling job exceeded the agent's time limit of {cfg.job_timeout_s:g} s; "
                                     "ask for fewer runs or a shorter --min-seconds") from None
        finished = time.time()
        if proc.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines() or ["no output"]
            status = 422 if proc.returncode == 2 else 500
            raise HTTPException(status, f"profiling failed on the device: {lines[-1]}")
        measurement = json.loads(out.decode().strip().splitlines()[-1])
        return ProfileResponse(measurement=measurement,
                               job=JobTiming(queued_s=started - t_queued, started=started, finished=finished))
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)

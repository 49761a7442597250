"""The host's side of the agent protocol: retries transient failures with backoff and says
clearly when the agent is unreachable or refuses the token."""

from __future__ import annotations

import io
import json
import os
import stat
import time
from pathlib import Path

import httpx
import numpy as np

from ..errors import EdgeKDError
from ..profilers.measurement import Measurement
from .protocol import API_VERSION, ParityRequest, ParityResponse, ProfileRequest, ProfileResponse, is_agent_url

TRANSIENT = {429, 502, 503}
# Group or others may write, or others may read: refused (group read is allowed, so a container
# user in the file's group can read a secret mounted from the host).
LOOSE_TOKEN_MODE = stat.S_IWGRP | stat.S_IRWXO


class AgentError(EdgeKDError):
    """The device agent could not be reached, refused us, or failed the job."""


class AgentUnreachable(AgentError):
    """No answer from the agent (connection refused or lost, or past the time limit), after the retries."""


class AgentRefused(AgentError):
    """The agent refused the token (401)."""


def read_token(token_file: Path | None) -> str:
    """The bearer token: from a file, else EDGEKD_AGENT_TOKEN. A file that other users can read
    (or anyone but its owner write) is refused, as ssh refuses such a key, and so is a token with
    whitespace or control characters inside (two tokens pasted into one file, say)."""
    if token_file is not None:
        try:
            mode = token_file.stat().st_mode
            token = token_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not text"
            raise AgentError(f"cannot read the token file {token_file} ({why}); "
                             "pass the file the agent was started with") from None
        if os.name == "posix" and mode & LOOSE_TOKEN_MODE:
            raise AgentError(f"the token file {token_file} can be read or written by other users (mode "
                             f"{stat.S_IMODE(mode):04o}); run: chmod 600 {token_file}")
        where = f"the token file {token_file}"
    else:
        token = os.environ.get("EDGEKD_AGENT_TOKEN", "").strip()
        where = "EDGEKD_AGENT_TOKEN"
    if not token:
        raise AgentError("no agent token: pass --device-token-file FILE (or set EDGEKD_AGENT_TOKEN)")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise AgentError(f"{where} holds whitespace or control characters inside the token (more than one "
                         "line?); it must hold one token on one line")
    return token


def check_device_url(url: str) -> str:
    """`url` without a trailing slash when it is an http(s) URL with a host; else an error naming the fix."""
    if not is_agent_url(url):
        raise AgentError(f"--device-url {url!r} is not an http(s) URL of an agent; write it as "
                         "http://BOARD:8765 (the host and port `edgekd agent` listens on)")
    return url.rstrip("/")


class AgentClient:
    def __init__(self, url: str, token: str, *, retries: int = 4, backoff_s: float = 0.5, timeout_s: float = 900.0,
                 transport: httpx.BaseTransport | None = None):
        self.url = check_device_url(url)
        self.retries, self.backoff_s = retries, backoff_s
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=httpx.Timeout(timeout_s, connect=10.0), transport=transport)

    def _send(self, method: str, path: str, retries: int | None = None, **kw) -> httpx.Response:
        last, retries = "", self.retries if retries is None else retries
        for attempt in range(retries + 1):
            try:
                r = self.http.request(method, f"/{API_VERSION}{path}", **kw)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if r.status_code == 401:
                    raise AgentRefused(f"the agent at {self.url} refused the token (401); pass the token file the "
                                     "agent was started with (--device-token-file)")
                if r.status_code not in TRANSIENT:
                    return r
                last = f"HTTP {r.status_code}: {_detail(r)}"
            if attempt < retries:
                time.sleep(self.backoff_s * 2**attempt)
        raise AgentUnreachable(f"cannot reach the device agent at {self.url} after {retries + 1} tries ({last}); "
                               "is `edgekd agent` running there, and is the port reachable from here?")

    def info(self, timeout_s: float | None = None, retries: int | None = None) -> dict:
        """Who the agent is (GET /v1/info); `timeout_s`/`retries`: a quick health check's bounds."""
        kw = {"timeout": httpx.Timeout(timeout_s)} if timeout_s is not None else {}
        r = self._send("GET", "/info", retries, **kw)
        if r.status_code != 200:
            raise AgentError(f"the agent at {self.url} answered {r.status_code}: {_detail(r)}")
        return r.json()

    def profile(self, model_path: Path, request: ProfileRequest) -> Measurement:
        """Profile `model_path` (ONNX) on the device; every measured figure comes back `remote`."""
        files = {"model": (model_path.name, model_path.read_bytes(), "application/octet-stream")}
        r = self._send("POST", "/profile", files=files, data={"request": request.model_dump_json()})
        if r.status_code != 200:
            raise AgentError(f"the agent at {self.url} could not profile {model_path.name} "
                             f"(HTTP {r.status_code}): {_detail(r)}")
        resp = ProfileResponse.model_validate(r.json())
        m = Measurement.model_validate(resp.measurement)
        source = {k: ("remote" if v == "measured" else v) for k, v in m.source.items()}
        return m.model_copy(update={"source": source,
                                    "notes": [*m.notes, f"measured by the edgekd agent at {self.url}"]})

    def parity(self, model_path: Path, x: np.ndarray, request: ParityRequest) -> tuple[np.ndarray, ParityResponse]:
        """Logits of `model_path` (ONNX) on the images `x`, computed on the device by its runtime."""
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(x, dtype=np.float32), allow_pickle=False)
        files = {"model": (model_path.name, model_path.read_bytes(), "application/octet-stream"),
                 "inputs": ("inputs.npy", buf.getvalue(), "application/octet-stream")}
        r = self._send("POST", "/parity", files=files, data={"request": request.model_dump_json()})
        if r.status_code != 200:
            raise AgentError(f"the agent at {self.url} could not run {model_path.name} for the parity check "
                             f"(HTTP {r.status_code}): {_detail(r)}")
        resp = ParityResponse.model_validate(r.json())
        return np.asarray(resp.logits, dtype=np.float32), resp

    def close(self) -> None:
        self.http.close()


def _detail(r: httpx.Response) -> str:
    try:
        return str(r.json().get("detail", r.text))[:300]
    except (json.JSONDecodeError, AttributeError):
        return r.text[:300]

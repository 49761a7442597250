"""`edgekd agent`: the on-device profiling service."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import EdgeKDError
from .app import app, err_console, user_errors


@app.command()
@user_errors
def agent(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 0.0.0.0 exposes the agent to the network."),
    port: int = typer.Option(8765, "--port", min=1, max=65535, help="Port to listen on (1-65535)."),
    token_file: Path | None = typer.Option(None, "--token-file", help="File holding the bearer token, readable by "
                                                                      "its owner only (else EDGEKD_AGENT_TOKEN)."),
    target: str = typer.Option("cpu", "--target", "-t", help="What this device is (a target name)."),
    max_body_mb: float = typer.Option(64.0, "--max-body-mb", min=0.001, max=4096,
                                      help="Largest request accepted, MB (413 past it)."),
    job_timeout: float = typer.Option(300.0, "--job-timeout", min=1, max=86400,
                                      help="Time limit of one profiling job, s (504 past it)."),
    queue: int = typer.Option(4, "--queue", min=0, max=1000, help="Jobs that may wait while one runs; more get 429."),
    max_connections: int = typer.Option(64, "--max-connections", min=2, max=10000,
                                        help="Open connections at most; more are closed at once."),
    request_timeout: float = typer.Option(10.0, "--request-timeout", min=0.1, max=600,
                                          help="A connection that has not sent a request head in this many "
                                               "seconds is closed."),
) -> None:
    """Run the on-device agent: an authenticated HTTP service that profiles submitted ONNX models."""
    import uvicorn

    from ..agent.client import read_token
    from ..agent.server import AgentConfig, create_app, guarded_protocol, raise_fd_limit
    from ..targets import get_target

    get_target(target)  # an unknown target is an error before the port opens
    token = read_token(token_file)
    if len(token) < 16:
        raise EdgeKDError("the agent token is shorter than 16 characters; make one with: "
                          "python -c 'import secrets; print(secrets.token_hex(32))' > agent.token")
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[yellow]note:[/] the agent listens on {host}: reachable from the network, token required")
    raise_fd_limit()
    cfg = AgentConfig(token=token, target=target, max_body_mb=max_body_mb, job_timeout_s=job_timeout, queue_size=queue)
    uvicorn.run(create_app(cfg), host=host, port=port, log_level="info",
                http=guarded_protocol(max_connections, request_timeout),
                limit_concurrency=max_connections, timeout_keep_alive=5)

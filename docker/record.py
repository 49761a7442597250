"""Write docker/build-here.sh's results: WORK's checks, the agent's answers, the remote profile and the
smoke run's report, as PREFIX.json and PREFIX.md (python docker/record.py WORK PREFIX)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect(work: Path) -> dict:
    checks = json.loads((work / "checks.json").read_text())
    report = _load(work / "smoke.json") or {}
    selected = next((c for c in report.get("candidates", []) if c.get("name") == report.get("selected")), {})
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2)},
        **checks,
        "info": _load(work / "info.json"),
        "remote_benchmark": _load(work / "remote" / "benchmark.json"),
        "smoke": {"selected": report.get("selected"), "metric": report.get("metric"),
                  "selected_candidate": {"val_" + report.get("metric", "accuracy"): selected.get("val_accuracy"),
                                         "p50_ms": (selected.get("measurement") or {}).get("latency_ms", {}).get("p50"),
                                         "latency_source": (selected.get("measurement") or {}).get("source", {})
                                         .get("latency"), "params": selected.get("params")},
                  "exports": [{"format": e.get("format"), "precision": e.get("precision"),
                               "top1_agreement": (e.get("parity") or {}).get("top1_agreement")}
                              for e in report.get("exports", [])],
                  "stage_seconds": report.get("stage_seconds"),
                  "stderr_tail": (work / "smoke.err").read_text()[-1500:] if (work / "smoke.err").exists() else ""},
    }


def _info(info) -> str:
    if not info:
        return "no answer"
    agent, target = info.get("agent", {}), info.get("target", {})
    ready = [k for k, v in info.get("runtimes", {}).items() if v.get("available")]
    return (f"edgekd {agent.get('edgekd')}, API {agent.get('api')}, Python {agent.get('python')}, target "
            f"`{target.get('name')}`, runtimes available: {', '.join(ready)}, energy meter "
            f"`{info.get('energy_meter')}`")


def markdown(res: dict) -> str:
    size_gib = res["size_bytes"] / 2**30
    lines = [
        "# The CPU agent image, built and run on this machine (no Docker engine)",
        "",
        "Command: `bash docker/build-here.sh` (buildah with vfs storage and chroot isolation; the base is a "
        "Debian bookworm minbase made by mmdebstrap standing in for python:3.11-slim-bookworm; torch from the "
        "package index, which on x86-64 is the CUDA build).",
        "",
        f"- date: {res['date']}; host: {res['host']['machine']}, {res['host']['cpus']} CPUs, "
        f"1-min load {res['host']['loadavg_1m']} at the end",
        f"- image `{res['image']}` from `docker/cpu.Dockerfile` on `{res['base']}`: built in {res['build_s']} s, "
        f"size {size_gib:.2f} GiB ({res['size_bytes']} bytes)",
        f"- agent (the image's ENTRYPOINT, uid 10001, token from /run/secrets): authenticated `GET /v1/info` "
        f"answered HTTP 200: {_info(res['info'])} (whole answer in the .json); without the token HTTP "
        f"{res['info_without_token_http']}",
        f"- the image's HEALTHCHECK (`{res['healthcheck']}`): exit {res['healthcheck_exit']}",
        "",
        "Remote profile of a real ONNX model (MobileNetV3-Small, 7 classes, 1x3x64x64) sent from the host with "
        "`edgekd benchmark MODEL --device-url` (source `remote`: measured by the agent in the container):",
        "",
        "```json",
        json.dumps(res["remote_benchmark"], indent=1)[:3000],
        "```",
        "",
        f"`edgekd optimize --preset smoke` inside the container: exit {res['smoke_exit']} in {res['smoke_s']} s; "
        f"selected `{res['smoke']['selected']}` ({res['smoke']['metric']}), "
        f"candidate {json.dumps(res['smoke']['selected_candidate'])}, exports {json.dumps(res['smoke']['exports'])}.",
        "",
        "Not built here: `docker/jetson.Dockerfile` (nvcr.io l4t-jetpack base) and `docker/drone.Dockerfile` "
        "(arm64): their bases cannot be had on this machine; the test suite lints them (hadolint) and checks "
        "their entry points, copies and targets.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    work, prefix = Path(argv[1]), Path(argv[2])
    res = collect(work)
    prefix.with_suffix(".json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    prefix.with_suffix(".md").write_text(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

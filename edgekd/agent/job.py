"""One profiling job, run by the agent in a child process:
    python -m edgekd.agent.job JOB_DIR TARGET
JOB_DIR holds model.onnx and request.json; the Measurement is printed as JSON on stdout.
A user-facing failure exits with code 2 and one line on stderr."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    job_dir, target_name = Path(argv[0]), argv[1]
    from edgekd.errors import EdgeKDError
    from edgekd.host import default_threads
    from edgekd.profilers import ProfileSettings, profile_model
    from edgekd.profilers.inputs import onnx_input_shape
    from edgekd.targets import get_target

    from .protocol import ProfileRequest

    req = ProfileRequest.model_validate_json((job_dir / "request.json").read_text())
    model = job_dir / "model.onnx"
    try:
        shape = onnx_input_shape(model, req.shape, 1)
        settings = ProfileSettings(threads=req.threads or default_threads(), warmup=req.warmup, min_runs=req.runs,
                                   min_seconds=req.min_seconds, precision=req.precision,
                                   measure_memory=req.measure_memory, energy_meter=req.energy_meter)
        m = profile_model(model, get_target(target_name), req.runtime, shape, settings)
    except EdgeKDError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(json.dumps(m.model_dump(mode="json")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

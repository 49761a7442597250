"""One job, run by the agent in a child process:
    python -m edgekd.agent.job JOB_DIR TARGET
JOB_DIR holds model.onnx and request.json, and for a parity job inputs.npy. A profiling job
prints the Measurement as JSON on stdout; a parity job prints the logits of every input image.
A user-facing failure exits with code 2 and one line on stderr."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    job_dir, target_name = Path(argv[0]), argv[1]
    from edgekd.errors import EdgeKDError

    try:
        result = parity(job_dir) if (job_dir / "inputs.npy").exists() else profile(job_dir, target_name)
    except EdgeKDError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


def profile(job_dir: Path, target_name: str) -> dict:
    from edgekd.host import default_threads
    from edgekd.profilers import ProfileSettings, profile_model
    from edgekd.profilers.inputs import onnx_input_shape
    from edgekd.targets import get_target

    from .protocol import ProfileRequest

    req = ProfileRequest.model_validate_json((job_dir / "request.json").read_text())
    model = job_dir / "model.onnx"
    shape = onnx_input_shape(model, req.shape, 1)
    settings = ProfileSettings(threads=req.threads or default_threads(), warmup=req.warmup, min_runs=req.runs,
                               min_seconds=req.min_seconds, precision=req.precision,
                               measure_memory=req.measure_memory, energy_meter=req.energy_meter)
    return profile_model(model, get_target(target_name), req.runtime, shape, settings).model_dump(mode="json")


def parity(job_dir: Path) -> dict:
    """Logits of the model on every input image, one image at a time (an engine may have a fixed
    batch of 1), in the requested runtime and precision."""
    import numpy as np

    from edgekd.errors import ProfilingError
    from edgekd.files import first_line
    from edgekd.host import default_threads
    from edgekd.profilers import PROFILERS, load_runtime

    from .protocol import ParityRequest

    req = ParityRequest.model_validate_json((job_dir / "request.json").read_text())
    x = np.load(job_dir / "inputs.npy", allow_pickle=False)
    loaded = load_runtime(req.runtime, job_dir / "model.onnx", req.threads or default_threads(), req.precision,
                          [1, *x.shape[1:]])
    try:
        logits = [np.asarray(loaded.run(x[i:i + 1]), dtype=np.float32).reshape(-1) for i in range(len(x))]
    except Exception as exc:  # the runtime's own error on this model and input: the user's to fix
        raise ProfilingError(f"{req.runtime} cannot run the model on inputs of shape {[1, *x.shape[1:]]}: "
                             f"{first_line(exc)}") from None
    finally:
        loaded.close()
    return {"logits": [row.tolist() for row in logits], "runtime": req.runtime,
            "runtime_version": PROFILERS.get(req.runtime).version(), "precision": req.precision,
            "execution": loaded.execution}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env bash
# GPU check for the TensorRT path, on a machine with an NVIDIA GPU (a Jetson, a workstation, or
# a lent accelerator machine). Installs what it needs, runs the GPU-marked tests and the GPU
# benchmark, and prints the measurements.
#
#   bash benchmarks/gpu_check.sh            # with network access: installs from the registry
#   WHEELS=.whl bash benchmarks/gpu_check.sh  # offline: installs the wheels in .whl/ first
#
# Results: benchmarks/results/gpu_check.json (or $OUT/gpu_check.json when OUT is set).
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi || { echo "gpu_check: no NVIDIA GPU visible (nvidia-smi failed)"; exit 1; }
PY=${PYTHON:-python3}
if [ -n "${WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --target /tmp/edgekd-site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/edgekd-site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  $PY -m pip install -q -e '.[test,tensorrt]'
fi
$PY -c "import tensorrt, sys; print('TensorRT', tensorrt.__version__, 'Python', sys.version.split()[0])"
$PY -m pytest -q -m gpu -rs tests/profilers/test_tensorrt.py
$PY benchmarks/gpu_check.py --out "${OUT:-benchmarks/results}"

#!/usr/bin/env bash
# Build docker/cpu.Dockerfile and run it for real on a machine that has no Docker engine, with
# Debian's buildah and mmdebstrap (apt-get install buildah mmdebstrap), then check the image:
#
#   1. base    mmdebstrap --variant=minbase makes a Debian bookworm root with python3 and pip from
#              this machine's apt sources, committed as a local image. It stands in for
#              python:3.11-slim-bookworm, which this machine cannot pull (same Debian release and
#              Python minor version; `python`/`pip` links and no "externally managed" marker, as in
#              the official image).
#   2. build   buildah bud --from BASE builds docker/cpu.Dockerfile as written, with this machine's
#              pip configuration, the files it names and the CA certificates mounted read-only so
#              that pip inside the build reaches the package index. TORCH_INDEX_URL="" takes torch
#              from that index (on x86-64 the CUDA build: larger than the CPU build the Dockerfile
#              installs elsewhere).
#   3. run     the image's own entry point (edgekd agent, as uid 10001) starts in a container on
#              the host's network; from the host, an authenticated GET /v1/info, an
#              unauthenticated one (must be 401), the image's HEALTHCHECK command, and
#              `edgekd benchmark MODEL.onnx --device-url` (a real ONNX model profiled by the agent
#              and returned as `remote`).
#   4. smoke   `edgekd optimize --preset smoke` on generated demo data, inside the container.
#
# Results go to benchmarks/results/docker_cpu.md and .json (what was built, its size, each check).
# The Jetson and drone images are not built here: their bases (nvcr.io l4t-jetpack; an arm64
# python image) cannot be had on this machine. They stay linted by the test suite.
#
# Usage: docker/build-here.sh [--keep] [--reuse]     (from anywhere; needs root, as buildah here does)
#   --keep    leave the working container (default: removed; the images are kept)
#   --reuse   check the image built last time instead of building it again
# Environment: EDGEKD_BUILD_DIR (work folder, default /tmp/edgekd-docker-build), AGENT_PORT (18765),
#   PYTHON (the host's Python with edgekd installed, for the checks; default: .venv/bin/python).
set -euo pipefail

export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${EDGEKD_BUILD_DIR:-/tmp/edgekd-docker-build}
PORT=${AGENT_PORT:-18765}
PY=${PYTHON:-$REPO/.venv/bin/python}
BASE=localhost/edgekd-base:bookworm-python3.11
IMAGE=localhost/edgekd-agent:cpu
KEEP= REUSE=
for arg in "$@"; do
  case $arg in
    --keep) KEEP=--keep ;;
    --reuse) REUSE=1 ;;
    *) printf 'usage: %s [--keep] [--reuse]\n' "$0" >&2; exit 2 ;;
  esac
done
mkdir -p "$WORK"
LOG="$WORK/build.log"

say() { printf '[build-here] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }

for tool in buildah mmdebstrap; do
  command -v "$tool" >/dev/null || die "$tool is not installed: apt-get install buildah mmdebstrap"
done
[ "$(id -u)" = 0 ] || die "run as root (buildah with the vfs driver and chroot isolation needs it here)"
[ -x "$PY" ] || die "no Python with edgekd at $PY: set PYTHON=/path/to/python (pip install -e . first)"
say "Jetson and drone images: not built here (nvcr.io l4t-jetpack and an arm64 python base cannot be had on this machine); the tests lint them"

# ---- 1. the local base -------------------------------------------------------------------------
if ! buildah images --quiet "$BASE" >/dev/null 2>&1; then
  say "making the base image $BASE with mmdebstrap (minbase, python3, pip)"
  SOURCES=/etc/apt/sources.list.d/debian.sources
  [ -f "$SOURCES" ] || SOURCES=/etc/apt/sources.list
  rm -f "$WORK/base.tar"
  mmdebstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
    --customize-hook='ln -sf python3 "$1"/usr/bin/python; ln -sf pip3 "$1"/usr/bin/pip' \
    bookworm "$WORK/base.tar" "$SOURCES" >>"$LOG" 2>&1 || die "mmdebstrap failed: see $LOG"
  ctr=$(buildah from scratch)
  buildah add "$ctr" "$WORK/base.tar" / >>"$LOG"
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 "$ctr"
  buildah commit --rm "$ctr" "$BASE" >>"$LOG"
fi

# ---- 2. the image, from the Dockerfile as written ----------------------------------------------
mounts=()
for f in /etc/pip.conf /etc/xdg/pip "$HOME/.config/pip" "$HOME/.pip" /etc/ssl/certs /usr/share/ca-certificates; do
  [ -e "$f" ] && mounts+=(-v "$f:$f:ro")
done
# the folders and files the pip configuration names (find-links, extra indexes, constraints, cert)
# (a local index's simple/ pages link to files beside it: mount the index's whole folder)
while read -r path; do
  [ "$(basename "$path")" = simple ] && path=$(dirname "$path")
  [ -e "$path" ] && mounts+=(-v "$path:$path:ro")
done < <(pip config list 2>/dev/null | grep -oE "(file://)?/[^' ]+" | sed 's|^file://||' | sort -u)
if [ -n "$REUSE" ] && buildah images --quiet "$IMAGE" >/dev/null 2>&1 && [ -f "$WORK/build_s" ]; then
  say "reusing $IMAGE (built $(cat "$WORK/build_s") s long, last time)"
else
say "building $IMAGE from docker/cpu.Dockerfile (log: $LOG)"
t0=$(date +%s)
# --format docker keeps HEALTHCHECK (the OCI format has no field for it)
buildah bud --format docker --from "$BASE" --build-arg TORCH_INDEX_URL= "${mounts[@]}" \
  -f "$REPO/docker/cpu.Dockerfile" -t "$IMAGE" "$REPO" >>"$LOG" 2>&1 || die "the build failed: see $LOG"
echo $(( $(date +%s) - t0 )) >"$WORK/build_s"
fi
build_s=$(cat "$WORK/build_s")
buildah inspect --type image "$IMAGE" >"$WORK/image.json"
# the image's size: its layers as stored (uncompressed tar), from the manifest
size_bytes=$("$PY" -c 'import json,sys; m=json.loads(json.load(open(sys.argv[1]))["Manifest"])
print(sum(layer["size"] for layer in m["layers"]))' "$WORK/image.json")
say "built in ${build_s}s, image size $size_bytes bytes"

# ---- 3. the agent, started by the image's own entry point --------------------------------------
TOKEN="$WORK/agent.token"
(umask 077; "$PY" -c 'import secrets; print(secrets.token_hex(32))' >"$TOKEN")
chown 10001 "$TOKEN"
config() { "$PY" -c 'import json,sys; c=json.load(open(sys.argv[1]))["Docker"]["config"]
print("\n".join(c["Entrypoint"] if sys.argv[2] == "entry" else c["Healthcheck"]["Test"][1:]))' "$WORK/image.json" "$1"; }
ctr=$(buildah from "$IMAGE")
cleanup() {
  [ -n "${agent_pid:-}" ] && kill "$agent_pid" 2>/dev/null || true
  [ "$KEEP" = --keep ] || buildah rm "$ctr" >/dev/null 2>&1 || true
}
trap cleanup EXIT
# the entry point with the port moved off 8765 (the host may run an agent there already)
mapfile -t argv < <(config entry)
argv=("${argv[@]/#8765/$PORT}")
say "starting the agent in the container: ${argv[*]} --target cpu"
buildah run --user 10001 -v "$TOKEN:/run/secrets/edgekd-token:ro" "$ctr" -- "${argv[@]}" --target cpu \
  >"$WORK/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 1 60); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/v1/info" && break
  kill -0 "$agent_pid" 2>/dev/null || die "the agent exited: see $WORK/agent.log"
  sleep 1
done
info=$(curl -sf -H "Authorization: Bearer $(cat "$TOKEN")" "http://127.0.0.1:$PORT/v1/info") \
  || die "GET /v1/info with the token failed: see $WORK/agent.log"
noauth=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/v1/info")
say "GET /v1/info: $info; without the token: HTTP $noauth"
mapfile -t healthargv < <(config health)
healthcmd="${healthargv[*]} /run/secrets/edgekd-token $PORT"
health_rc=0
buildah run --user 10001 -v "$TOKEN:/run/secrets/edgekd-token:ro" "$ctr" -- "${healthargv[@]}" /run/secrets/edgekd-token "$PORT" \
  >>"$LOG" 2>&1 || health_rc=$?
say "HEALTHCHECK ($healthcmd): exit $health_rc"

# a real ONNX model, profiled by the agent in the container
"$PY" - "$WORK/model.onnx" <<'EOF'
import sys
import torch, torchvision
m = torchvision.models.mobilenet_v3_small(num_classes=7).eval()
torch.onnx.export(m, torch.randn(1, 3, 64, 64), sys.argv[1], input_names=["images"], output_names=["logits"],
                  dynamo=False)
EOF
"$PY" -m edgekd.cli benchmark "$WORK/model.onnx" --targets cpu --runtimes onnxruntime --runs 30 --min-seconds 0.5 \
  --device-url "http://127.0.0.1:$PORT" --device-token-file "$TOKEN" --out "$WORK/remote" >>"$LOG" 2>&1 \
  || die "the remote profile failed: see $LOG and $WORK/agent.log"
say "remote profile: $WORK/remote/benchmark.json"
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; agent_pid=

# ---- 4. edgekd optimize --preset smoke inside the container ------------------------------------
say "edgekd optimize --preset smoke inside the container"
t0=$(date +%s)
smoke_rc=0
buildah run --user 10001 "$ctr" -- sh -c \
  'cd /tmp && edgekd optimize --preset smoke --target cpu --out /tmp/smoke --quiet \
   && cat /tmp/smoke/report.json' >"$WORK/smoke.json" 2>"$WORK/smoke.err" || smoke_rc=$?
smoke_s=$(( $(date +%s) - t0 ))
say "smoke run: exit $smoke_rc in ${smoke_s}s"

# ---- results ------------------------------------------------------------------------------------
printf '%s' "$info" >"$WORK/info.json"
cat >"$WORK/checks.json" <<EOF
{"image": "$IMAGE", "base": "$BASE", "build_s": $build_s, "size_bytes": $size_bytes,
 "info_without_token_http": $noauth, "healthcheck": "$healthcmd", "healthcheck_exit": $health_rc,
 "smoke_exit": $smoke_rc, "smoke_s": $smoke_s}
EOF
"$PY" "$REPO/docker/record.py" "$WORK" "$REPO/benchmarks/results/docker_cpu"
say "results: benchmarks/results/docker_cpu.md and .json"
[ "$smoke_rc" = 0 ] && [ "$health_rc" = 0 ] && [ "$noauth" = 401 ] || exit 1

# edgekd agent for an arm64 drone companion computer (e.g. Raspberry Pi 5): ONNX Runtime only, small.
#   docker buildx build --platform linux/arm64 -f docker/drone.Dockerfile -t edgekd-agent:drone .
#   docker run -d -p 8765:8765 -v $PWD/agent.token:/run/secrets/edgekd-token:ro edgekd-agent:drone
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    EDGEKD_CACHE_DIR=/home/edgekd/.cache/edgekd

RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1=12.2.0-14+deb12u1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/edgekd
COPY pyproject.toml README.md ./
COPY edgekd ./edgekd
# The CPU build of PyTorch and its torchvision, installed together so that `pip install .` keeps
# them (a lone torch lets pip pull a CUDA torch for the newest torchvision). TORCH_INDEX_URL=""
# takes them from pip's configured index instead (docker/build-here.sh does so on a machine that
# cannot reach the CPU index; there x86-64 torch is the larger CUDA build).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# (hadolint reads the optional --index-url as an unpinned package)
# hadolint ignore=DL3013
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.14.1 torchvision==0.29.1 \
    && pip install .

RUN useradd --create-home --uid 10001 edgekd
USER 10001
EXPOSE 8765
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-m", "edgekd.agent.health"]
ENTRYPOINT ["edgekd", "agent", "--host", "0.0.0.0", "--port", "8765", "--token-file", "/run/secrets/edgekd-token"]
CMD ["--target", "drone-rpi5", "--max-body-mb", "32"]

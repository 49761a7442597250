# edgekd agent for x86-64 and arm64 hosts: ONNX Runtime and OpenVINO on the CPU.
#   docker build -f docker/cpu.Dockerfile -t edgekd-agent:cpu .
#   docker run -d -p 8765:8765 -v $PWD/agent.token:/run/secrets/edgekd-token:ro edgekd-agent:cpu
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    EDGEKD_CACHE_DIR=/home/edgekd/.cache/edgekd

# libgomp: OpenMP for ONNX Runtime / OpenVINO CPU kernels
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1=12.2.0-14+deb12u1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/edgekd
COPY pyproject.toml README.md ./
COPY edgekd ./edgekd
# the CPU build of PyTorch (students are built from checkpoints on the host; the agent needs no CUDA)
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
    && pip install .

RUN useradd --create-home --uid 10001 edgekd
USER 10001
EXPOSE 8765
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-m", "edgekd.agent.health"]
ENTRYPOINT ["edgekd", "agent", "--host", "0.0.0.0", "--port", "8765", "--token-file", "/run/secrets/edgekd-token"]
CMD ["--target", "cpu"]

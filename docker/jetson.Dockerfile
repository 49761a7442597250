# edgekd agent for NVIDIA Jetson (JetPack 6, L4T r36): TensorRT builds and times engines on the
# board, the INA3221 rails give measured energy.
#   docker build -f docker/jetson.Dockerfile -t edgekd-agent:jetson .
#   docker run -d --runtime nvidia -p 8765:8765 \
#       -v /sys/class/hwmon:/sys/class/hwmon:ro \
#       -v $PWD/agent.token:/run/secrets/edgekd-token:ro edgekd-agent:jetson --target jetson-orin-nano-8gb
# --runtime nvidia exposes the GPU and JetPack's TensorRT libraries to the container. Set the
# power mode on the host before measuring (sudo nvpmodel -m <mode>; sudo jetson_clocks) and
# pass the matching target: figures are only comparable within one power mode.
FROM nvcr.io/nvidia/l4t-jetpack:r36.4.0

ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    EDGEKD_CACHE_DIR=/home/edgekd/.cache/edgekd

# JetPack's python3-libnvinfer is TensorRT for this L4T; cuda-python and nvidia-ml-py beside it
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-pip=22.0.2+dfsg-1ubuntu0.5 python3-libnvinfer=10.3.0.30-1+cuda12.5 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/edgekd
COPY pyproject.toml README.md ./
COPY edgekd ./edgekd
# the aarch64 PyTorch wheel from PyPI is CPU-only, which the agent needs (it profiles ONNX only)
RUN pip3 install "cuda-python>=12.0,<13" "nvidia-ml-py>=12.535" "onnxconverter-common>=1.14" \
    && pip3 install .

RUN useradd --create-home --uid 10001 edgekd && usermod -aG video edgekd
USER 10001
EXPOSE 8765
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-m", "edgekd.agent.health"]
ENTRYPOINT ["edgekd", "agent", "--host", "0.0.0.0", "--port", "8765", "--token-file", "/run/secrets/edgekd-token"]
CMD ["--target", "jetson-orin-nano-8gb"]

# ltx2: LTX-2 video+audio generation as an HTTP server (default) or a RunPod serverless worker.
#   docker build -t ltx2 .
#   docker run --gpus all -p 8000:8000 -v /runpod-volume:/runpod-volume ltx2                      # HTTP
#   docker run --gpus all -v /runpod-volume:/runpod-volume ltx2 python /app/handler.py           # RunPod
FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    # Model files live on the mounted volume, never in the image, and loading never downloads.
    HF_HOME=/runpod-volume/huggingface \
    HF_HUB_OFFLINE=1 \
    LTX2_HOST=0.0.0.0 \
    LTX2_PORT=8000 \
    LTX2_MODELS_DIR=/runpod-volume/models \
    LTX2_MODEL=ltx-2-19b-distilled-fp8

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The build context is only what is copied below (.dockerignore lists it; a new COPY source goes there too,
# tests/test_docker_context.py checks): a local .venv, ltx2-output/ or .git never reaches the daemon.
# Dependencies first, in a layer of their own, so editing the code does not reinstall torch (the PyPI
# wheel bundles CUDA): only pyproject.toml decides it. Then the package itself, without its dependencies.
COPY pyproject.toml ./
RUN pip install torch==2.13.0 \
    && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
       > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
COPY README.md ./
COPY ltx2 ./ltx2
RUN pip install --no-deps .

COPY server.py handler.py llms.txt test_input.json ./

VOLUME /runpod-volume
EXPOSE 8000
CMD ["python", "/app/server.py"]

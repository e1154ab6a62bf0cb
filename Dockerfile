# GPU runtime for neggen: CUDA base image, the project with the `gpu` extra (vLLM, which
# brings its own CUDA build of torch). Docker cannot run on the development machines, so
# this file is kept minimal and mirrors scripts/install.sh; build it where Docker and a GPU are.
#
#   docker build -t neggen .
#   docker run --gpus all -v $PWD/neggen_home:/work/neggen_home neggen materialize --dataset demo
#   docker run --gpus all -p 3000:3000 neggen ui --host 0.0.0.0   # UI reachable from the host
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/neggen
COPY pyproject.toml README.md ./
COPY pipeline pipeline
COPY assets assets
COPY neggen_model neggen_model
COPY sql sql
COPY prompts prompts
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/venv/bin/pip install --no-cache-dir -e ".[gpu]"

ENV PATH=/opt/venv/bin:$PATH \
    NEGGEN_HOME=/work/neggen_home \
    DAGSTER_DISABLE_TELEMETRY=1
WORKDIR /work
ENTRYPOINT ["neggen"]
CMD ["datasets"]

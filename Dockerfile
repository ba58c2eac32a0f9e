# gsvkit's HTTP server (`gsv serve`) in a container: installed as the README installs it, torch first and pinned.
#
#   CPU:  docker build -t gsvkit .
#   CUDA: docker build -t gsvkit:cuda --build-arg TORCH_INDEX=https://pypi.org/simple --build-arg DEVICE=cuda .
#         (PyPI's Linux torch wheels are the CUDA builds; run with `docker run --gpus all ...`)
#
# Official weights go in the /models volume (`gsv models fetch v2` inside the container fills it), voices in
# /voices. The server listens on 0.0.0.0:9880 inside the container: set GSVKIT_API_KEY when the port is reachable.
FROM python:3.11-slim

# the CPU wheel index by default: a plain `pip install torch` on Linux pulls the CUDA build (gigabytes)
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG DEVICE=cpu

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    GSVKIT_MODELS=/models GSVKIT_DEVICE=${DEVICE}

WORKDIR /opt/gsvkit
RUN pip install torch==2.13.0 --index-url ${TORCH_INDEX}
COPY pyproject.toml README.md ./
COPY src ./src
COPY configs ./configs
RUN pip install -e ".[all]"

RUN useradd --create-home gsv && mkdir -p /models /voices && chown gsv /models /voices
USER gsv
VOLUME ["/models", "/voices"]
EXPOSE 9880
ENTRYPOINT ["gsv"]
CMD ["serve", "--host", "0.0.0.0", "--port", "9880", "--voices-dir", "/voices"]

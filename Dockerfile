# Two images from one file, both running as the unprivileged user `trashmap`:
#   docker build --target web -t trashmap-web .        # web app, API, migrations, keys: no torch
#   docker build --target worker -t trashmap-worker .  # detection worker: the CUDA build of torch
# docker-compose.yml builds both. State (the embedded SQLite files, the web app's Prometheus
# multiprocess folder) lives in /var/lib/trashmap, which that user owns.

FROM python:3.11-slim AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY trashmap trashmap
COPY web web
COPY worker worker
COPY ml ml
COPY migrations migrations
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 TRASHMAP_DATA_DIR=/var/lib/trashmap
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/trashmap trashmap \
    && install -d -o trashmap -g trashmap -m 0750 /var/lib/trashmap
# The package is installed, not run from a checkout: any working directory works.
WORKDIR /var/lib/trashmap

FROM runtime AS worker
# torch first: the largest layer, rebuilt only when its pin changes. PyPI's Linux x86-64
# wheels are the CUDA build; TORCH_INDEX_URL picks another (https://download.pytorch.org/whl/cpu).
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX_URL=
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
    "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
COPY --from=wheel /wheels /tmp/wheels
RUN pip install "$(echo /tmp/wheels/trashmap-*.whl)[worker]" && rm -rf /tmp/wheels
USER trashmap
CMD ["trashmap", "worker"]

# Last, so a plain `docker build .` makes the slim web image.
FROM runtime AS web
COPY --from=wheel /wheels /tmp/wheels
RUN pip install "$(echo /tmp/wheels/trashmap-*.whl)[web]" && rm -rf /tmp/wheels
USER trashmap
EXPOSE 8000
CMD ["trashmap", "web", "--host", "0.0.0.0", "--port", "8000"]

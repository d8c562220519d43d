# One image for every trashmap role (web, worker, migrate); the command picks the role.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# torch first: the largest layer, rebuilt only when its pin changes.
RUN pip install torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md ./
COPY trashmap trashmap
COPY web web
COPY worker worker
COPY ml ml
COPY migrations migrations
RUN pip install -e .
RUN useradd --create-home trashmap
USER trashmap
EXPOSE 8000
CMD ["trashmap", "web", "--host", "0.0.0.0", "--port", "8000"]

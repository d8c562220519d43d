"""Prometheus metrics of the web app: uploads by outcome, request latency, queue depth.

Under gunicorn (several processes) values are shared through prometheus_client's
multiprocess mode: `web.server` sets PROMETHEUS_MULTIPROC_DIR before any worker starts.
Queue depth and photos by status are read from the broker and database at scrape time.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from trashmap.models import Photo
from web.context import Services, services

logger = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)

UPLOAD_PATH = "/api/v1/photos"

UPLOADS = Counter(
    "trashmap_uploads",
    "Photo uploads by outcome (created, duplicate, rejected, error) and error code",
    ["outcome", "code"],
)
REQUEST_SECONDS = Histogram(
    "trashmap_http_request_seconds",
    "Seconds to answer a request, by endpoint and method",
    ["endpoint", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class BacklogCollector(Collector):
    """Queue depth (broker) and photos per status (database), read at scrape time."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "trashmap_queue_depth",
            "Detection tasks waiting in the broker (-1: unreachable)",
            labels=["queue"],
        )
        depth.add_metric([self.svc.settings.queue_name], queue_depth(self.svc))
        yield depth
        photos = GaugeMetricFamily("trashmap_photos", "Photos by status", labels=["status"])
        try:
            with self.svc.sessions() as session:
                rows = session.execute(select(Photo.status, func.count()).group_by(Photo.status))
                counts = {status: count for status, count in rows}
        except Exception as exc:
            logger.warning("metrics: database unreachable: %s", exc)
            counts = {}
        for status in ("queued", "processing", "done", "failed"):
            photos.add_metric([status], counts.get(status, 0))
        yield photos


def queue_depth(svc: Services) -> int:
    """Messages waiting in the detection queue (not counting those a worker reserved)."""
    from kombu.exceptions import ChannelError

    try:
        with svc.queue.celery.connection_for_read() as conn:
            _, count, _ = conn.default_channel.queue_declare(
                queue=svc.settings.queue_name, passive=True
            )
            return int(count)
    except ChannelError:
        return 0  # Redis drops an empty queue's key: nothing waits
    except Exception as exc:
        logger.warning("metrics: broker unreachable: %s", exc)
        return -1


@bp.get("/metrics")
def metrics():  # type: ignore[no-untyped-def]
    registry = CollectorRegistry()
    registry.register(BacklogCollector(services()))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY) + generate_latest(registry)
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


def _started() -> None:
    g.metrics_t0 = time.perf_counter()


def _finished(response: Response) -> Response:
    started = g.pop("metrics_t0", None)
    endpoint = request.endpoint or "unmatched"
    if started is not None and endpoint != "metrics.metrics":
        REQUEST_SECONDS.labels(endpoint, request.method).observe(time.perf_counter() - started)
    if request.method == "POST" and request.path == UPLOAD_PATH:
        UPLOADS.labels(*upload_outcome(response)).inc()
    return response


def upload_outcome(response: Response) -> tuple[str, str]:
    """(outcome, error code) of an upload response."""
    if response.status_code == 201:
        return "created", ""
    if response.status_code == 200:
        return "duplicate", ""
    code = ""
    if response.is_json:
        body = response.get_json(silent=True) or {}
        code = str((body.get("error") or {}).get("code", ""))[:64]
    return ("rejected" if response.status_code < 500 else "error"), code or str(
        response.status_code
    )


def register_metrics(app: Flask) -> None:
    """GET /metrics, plus the hooks that count uploads and time requests."""
    app.before_request(_started)
    app.after_request(_finished)
    app.register_blueprint(bp)

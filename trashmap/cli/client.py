"""A small HTTP client of the upload API, used by `trashmap upload` and the demo."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

TERMINAL = ("done", "failed")


@dataclass
class UploadResult:
    path: Path
    http_status: int
    body: dict[str, Any]
    final: dict[str, Any] | None = field(default=None)


def upload(base_url: str, path: Path, fields: dict[str, str] | None = None) -> UploadResult:
    """POST one file to /api/v1/photos."""
    with open(path, "rb") as fh:
        response = requests.post(
            f"{base_url}/api/v1/photos",
            files={"file": (path.name, fh)},
            data=fields or {},
            timeout=120,
        )
    try:
        body = response.json()
    except ValueError:
        body = {"error": {"code": "not_json", "message": response.text[:200]}}
    return UploadResult(path, response.status_code, body)


def wait_until_processed(base_url: str, photo_id: int, timeout_s: float) -> dict[str, Any]:
    """Poll GET /api/v1/photos/<id> until it is done or failed (or the timeout passes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        body = requests.get(f"{base_url}/api/v1/photos/{photo_id}", timeout=30).json()
        if body.get("status") in TERMINAL or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


def describe(result: UploadResult) -> str:
    """One human line per upload: location, status and what was detected."""
    if "error" in result.body:
        err = result.body["error"]
        return f"{result.path.name}: HTTP {result.http_status} {err['code']}: {err['message']}"
    loc = result.body.get("location")
    where = f"{loc['lat']:.6f},{loc['lon']:.6f} ({loc['source']})" if loc else "no location"
    line = f"{result.path.name}: id {result.body['id']}, {where}"
    final = result.final or result.body
    line += f", {final.get('status')}"
    detections = final.get("detections")
    if detections is not None:
        labels: dict[str, int] = {}
        for det in detections:
            labels[det["label"]] = labels.get(det["label"], 0) + 1
        top = ", ".join(
            f"{n}x {label}" for label, n in sorted(labels.items(), key=lambda x: -x[1])[:3]
        )
        line += f", {len(detections)} detections"
        if (final.get("model") or {}).get("untrained"):
            line += " from an UNTRAINED model (random boxes, meaningless)"
        line += f" ({top})" if top else ""
    if final.get("error"):
        line += f" - {final['error']}"
    return line

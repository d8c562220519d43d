"""`trashmap ml download-taco`: fetch the images an annotation file points at, and check them.

Bytes are stored exactly as served (EXIF included); a partial file is resumed with an HTTP
Range request; every image must decode fully and match its annotation's size once upright.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3
from PIL import Image
from tqdm import tqdm

from ml.data.coco_file import read_coco, write_json
from ml.images import register_heif

logger = logging.getLogger(__name__)

REPORT = "download_report.json"
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CHUNK = 1 << 16


@dataclass(frozen=True)
class DownloadOptions:
    """Where the annotation file is, where images go, and how hard to try."""

    annotations: Path
    out: Path
    url_field: str = "flickr_url"
    workers: int = 8
    retries: int = 4
    backoff: float = 1.0
    timeout: float = 60.0
    progress: bool = True


@dataclass(frozen=True)
class Outcome:
    """What happened to one image."""

    file_name: str
    url: str
    status: str  # downloaded | present | failed
    reason: str = ""
    attempts: int = 0


class _RetryableError(Exception):
    """A failure worth another attempt (network, 5xx, 429, short body)."""


def verify(path: Path, width: int, height: int) -> str | None:
    """None if the file decodes completely and is width x height upright; else why not."""
    register_heif()
    try:
        with Image.open(path) as image:
            size = image.size
            orientation = image.getexif().get(0x0112, 1)
            if image.format == "JPEG":
                # Decoding at 1/8 scale still reads every compressed byte, so truncation shows.
                image.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
            image.load()
    except Exception as exc:
        return f"does not decode: {exc}"
    upright = (size[1], size[0]) if orientation in (5, 6, 7, 8) else size
    if upright != (width, height):
        return f"is {upright[0]}x{upright[1]} upright, the annotation says {width}x{height}"
    return None


_sessions = threading.local()


def _session() -> requests.Session:
    # A Session per thread: connection reuse without sharing one across threads.
    if not hasattr(_sessions, "session"):
        _sessions.session = requests.Session()
    return _sessions.session


def _chunks(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives; bytes received before a dropped connection are never lost.

    requests' iter_content buffers a whole chunk and drops it when the connection breaks
    mid-chunk; urllib3's read1 hands over whatever one read returned, so a resume starts
    exactly where the data stopped.
    """
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:  # urllib3 < 2.1
        yield from response.iter_content(_CHUNK)
        return
    while chunk := read1(_CHUNK):
        yield chunk


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Download `url` into `part`, continuing from its current length when the server allows."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with _session().get(url, headers=headers, stream=True, timeout=timeout) as response:
            if response.status_code == 416 and have:
                return  # nothing left past what we hold: the earlier attempt got it all
            if response.status_code in _RETRY_STATUS:
                raise _RetryableError(f"HTTP {response.status_code}")
            if response.status_code not in (200, 206):
                raise ValueError(f"HTTP {response.status_code}")
            append = response.status_code == 206
            expected = response.headers.get("Content-Length")
            written = 0
            with open(part, "ab" if append else "wb") as fh:
                for chunk in _chunks(response):
                    fh.write(chunk)
                    written += len(chunk)
            if expected is not None and written < int(expected):
                raise _RetryableError(f"connection closed after {written} of {expected} bytes")
    except (
        requests.exceptions.InvalidURL,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidSchema,
    ) as exc:
        raise ValueError(f"bad URL: {exc}") from exc
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise _RetryableError(f"{type(exc).__name__}: {exc}") from exc


def fetch_with_retries(url: str, part: Path, options: DownloadOptions) -> tuple[int, str | None]:
    """Fetch `url` into `part`, retrying network errors, 429 and 5xx with jittered backoff.

    Returns (attempts, None) on success, (attempts, why) once it gives up; a later call
    resumes the same `part`.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            _fetch(url, part, options.timeout)
            return attempt, None
        except _RetryableError as exc:
            if attempt > options.retries:
                return attempt, f"gave up after {attempt} attempts: {exc}"
            delay = options.backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
            logger.info("%s: %s; retrying in %.1fs", url, exc, delay)
            time.sleep(delay)
        except ValueError as exc:
            part.unlink(missing_ok=True)
            return attempt, str(exc)


def download_one(image: dict[str, Any], options: DownloadOptions) -> Outcome:
    """Fetch (or find) one image and verify it."""
    name, url = image["file_name"], image.get(options.url_field) or ""
    target = options.out / name
    if target.is_file():
        problem = verify(target, image["width"], image["height"])
        if problem is None:
            return Outcome(name, url, "present")
        logger.warning("%s %s; downloading it again", target, problem)
        target.unlink()
    if not url:
        return Outcome(name, url, "failed", f"no {options.url_field} in the annotation")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    attempt, failure = fetch_with_retries(url, part, options)
    if failure is not None:
        return Outcome(name, url, "failed", failure, attempt)
    problem = verify(part, image["width"], image["height"])
    if problem is not None:
        part.unlink(missing_ok=True)
        return Outcome(name, url, "failed", f"downloaded file {problem}", attempt)
    part.replace(target)
    return Outcome(name, url, "downloaded", attempts=attempt)


def main(options: DownloadOptions) -> dict[str, Any]:
    """Download every image of the annotation file in parallel; write and return a report."""
    images = read_coco(options.annotations)["images"]
    options.out.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
        futures = [pool.submit(download_one, image, options) for image in images]
        with tqdm(total=len(futures), desc="download", disable=not options.progress) as bar:
            for future in as_completed(futures):
                outcome = future.result()
                outcomes.append(outcome)
                if outcome.status == "failed":
                    logger.warning("%s (%s): %s", outcome.file_name, outcome.url, outcome.reason)
                bar.update()
    outcomes.sort(key=lambda o: o.file_name)
    count = {s: sum(1 for o in outcomes if o.status == s) for s in ("downloaded", "present")}
    report = {
        "images": len(images),
        **count,
        "failed": [asdict(o) for o in outcomes if o.status == "failed"],
    }
    write_json(report, options.out / REPORT, indent=2)
    return report

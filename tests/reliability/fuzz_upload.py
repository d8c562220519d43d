"""atheris fuzz target: random bytes and form fields through POST /api/v1/photos.

Run: python tests/reliability/fuzz_upload.py -max_total_time=30 tests/reliability/fuzz_seeds
Any 5xx answer, or any exception escaping the app, is a crash.
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["web", "trashmap"]):
    from trashmap import migrate
    from trashmap.settings import Settings
    from web import create_app

ALLOWED = {200, 201, 400, 413, 415, 422}
FIELDS = ("lat", "lon", "taken_at", "extra")


def _app():  # type: ignore[no-untyped-def]
    folder = Path(tempfile.mkdtemp(prefix="trashmap-fuzz-"))
    settings = Settings.from_env(
        data_dir=folder,
        database_url=f"sqlite:///{folder / 'fuzz.db'}",
        broker_url="memory://",  # the fuzz target never needs a worker
        max_upload_mb=2,
        rate_limit_enabled=False,  # one client sends everything, as fast as it can
    )
    migrate.upgrade(settings)
    return create_app(settings).test_client()


CLIENT = _app()


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    form = {}
    for name in FIELDS:
        if fdp.ConsumeBool():
            form[name] = fdp.ConsumeUnicodeNoSurrogates(24)
    filename = fdp.ConsumeUnicodeNoSurrogates(40) or "x.jpg"
    payload = fdp.ConsumeBytes(fdp.remaining_bytes())
    response = CLIENT.post(
        "/api/v1/photos",
        data={"file": (io.BytesIO(payload), filename), **form},
        content_type="multipart/form-data",
    )
    if response.status_code not in ALLOWED:
        raise RuntimeError(f"HTTP {response.status_code}: {response.get_data()[:300]!r}")
    body = response.get_json()
    if response.status_code >= 400 and not body["error"]["code"]:
        raise RuntimeError("an error without a code")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()

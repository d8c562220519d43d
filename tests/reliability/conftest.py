"""Fault tests record what they saw; RELIABILITY.md's table is built from these records."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPORT_ENV = "TRASHMAP_RELIABILITY_REPORT"


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[..., None]:
    """record(acknowledged=, stored=, processed=, lost=, duplicated=) for this test.

    Appends one JSON line to $TRASHMAP_RELIABILITY_REPORT when it is set; otherwise a no-op.
    """

    def _record(**counts: int) -> None:
        path = os.environ.get(REPORT_ENV)
        if path:
            with Path(path).open("a") as fh:
                fh.write(json.dumps({"test": request.node.name, **counts}) + "\n")

    return _record

"""Finding a model version by what an operator types: an id, NAME:VERSION, or a version."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from trashmap.models import ModelVersion
from trashmap.versions import VersionError, find_version

TIMESTAMP = "20261129141323"  # `trashmap ml train`'s default version: all digits


@pytest.fixture
def rows(pg_sessions: sessionmaker[Session]):  # type: ignore[no-untyped-def]
    with pg_sessions.begin() as session:
        made = [
            ModelVersion(name="litter", version=TIMESTAMP, arch="a", class_names=["x"]),
            ModelVersion(name="litter", version="v2", arch="a", class_names=["x"]),
        ]
        session.add_all(made)
        session.flush()
        ids = [row.id for row in made]
    yield ids
    with pg_sessions.begin() as session:
        session.execute(sa.delete(ModelVersion).where(ModelVersion.id.in_(ids)))


def test_an_all_digit_version_string_is_found(pg_sessions, rows) -> None:  # type: ignore[no-untyped-def]
    with pg_sessions() as session:
        assert find_version(session, TIMESTAMP).id == rows[0]
        assert find_version(session, str(rows[1])).id == rows[1]  # ids still work
        assert find_version(session, f"litter:{TIMESTAMP}").id == rows[0]


def test_a_ref_that_is_both_an_id_and_a_version_is_refused_clearly(pg_sessions, rows) -> None:  # type: ignore[no-untyped-def]
    with pg_sessions.begin() as session:
        clash = ModelVersion(name="other", version=str(rows[1]), arch="a", class_names=["x"])
        session.add(clash)
    try:
        with pg_sessions() as session, pytest.raises(VersionError, match="ambiguous"):
            find_version(session, str(rows[1]))
    finally:
        with pg_sessions.begin() as session:
            session.execute(sa.delete(ModelVersion).where(ModelVersion.name == "other"))


def test_an_unknown_ref_names_the_registered_versions(pg_sessions, rows) -> None:  # type: ignore[no-untyped-def]
    with pg_sessions() as session, pytest.raises(VersionError, match="registered: .*litter:v2"):
        find_version(session, "999999999")

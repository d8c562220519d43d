"""Staff API keys: made, listed, revoked and verified (Flask-free; the CLI uses it too).

A key reads `tm_<prefix>_<secret>`. Only the SHA-256 of the secret is stored; the prefix
finds the row, and the hashes are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from trashmap.db import row_id
from trashmap.models import ApiKey, utcnow

# read:stats - GET /api/v1/stats and /models/compare; export - the bulk exports; write -
# staff changes (delete); review - the review queue and verified annotations.
SCOPES = ("read:stats", "export", "write", "review")
_TOKEN = re.compile(r"^tm_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
_PREFIX = re.compile(r"^[0-9a-f]{12}$")
# last_used_at is refreshed at most this often, so busy keys do not write on every request.
TOUCH_EVERY = timedelta(minutes=1)


class ApiKeyError(ValueError):
    """A key cannot be made or changed as asked (unknown scope, unknown key)."""


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(session: Session, name: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
    """A new key row (not committed) and the token, which is shown once and never stored."""
    scopes = sorted(set(scopes))
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ApiKeyError(f"unknown scope(s) {', '.join(unknown)}; valid: {', '.join(SCOPES)}")
    if not scopes:
        raise ApiKeyError(f"give at least one scope: {', '.join(SCOPES)}")
    if not name.strip():
        raise ApiKeyError("give the key a name (who or what uses it)")
    prefix, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    key = ApiKey(
        name=name.strip()[:128],
        prefix=prefix,
        secret_sha256=_digest(secret),
        scopes=scopes,
        created_at=utcnow(),
    )
    session.add(key)
    return key, f"tm_{prefix}_{secret}"


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_key(session: Session, id_or_prefix: str) -> ApiKey:
    """Mark a key revoked (by id or prefix); it stops working at once.

    A prefix is 12 hex digits and may be all decimal digits; ids stay below 2**31 (at most
    10 digits), so a 12-character value is always a prefix and a shorter number an id.
    """
    key = None
    if _PREFIX.match(id_or_prefix):
        key = session.scalar(select(ApiKey).where(ApiKey.prefix == id_or_prefix))
    elif (number := row_id(id_or_prefix)) is not None:
        key = session.get(ApiKey, number)
    if key is None:
        raise ApiKeyError(f"no API key {id_or_prefix!r}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def verify_token(session: Session, token: str, now: datetime | None = None) -> ApiKey | None:
    """The active key this token belongs to, else None; refreshes last_used_at."""
    match = _TOKEN.match(token.strip())
    if match is None:
        return None
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == match.group(1)))
    if key is None or not hmac.compare_digest(key.secret_sha256, _digest(match.group(2))):
        return None
    if key.revoked_at is not None:
        return None
    now = now or utcnow()
    last = key.last_used_at
    if last is not None and last.tzinfo is None:  # SQLite returns naive datetimes
        last = last.replace(tzinfo=now.tzinfo)
    if last is None or now - last > TOUCH_EVERY:
        key.last_used_at = now
    return key

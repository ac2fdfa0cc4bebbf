"""API keys kept in SQL, hashed: create, list, revoke, and look up a presented key.

A key is ``sf_`` + 43 URL-safe characters: 32 bytes (256 bits) from ``secrets``. Only its
sha256 is stored (``api_keys.key_hash``, unique), with its first characters (``prefix``) to
recognise it in listings. The key is shown once, when it is created.

Why plain sha256 and no slow KDF (bcrypt, scrypt, argon2): a slow hash protects guessable
secrets (passwords) against brute force after a database leak. A 256-bit random key cannot
be guessed however fast the hash is (2^256 candidates), so a slow KDF would add nothing but
latency to every request; and because the hash is deterministic, a presented key is found
with one indexed lookup instead of trying every stored hash. (Comparing in SQL leaks at most
timing about the *hash*, which tells nothing about a key.)

The API caches lookups for ``Settings.api_key_cache_s`` (``api.deps``), so a key created or
revoked here takes effect within that many seconds without a restart. ``last_used_at`` is
written at most once per ``Settings.api_key_touch_interval_s`` per key (``touch``).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from shared.db.orm import ApiKey, new_id, utcnow
from shared.db.session import session_scope
from shared.errors import Conflict, NotFound
from shared.jobs.tenants import check_tenant

KEY_PREFIX = "sf_"
KEY_BYTES = 32
#: Characters of the key kept in clear for display (``sf_`` + 8).
DISPLAY_PREFIX_LEN = 11


def generate_key() -> str:
    """A new random key: ``sf_`` + 256 bits, URL-safe base64."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def hash_key(key: str) -> str:
    """The stored form of a key: sha256 hex of its UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(tenant: str, name: str) -> tuple[ApiKey, str]:
    """Store a new key for ``tenant``; returns ``(row, key)``. The key is never stored: show it now."""
    check_tenant(tenant)
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise ValueError("a key name is 1-100 characters")
    key = generate_key()
    row = ApiKey(id=new_id(), tenant=tenant, name=name, key_hash=hash_key(key), prefix=key[:DISPLAY_PREFIX_LEN],
                 created_at=utcnow())
    with session_scope() as session:
        session.add(row)
    return row, key


def list_keys(tenant: str | None = None) -> list[ApiKey]:
    """Every key (revoked ones too), of one tenant or of all, oldest first."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if tenant is not None:
        query = query.where(ApiKey.tenant == tenant)
    with session_scope() as session:
        return list(session.scalars(query))


def find_key(ref: str) -> ApiKey:
    """A key by id or by its display prefix (``sf_XXXXXXXX``); ``NotFound`` / ``Conflict`` (ambiguous)."""
    with session_scope() as session:
        rows = list(session.scalars(select(ApiKey).where(or_(ApiKey.id == ref, ApiKey.prefix == ref))))
    if not rows:
        raise NotFound(f"No API key with id or prefix {ref!r}; `stylefarm keys list` shows them.")
    if len(rows) > 1:
        raise Conflict(f"{len(rows)} keys have the prefix {ref!r}; revoke by id instead.")
    return rows[0]


def revoke_key(ref: str) -> ApiKey:
    """Revoke a key (by id or prefix) now; revoking a revoked key changes nothing."""
    row = find_key(ref)
    with session_scope() as session:
        session.execute(
            update(ApiKey).where(ApiKey.id == row.id, ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow())
        )
        return session.get(ApiKey, row.id, populate_existing=True) or row


def lookup(key: str) -> ApiKey | None:
    """The stored row of a presented key, revoked or not; None when it is not a stored key."""
    with session_scope() as session:
        return session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(key))).one_or_none()


def any_keys() -> bool:
    """Whether any key was ever stored (revoked ones count: revoking the last key must not open the API)."""
    with session_scope() as session:
        return session.scalars(select(ApiKey.id).limit(1)).first() is not None


def touch(key_id: str, min_interval_s: float, now: datetime | None = None) -> bool:
    """Set ``last_used_at = now`` unless it was set less than ``min_interval_s`` ago (by any
    process: the condition is in the UPDATE). True when this call wrote."""
    now = now or utcnow()
    stale = now - timedelta(seconds=min_interval_s)
    with session_scope() as session:
        result = session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= stale))
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))

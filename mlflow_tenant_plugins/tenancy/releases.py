"""Which stored object versions have had their size given back to the quota ledger.

Why: S3 reports a key deleted whether or not it still existed, and an overwrite does not say
what it replaced, so twelve concurrent DELETEs of one object (or overwrites of one key) would
each give its size back — the ledger would drift below what S3 holds, without limit. A release
is therefore recorded here under the *version* it gives back, in the same transaction as the
ledger decrement: the version's row is unique, so of concurrent releases of one version only
the first counts. What a version is — tenant, bucket, key, ETag, LastModified (S3's second)
and size — comes from the listing or HEAD the caller makes anyway.

That identity is not unique when identical bytes are written to one key twice within one
second. So a release does not only ask "was this version released?" but "was it released
*before I looked at the object*?": the caller reads :func:`mark` (the newest row id) before its
listing or HEAD, and a row no newer than that mark belongs to an earlier version — the object
the caller saw was written after that release removed its predecessor — and is taken over
(delete the old row, insert a new one: of concurrent takers one wins). A row newer than the
mark is a concurrent release of the very object the caller saw, and the caller releases
nothing. Every doubt resolves towards releasing less; ``mlflow-tenants usage --reconcile``
corrects that rare over-count. Row ids only grow: AUTOINCREMENT on sqlite, a sequence on
PostgreSQL, and pruning never deletes the newest row.

Why not S3 conditional deletes (``If-Match``): S3 documents a conditional delete of a key that
no longer exists as a success (204), moto 5 checks the ETag and then deletes without a lock, and
its ``DeleteObjects`` (folder deletes) takes no condition: none proves that *this* request
removed the object. Cost: one ``SELECT`` (the
mark) before a delete's listing or an overwrite's HEAD, and one ``INSERT`` of all the removed
versions in the transaction that decrements the ledger; writes of new keys pay nothing.

Rows older than :data:`MAX_AGE` are pruned (at most once per :data:`PRUNE_EVERY` per process):
no request that looked at an object lasts that long.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from mlflow_tenant_plugins.tenancy.models import utcnow

MAX_AGE = timedelta(days=1)
PRUNE_EVERY = 600.0  # seconds
_BATCH = 500  # rows per INSERT (two bound parameters each)

RELEASES = Table(
    "mlt_storage_releases",
    MetaData(),
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("version", String(64), nullable=False, unique=True),
    Column("released_at", DateTime(timezone=True), nullable=False),
    sqlite_autoincrement=True,
)
_T = RELEASES
_UPSERTS = {"postgresql": postgresql_insert, "sqlite": sqlite_insert}
_pruned = {"at": 0.0}
_prune_lock = threading.Lock()


class RemovedVersion(Protocol):
    """A stored object version the caller removed (or saw replaced), and what it weighed
    (``artifacts.quota.ObjectVersion``)."""

    @property
    def digest(self) -> str: ...  # 64 hex characters naming the version

    @property
    def size(self) -> int: ...

    @property
    def seen(self) -> int: ...  # :func:`mark` read before the caller looked at the object


def mark(conn: Connection) -> int:
    """The newest release's id: read before looking at objects that may be released."""
    return int(conn.execute(select(func.coalesce(func.max(_T.c.id), 0))).scalar_one())


def _insert(conn: Connection, digests: list[str]) -> set[str]:
    """Insert a row per digest that has none; the digests inserted."""
    now = utcnow()
    upsert = _UPSERTS.get(conn.dialect.name)
    inserted: set[str] = set()
    for i in range(0, len(digests), _BATCH):
        rows = [{"version": d, "released_at": now} for d in digests[i : i + _BATCH]]
        if upsert is not None:
            stmt = (upsert(_T).values(rows).on_conflict_do_nothing(index_elements=["version"])
                    .returning(_T.c.version))
            inserted.update(conn.execute(stmt).scalars())
            continue
        for row in rows:  # other databases: a savepoint per row
            try:
                with conn.begin_nested():
                    conn.execute(insert(_T).values(row))
                inserted.add(row["version"])
            except IntegrityError:
                pass
    return inserted


def claim(conn: Connection, removed: Sequence[RemovedVersion]) -> int:
    """Record the releases of ``removed`` in the caller's transaction; the bytes of those
    this call is the first to release (see the module docstring)."""
    by_digest: dict[str, RemovedVersion] = {}
    for r in removed:  # one object listed twice counts once
        by_digest.setdefault(r.digest, r)
    digests = sorted(by_digest)  # one lock order for every transaction
    won = _insert(conn, digests)
    taken = [d for d in digests if d not in won]
    if taken:
        rows = conn.execute(select(_T.c.version, _T.c.id).where(_T.c.version.in_(taken)))
        ids = dict(rows.tuples().all())
        for d in taken:
            row_id = ids.get(d)
            if row_id is None or row_id > by_digest[d].seen:
                continue  # released by a request that saw this very version
            gone = conn.execute(delete(_T).where(_T.c.version == d, _T.c.id == row_id))
            if gone.rowcount == 1:
                won |= _insert(conn, [d])
    return sum(by_digest[d].size for d in won)


def prune_now_and_then(engine: Engine) -> None:
    """Delete rows older than :data:`MAX_AGE`, keeping the newest (ids must never repeat)."""
    with _prune_lock:
        if time.monotonic() - _pruned["at"] < PRUNE_EVERY and _pruned["at"]:
            return
        _pruned["at"] = time.monotonic()
    with engine.begin() as conn:
        newest = mark(conn)
        conn.execute(delete(_T).where(_T.c.released_at < utcnow() - MAX_AGE, _T.c.id < newest))

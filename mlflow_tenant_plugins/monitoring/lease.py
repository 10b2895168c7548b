"""A lease in the database, so that one of many workers and instances does a periodic job.

The lease is a row of ``mlt_platform_state``: ``value`` names the holder, ``updated_at`` is
when it last took or renewed the lease. Taking it is one conditional UPDATE — "set me as
holder where I already hold it or the holder's lease ran out" — and, when there is no row
yet, one INSERT that the primary key lets only one contender win. sqlite (one writer at a
time) and PostgreSQL (row lock, then the WHERE re-checked on the newest row version) both
make the check-and-set atomic, so two contenders can never both hold it.

Expiry uses the contenders' clocks (UTC): they must agree to well within the lease's length.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from mlflow_tenant_plugins.tenancy.models import PlatformStateRow, utcnow

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_T = PlatformStateRow.__table__


def new_holder_id() -> str:
    """Unique per contender; says where it runs, for a person reading the row."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    def __init__(self, engine: Engine, key: str, ttl_seconds: float, holder: str | None = None):
        if ttl_seconds <= 0:
            raise ValueError("a lease needs a positive length")
        self.engine = engine
        self.key = key
        self.ttl = timedelta(seconds=ttl_seconds)
        self.holder = holder or new_holder_id()

    def acquire(self) -> bool:
        """Take the lease, or renew it if held; False while another holder's is current."""
        now = utcnow()
        take = (
            update(_T)
            .where(_T.c.key == self.key,
                   or_(_T.c.value == self.holder, _T.c.updated_at < now - self.ttl))
            .values(value=self.holder, updated_at=now)
        )
        with self.engine.begin() as conn:
            if conn.execute(take).rowcount == 1:
                return True
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(_T).values(key=self.key, value=self.holder, updated_at=now))
            return True
        except IntegrityError:
            return False  # the row exists and another holder's lease is current

    def release(self) -> None:
        """Give the lease up at once (on shutdown), if held, so another may take it."""
        with self.engine.begin() as conn:
            conn.execute(update(_T).where(_T.c.key == self.key, _T.c.value == self.holder)
                         .values(updated_at=_EPOCH))

    def current_holder(self) -> str | None:
        """Who holds an unexpired lease, if anyone."""
        with self.engine.connect() as conn:
            row = conn.execute(select(_T.c.value, _T.c.updated_at)
                               .where(_T.c.key == self.key)).one_or_none()
        if row is None:
            return None
        taken = row[1] if row[1].tzinfo else row[1].replace(tzinfo=UTC)
        return row[0] if taken >= utcnow() - self.ttl else None

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

import atexit
import logging
import os
import random
import socket
import threading
import uuid
from collections.abc import Callable
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


_logger = logging.getLogger(__name__)
_BACKOFF_FIRST_SECONDS = 5.0


class Periodic:
    """Runs ``task`` every ``interval`` seconds in a daemon thread while this contender holds
    ``lease``: one worker of one instance at a time. A failed run is logged and retried after
    5, 10, 20… seconds (never longer than the interval); nothing it raises leaves the thread,
    so it can never take the server down."""

    def __init__(self, task: Callable[[], object], lease: Lease, interval: float,
                 name: str):
        self.task, self.lease, self.interval, self.name = task, lease, interval, name
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def run_once(self) -> bool:
        """Run if this contender holds (or now takes) the lease; True if it ran."""
        if not self.lease.acquire():
            return False
        self.task()
        return True

    def next_wait(self) -> float:
        if not self.failures:
            return self.interval
        return min(self.interval, _BACKOFF_FIRST_SECONDS * 2 ** (self.failures - 1))

    def _run(self) -> None:
        wait = random.uniform(0.0, min(self.interval, 2.0))  # workers start together
        while not self._stop.wait(wait):
            try:
                self.run_once()
                self.failures = 0
            except Exception:
                self.failures += 1
                _logger.exception("%s failed (attempt %d); retrying", self.name, self.failures)
            wait = self.next_wait()

    def start(self):
        self._thread.start()
        atexit.register(self.stop)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        try:
            self.lease.release()
        except Exception:
            _logger.warning("could not release the %s lease", self.name, exc_info=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

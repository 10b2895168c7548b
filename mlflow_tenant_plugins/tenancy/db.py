"""Engines for the registry database, migrated with Alembic on first use."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Engine

VERSION_TABLE = "alembic_version_tenants"
_MIGRATIONS = Path(__file__).parent / "migrations"
_engines: dict[str, Engine] = {}
_lock = threading.Lock()
# "mlt": the PostgreSQL advisory lock that serialises every migration of the platform's
# database (tracking, basic-auth, this registry) across workers and instances.
LOCK_KEY = 0x6D6C74
# sqlite: an fcntl lock on this file beside the database (the same file on every process that
# can open the database, unlike a temporary directory).
SQLITE_LOCK_SUFFIX = ".migrate-lock"
_held = threading.local()


def _alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection_engine"] = engine
    return cfg


def _is_current(engine: Engine, cfg: Config) -> bool:
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision() == head


@contextmanager
def migration_lock(url: str | URL) -> Iterator[None]:
    """Held while any schema of the database at ``url`` is migrated, by one process of all the
    workers and instances sharing it: PostgreSQL's advisory lock ``LOCK_KEY`` on a dedicated
    autocommit connection (released by the server if the process dies), or for sqlite an
    fcntl lock on a file beside the database. Re-entrant within a thread, so the registry's
    own migration can run inside the platform's."""
    url = sqlalchemy.engine.make_url(url) if isinstance(url, str) else url
    # One database under two drivers (postgresql:// and postgresql+psycopg2://) is one lock.
    name = url.set(drivername=url.get_backend_name(), password=None).render_as_string()
    held: set[str] = _held.__dict__.setdefault("urls", set())
    if name in held:
        yield
        return
    held.add(name)
    try:
        with _acquire(url):
            yield
    finally:
        held.discard(name)


@contextmanager
def _acquire(url: URL) -> Iterator[None]:
    if url.get_backend_name() == "postgresql":
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                          isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"),
                                 {"k": LOCK_KEY})
        finally:
            engine.dispose()
        return
    path = url.database if url.get_backend_name() == "sqlite" else None
    path = os.path.abspath(path) if path and path != ":memory:" else None
    if not path or not os.path.isdir(os.path.dirname(path)):
        # An in-memory database (one process), another dialect, or a directory that does
        # not exist (sqlite's own error says so when the database is opened).
        yield
        return
    fd = os.open(f"{path}{SQLITE_LOCK_SUFFIX}", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def migrate(engine: Engine) -> None:
    """Upgrade to head once, even when several workers or instances start together."""
    cfg = _alembic_config(engine)
    if _is_current(engine, cfg):
        return
    with migration_lock(engine.url):
        if not _is_current(engine, cfg):
            command.upgrade(cfg, "head")


def _create_engine(uri: str) -> Engine:
    if uri.startswith("sqlite"):
        engine = sqlalchemy.create_engine(
            uri, connect_args={"timeout": 30, "check_same_thread": False}
        )

        @sqlalchemy.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return sqlalchemy.create_engine(uri, pool_pre_ping=True, pool_size=5, max_overflow=10)


def get_engine(uri: str) -> Engine:
    """One migrated engine per database URI per process."""
    with _lock:
        engine = _engines.get(uri)
        if engine is None:
            engine = _create_engine(uri)
            migrate(engine)
            _engines[uri] = engine
        return engine

"""Engines for the registry database, migrated with Alembic on first use."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

import sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from mlflow.utils.file_utils import ExclusiveFileLock
from sqlalchemy.engine import Engine

VERSION_TABLE = "alembic_version_tenants"
_MIGRATIONS = Path(__file__).parent / "migrations"
_engines: dict[str, Engine] = {}
_lock = threading.Lock()
_LOCK_KEY = 0x6D6C74  # "mlt": the advisory lock serialising registry migrations


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


def migrate(engine: Engine) -> None:
    """Upgrade to head once, even when several workers or instances start together."""
    cfg = _alembic_config(engine)
    if _is_current(engine, cfg):
        return
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
            try:
                if not _is_current(engine, cfg):
                    command.upgrade(cfg, "head")
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
        return
    digest = hashlib.sha256(str(engine.url).encode()).hexdigest()[:16]
    with ExclusiveFileLock(os.path.join(tempfile.gettempdir(), f"mlt-migrate-{digest}")):
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

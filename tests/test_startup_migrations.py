"""First start on a fresh database: every schema the platform's database holds — MLflow's
tracking and model registry, basic-auth's, the tenant registry's — is migrated once, under one
lock, however many workers and instances start at once (four workers on a fresh PostgreSQL
database crashed one with ``UniqueViolation`` on ``alembic_version_auth``). The lock is
checked here; four workers starting on a fresh PostgreSQL database: tests/test_admin_guide.py."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy

from mlflow_tenant_plugins.tenancy import db

VERSION_TABLES = {"alembic_version", "alembic_version_auth", "alembic_version_tenants"}


def _tables(url: str) -> set[str]:
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        return set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture
def fresh_mlflow_stores(monkeypatch, tmp_path):
    """MLflow's per-process stores start empty and are put back after the test (migrating
    caches the stores it makes, as it does in a server worker)."""
    from mlflow.server import handlers

    monkeypatch.setattr(handlers, "_tracking_store", None)
    monkeypatch.setattr(handlers, "_model_registry_store", None)
    monkeypatch.setenv("_MLFLOW_SERVER_ARTIFACT_ROOT", str(tmp_path / "artifacts"))


def _migrate_in_thread(settings_env: dict[str, str]) -> tuple[threading.Thread, list]:
    from mlflow_tenant_plugins.config import load_settings
    from mlflow_tenant_plugins.startup_migrations import migrate_platform

    outcome: list = []

    def run() -> None:
        try:
            migrate_platform(load_settings(settings_env), backend_store_uri=settings_env[
                "MLFLOW_TENANT_DATABASE_URI"])
            outcome.append("done")
        except Exception as exc:  # reported by the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _wait_done(thread: threading.Thread, outcome: list, timeout: float = 120.0) -> None:
    thread.join(timeout)
    assert not thread.is_alive(), "migration did not finish after the lock was released"
    assert outcome == ["done"], outcome


def test_postgres_migrations_of_all_three_schemas_wait_for_the_advisory_lock(
        pg_fresh_url, fresh_mlflow_stores):
    """Whoever holds the platform's advisory lock (another worker or instance migrating) holds
    back every first migration, MLflow's and basic-auth's included."""
    holder = sqlalchemy.create_engine(pg_fresh_url, poolclass=sqlalchemy.pool.NullPool,
                                      isolation_level="AUTOCOMMIT")
    try:
        with holder.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": db.LOCK_KEY})
            thread, outcome = _migrate_in_thread({"MLFLOW_TENANT_DATABASE_URI": pg_fresh_url})
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline and not outcome:
                assert not (VERSION_TABLES & _tables(pg_fresh_url)), "migrated without the lock"
                time.sleep(0.2)
            assert not outcome, f"finished while another process held the lock: {outcome}"
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": db.LOCK_KEY})
        _wait_done(thread, outcome)
    finally:
        holder.dispose()
    assert VERSION_TABLES <= _tables(pg_fresh_url)


def test_sqlite_migrations_wait_for_the_lock_file_beside_the_database(
        tmp_path, fresh_mlflow_stores):
    path = tmp_path / "platform.db"
    url = f"sqlite:///{path}"
    lock_path = Path(f"{path}{db.SQLITE_LOCK_SUFFIX}")
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        thread, outcome = _migrate_in_thread({"MLFLOW_TENANT_DATABASE_URI": url})
        thread.join(2.0)
        assert thread.is_alive() and not outcome, f"did not wait for the lock: {outcome}"
        assert not path.exists() or not (VERSION_TABLES & _tables(url))
        fcntl.flock(fd, fcntl.LOCK_UN)
        _wait_done(thread, outcome)
    finally:
        os.close(fd)
    assert VERSION_TABLES <= _tables(url)


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    """The registry's own migration runs inside the platform lock without deadlocking."""
    url = f"sqlite:///{tmp_path / 'nested.db'}"
    done = threading.Event()

    def nested() -> None:
        with db.migration_lock(url), db.migration_lock(url):
            done.set()

    thread = threading.Thread(target=nested, daemon=True)
    thread.start()
    assert done.wait(10), "a nested migration lock deadlocked"

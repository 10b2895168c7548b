"""``mlflow-tenants`` works on the platform's database or refuses: it never guesses one.

With no configuration it created ``./mlflow.db`` beside a server on PostgreSQL, and the keys
made there were refused with 401. Each case runs the console script as an admin does, in a
directory of its own, with no ``MLFLOW_TENANT_*`` variable but those the case sets.
(The same against a running server on PostgreSQL: tests/test_admin_guide.py.)"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mlflow_tenant_plugins.tenancy import TenantRegistry

CLI = shutil.which("mlflow-tenants", path=str(Path(sys.executable).parent))
TIMEOUT = 180


def run(cwd: Path, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TENANT")}
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=TIMEOUT,
                          cwd=cwd, env={**base, **(env or {})})


def side_by_side(*calls):
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda c: c(), calls))


def refused_in_one_line(r: subprocess.CompletedProcess, *needles: str) -> None:
    lines = r.stderr.splitlines()
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def databases(tmp_path_factory) -> dict[str, Path]:
    """Directories: one holding a database a tenant-auth server made (the registry in it, with
    tenant ``embedded``), one holding a plain sqlite file, one with another platform's."""
    root = tmp_path_factory.mktemp("databases")
    dirs = {name: root / name for name in ("server", "plain", "other")}
    for d in dirs.values():
        d.mkdir()
    TenantRegistry(f"sqlite:///{dirs['server'] / 'mlflow.db'}").create_tenant("embedded")
    TenantRegistry(f"sqlite:///{dirs['other'] / 'platform.db'}").create_tenant("elsewhere")
    sqlite3.connect(dirs["plain"] / "mlflow.db").execute("CREATE TABLE t (x)").connection.close()
    return dirs


@pytest.fixture
def made(databases, tmp_path) -> dict[str, Path]:
    """The databases, and an empty directory of this test's own."""
    (tmp_path / "empty").mkdir()
    return {**databases, "empty": tmp_path / "empty"}


def test_with_no_configuration_the_cli_refuses_in_one_line_and_creates_no_database(made):
    empty, plain = made["empty"], made["plain"]
    nothing, not_ours, key = side_by_side(
        lambda: run(empty, "tenant", "create", "acme"),
        lambda: run(plain, "tenant", "list"),
        lambda: run(empty, "key", "create", "acme", "--role", "editor"),
    )
    for r in (nothing, not_ours, key):
        refused_in_one_line(r, "--db URI", "MLFLOW_TENANT_DATABASE_URI", "MLFLOW_TENANT_CONFIG")
    assert list(empty.iterdir()) == []
    assert sorted(p.name for p in plain.iterdir()) == ["mlflow.db"]


def test_a_configured_sqlite_file_that_does_not_exist_is_not_created(made):
    empty = made["empty"]
    config = empty.parent / "platform.toml"
    config.write_text('database_uri = "sqlite:///typo.db"\n')
    from_env, from_file = side_by_side(
        lambda: run(empty, "tenant", "create", "acme",
                    env={"MLFLOW_TENANT_DATABASE_URI": "sqlite:///platform.db"}),
        lambda: run(empty, "tenant", "create", "acme", env={"MLFLOW_TENANT_CONFIG": str(config)}),
    )
    refused_in_one_line(from_env, "MLFLOW_TENANT_DATABASE_URI", "does not exist", "--db")
    refused_in_one_line(from_file, str(config), "does not exist", "--db")
    assert list(empty.iterdir()) == []


def test_the_database_named_explicitly_is_used_and_only_db_may_create_one(made):
    empty, other = made["empty"], made["other"]
    existing = f"sqlite:///{other / 'platform.db'}"
    config = empty.parent / "platform.toml"
    config.write_text(f'database_uri = "{existing}"\n')
    created, from_env, from_file = side_by_side(
        lambda: run(empty, "--db", "sqlite:///new.db", "tenant", "create", "fresh", "--json"),
        lambda: run(empty, "tenant", "list", "--json",
                    env={"MLFLOW_TENANT_DATABASE_URI": existing}),
        lambda: run(empty, "tenant", "list", "--json", env={"MLFLOW_TENANT_CONFIG": str(config)}),
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["name"] == "fresh"
    assert [t.name for t in TenantRegistry(f"sqlite:///{empty / 'new.db'}").list_tenants()] == [
        "fresh"]
    for r in (from_env, from_file):
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert [t["name"] for t in json.loads(r.stdout)] == ["elsewhere"]


def test_the_embedded_default_is_used_only_where_a_tenant_auth_server_made_it_and_says_so(made):
    r = run(made["server"], "tenant", "list", "--json")
    assert r.returncode == 0, r.stderr
    assert [t["name"] for t in json.loads(r.stdout)] == ["embedded"]
    note = r.stderr.splitlines()
    assert len(note) == 1 and note[0].startswith("note: ") and "mlflow.db" in note[0], r.stderr


def test_usage_honours_db_before_and_after_the_verb(made):
    other = f"sqlite:///{made['other'] / 'platform.db'}"
    elsewhere = {"MLFLOW_TENANT_DATABASE_URI": f"sqlite:///{made['server'] / 'mlflow.db'}"}
    after, before, tenant_verb = side_by_side(
        lambda: run(made["empty"], "usage", "--db", other, "--json", env=elsewhere),
        lambda: run(made["empty"], "--db", other, "usage", "--json", env=elsewhere),
        lambda: run(made["empty"], "tenant", "show", "elsewhere", "--db", other, "--json"),
    )
    for r in (after, before):
        assert r.returncode == 0, r.stderr
        assert [t["tenant"] for t in json.loads(r.stdout)] == ["elsewhere"]
    assert tenant_verb.returncode == 0 and json.loads(tenant_verb.stdout)["name"] == "elsewhere"
    assert list(made["empty"].iterdir()) == []


def test_db_upgrade_migrates_every_schema_of_a_fresh_postgres_database_once(pg_fresh_url,
                                                                             tmp_path):
    """The deploy step before several instances start on a new database (``mlflow server``
    migrates MLflow's tracking schema before any plugin code, and so outside the lock)."""
    import sqlalchemy

    first = run(tmp_path, "db", "upgrade", "--db", pg_fresh_url, "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["upgraded"] is True
    engine = sqlalchemy.create_engine(pg_fresh_url, poolclass=sqlalchemy.pool.NullPool)
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
        with engine.connect() as conn:
            defaults = conn.execute(sqlalchemy.text(
                "SELECT artifact_location FROM experiments WHERE experiment_id = 0")).all()
    finally:
        engine.dispose()
    assert {"alembic_version", "alembic_version_auth", "alembic_version_tenants"} <= tables
    # The default experiment's root is the one `mlflow server` gives it when serving artifacts.
    assert defaults == [("mlflow-artifacts:/0",)]
    again = run(tmp_path, "db", "upgrade", "--db", pg_fresh_url)
    assert again.returncode == 0 and "at head" in again.stdout, again.stderr
    assert list(tmp_path.iterdir()) == []

"""The platform admin's first hour, as the README's admin guide types it: a server started with
``--workers 4`` on a fresh PostgreSQL database, the admin CLI with nothing but the database
named, and a tenant's script that only sets ``MLFLOW_TRACKING_URI`` and
``MLFLOW_TRACKING_TOKEN``.

What went wrong before: one of the four workers died on its first start (``UniqueViolation``
on ``alembic_version_auth``); the CLI without configuration made ``./mlflow.db`` and keys that
the server refused with 401."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.fixtures.postgres import create_database, drop_database, pg_url_for
from tests.fixtures.servers import start_mlflow_server, stop_mlflow_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

CLI = shutil.which("mlflow-tenants", path=str(Path(sys.executable).parent))
WORKERS = 4  # the README's command
REQUESTS = 20
STARTUP_DEADLINE = 300  # seconds for every worker to serve, on a busy 2-core machine
TIMEOUT = 300
TENANT_SCRIPT = """
import mlflow
with mlflow.start_run() as run:
    mlflow.log_param("alpha", 0.5)
    mlflow.log_metric("rmse", 0.75)
print(run.info.run_id, run.info.experiment_id)
"""


def hold_the_lock_until_all_workers_wait(url: str, found: dict) -> threading.Thread:
    """Hold the platform's migration lock until every worker waits for it, then let them all
    go at once: the collision that crashed a worker on ``alembic_version_auth`` (before, only
    the registry's migration took this lock, and the workers it released met again in
    basic-auth's), made certain instead of left to timing."""
    import sqlalchemy

    from mlflow_tenant_plugins.tenancy.db import LOCK_KEY

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                      isolation_level="AUTOCOMMIT")
    waiting = sqlalchemy.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                              "AND NOT granted AND objid = :k")
    conn = engine.connect()
    conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})

    def release_when_all_wait() -> None:
        try:
            deadline = time.monotonic() + STARTUP_DEADLINE
            while time.monotonic() < deadline:
                found["waiting"] = conn.execute(waiting, {"k": LOCK_KEY}).scalar()
                if found["waiting"] >= WORKERS:
                    break
                time.sleep(0.2)
        finally:
            conn.close()  # releases the lock
            engine.dispose()

    thread = threading.Thread(target=release_when_all_wait, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def guide(tmp_path_factory):
    """The server as the README starts it, on a database nobody has used yet."""
    name = create_database("mlt_guide")
    url = pg_url_for(name).replace("postgresql+psycopg2://", "postgresql://")  # as typed
    found: dict = {}
    holder = hold_the_lock_until_all_workers_wait(url, found)
    try:
        server = start_mlflow_server(tmp_path_factory.mktemp("guide"), backend_uri=url,
                                     workers=WORKERS)
    finally:
        holder.join(STARTUP_DEADLINE)
    server.state = {"waiting": found.get("waiting")}
    yield server
    stop_mlflow_server(server)
    drop_database(name)


def admin(cwd: Path, *args: str, database: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    if database:
        env["MLFLOW_TENANT_DATABASE_URI"] = database
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=TIMEOUT,
                          cwd=cwd, env=env)


def serving_workers(log: str) -> set[str]:
    """Worker pids that finished startup and have not died since (uvicorn restarts a worker
    that dies, or that misses its 5 s health check on a starved machine, under a new pid)."""
    started = set(re.findall(r"Started server process \[(\d+)\]", log))
    return started - set(re.findall(r"Child process \[(\d+)\] died", log))


def test_four_workers_on_a_fresh_postgres_database_all_come_up_cleanly(guide):
    assert guide.state["waiting"] >= WORKERS  # they all met at the lock, and started together
    deadline = time.monotonic() + STARTUP_DEADLINE
    while len(serving_workers(guide.process.log(tail=100_000))) < WORKERS:
        assert time.monotonic() < deadline, guide.process.log(200)
        time.sleep(0.5)
    _info, key = guide.registry.create_key(None, "admin", admin_label="guide")
    s = guide.session(key, workspace="default")
    codes = [s.get(f"{guide.url}/api/2.0/mlflow/experiments/search",
                   params={"max_results": 1}, timeout=60).status_code for _ in range(REQUESTS)]
    assert codes == [200] * REQUESTS
    log = guide.process.log(tail=100_000)
    for crash in ("Traceback", "UniqueViolation", "IntegrityError", "failed to start"):
        assert crash not in log, log[-6000:]


def test_the_cli_without_configuration_refuses_rather_than_make_another_database(
        guide, tmp_path):
    r = admin(tmp_path, "tenant", "create", "acme", database=None)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "--db" in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1 and list(tmp_path.iterdir()) == []


def test_the_admin_guide_commands_make_a_key_the_server_accepts(guide, tmp_path):
    db = guide.db_uri
    create = admin(tmp_path, "tenant", "create", "acme", "--storage", "50GB", "--endpoints",
                   "3", "--instances", "6", "--instance-types", "ml.m5.large,ml.m5.xlarge",
                   database=db)
    assert create.returncode == 0, create.stderr
    key = admin(tmp_path, "key", "create", "acme", "--role", "editor", database=db)
    assert key.returncode == 0, key.stderr
    tenant_key = key.stdout.strip().splitlines()[-1]
    platform = admin(tmp_path, "key", "create", "--platform-admin", database=db)
    assert platform.returncode == 0, platform.stderr
    listed = admin(tmp_path, "tenant", "list", "--json", database=db)
    assert listed.returncode == 0 and '"acme"' in listed.stdout, listed.stderr
    usage = admin(tmp_path, "usage", database=db)
    assert usage.returncode == 0 and "acme" in usage.stdout, usage.stderr
    assert list(tmp_path.iterdir()) == []  # no stray ./mlflow.db

    r = requests.post(f"{guide.url}/api/2.0/mlflow/experiments/search",
                      headers={"Authorization": f"Bearer {tenant_key}"},
                      json={"max_results": 10}, timeout=60)
    assert r.status_code == 200, r.text
    guide.state["tenant_key"] = tenant_key


def test_a_tenant_script_that_never_names_an_experiment_runs(guide, tmp_path):
    key = guide.state.get("tenant_key")
    assert key, "the admin guide's commands made no key"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=guide.url, MLFLOW_TRACKING_TOKEN=key)
    done = subprocess.run([sys.executable, "-c", TENANT_SCRIPT], capture_output=True,
                          text=True, timeout=TIMEOUT, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run_id, experiment_id = done.stdout.split()[-2:]
    s = guide.session(key)
    got = s.get(f"{guide.url}/api/2.0/mlflow/runs/get", params={"run_id": run_id}, timeout=60)
    assert got.status_code == 200 and got.json()["run"]["info"]["experiment_id"] == experiment_id

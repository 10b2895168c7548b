"""The production topology: two tenant-auth instances (several uvicorn workers each) on one
PostgreSQL database, as an autoscaling group behind a load balancer runs them. Clients of
several tenants drive both at once; no request fails, nothing of one tenant reaches another,
and a key revoked through one instance is refused by the other within the cache bound.
"""

from __future__ import annotations

import itertools
import secrets
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import pytest
import requests

from tests.fixtures.postgres import create_database, drop_database, pg_url_for
from tests.fixtures.servers import MlflowServer, start_mlflow_server, stop_mlflow_server

TTL_SECONDS = 2.0
CLI = shutil.which("mlflow-tenants", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def pg_topology_url():
    name = create_database("mlt_topology")
    # The plain scheme, as an admin types it (psycopg 3 under SQLAlchemy 2.1).
    yield pg_url_for(name).replace("postgresql+psycopg2://", "postgresql://")
    drop_database(name)


BUCKET = "mlt-topology"
DESTINATION = f"tenant-s3://{BUCKET}/platform"


@pytest.fixture(scope="module")
def instances(pg_topology_url, moto_server, tmp_path_factory):
    pg_fresh_url = pg_topology_url
    moto_server.client("s3").create_bucket(Bucket=BUCKET)
    env = {"MLFLOW_TENANT_AUTH_CACHE_TTL_SECONDS": str(TTL_SECONDS), **moto_server.env(),
           "MLFLOW_TENANT_AWS_ENDPOINT_URL": moto_server.url}
    # Same secret for CSRF on every instance, as a deployment would configure it.
    env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(16)
    # A new database, as an autoscaling group meets it: the documented deploy step first
    # (`mlflow server` migrates MLflow's tracking schema before any plugin code, so outside
    # the platform's lock), then both instances start at once.
    upgrade = subprocess.run([CLI, "--db", pg_fresh_url, "db", "upgrade"], capture_output=True,
                             text=True, timeout=300)
    assert upgrade.returncode == 0, upgrade.stderr
    with ThreadPoolExecutor(2) as pool:
        starting = [
            pool.submit(start_mlflow_server, tmp_path_factory.mktemp(f"inst-{tag}"),
                        backend_uri=pg_fresh_url, workers=workers, extra_env=env,
                        artifacts_destination=DESTINATION)
            for tag, workers in (("a", 4), ("b", 2))
        ]
        wait(starting)
    started = [f.result() for f in starting if f.exception() is None]
    if len(started) < 2:
        for server in started:
            stop_mlflow_server(server)
        raise next(f.exception() for f in starting if f.exception() is not None)
    first, second = started
    _info, admin_key = first.registry.create_key(None, "admin", admin_label="ci")
    first.admin_key = second.admin_key = admin_key
    yield first, second
    stop_mlflow_server(second)
    stop_mlflow_server(first)
    for server in (first, second):
        log = server.process.log(tail=100_000)
        assert "Traceback" not in log and "UniqueViolation" not in log, log[-4000:]


def test_two_instances_serve_many_tenants_without_errors_or_leaks(instances):
    first, second = instances
    reg = first.registry
    tenants = {}
    for i in range(3):
        name = f"topo{i}"
        reg.create_tenant(name)
        tenants[name] = reg.create_key(name, "editor")[1]
    failures: list[str] = []
    leaks: list[str] = []
    servers = itertools.cycle([first, second])
    lock = threading.Lock()

    def drive(tenant: str, key: str, server: MlflowServer) -> None:
        s = server.session(key)
        for n in range(6):
            target = next(servers) if n % 2 else server
            url = target.url
            r = s.post(f"{url}/api/2.0/mlflow/experiments/create",
                       json={"name": f"{tenant}-exp-{n}-{server.url[-5:]}"})
            if r.status_code != 200:
                with lock:
                    failures.append(f"create {tenant}: {r.status_code} {r.text[:120]}")
                continue
            exp_id = r.json()["experiment_id"]
            run = s.post(f"{url}/api/2.0/mlflow/runs/create", json={"experiment_id": exp_id})
            if run.status_code != 200:
                with lock:
                    failures.append(f"run {tenant}: {run.status_code} {run.text[:120]}")
                continue
            run_id = run.json()["run"]["info"]["run_id"]
            r = s.post(f"{url}/api/2.0/mlflow/runs/log-metric",
                       json={"run_id": run_id, "key": "m", "value": n, "timestamp": n})
            found = s.post(f"{url}/api/2.0/mlflow/experiments/search",
                           json={"max_results": 100}).json().get("experiments", [])
            foreign = [e["name"] for e in found if not e["name"].startswith(f"{tenant}-")
                       and e["name"] != "Default"]
            with lock:
                if r.status_code != 200:
                    failures.append(f"log {tenant}: {r.status_code}")
                leaks.extend(foreign)

    threads = [threading.Thread(target=drive, args=(t, k, srv))
               for (t, k), srv in zip(sorted(tenants.items()) * 2,
                                      [first, second] * 3, strict=False)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not failures, failures
    assert not leaks, leaks


def test_key_revoked_through_one_instance_is_refused_by_the_other_within_the_bound(instances):
    first, second = instances
    reg = first.registry
    reg.create_tenant("revoke-me")
    info, key = reg.create_key("revoke-me", "editor")

    def status(server: MlflowServer) -> int:
        return requests.post(f"{server.url}/api/2.0/mlflow/experiments/search",
                             json={"max_results": 1},
                             headers={"Authorization": f"Bearer {key}"}, timeout=30).status_code

    # warm every worker's cache on the second instance
    assert all(status(second) == 200 for _ in range(8))
    admin = first.session(first.admin_key)
    r = admin.post(f"{first.url}/api/2.0/tenants/keys/revoke", json={"key_id": info.key_id})
    assert r.status_code == 200, r.text
    revoked_at = time.monotonic()
    deadline = revoked_at + TTL_SECONDS + 1.0
    while time.monotonic() < deadline:
        time.sleep(0.25)
    # after the bound, every worker of both instances refuses it
    assert [status(second) for _ in range(8)] == [401] * 8
    assert [status(first) for _ in range(8)] == [401] * 8


def test_storage_quota_reserved_through_both_instances_is_never_exceeded(instances,
                                                                          moto_server):
    first, second = instances
    from mlflow_tenant_plugins.tenancy import Quotas

    reg = first.registry
    size, fits = 4096, 6
    reg.create_tenant("quota-race", quotas=Quotas(storage_bytes=size * fits))
    key = reg.create_key("quota-race", "editor")[1]
    s = first.session(key)
    exp = s.post(f"{first.url}/api/2.0/mlflow/experiments/create", json={"name": "q"}).json()
    run = s.post(f"{first.url}/api/2.0/mlflow/runs/create",
                 json={"experiment_id": exp["experiment_id"]}).json()["run"]["info"]
    codes: list[int] = []
    lock = threading.Lock()

    def upload(i: int) -> None:
        server = (first, second)[i % 2]
        path = f"{exp['experiment_id']}/{run['run_id']}/artifacts/blob-{i}.bin"
        r = server.session(key).put(f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{path}",
                                    data=b"x" * size, timeout=120)
        with lock:
            codes.append(r.status_code)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(set(codes)) == [200, 409], codes
    assert codes.count(200) == fits
    usage = reg.ledger.get("quota-race", "storage_bytes")
    assert usage.used == size * fits <= usage.limit
    listed = moto_server.client("s3").list_objects_v2(
        Bucket=BUCKET, Prefix="platform/workspaces/quota-race/")
    assert sum(o["Size"] for o in listed.get("Contents", [])) == size * fits

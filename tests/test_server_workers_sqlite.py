"""tenant-auth under the default uvicorn server with ``--workers 4`` on sqlite (the embedded
default): concurrent tenants are served by every worker without errors or leaks, and a
revoked key is refused by all workers within the cache bound. (The same on PostgreSQL, with
two instances, is tests/test_topology_postgres.py.)"""

from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.fixtures.servers import start_mlflow_server, stop_mlflow_server

TTL = 1.0


@pytest.fixture(scope="module")
def four_workers(tmp_path_factory):
    server = start_mlflow_server(tmp_path_factory.mktemp("workers4"), workers=4,
                                 extra_env={"MLFLOW_TENANT_AUTH_CACHE_TTL_SECONDS": str(TTL)})
    yield server
    stop_mlflow_server(server)


def test_four_workers_serve_concurrent_tenants_without_errors_or_leaks(four_workers):
    reg = four_workers.registry
    keys = {}
    for name in ("wone", "wtwo"):
        reg.create_tenant(name)
        keys[name] = reg.create_key(name, "editor")[1]
    problems: list[str] = []
    lock = threading.Lock()

    def work(tenant: str, thread: int) -> None:
        s = four_workers.session(keys[tenant])
        url = four_workers.url
        for i in range(5):
            r = s.post(f"{url}/api/2.0/mlflow/experiments/create",
                       json={"name": f"{tenant}-{thread}-{i}"})
            found = s.post(f"{url}/api/2.0/mlflow/experiments/search",
                           json={"max_results": 200}).json().get("experiments", [])
            with lock:
                if r.status_code != 200:
                    problems.append(f"{tenant}: {r.status_code} {r.text[:100]}")
                problems.extend(f"{tenant} saw {e['name']}" for e in found
                                if not e["name"].startswith(tenant))

    threads = [threading.Thread(target=work, args=(t, n)) for t in keys for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not problems, problems[:10]


def test_revoked_key_is_refused_by_every_worker_within_the_bound(four_workers):
    reg = four_workers.registry
    reg.create_tenant("wrevoke")
    info, key = reg.create_key("wrevoke", "viewer")

    def statuses() -> list[int]:
        # fresh connections, so uvicorn spreads them over its workers
        return [requests.post(f"{four_workers.url}/api/2.0/mlflow/experiments/search",
                              json={"max_results": 1}, timeout=30,
                              headers={"Authorization": f"Bearer {key}",
                                       "Connection": "close"}).status_code
                for _ in range(16)]

    assert set(statuses()) == {200}
    reg.revoke_key(info.key_id)
    time.sleep(TTL + 0.5)
    assert set(statuses()) == {401}

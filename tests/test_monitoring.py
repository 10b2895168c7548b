"""Monitoring in-process: bounded labels, the observer's counts, series that add up across
worker processes, the publisher lease (sqlite and PostgreSQL) and the publisher thread's
retries. CloudWatch is in test_monitoring_cloudwatch.py; the running server (scrape, periodic
publish, browser) in test_monitoring_server.py.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from mlflow_tenant_plugins.auth.base import NO_CREDENTIALS, Refusal
from mlflow_tenant_plugins.auth.keys import INVALID_KEY
from mlflow_tenant_plugins.monitoring import labels
from mlflow_tenant_plugins.monitoring.lease import Lease
from mlflow_tenant_plugins.monitoring.metrics import TenantMetrics
from mlflow_tenant_plugins.monitoring.publisher import (
    LEASE_KEY,
    PeriodicPublisher,
)
from mlflow_tenant_plugins.monitoring.snapshot import TenantUsage
from mlflow_tenant_plugins.tenancy import Role, TenantRegistry
from mlflow_tenant_plugins.tenancy.entities import Identity
from mlflow_tenant_plugins.tenancy.errors import QuotaExceeded

ALICE = Identity("alice", "acme", Role.EDITOR, False, "key")
ADMIN = Identity("platform-admin", None, None, True, "key")


def _sample(registry: CollectorRegistry, name: str, **want: str) -> float:
    for family in registry.collect():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in want.items()):
                return s.value
    return 0.0


# -- labels: bounded, whatever the request says -----------------------------------------------
@pytest.mark.parametrize("path, group", [
    ("/api/2.0/mlflow/runs/get", "tracking"),
    ("/ajax-api/2.0/mlflow/experiments/search", "tracking"),
    ("/api/2.0/mlflow/metrics/get-history", "tracking"),
    ("/api/2.0/mlflow-artifacts/artifacts/workspaces/acme/1/abc/artifacts/m.pkl", "artifacts"),
    ("/get-artifact", "artifacts"),
    ("/api/2.0/mlflow/registered-models/get", "model-registry"),
    ("/api/2.0/mlflow/model-versions/search", "model-registry"),
    ("/api/3.0/mlflow/traces/search", "traces"),
    ("/v1/traces", "traces"),
    ("/api/2.0/mlflow/logged-models/search", "logged-models"),
    ("/api/2.0/mlflow/users/create", "auth-admin"),
    ("/api/2.0/tenants/deployments/create", "deployments"),
    ("/api/2.0/tenants/usage-page", "tenant-admin"),
    ("/metrics", "metrics"),
    ("/graphql", "graphql"),
    ("/", "ui"),
    ("/static-files/static/js/main.js", "ui"),
    ("/api/2.0/mlflow/runs/get/../../../../etc/passwd", "tracking"),
    (f"/{secrets.token_hex(16)}", "other"),
])
def test_route_group_is_one_of_a_fixed_set_never_the_path(path: str, group: str) -> None:
    assert labels.route_group(path) == group
    assert group in labels.ROUTE_GROUP_NAMES


def test_tenant_label_is_the_callers_verified_tenant_not_request_text() -> None:
    assert labels.tenant_label(ALICE) == "acme"
    assert labels.tenant_label(ADMIN) == labels.PLATFORM
    assert labels.tenant_label(INVALID_KEY) == labels.UNAUTHENTICATED
    assert labels.tenant_label(None) == labels.UNAUTHENTICATED


def test_quota_refusal_is_read_from_the_refusal_body_and_bounded() -> None:
    storage = QuotaExceeded("acme", "storage_bytes", 10, 5, 8)
    assert labels.quota_refused(storage.serialize_as_json().encode()) == "storage_bytes"
    body = json.dumps({"error_code": "RESOURCE_EXHAUSTED", "message": storage.message})
    assert labels.quota_refused(body.encode()) == "storage_bytes"
    per_endpoint = ("quota exceeded for tenant 'acme': instances_per_endpoint limit is 2, "
                    "this deployment needs 3 (its max_instances)")
    assert labels.quota_refused(json.dumps(
        {"error_code": "RESOURCE_EXHAUSTED", "message": per_endpoint}).encode()
    ) == "instances_per_endpoint"
    invented = {"error_code": "RESOURCE_EXHAUSTED", "message": "x: made_up_thing limit is 1"}
    assert labels.quota_refused(json.dumps(invented).encode()) == "other"
    assert labels.quota_refused(json.dumps({**invented, "quota": ["x"]}).encode()) == "other"
    assert labels.quota_refused(b'{"error_code": "TOO_MANY"}') is None
    assert labels.quota_refused(b"<html>rate limited</html>") is None


def test_quota_refusal_names_its_quota_in_a_field_of_its_own() -> None:
    """Monitoring reads the quota from the error, not from the words of its message."""
    refusal = QuotaExceeded("acme", "endpoints", 1, 2, 2)
    body = json.loads(refusal.serialize_as_json())
    assert body["quota"] == "endpoints" and body["error_code"] == "RESOURCE_EXHAUSTED"
    reworded = {**body, "message": "the tenant is full"}
    assert labels.quota_refused(json.dumps(reworded).encode()) == "endpoints"


def test_auth_failure_method_is_the_one_the_refusal_records() -> None:
    assert labels.auth_method(INVALID_KEY) == "key"
    assert labels.auth_method(Refusal("AWS STS refused the signed request", method="iam")) == "iam"
    assert labels.auth_method(NO_CREDENTIALS) == "none"
    assert labels.auth_method(Refusal("no method recorded")) == "none"
    assert labels.auth_method(ALICE) == "key"  # an identity the engine refused after all
    assert labels.auth_method(None) == "none"


def test_observer_counts_requests_denials_refusals_and_auth_failures() -> None:
    reg = CollectorRegistry()
    m = TenantMetrics(reg)
    quota = json.dumps({"error_code": "RESOURCE_EXHAUSTED",
                        "message": QuotaExceeded("acme", "endpoints", 1, 2, 2).message}).encode()
    m.observe(ALICE, 200, "/api/2.0/mlflow/runs/get", 0.02, b"")
    m.observe(ALICE, 200, "/api/2.0/mlflow/runs/get", 0.3, b"")
    m.observe(ALICE, 403, "/api/2.0/tenants/list", 0.01, b"")
    m.observe(ALICE, 409, "/api/2.0/tenants/deployments/create", 0.05, quota)
    m.observe(INVALID_KEY, 401, "/api/2.0/mlflow/runs/get", 0.01, b"")
    total = "mlflow_tenant_requests_total"
    assert _sample(reg, total, tenant="acme", route_group="tracking", status_class="2xx") == 2
    assert _sample(reg, total, tenant="acme", route_group="tenant-admin",
                   status_class="4xx") == 1
    assert _sample(reg, "mlflow_tenant_permission_denials_total", tenant="acme",
                   route_group="tenant-admin") == 1
    assert _sample(reg, "mlflow_tenant_quota_refusals_total", tenant="acme",
                   quota="endpoints") == 1
    assert _sample(reg, "mlflow_tenant_auth_failures_total", method="key") == 1
    assert _sample(reg, "mlflow_tenant_request_duration_seconds_count", tenant="acme",
                   route_group="tracking") == 2
    assert _sample(reg, "mlflow_tenant_request_duration_seconds_bucket", tenant="acme",
                   route_group="tracking", le="0.1") == 1


def test_gauges_follow_the_ledger_and_drop_deleted_tenants_to_zero() -> None:
    reg = CollectorRegistry()
    m = TenantMetrics(reg)
    limits = {"storage_bytes": 1000, "endpoints": 2, "instances": 4}
    m.set_usage([TenantUsage("acme", "active", None,
                             {"storage_bytes": 900, "endpoints": 1, "instances": 2}, limits),
                 TenantUsage("gone", "active", None,
                             {"storage_bytes": 5, "endpoints": 0, "instances": 0}, limits)])
    assert _sample(reg, "mlflow_tenant_resource_used", tenant="acme",
                   resource="storage_bytes") == 900
    assert _sample(reg, "mlflow_tenant_resource_limit", tenant="acme", resource="instances") == 4
    m.set_usage([TenantUsage("acme", "active", None,
                             {"storage_bytes": 950, "endpoints": 1, "instances": 2}, limits)])
    assert _sample(reg, "mlflow_tenant_resource_used", tenant="acme",
                   resource="storage_bytes") == 950
    assert _sample(reg, "mlflow_tenant_resource_used", tenant="gone",
                   resource="storage_bytes") == 0


_WORKER = """
import sys
from prometheus_client import CollectorRegistry
from mlflow_tenant_plugins.monitoring.metrics import TenantMetrics
from mlflow_tenant_plugins.monitoring.snapshot import TenantUsage
from mlflow_tenant_plugins.tenancy.entities import Identity
from mlflow_tenant_plugins.tenancy.roles import Role

n, stored = int(sys.argv[1]), int(sys.argv[2])
m = TenantMetrics(CollectorRegistry())
alice = Identity("alice", "acme", Role.EDITOR, False, "key")
for _ in range(n):
    m.observe(alice, 200, "/api/2.0/mlflow/runs/get", 0.02, b"")
m.observe(alice, 403, "/api/2.0/tenants/list", 0.01, b"")
limits = {"storage_bytes": 1000, "endpoints": 2, "instances": 4}
m.set_usage([TenantUsage("acme", "active", None,
                         {"storage_bytes": stored, "endpoints": 0, "instances": 0}, limits)])
"""


def test_series_of_two_worker_processes_add_up_in_the_multiprocess_directory(
    tmp_path: Path,
) -> None:
    """What ``--expose-prometheus DIR`` does with several uvicorn workers: each process writes
    its own files, the scrape adds the counters up and shows the newest gauge value."""
    prom = tmp_path / "prom"
    prom.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(prom)}
    for n, stored in ((3, 100), (4, 700)):  # one after the other: the second gauge is newer
        subprocess.run([sys.executable, "-c", _WORKER, str(n), str(stored)], env=env,
                       check=True, timeout=120)
    reg = CollectorRegistry()
    MultiProcessCollector(reg, path=str(prom))
    assert _sample(reg, "mlflow_tenant_requests_total", tenant="acme", route_group="tracking",
                   status_class="2xx") == 7
    assert _sample(reg, "mlflow_tenant_permission_denials_total", tenant="acme",
                   route_group="tenant-admin") == 2
    assert _sample(reg, "mlflow_tenant_request_duration_seconds_count", tenant="acme",
                   route_group="tracking") == 7
    assert _sample(reg, "mlflow_tenant_resource_used", tenant="acme",
                   resource="storage_bytes") == 700


# -- the lease ------------------------------------------------------------------------------
def _race(leases: list[Lease]) -> list[bool]:
    barrier = threading.Barrier(len(leases))
    results: list[bool] = [False] * len(leases)

    def run(i: int) -> None:
        barrier.wait(timeout=30)
        results[i] = leases[i].acquire()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(leases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_lease_lets_exactly_one_of_two_publishers_through(db: str, request, registry) -> None:
    engine = (registry.engine if db == "sqlite"
              else TenantRegistry(request.getfixturevalue("pg_url")).engine)
    for round_ in range(10):
        key = f"test-lease-{secrets.token_hex(4)}-{round_}"
        a, b = Lease(engine, key, 60, holder="a"), Lease(engine, key, 60, holder="b")
        # No row yet: both INSERT, the primary key lets one through.
        first = _race([a, b])
        assert sorted(first) == [False, True], first
        # A lapsed lease (released here): both race the conditional UPDATE.
        (a if first[0] else b).release()
        second = _race([a, b])
        assert sorted(second) == [False, True], second


def test_lease_renews_for_its_holder_and_passes_on_after_expiry_or_release(registry) -> None:
    a = Lease(registry.engine, "test-lease-expiry", 0.5, holder="a")
    b = Lease(registry.engine, "test-lease-expiry", 0.5, holder="b")
    assert a.acquire() and a.acquire()  # renewal
    assert not b.acquire()
    assert a.current_holder() == "a"
    time.sleep(0.7)
    assert a.current_holder() is None
    assert b.acquire() and not a.acquire()
    b.release()
    assert a.acquire()


class _CountingPublisher:
    def __init__(self, fail_times: int = 0):
        self.calls = 0
        self.fail_times = fail_times

    def publish(self):
        self.calls += 1
        if self.calls <= self.fail_times:
            raise ConnectionError("CloudWatch unreachable")
        from mlflow_tenant_plugins.monitoring.publisher import PublishReport

        return PublishReport(tenants=1, data_points=8)


def test_only_the_lease_holder_of_two_periodic_publishers_publishes(registry) -> None:
    pubs = [_CountingPublisher(), _CountingPublisher()]
    periodic = [PeriodicPublisher(p, Lease(registry.engine, LEASE_KEY, 60), 60) for p in pubs]
    for _ in range(3):
        for p in periodic:
            p.run_once()
    assert sorted(p.calls for p in pubs) == [0, 3]


def test_publisher_thread_survives_failures_and_backs_off(registry, caplog) -> None:
    slow = PeriodicPublisher(_CountingPublisher(), Lease(registry.engine, "t-backoff", 60), 300)
    assert slow.next_wait() == 300
    slow.failures = 1
    assert slow.next_wait() == 5
    slow.failures = 3
    assert slow.next_wait() == 20
    slow.failures = 12
    assert slow.next_wait() == 300

    flaky = _CountingPublisher(fail_times=2)
    periodic = PeriodicPublisher(flaky, Lease(registry.engine, "t-flaky", 60), 0.2).start()
    try:
        deadline = time.monotonic() + 30
        while periodic.published < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert periodic.published >= 2 and periodic.alive
        assert "CloudWatch unreachable" in caplog.text
    finally:
        periodic.stop()
    assert not periodic.alive
    assert periodic.lease.current_holder() is None  # released on stop

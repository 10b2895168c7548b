"""The usage ledger under contention: reservations racing at a quota's boundary, from many
threads and from two processes on PostgreSQL, never pass the quota together, and releases
never take use below zero."""

from __future__ import annotations

import multiprocessing
import threading
import uuid

import pytest

from mlflow_tenant_plugins.tenancy import Quotas, TenantRegistry, UsageLedger
from mlflow_tenant_plugins.tenancy.db import get_engine
from mlflow_tenant_plugins.tenancy.usage import QuotaExceeded

REGISTRY_ON_EVERY_BACKEND = True  # the ``registry`` fixture (tests/fixtures/registry.py)
RESOURCE = "endpoints"
JOIN_TIMEOUT = 120.0


def new_tenant(registry: TenantRegistry, endpoints: int) -> str:
    name = f"u-{uuid.uuid4().hex[:10]}"
    registry.create_tenant(name, quotas=Quotas(endpoints=endpoints))
    return name


def race(ledger: UsageLedger, tenant: str, threads: int, action: str = "reserve") -> dict:
    """``threads`` threads released together, each reserving (or releasing) one unit."""
    barrier = threading.Barrier(threads)
    outcome = {"ok": 0, "refused": 0, "errors": []}
    lock = threading.Lock()

    def one() -> None:
        try:
            barrier.wait(timeout=JOIN_TIMEOUT)
            getattr(ledger, action)(tenant, RESOURCE, 1)
            key = "ok"
        except QuotaExceeded:
            key = "refused"
        except Exception as exc:  # reported, not swallowed: the test fails on any
            with lock:
                outcome["errors"].append(repr(exc))
            return
        with lock:
            outcome[key] += 1

    workers = [threading.Thread(target=one, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=JOIN_TIMEOUT)
    assert not any(w.is_alive() for w in workers), "reservation threads did not finish in time"
    return outcome


def test_fifty_threads_at_the_boundary_get_exactly_the_quota(registry):
    tenant = new_tenant(registry, endpoints=10)
    outcome = race(registry.ledger, tenant, threads=50)
    assert outcome == {"ok": 10, "refused": 40, "errors": []}
    assert registry.ledger.get(tenant, RESOURCE).used == 10


def test_concurrent_releases_stop_at_zero(registry):
    tenant = new_tenant(registry, endpoints=10)
    registry.ledger.reserve(tenant, RESOURCE, 10)
    outcome = race(registry.ledger, tenant, threads=30, action="release")
    assert outcome == {"ok": 30, "refused": 0, "errors": []}
    assert registry.ledger.get(tenant, RESOURCE).used == 0


def test_release_never_goes_below_zero(registry):
    ledger = registry.ledger
    tenant = new_tenant(registry, endpoints=10)
    ledger.reserve(tenant, RESOURCE, 3)
    ledger.release(tenant, RESOURCE, 5)
    assert ledger.get(tenant, RESOURCE).used == 0
    ledger.release(tenant, RESOURCE, 1)  # a double release is harmless
    ledger.release(tenant, RESOURCE, -4)  # and a negative one adds nothing
    assert ledger.get(tenant, RESOURCE).used == 0


def test_refused_reservation_adds_nothing_and_names_the_quota(registry):
    ledger = registry.ledger
    tenant = new_tenant(registry, endpoints=10)
    ledger.reserve(tenant, RESOURCE, 7)
    with pytest.raises(QuotaExceeded) as exc:
        ledger.reserve(tenant, RESOURCE, 4)
    assert exc.value.error_code == "RESOURCE_EXHAUSTED"
    assert exc.value.get_http_status_code() == 409
    assert f"tenant '{tenant}'" in exc.value.message
    assert "endpoints limit is 10" in exc.value.message and "7 (7) in use" in exc.value.message
    assert ledger.get(tenant, RESOURCE).used == 7
    ledger.reserve(tenant, RESOURCE, 3)  # exactly up to the limit is allowed
    assert ledger.get(tenant, RESOURCE).used == 10


def test_failed_write_inside_a_reservation_gives_the_use_back(registry):
    ledger = registry.ledger
    tenant = new_tenant(registry, endpoints=2)
    with pytest.raises(RuntimeError), ledger.reservation(tenant, RESOURCE, 2):
        raise RuntimeError("the write failed")
    assert ledger.get(tenant, RESOURCE).used == 0


# -- two processes on PostgreSQL -----------------------------------------------------------------
def _racing_process(url: str, tenant: str, threads: int, start, results) -> None:
    """Child process: connect and warm up first, then race when the parent says go."""
    ledger = UsageLedger(get_engine(url))
    ledger.get(tenant, RESOURCE)
    start.wait(timeout=JOIN_TIMEOUT)
    results.put(race(ledger, tenant, threads))


@pytest.mark.postgres
def test_two_processes_racing_on_postgresql_never_pass_the_quota(pg_url):
    registry = TenantRegistry(pg_url)
    quota, per_process = 37, 40
    tenant = new_tenant(registry, endpoints=quota)
    ctx = multiprocessing.get_context("spawn")  # no forked pools or locks from this process
    start, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_racing_process, args=(pg_url, tenant, per_process, start,
                                                       results), daemon=True)
             for _ in range(2)]
    try:
        for p in procs:
            p.start()
        start.wait(timeout=JOIN_TIMEOUT)  # both children are connected: release them together
        outcomes = [results.get(timeout=JOIN_TIMEOUT) for _ in procs]
        for p in procs:
            p.join(timeout=30)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
    assert [o["errors"] for o in outcomes] == [[], []]
    assert sum(o["ok"] for o in outcomes) == quota
    assert sum(o["refused"] for o in outcomes) == 2 * per_process - quota
    assert registry.ledger.get(tenant, RESOURCE).used == quota

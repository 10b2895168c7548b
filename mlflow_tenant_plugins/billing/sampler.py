"""Keeps the meters current: every ``metering_interval_seconds``, one worker of one instance
(a lease in the database) observes each tenant's storage (bytes held; and, in overage mode,
bytes over the allowance) and, when the platform deploys, its endpoint instances by type.

Between samples a level is taken as constant, so a write counts from the next sample; the
interval bounds that error (default 5 minutes). Deployments also observe their tenant's
instances when a create, update or delete completes (``observe_endpoints``), so instance-hours
follow the events, and the samples catch what autoscaling changed in between. Training
instance-hours are not sampled: a job's exact interval is counted when it ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from mlflow_tenant_plugins.monitoring.lease import Lease, Periodic
from mlflow_tenant_plugins.tenancy import meters as m

_logger = logging.getLogger(__name__)
LEASE_KEY = "metering-sampler"

# tenant -> instance type -> instances running now
EndpointCounter = Callable[[str], dict[str, int]]


def observe_storage(meters: m.Meters, tenant: Any, used: int, at: datetime) -> None:
    meters.observe(tenant.name, m.STORAGE, used, at)
    billable = max(0, used - tenant.quotas.storage_allowance_bytes) \
        if tenant.quotas.storage_mode == "overage" else 0
    meters.observe(tenant.name, m.STORAGE_BILLABLE, billable, at)


def observe_endpoints(meters: m.Meters, tenant: str, counts: dict[str, int],
                      at: datetime) -> None:
    """Set every endpoint-instance meter of ``tenant``: types it no longer runs go to 0."""
    known = {k.dimension for k in meters.levels(tenant) if k.meter == m.ENDPOINT_INSTANCES}
    for kind in known | set(counts):
        meters.observe(tenant, m.ENDPOINT_INSTANCES, int(counts.get(kind, 0)), at, kind)


def sample(registry: Any, meters: m.Meters, at: datetime,
           endpoints: EndpointCounter | None = None,
           tenants: Iterable[Any] | None = None) -> int:
    """One sample of every tenant (or of ``tenants``); the number sampled."""
    done = 0
    for tenant in tenants if tenants is not None else registry.list_tenants():
        try:
            observe_storage(meters, tenant, registry.ledger.get(tenant.name,
                                                                "storage_bytes").used, at)
            if endpoints is not None:
                observe_endpoints(meters, tenant.name, endpoints(tenant.name), at)
            done += 1
        except Exception:
            _logger.warning("metering: sampling tenant %s failed", tenant.name, exc_info=True)
    return done


def start(registry: Any, settings: Any,
          endpoints: Callable[[], EndpointCounter | None]) -> Periodic | None:
    interval = settings.metering_interval_seconds
    if interval <= 0:
        return None
    meters = m.Meters(registry.engine)
    lease = Lease(registry.engine, LEASE_KEY, max(3 * interval, 30.0))

    def task() -> None:
        sample(registry, meters, datetime.now(UTC), endpoints())

    return Periodic(task, lease, interval, name="mlt-metering-sampler").start()

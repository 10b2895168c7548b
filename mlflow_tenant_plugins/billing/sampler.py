"""Keeps the meters current: every ``metering_interval_seconds``, one worker of one instance
(a lease in the database) observes each tenant's storage (bytes held; and, in overage mode,
bytes over the allowance) and, when the platform deploys, its endpoint instances by type.

Between samples a level is taken as constant, so a write counts from the next sample; the
interval bounds that error (default 5 minutes). Deployments also observe their tenant's
instances when a create, update or delete completes (``observe_endpoints``), so instance-hours
follow the events, and the samples catch what autoscaling changed in between. Training
instance-hours are not sampled: a job's exact interval is counted when it ends.

At the end of each run, under the same lease, budgets are checked (``billing/budgets.py``):
crossing 80 % and 100 % of a tenant's monthly budget fires once each.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from mlflow_tenant_plugins.monitoring.lease import Lease, Periodic
from mlflow_tenant_plugins.tenancy import meters as m

_logger = logging.getLogger(__name__)
LEASE_KEY = "metering-sampler"

# tenant -> instance type -> instances running now
EndpointCounter = Callable[[str], dict[str, int]]
# Endpoint states that run no instance the tenant pays for.
NOT_RUNNING = ("Failed", "Deleting")


class EndpointInstances:
    """An :data:`EndpointCounter` reading SageMaker through a deployment service (its
    ``owned_endpoints(tenant)``, which checks the tenant tag, and its ``aws.sagemaker``).

    Per endpoint one DescribeEndpoint, for the counts running now (autoscaling changes them;
    a blue/green update's new fleet, in ``PendingDeploymentSummary``, runs beside the old one
    and is counted too). The instance type is not in DescribeEndpoint but in the endpoint
    config, which never changes once made: each config is described once and kept. An
    AWS error propagates, so a failed read is never taken for 0 instances."""

    MAX_CONFIGS = 4096

    def __init__(self, service: Any):
        self.service = service
        self._types: dict[str, dict[str, str]] = {}  # config name -> variant -> type
        self._lock = threading.Lock()

    def _variant_types(self, config_name: str) -> dict[str, str]:
        with self._lock:
            found = self._types.get(config_name)
        if found is None:
            config = self.service.aws.sagemaker.describe_endpoint_config(
                EndpointConfigName=config_name)
            found = {v["VariantName"]: v.get("InstanceType") or ""
                     for v in config.get("ProductionVariants") or []}
            with self._lock:
                if len(self._types) >= self.MAX_CONFIGS:
                    self._types.clear()
                self._types[config_name] = found
        return found

    def __call__(self, tenant: str) -> dict[str, int]:
        from mlflow_tenant_plugins.deployments.aws import is_not_found

        sagemaker = self.service.aws.sagemaker
        counts: dict[str, int] = {}

        def add(kind: str, n: Any) -> None:
            if kind and n:
                counts[kind] = counts.get(kind, 0) + int(n)

        for listed, _tags in self.service.owned_endpoints(tenant):
            if listed.get("EndpointStatus") in NOT_RUNNING:
                continue
            try:
                desc = sagemaker.describe_endpoint(EndpointName=listed["EndpointName"])
            except Exception as exc:
                if is_not_found(exc):  # deleted since the listing
                    continue
                raise
            if desc.get("EndpointStatus") in NOT_RUNNING:
                continue
            types = self._variant_types(desc["EndpointConfigName"])
            for variant in desc.get("ProductionVariants") or []:
                add(types.get(variant.get("VariantName"), ""),
                    variant.get("CurrentInstanceCount"))
            pending = desc.get("PendingDeploymentSummary") or {}
            for variant in pending.get("ProductionVariants") or []:
                add(variant.get("InstanceType") or "", variant.get("CurrentInstanceCount"))
        return counts


def observe_storage(meters: m.Meters, tenant: Any, used: int, at: datetime) -> None:
    meters.observe(tenant.name, m.STORAGE, used, at)
    meters.observe(tenant.name, m.STORAGE_BILLABLE, tenant.quotas.billable_bytes(used), at)


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


def _counter(endpoints: Callable[[], EndpointCounter | None]) -> EndpointCounter | None:
    """The endpoint counter, or None (endpoints skipped this time, storage still sampled)
    when the deployment service cannot be built."""
    try:
        return endpoints()
    except Exception:
        _logger.warning("metering: no endpoint counts this time", exc_info=True)
        return None


def task(registry: Any, settings: Any, meters: m.Meters,
         endpoints: Callable[[], EndpointCounter | None],
         budget_clients: Callable[[], tuple[Any, Any]]) -> None:
    """One run: sample every tenant, then check the budgets (what a check sends is best
    effort: a failure is logged, never stops the next sample)."""
    from mlflow_tenant_plugins.billing.budgets import check_budgets
    from mlflow_tenant_plugins.billing.prices import PriceTable

    now = datetime.now(UTC)
    sample(registry, meters, now, _counter(endpoints))
    try:
        if any(t.budget_amount is not None for t in registry.list_tenants()):
            cloudwatch, sns = budget_clients()
            check_budgets(registry, settings, PriceTable.from_settings(settings), now,
                          cloudwatch, sns)
    except Exception:
        _logger.warning("metering: checking budgets failed", exc_info=True)


def aws_clients(settings: Any) -> tuple[Any, Any]:
    """CloudWatch and SNS in the platform's region (and emulator, if any)."""
    import boto3
    from botocore.config import Config

    kwargs: dict[str, Any] = {"region_name": settings.aws_region or None,
                              "config": Config(retries={"max_attempts": 4, "mode": "standard"})}
    if settings.aws_endpoint_url:
        kwargs["endpoint_url"] = settings.aws_endpoint_url
    return boto3.client("cloudwatch", **kwargs), boto3.client("sns", **kwargs)


def start(registry: Any, settings: Any,
          endpoints: Callable[[], EndpointCounter | None]) -> Periodic | None:
    interval = settings.metering_interval_seconds
    if interval <= 0:
        return None
    meters = m.Meters(registry.engine)
    lease = Lease(registry.engine, LEASE_KEY, max(3 * interval, 30.0))
    clients: list[tuple[Any, Any]] = []

    def budget_clients() -> tuple[Any, Any]:
        if not clients:  # made on first need (no AWS calls until a budget is crossed)
            clients.append(aws_clients(settings))
        return clients[0]

    return Periodic(lambda: task(registry, settings, meters, endpoints, budget_clients), lease,
                    interval, name="mlt-metering-sampler").start()

"""Reconcile the endpoint and instance ledger with SageMaker
(``mlflow-tenants usage --reconcile-deployments``).

The deployment service keeps the ledger exact, but a worker that dies in the middle of a create
or an update leaves what it reserved behind (a tenant then loses quota it does not use). The
truth is in SageMaker: each of the tenant's endpoints carries the tenant's tags, among them the
instances it reserves (its ``max_instances``). This counts them with the caller's own AWS
credentials and sets the tenant's ``endpoints`` and ``instances`` use to that when they differ.

A tenant with an operation in flight (a record that moved within the service's staleness
bound) is left alone and reported ``busy``, as is one whose ledger changes while it is being
counted: a reconcile never overwrites a live reservation with a stale count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mlflow_tenant_plugins.deployments import names as n
from mlflow_tenant_plugins.deployments.storage import in_flight

if TYPE_CHECKING:
    from mlflow_tenant_plugins.deployments.service import DeploymentService

RESOURCES = ("endpoints", "instances")


@dataclass(frozen=True)
class TenantDeployments:
    tenant: str
    ledger: dict[str, int]  # what the ledger said before reconciling
    sagemaker: dict[str, int]  # what the tenant's endpoints hold
    status: str  # "ok" (no drift), "corrected", "drift" (dry run) or "busy"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def held_in_sagemaker(service: DeploymentService, tenant: str) -> dict[str, int]:
    """Endpoints with the tenant's tags, and the instances they reserve."""
    held = dict.fromkeys(RESOURCES, 0)
    for _endpoint, tags in service.owned_endpoints(tenant):
        held["endpoints"] += 1
        held["instances"] += int(tags.get(n.TAG_RESERVED_INSTANCES, "0") or 0)
    return held


def _in_flight(service: DeploymentService, tenant: str) -> bool:
    stale_after = service._stale_after()
    return any(in_flight(r, stale_after) for r in service.storage.records(tenant))


def reconcile_tenant(service: DeploymentService, tenant: str,
                     dry_run: bool = False) -> TenantDeployments:
    ledger = service.registry.ledger

    def used() -> dict[str, int]:
        return {r: ledger.get(tenant, r).used for r in RESOURCES}

    before = used()
    if _in_flight(service, tenant):
        return TenantDeployments(tenant, before, {}, "busy")
    held = held_in_sagemaker(service, tenant)
    if used() != before or _in_flight(service, tenant):
        return TenantDeployments(tenant, before, held, "busy")
    if held == before:
        return TenantDeployments(tenant, before, held, "ok")
    if dry_run:
        return TenantDeployments(tenant, before, held, "drift")
    for resource in RESOURCES:
        if held[resource] != before[resource]:
            ledger.set_used(tenant, resource, held[resource])
    return TenantDeployments(tenant, before, held, "corrected")


def reconcile(service: DeploymentService, tenants: list[str] | None = None,
              dry_run: bool = False) -> list[TenantDeployments]:
    names = tenants or [t.name for t in service.registry.list_tenants()]
    return [reconcile_tenant(service, t, dry_run) for t in names]

"""Every tenant's use against its quotas, read in one query.

The gauges, the CloudWatch publisher and the usage page all read this: one SELECT over the
tenants joined to the usage ledger, whatever the number of tenants (``ledger.for_tenant``
would cost three queries per tenant, on every scrape).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from mlflow_tenant_plugins.tenancy import TenantRegistry
from mlflow_tenant_plugins.tenancy.models import TenantRow, UsageRow
from mlflow_tenant_plugins.tenancy.usage import RESOURCES


@dataclass(frozen=True)
class TenantUsage:
    tenant: str
    status: str
    alarm_topic_arn: str | None
    used: dict[str, int] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)

    def utilization(self, resource: str) -> float:
        """Fraction of the quota in use; a zero quota with any use counts as full."""
        used, limit = self.used.get(resource, 0), self.limits.get(resource, 0)
        return used / limit if limit else (1.0 if used else 0.0)

    @property
    def max_utilization(self) -> float:
        return max(self.utilization(r) for r in RESOURCES)


def snapshot(registry: TenantRegistry, tenants: list[str] | None = None) -> list[TenantUsage]:
    """Use and limits of ``tenants`` (default: all), sorted by tenant name."""
    quota_columns = list(RESOURCES.values())
    stmt = (
        select(TenantRow.name, TenantRow.status, TenantRow.alarm_topic_arn, *quota_columns,
               UsageRow.resource, UsageRow.used)
        .outerjoin(UsageRow, UsageRow.tenant == TenantRow.name)
        .order_by(TenantRow.name)
    )
    if tenants is not None:
        stmt = stmt.where(TenantRow.name.in_(tenants))
    rows: dict[str, TenantUsage] = {}
    with registry.engine.connect() as conn:
        for row in conn.execute(stmt):
            name = row[0]
            usage = rows.get(name)
            if usage is None:
                limits = {r: int(row[3 + i] or 0) for i, r in enumerate(RESOURCES)}
                usage = rows[name] = TenantUsage(name, row[1], row[2],
                                                 {r: 0 for r in RESOURCES}, limits)
            resource, used = row[-2], row[-1]
            if resource in RESOURCES:
                usage.used[resource] = int(used or 0)
    return list(rows.values())

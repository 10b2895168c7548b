"""The usage ledger: atomic reserve/release of quota-bound resources per tenant.

A reservation is one conditional ``UPDATE … SET used = used + n WHERE used + n <= limit``.
Both sqlite (one writer at a time) and PostgreSQL (the row lock, then a re-check of the WHERE
clause on the newest row version under READ COMMITTED) make that check-and-add atomic, so
concurrent reservations from many threads and processes can never pass the quota together.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE
from sqlalchemy import case, select, update
from sqlalchemy.engine import Engine

from mlflow_tenant_plugins.tenancy import releases
from mlflow_tenant_plugins.tenancy.errors import QuotaExceeded
from mlflow_tenant_plugins.tenancy.models import DELETING, TenantRow, UsageRow, utcnow

# resource name -> the tenant column that limits it
RESOURCES = {
    "storage_bytes": TenantRow.quota_storage_bytes,
    "endpoints": TenantRow.quota_endpoints,
    "instances": TenantRow.quota_instances,
    "jobs": TenantRow.quota_jobs,
    "training_instances": TenantRow.quota_training_instances,
}


@dataclass(frozen=True)
class Usage:
    tenant: str
    resource: str
    used: int
    limit: int
    deleting: bool = False  # the tenant's deletion has begun: nothing more can be reserved

    @property
    def utilization(self) -> float:
        return self.used / self.limit if self.limit else (1.0 if self.used else 0.0)

    def to_dict(self) -> dict:
        return {"resource": self.resource, "used": self.used, "limit": self.limit}


def _check_resource(resource: str) -> None:
    if resource not in RESOURCES:
        raise MlflowException.invalid_parameter_value(
            f"unknown resource {resource!r}; known: {', '.join(RESOURCES)}"
        )


def _decrement(tenant: str, resource: str, amount: int):
    """Use never goes below zero."""
    return (
        update(UsageRow)
        .where(UsageRow.tenant == tenant, UsageRow.resource == resource)
        .values(
            used=case((UsageRow.used >= amount, UsageRow.used - amount), else_=0),
            updated_at=utcnow(),
        )
    )


class UsageLedger:
    def __init__(self, engine: Engine):
        self._engine = engine

    def reserve(self, tenant: str, resource: str, amount: int) -> None:
        """Add ``amount`` to the tenant's use, or raise :class:`QuotaExceeded` and add nothing."""
        _check_resource(resource)
        if amount < 0:
            raise MlflowException.invalid_parameter_value("cannot reserve a negative amount")
        # A tenant being deleted has no limit: nothing can be reserved once deletion has begun.
        limit = (
            select(RESOURCES[resource])
            .where(TenantRow.name == tenant, TenantRow.status != DELETING)
            .scalar_subquery()
        )
        stmt = (
            update(UsageRow)
            .where(
                UsageRow.tenant == tenant,
                UsageRow.resource == resource,
                UsageRow.used + amount <= limit,
            )
            .values(used=UsageRow.used + amount, updated_at=utcnow())
        )
        with self._engine.begin() as conn:
            if conn.execute(stmt).rowcount == 1:
                return
        current = self.get(tenant, resource)
        if current.deleting:
            raise MlflowException(f"tenant '{tenant}' is being deleted", INVALID_STATE)
        raise QuotaExceeded(tenant, resource, amount, current.used, current.limit)

    def release(self, tenant: str, resource: str, amount: int) -> None:
        """Give back ``amount`` (use never goes below zero). What an object's removal frees is
        given back by :meth:`release_removed`, which counts each object version once."""
        _check_resource(resource)
        if amount <= 0:
            return
        with self._engine.begin() as conn:
            conn.execute(_decrement(tenant, resource, amount))

    def release_mark(self) -> int:
        """Read before looking at objects whose removal :meth:`release_removed` will give
        back (see :mod:`.releases`)."""
        with self._engine.connect() as conn:
            return releases.mark(conn)

    def release_removed(self, tenant: str, resource: str,
                        removed: Sequence[releases.RemovedVersion], also: int = 0) -> int:
        """Give back the sizes of removed object versions — each version at most once, across
        threads, workers and instances — plus ``also``, in one transaction; the total given."""
        _check_resource(resource)
        if not removed:
            self.release(tenant, resource, also)
            return max(0, also)
        with self._engine.begin() as conn:
            amount = max(0, also) + releases.claim(conn, removed)
            if amount > 0:
                conn.execute(_decrement(tenant, resource, amount))
        releases.prune_now_and_then(self._engine)
        return amount

    @contextlib.contextmanager
    def reservation(self, tenant: str, resource: str, amount: int) -> Iterator[None]:
        """Reserve for the duration of a write; released again if the write fails."""
        self.reserve(tenant, resource, amount)
        try:
            yield
        except BaseException:
            self.release(tenant, resource, amount)
            raise

    def set_used(self, tenant: str, resource: str, used: int) -> int:
        """Overwrite the use (reconciliation against the real world); returns the old value."""
        _check_resource(resource)
        with self._engine.begin() as conn:
            old = conn.execute(
                select(UsageRow.used).where(
                    UsageRow.tenant == tenant, UsageRow.resource == resource
                )
            ).scalar_one()
            conn.execute(
                update(UsageRow)
                .where(UsageRow.tenant == tenant, UsageRow.resource == resource)
                .values(used=used, updated_at=utcnow())
            )
            return old

    def get(self, tenant: str, resource: str) -> Usage:
        _check_resource(resource)
        stmt = select(UsageRow.used, RESOURCES[resource], TenantRow.status).join(
            TenantRow, TenantRow.name == UsageRow.tenant
        ).where(UsageRow.tenant == tenant, UsageRow.resource == resource)
        with self._engine.connect() as conn:
            row = conn.execute(stmt).one_or_none()
        if row is None:
            raise MlflowException(
                f"tenant '{tenant}' does not exist", error_code="RESOURCE_DOES_NOT_EXIST"
            )
        return Usage(tenant, resource, int(row[0]), int(row[1]), deleting=row[2] == DELETING)

    def for_tenant(self, tenant: str) -> list[Usage]:
        return [self.get(tenant, r) for r in RESOURCES]

"""Deployment operation records: a server-owned table in the registry database.

While a create, update or delete runs, and after one failed, a deployment has a record: what
runs (so every worker and instance answers ``get`` for a deploy with no endpoint yet, and a
second operation on the same name is refused), what the operation holds in the usage ledger
(``reserved_endpoints``, ``reserved_instances``: what a delete gives back when no endpoint
exists), and why it failed. A successful operation deletes its record; then SageMaker and its
tags are the state.

Why a table and not a file: these records once lived as ``status.json`` in the tenant's own
artifact prefix, which a tenant admin can write through MLflow's artifact proxy; a forged
record gave back quota the tenant still used and kept ``usage --reconcile-deployments`` busy
for ever. Only the platform's code writes this table; no tenant-reachable route or credential
addresses it.

Concurrency: each row has a ``version``; a claim inserts (a second insert of the same
(tenant, name) fails on the primary key) or updates ``WHERE version = <read>``, so exactly one
of two workers racing for a name wins, on sqlite and PostgreSQL alike.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Float, ForeignKey, Integer, String, Text, delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from mlflow_tenant_plugins.tenancy.models import Base

# A timestamp further than this ahead of our clock was written by no clock we trust.
MAX_CLOCK_SKEW_SECONDS = 60.0
# Columns of their own; everything else of a record is kept in ``body`` (JSON).
_COLUMNS = ("operation", "status", "updated_at")


class DeploymentRecordRow(Base):
    __tablename__ = "mlt_deployment_records"

    tenant: Mapped[str] = mapped_column(
        ForeignKey("mlt_tenants.name", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    operation: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    reserved_endpoints: Mapped[int] = mapped_column(Integer, default=0)
    reserved_instances: Mapped[int] = mapped_column(Integer, default=0)
    body: Mapped[str] = mapped_column(Text, default="{}")
    # Seconds since the epoch, by the writing server's clock.
    updated_at: Mapped[float] = mapped_column(Float)


class RecordConflict(Exception):
    """The record changed (or appeared) since it was read: another operation won the race."""


def clamp_timestamp(value: Any, now: float | None = None) -> float:
    """A timestamp read from storage, never later than ``now``; one further ahead than the
    allowed clock skew is reported as 0 (long ago): no clock we trust wrote it, and a record
    that looked fresh for ever would block its deployment and every reconcile for ever."""
    now = time.time() if now is None else now
    try:
        stamp = float(value)
    except (TypeError, ValueError):
        return 0.0
    if stamp != stamp or stamp > now + MAX_CLOCK_SKEW_SECONDS:  # NaN or far future
        return 0.0
    return min(stamp, now)


def _to_record(row: Any) -> dict:
    record = json.loads(row.body or "{}")
    if not isinstance(record, dict):
        record = {}
    record.update(
        name=row.name, tenant=row.tenant, operation=row.operation, status=row.status,
        updated_at=clamp_timestamp(row.updated_at),
        reserved={"endpoints": int(row.reserved_endpoints or 0),
                  "instances": int(row.reserved_instances or 0)},
    )
    return record


def _values(tenant: str, name: str, record: dict) -> dict:
    reserved = record.get("reserved") or {}
    body = {k: v for k, v in record.items()
            if k not in (*_COLUMNS, "reserved", "name", "tenant")}
    return {
        "tenant": tenant, "name": name,
        "operation": str(record.get("operation") or ""),
        "status": str(record.get("status") or ""),
        "reserved_endpoints": int(reserved.get("endpoints") or 0),
        "reserved_instances": int(reserved.get("instances") or 0),
        "body": json.dumps(body, default=str),
        "updated_at": time.time(),
    }


class DeploymentRecords:
    """The records of every tenant's deployments; the tenant is always passed explicitly."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._table = DeploymentRecordRow.__table__

    def get(self, tenant: str, name: str) -> tuple[dict, int] | None:
        """(record, version) or None."""
        t = self._table
        with self.engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.tenant == tenant, t.c.name == name)).first()
        return None if row is None else (_to_record(row), row.version)

    def put(self, tenant: str, name: str, record: dict, *, if_version: int | None = None,
            if_absent: bool = False) -> int:
        """Write the record; returns its new version. ``if_absent``: only if there is none;
        ``if_version``: only if it is still that version. Otherwise raises RecordConflict.
        Without either, overwrites (or creates) unconditionally."""
        t = self._table
        values = _values(tenant, name, record)
        where = [t.c.tenant == tenant, t.c.name == name]
        if if_version is not None:
            where.append(t.c.version == if_version)
        for _ in range(3):  # unconditional: update, else insert, else (inserted meanwhile) again
            if not if_absent:
                with self.engine.begin() as conn:
                    changed = conn.execute(
                        update(t).where(*where).values(version=t.c.version + 1, **values)
                        .returning(t.c.version)
                    ).first()
                if changed is not None:
                    return changed.version
                if if_version is not None:
                    raise RecordConflict(name)
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(t).values(version=1, **values))
                return 1
            except IntegrityError:
                if if_absent:
                    raise RecordConflict(name) from None
        raise RecordConflict(name)

    def delete(self, tenant: str, name: str) -> None:
        t = self._table
        with self.engine.begin() as conn:
            conn.execute(delete(t).where(t.c.tenant == tenant, t.c.name == name))

    def list(self, tenant: str) -> list[dict]:
        t = self._table
        with self.engine.connect() as conn:
            rows = conn.execute(select(t).where(t.c.tenant == tenant).order_by(t.c.name)).all()
        return [_to_record(r) for r in rows]

"""Records of the jobs the platform runs for tenants, and the monthly ledger they draw on.

A job record is written before its engine job starts and is the platform's own truth about
the job: who asked, what it holds in the ledgers (``instance_count`` training instances, one
``jobs`` slot, ``reserved_seconds`` instance-seconds of the month), the short-lived key made
for it, and how it ended. Only the platform's code writes this table; no tenant-reachable
route or credential addresses it.

Ending a job is a claim: ``UPDATE … WHERE id = ? AND released = false`` succeeds for exactly
one caller across workers and instances, and that caller alone gives the reservations back,
so a job's quota is released once however many observers see it end.

The monthly ledger (``mlt_monthly_usage``) is the usage ledger's conditional update on a row
per tenant, month and resource: ``used + n <= limit`` in one statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from mlflow_tenant_plugins.tenancy.models import Base, utcnow


class JobRow(Base):
    __tablename__ = "mlt_jobs"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(
        ForeignKey("mlt_tenants.name", ondelete="CASCADE"), index=True
    )
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    experiment_id: Mapped[str] = mapped_column(String(64))
    principal: Mapped[str] = mapped_column(String(255))
    executor: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(63))
    status: Mapped[str] = mapped_column(String(16), index=True)
    detail: Mapped[str | None] = mapped_column(String(128), nullable=True)
    instance_type: Mapped[str] = mapped_column(String(64))
    instance_count: Mapped[int] = mapped_column(Integer)
    max_runtime_seconds: Mapped[int] = mapped_column(Integer)
    month: Mapped[str] = mapped_column(String(7))
    reserved_seconds: Mapped[int] = mapped_column(BigInteger)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    spec: Mapped[str] = mapped_column(Text)
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    released: Mapped[bool] = mapped_column(Boolean, default=False)
    # The run while the job has not ended, NULL after: one job per run at a time.
    active_run: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)


class RunBusy(Exception):
    """The run already has a job that has not ended."""


class MonthlyUsageRow(Base):
    __tablename__ = "mlt_monthly_usage"

    tenant: Mapped[str] = mapped_column(
        ForeignKey("mlt_tenants.name", ondelete="CASCADE"), primary_key=True
    )
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    resource: Mapped[str] = mapped_column(String(32), primary_key=True)
    used: Mapped[int] = mapped_column(BigInteger, default=0)


def _aware(t: datetime | None) -> datetime | None:
    from datetime import UTC

    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


@dataclass(frozen=True)
class JobRecord:
    id: int
    tenant: str
    run_id: str
    experiment_id: str
    principal: str
    executor: str
    name: str
    status: str
    detail: str | None
    instance_type: str
    instance_count: int
    max_runtime_seconds: int
    month: str
    reserved_seconds: int
    key_id: str | None
    failure_reason: str | None
    spec: str
    submitted_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    released: bool

    @property
    def job_id(self) -> str:
        return str(self.id)

    @classmethod
    def of(cls, row) -> JobRecord:
        values = {k: getattr(row, k) for k in cls.__dataclass_fields__}
        for k in ("submitted_at", "started_at", "ended_at"):
            values[k] = _aware(values[k])
        values["released"] = bool(values["released"])
        return cls(**values)


def month_of(t: datetime) -> str:
    return t.strftime("%Y-%m")


class JobRecords:
    def __init__(self, engine: Engine):
        self._engine = engine

    def add(self, **values) -> JobRecord:
        """A new record; :class:`RunBusy` if its run has a job that has not ended (the unique
        ``active_run`` decides between concurrent submissions)."""
        try:
            with self._engine.begin() as conn:
                job_id = conn.execute(insert(JobRow).values(
                    **values, active_run=values["run_id"])).inserted_primary_key[0]
        except IntegrityError:
            raise RunBusy(values["run_id"]) from None
        return self.get(int(job_id))

    def get(self, job_id: int) -> JobRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(JobRow).where(JobRow.id == job_id)).one_or_none()
        return JobRecord.of(row) if row is not None else None

    def list(self, tenant: str | None = None, *, active_only: bool = False,
             statuses: tuple[str, ...] = (), limit: int = 1000) -> list[JobRecord]:
        stmt = select(JobRow).order_by(JobRow.id.desc()).limit(limit)
        if tenant is not None:
            stmt = stmt.where(JobRow.tenant == tenant)
        if active_only:
            stmt = stmt.where(JobRow.released.is_(False))
        if statuses:
            stmt = stmt.where(JobRow.status.in_(statuses))
        with self._engine.connect() as conn:
            return [JobRecord.of(r) for r in conn.execute(stmt)]

    def by_key(self, key_id: str) -> JobRecord | None:
        """The job a key was made for, if any."""
        with self._engine.connect() as conn:
            row = conn.execute(select(JobRow).where(JobRow.key_id == key_id)).first()
        return JobRecord.of(row) if row is not None else None

    def names(self) -> set[tuple[str, str]]:
        """(tenant, engine name) of every job with a record."""
        with self._engine.connect() as conn:
            return {(r.tenant, r.name) for r in conn.execute(
                select(JobRow.tenant, JobRow.name).where(JobRow.name != ""))}

    def set_state(self, job_id: int, **values) -> None:
        """Progress of a job that has not ended (status, detail, started_at, key_id)."""
        with self._engine.begin() as conn:
            conn.execute(update(JobRow).where(JobRow.id == job_id, JobRow.released.is_(False))
                         .values(**values))

    def claim_end(self, job_id: int, status: str, failure_reason: str | None,
                  ended_at: datetime, started_at: datetime | None) -> bool:
        """Mark the job ended; True for exactly one caller, who then releases what it held."""
        values = {"status": status, "failure_reason": failure_reason, "ended_at": ended_at,
                  "released": True, "detail": None, "active_run": None}
        if started_at is not None:
            values["started_at"] = started_at
        with self._engine.begin() as conn:
            return conn.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.released.is_(False))
                .values(**values)
            ).rowcount == 1


class MonthlyLedger:
    """Per-tenant, per-month totals with a limit checked atomically on reserve."""

    def __init__(self, engine: Engine):
        self._engine = engine

    @staticmethod
    def _ensure(conn: Connection, tenant: str, month: str, resource: str) -> None:
        exists = conn.execute(select(MonthlyUsageRow.used).where(
            MonthlyUsageRow.tenant == tenant, MonthlyUsageRow.month == month,
            MonthlyUsageRow.resource == resource)).first()
        if exists is None:
            try:
                with conn.begin_nested():
                    conn.execute(insert(MonthlyUsageRow).values(
                        tenant=tenant, month=month, resource=resource, used=0))
            except IntegrityError:
                pass  # another caller made it first

    def reserve(self, tenant: str, month: str, resource: str, amount: int, limit: int) -> bool:
        """Add ``amount`` if the total stays within ``limit``; False (nothing added) if not."""
        with self._engine.begin() as conn:
            self._ensure(conn, tenant, month, resource)
            return conn.execute(
                update(MonthlyUsageRow).where(
                    MonthlyUsageRow.tenant == tenant, MonthlyUsageRow.month == month,
                    MonthlyUsageRow.resource == resource,
                    MonthlyUsageRow.used + amount <= limit,
                ).values(used=MonthlyUsageRow.used + amount)
            ).rowcount == 1

    def release(self, tenant: str, month: str, resource: str, amount: int) -> None:
        if amount <= 0:
            return
        from sqlalchemy import case

        with self._engine.begin() as conn:
            conn.execute(update(MonthlyUsageRow).where(
                MonthlyUsageRow.tenant == tenant, MonthlyUsageRow.month == month,
                MonthlyUsageRow.resource == resource,
            ).values(used=case((MonthlyUsageRow.used >= amount, MonthlyUsageRow.used - amount),
                               else_=0)))

    def used(self, tenant: str, month: str, resource: str) -> int:
        with self._engine.connect() as conn:
            value = conn.execute(select(MonthlyUsageRow.used).where(
                MonthlyUsageRow.tenant == tenant, MonthlyUsageRow.month == month,
                MonthlyUsageRow.resource == resource)).scalar()
        return int(value or 0)

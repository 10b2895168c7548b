"""Time-weighted usage per tenant: what a tenant *used over a month*, where the usage ledger
knows only what it holds *now*.

A meter has a level (bytes stored, instances running of one type) and the time the level was
last set. Observing a new level first adds ``old level × elapsed seconds`` to the month(s)
the elapsed interval falls in (split at UTC month boundaries), then sets the new level — in
one transaction, with the meter's row locked (``SELECT … FOR UPDATE`` on PostgreSQL; sqlite
has one writer at a time). So:

- each second of a level is counted once, however many workers or instances observe it (an
  observation only ever integrates from the meter's own ``since``, which it moves forward);
- a gap while no server runs is filled from the last level (the next observation integrates
  over the whole gap): usage is not lost when nobody watches;
- a statement for a month adds the open interval's share of that month (level × overlap), so
  re-running a past month gives the same number whether or not an observation happened since.

Quantities are level-seconds (byte-seconds, instance-seconds) or counts (``add_count``).
Rows carry no foreign key to the tenant: a tenant's deletion closes its meters (level 0) and
its past months stay billable.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import BigInteger, DateTime, Float, String, and_, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from mlflow_tenant_plugins.tenancy.models import Base

# Meter names.
STORAGE = "storage_bytes"  # level: bytes held
STORAGE_BILLABLE = "storage_billable_bytes"  # level: bytes over the allowance (overage mode)
ENDPOINT_INSTANCES = "endpoint_instances"  # dimension: instance type; level: instances
TRAINING_INSTANCES = "training_instances"  # dimension: instance type; closed intervals
API_REQUESTS = "api_requests"  # a count


class MeterRow(Base):
    __tablename__ = "mlt_meters"

    tenant: Mapped[str] = mapped_column(String(63), primary_key=True)
    meter: Mapped[str] = mapped_column(String(32), primary_key=True)
    dimension: Mapped[str] = mapped_column(String(64), primary_key=True, default="")
    level: Mapped[int] = mapped_column(BigInteger)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MeterUsageRow(Base):
    __tablename__ = "mlt_meter_usage"

    tenant: Mapped[str] = mapped_column(String(63), primary_key=True)
    meter: Mapped[str] = mapped_column(String(32), primary_key=True)
    dimension: Mapped[str] = mapped_column(String(64), primary_key=True, default="")
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    quantity: Mapped[float] = mapped_column(Float(precision=53))


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """[start, end) of a ``YYYY-MM`` month in UTC."""
    try:
        year, mon = (int(p) for p in month.split("-"))
        start = datetime(year, mon, 1, tzinfo=UTC)
    except (ValueError, TypeError):
        raise ValueError(f"invalid month {month!r}: expected YYYY-MM, e.g. 2026-11") from None
    end = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=UTC)
    return start, end


def month_of(t: datetime) -> str:
    return _utc(t).strftime("%Y-%m")


def split_by_month(start: datetime, end: datetime) -> Iterator[tuple[str, float]]:
    """(month, seconds) pieces of [start, end)."""
    start, end = _utc(start), _utc(end)
    while start < end:
        month = month_of(start)
        stop = min(end, month_bounds(month)[1])
        yield month, (stop - start).total_seconds()
        start = stop


def overlap_seconds(start: datetime, end: datetime, month: str) -> float:
    lo, hi = month_bounds(month)
    return max(0.0, (min(_utc(end), hi) - max(_utc(start), lo)).total_seconds())


_MAX_ATTEMPTS = 50


@dataclass(frozen=True)
class MeterKey:
    meter: str
    dimension: str = ""


class Meters:
    def __init__(self, engine: Engine):
        self._engine = engine

    # -- writing ----------------------------------------------------------------------------
    def _add(self, conn: Connection, tenant: str, meter: str, dimension: str, month: str,
             quantity: float) -> None:
        if quantity <= 0:
            return
        where = and_(MeterUsageRow.tenant == tenant, MeterUsageRow.meter == meter,
                     MeterUsageRow.dimension == dimension, MeterUsageRow.month == month)
        if conn.execute(update(MeterUsageRow).where(where)
                        .values(quantity=MeterUsageRow.quantity + quantity)).rowcount:
            return
        try:
            with conn.begin_nested():
                conn.execute(insert(MeterUsageRow).values(
                    tenant=tenant, meter=meter, dimension=dimension, month=month,
                    quantity=quantity))
        except IntegrityError:  # inserted meanwhile by another writer
            conn.execute(update(MeterUsageRow).where(where)
                         .values(quantity=MeterUsageRow.quantity + quantity))

    def observe(self, tenant: str, meter: str, level: int, at: datetime,
                dimension: str = "") -> None:
        """The meter is at ``level`` from ``at`` on; what it was before is counted up to
        ``at``. An observation older than the meter's last one changes nothing."""
        at = _utc(at)
        for _attempt in range(_MAX_ATTEMPTS):
            if self._observe_once(tenant, meter, level, at, dimension):
                return
        raise RuntimeError(f"meter {tenant}/{meter}/{dimension}: too much contention")

    def _observe_once(self, tenant: str, meter: str, level: int, at: datetime,
                      dimension: str) -> bool:
        """False when another observer moved the meter between our read and our write (the
        transaction then adds nothing, and the caller reads again)."""
        key = and_(MeterRow.tenant == tenant, MeterRow.meter == meter,
                   MeterRow.dimension == dimension)
        with self._engine.begin() as conn:
            stmt = select(MeterRow.level, MeterRow.since).where(key)
            if conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update()
            row = conn.execute(stmt).one_or_none()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(MeterRow).values(
                            tenant=tenant, meter=meter, dimension=dimension, level=level,
                            since=at))
                    return True
                except IntegrityError:
                    return False
            old_level, since = int(row[0]), _utc(row[1])
            if at <= since:
                return True
            # Move the meter first: of two observers that read the same ``since``, exactly
            # one moves it (the other's WHERE no longer matches) and only that one counts.
            if not conn.execute(update(MeterRow).where(key, MeterRow.since == row[1])
                                .values(level=level, since=at)).rowcount:
                return False
            for month, seconds in split_by_month(since, at):
                self._add(conn, tenant, meter, dimension, month, old_level * seconds)
            return True

    def add_interval(self, tenant: str, meter: str, level: int, start: datetime,
                     end: datetime, dimension: str = "") -> None:
        """Count ``level`` over [start, end) (a job that ran: known once it ended)."""
        with self._engine.begin() as conn:
            for month, seconds in split_by_month(start, end):
                self._add(conn, tenant, meter, dimension, month, level * seconds)

    def add_count(self, tenant: str, meter: str, n: int, at: datetime,
                  dimension: str = "") -> None:
        with self._engine.begin() as conn:
            self._add(conn, tenant, meter, dimension, month_of(at), float(n))

    def close(self, tenant: str, at: datetime) -> None:
        """Every level meter of ``tenant`` at 0 from ``at`` (the tenant is being deleted)."""
        with self._engine.connect() as conn:
            keys = conn.execute(select(MeterRow.meter, MeterRow.dimension)
                                .where(MeterRow.tenant == tenant)).all()
        for meter, dimension in keys:
            self.observe(tenant, meter, 0, at, dimension)

    # -- reading ----------------------------------------------------------------------------
    def usage(self, month: str, now: datetime, tenant: str | None = None,
              ) -> dict[str, dict[MeterKey, float]]:
        """tenant -> meter -> quantity in ``month``: what was counted, plus the share of the
        month of each meter's open interval (from its last observation up to ``now``)."""
        out: dict[str, dict[MeterKey, float]] = {}
        with self._engine.connect() as conn:
            q = select(MeterUsageRow).where(MeterUsageRow.month == month)
            m = select(MeterRow)
            if tenant is not None:
                q = q.where(MeterUsageRow.tenant == tenant)
                m = m.where(MeterRow.tenant == tenant)
            for r in conn.execute(q):
                key = MeterKey(r.meter, r.dimension)
                out.setdefault(r.tenant, {})[key] = out.get(r.tenant, {}).get(key, 0.0) \
                    + r.quantity
            for r in conn.execute(m):
                share = int(r.level) * overlap_seconds(_utc(r.since), _utc(now), month)
                if share:
                    key = MeterKey(r.meter, r.dimension)
                    bucket = out.setdefault(r.tenant, {})
                    bucket[key] = bucket.get(key, 0.0) + share
        return out

    def levels(self, tenant: str) -> dict[MeterKey, int]:
        with self._engine.connect() as conn:
            return {MeterKey(r.meter, r.dimension): int(r.level) for r in conn.execute(
                select(MeterRow).where(MeterRow.tenant == tenant))}

"""A tenant's monthly statement: what the meters counted, priced by the price table.

Line items (quantity, unit, unit price, amount):

- storage over the allowance, in GiB-months (byte-seconds / 2^30 / the month's seconds), for
  tenants in overage mode (hard-mode tenants store within their quota and pay no overage);
- endpoint instance-hours and training instance-hours, one item per instance type;
- API requests, per million.

Amounts are rounded to cents per line (half up); the discount applies to the subtotal.
Quantities come from the meters up to ``now`` (for a past month: up to its end), so
re-running a past month gives the same statement. Months are UTC calendar months.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from mlflow_tenant_plugins.billing.prices import PriceTable
from mlflow_tenant_plugins.tenancy import meters as m

CENT = Decimal("0.01")
GIB = 2**30


def _money(x: float | Decimal) -> Decimal:
    return Decimal(str(x)).quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class LineItem:
    description: str
    quantity: float
    unit: str
    unit_price: float | None  # None: no price in the table (flagged, no amount)
    amount: Decimal

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["quantity"] = round(self.quantity, 10)
        d["amount"] = str(self.amount)
        return d


@dataclass(frozen=True)
class Statement:
    tenant: str
    month: str
    currency: str
    items: list[LineItem]
    subtotal: Decimal
    discount_percent: float
    discount: Decimal
    total: Decimal
    usage: dict[str, Any] = field(default_factory=dict)
    unpriced: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "month": self.month, "currency": self.currency,
                "line_items": [i.to_dict() for i in self.items],
                "subtotal": str(self.subtotal), "discount_percent": self.discount_percent,
                "discount": str(self.discount), "total": str(self.total),
                "usage": self.usage, "unpriced": self.unpriced}


def _item(items: list[LineItem], unpriced: list[str], description: str, quantity: float,
          unit: str, price: float | None) -> None:
    if quantity <= 0:
        return
    if price is None:
        unpriced.append(description)
    amount = _money(Decimal(str(quantity)) * Decimal(str(price))) if price is not None \
        else _money(0)
    items.append(LineItem(description, quantity, unit, price, amount))


def statement_for(tenant: str, month: str, used: dict[m.MeterKey, float],
                  prices: PriceTable, *, storage_mode: str = "hard",
                  allowance_bytes: int = 0) -> Statement:
    start, end = m.month_bounds(month)
    month_seconds = (end - start).total_seconds()
    gib_months = {k: v / GIB / month_seconds for k, v in used.items()
                  if k.meter in (m.STORAGE, m.STORAGE_BILLABLE)}
    items: list[LineItem] = []
    unpriced: list[str] = []
    billable = gib_months.get(m.MeterKey(m.STORAGE_BILLABLE), 0.0)
    if storage_mode == "overage":
        _item(items, unpriced, "storage over the allowance", billable, "GiB-month",
              prices.storage_gb_month)
    hours: dict[tuple[str, str], float] = {}
    for key, value in sorted(used.items(), key=lambda kv: (kv[0].meter, kv[0].dimension)):
        if key.meter in (m.ENDPOINT_INSTANCES, m.TRAINING_INSTANCES):
            hours[(key.meter, key.dimension)] = value / 3600
    for (meter, kind), h in hours.items():
        table = prices.endpoint_instance_hour if meter == m.ENDPOINT_INSTANCES \
            else prices.training_instance_hour
        what = "endpoint" if meter == m.ENDPOINT_INSTANCES else "training"
        _item(items, unpriced, f"{what} instance-hours {kind}", h, "instance-hour",
              table.get(kind))
    requests = used.get(m.MeterKey(m.API_REQUESTS), 0.0)
    _item(items, unpriced, "API requests", requests / 1e6, "million requests",
          prices.api_million_requests)
    subtotal = sum((i.amount for i in items), _money(0))
    percent = float(prices.discounts.get(tenant, 0.0))
    discount = _money(subtotal * Decimal(str(percent)) / 100)
    usage = {
        "storage_gib_month": round(gib_months.get(m.MeterKey(m.STORAGE), 0.0), 10),
        "storage_billable_gib_month": round(billable, 10),
        "storage_allowance_bytes": allowance_bytes if storage_mode == "overage" else None,
        "endpoint_instance_hours": {k: round(h, 6) for (mt, k), h in hours.items()
                                    if mt == m.ENDPOINT_INSTANCES},
        "training_instance_hours": {k: round(h, 6) for (mt, k), h in hours.items()
                                    if mt == m.TRAINING_INSTANCES},
        "api_requests": int(requests),
    }
    return Statement(tenant, month, prices.currency, items, subtotal, percent, discount,
                     subtotal - discount, usage, unpriced)


def statements(registry: Any, prices: PriceTable, month: str, now: datetime,
               tenant: str | None = None) -> list[Statement]:
    """Statements of every tenant with usage in ``month`` (or of ``tenant``), including
    tenants deleted since (their meters were closed, their months stay)."""
    used = m.Meters(registry.engine).usage(month, now, tenant)
    known = {t.name: t for t in registry.list_tenants()}
    names = [tenant] if tenant else sorted(set(used) | set(known))
    out = []
    for name in names:
        t = known.get(name)
        out.append(statement_for(
            name, month, used.get(name, {}), prices,
            storage_mode=t.quotas.storage_mode if t else "hard",
            allowance_bytes=t.quotas.storage_allowance_bytes if t else 0))
    return out


CSV_FIELDS = ("tenant", "month", "description", "quantity", "unit", "unit_price", "amount",
              "currency")


def to_csv(items: list[Statement]) -> str:
    """One row per line item, then a ``total`` row per tenant (after its discount)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for s in items:
        for i in s.items:
            writer.writerow((s.tenant, s.month, i.description, round(i.quantity, 6), i.unit,
                             "" if i.unit_price is None else i.unit_price, i.amount,
                             s.currency))
        if s.discount:
            writer.writerow((s.tenant, s.month, f"discount {s.discount_percent:g} %", "", "",
                             "", -s.discount, s.currency))
        writer.writerow((s.tenant, s.month, "total", "", "", "", s.total, s.currency))
    return buf.getvalue()


def to_lines(items: list[Statement]) -> list[str]:
    lines: list[str] = []
    for s in items:
        lines.append(f"statement {s.tenant} {s.month} ({s.currency})")
        for i in s.items:
            price = "no price" if i.unit_price is None else f"{i.unit_price:g}/{i.unit}"
            lines.append(f"  {i.description:<40} {i.quantity:>14.4f} {i.unit:<16} "
                         f"{price:>22} {i.amount:>12}")
        if s.discount:
            lines.append(f"  {'discount ' + format(s.discount_percent, 'g') + ' %':<95}"
                         f"{-s.discount:>12}")
        lines.append(f"  {'total':<95}{s.total:>12}")
        if s.unpriced:
            lines.append(f"  no price for: {', '.join(s.unpriced)}")
    return lines or ["no tenants"]

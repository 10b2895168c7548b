"""Monthly budgets: a tenant's month-to-date total (its statement so far: the meters priced
by the price table, discount applied, in its currency) against the budget it was given.

- **Alerts.** Crossing 80 % and 100 % fires once per tenant, month and threshold: a
  CloudWatch data point ``BudgetUsedPercent`` (namespace ``usage_metrics_namespace``,
  dimension ``Tenant``) and, where the tenant has an alarm topic, an SNS notification. Once
  across workers and instances because each crossing is first a row of
  ``mlt_budget_alerts`` (primary key tenant, month, threshold): only the checker whose insert
  lands sends. A send that fails gives its row back, so the next check tries again rather
  than the alert being lost. The metering sampler checks at the end of each run, under its
  lease (``billing/sampler.py``).
- **Refusals.** With ``on_budget = "refuse-new"``, a tenant at or past 100 % has new
  deployments and jobs refused: 409 ``RESOURCE_EXHAUSTED`` (not retried by the stock client,
  as a full quota; ``tenancy/errors.py``) naming the budget, the amount and the month. What
  runs is left alone; the next month starts at 0.

A budget of 0 is spent from the first second of the month (a way to stop new work).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_EXHAUSTED
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from mlflow_tenant_plugins.billing.prices import PriceTable
from mlflow_tenant_plugins.billing.statement import Statement, statements
from mlflow_tenant_plugins.tenancy.entities import Tenant
from mlflow_tenant_plugins.tenancy.errors import QUOTA_HTTP_STATUS
from mlflow_tenant_plugins.tenancy.meters import month_of
from mlflow_tenant_plugins.wire import QUOTA_FIELD

_logger = logging.getLogger(__name__)
THRESHOLDS = (80, 100)
METRIC = "BudgetUsedPercent"
REFUSE_NEW = "refuse-new"

# Created by migration 0006; described here for the one statement that writes it.
ALERTS = Table(
    "mlt_budget_alerts", MetaData(),
    Column("tenant", String(63), primary_key=True),
    Column("month", String(7), primary_key=True),
    Column("threshold", Integer, primary_key=True),
    Column("fired_at", DateTime(timezone=True), nullable=False),
)


def used_percent(total: Decimal, budget: float) -> float:
    """How much of ``budget`` ``total`` is, in percent (a budget of 0: 100 from the start)."""
    return float(total) * 100 / budget if budget > 0 else 100.0


@dataclass(frozen=True)
class Crossing:
    """A threshold a tenant crossed, as one check fired it."""

    tenant: str
    month: str
    threshold: int
    total: Decimal
    budget: float
    currency: str
    percent: float

    def message(self, on_budget: str) -> str:
        then = ("new deployments and jobs are refused until the month ends or the budget is "
                "raised; running ones continue" if on_budget == REFUSE_NEW
                else "nothing is refused (on_budget = notify)")
        return (f"Tenant '{self.tenant}' has used {self.total} {self.currency} of its "
                f"{self.budget:.2f} {self.currency} budget for {self.month} "
                f"({self.percent:.1f} %), crossing {self.threshold} %.\n"
                f"At 100 %: {then}.")

    def subject(self) -> str:
        return f"Budget {self.threshold} % reached: tenant {self.tenant}, {self.month}"[:100]


def _claim(engine: Engine, tenant: str, month: str, threshold: int, at: datetime) -> bool:
    """True for the one checker that records this crossing first."""
    try:
        with engine.begin() as conn:
            conn.execute(insert(ALERTS).values(tenant=tenant, month=month,
                                               threshold=threshold, fired_at=at))
        return True
    except IntegrityError:
        return False


def _unclaim(engine: Engine, tenant: str, month: str, threshold: int) -> None:
    with engine.begin() as conn:
        conn.execute(delete(ALERTS).where(ALERTS.c.tenant == tenant, ALERTS.c.month == month,
                                          ALERTS.c.threshold == threshold))


def fired(engine: Engine, tenant: str, month: str) -> list[int]:
    """The thresholds already fired for ``tenant`` in ``month``."""
    with engine.connect() as conn:
        return sorted(r[0] for r in conn.execute(
            select(ALERTS.c.threshold).where(ALERTS.c.tenant == tenant,
                                             ALERTS.c.month == month)))


def _send(crossing: Crossing, tenant: Tenant, settings: Any, cloudwatch: Any, sns: Any,
          at: datetime) -> None:
    cloudwatch.put_metric_data(Namespace=settings.usage_metrics_namespace, MetricData=[{
        "MetricName": METRIC, "Dimensions": [{"Name": "Tenant", "Value": tenant.name}],
        "Timestamp": at, "Value": round(min(crossing.percent, 1e9), 2), "Unit": "Percent"}])
    if tenant.alarm_topic_arn:
        sns.publish(TopicArn=tenant.alarm_topic_arn, Subject=crossing.subject(),
                    Message=crossing.message(tenant.on_budget))


def check_budgets(registry: Any, settings: Any, prices: PriceTable, now: datetime,
                  cloudwatch: Any, sns: Any) -> list[Crossing]:
    """Fire every threshold a tenant with a budget has crossed this month (UTC) and that no
    check fired before; the crossings this call fired."""
    budgeted = {t.name: t for t in registry.list_tenants() if t.budget_amount is not None}
    if not budgeted:
        return []
    month = month_of(now)
    out: list[Crossing] = []
    for statement in statements(registry, prices, month, now):
        tenant = budgeted.get(statement.tenant)
        if tenant is None:
            continue
        budget = float(tenant.budget_amount)  # type: ignore[arg-type]
        percent = used_percent(statement.total, budget)
        for threshold in THRESHOLDS:
            if percent < threshold or not _claim(registry.engine, tenant.name, month,
                                                 threshold, now):
                continue
            crossing = Crossing(tenant.name, month, threshold, statement.total, budget,
                                statement.currency, percent)
            try:
                _send(crossing, tenant, settings, cloudwatch, sns, now)
            except Exception:
                _unclaim(registry.engine, tenant.name, month, threshold)
                _logger.warning("budget: could not send the %d %% alert of tenant %s; the next "
                                "check tries again", threshold, tenant.name, exc_info=True)
                continue
            _logger.info("budget: tenant %s crossed %d %% of its %s budget (%.1f %%)",
                         tenant.name, threshold, month, percent)
            out.append(crossing)
    return out


class BudgetExceeded(MlflowException):
    """409 ``RESOURCE_EXHAUSTED`` (as a full quota: not transient, never retried by the stock
    client), naming the budget; the JSON body's ``quota`` field says ``budget``."""

    def __init__(self, tenant: str, message: str):
        self.tenant = tenant
        super().__init__(message, RESOURCE_EXHAUSTED, **{QUOTA_FIELD: "budget"})

    def get_http_status_code(self) -> int:
        return QUOTA_HTTP_STATUS


def _statement(registry: Any, settings: Any, tenant: str, now: datetime) -> Statement:
    [one] = statements(registry, PriceTable.from_settings(settings), month_of(now), now,
                       tenant)
    return one


def over_budget(registry: Any, settings: Any, tenant: Tenant | str,
                now: datetime) -> str | None:
    """Why ``tenant`` is at or past its monthly budget (budget, amount, month), or None (also
    without a budget). One statement computation."""
    t = tenant if isinstance(tenant, Tenant) else registry.get_tenant(tenant)
    if t.budget_amount is None:
        return None
    s = _statement(registry, settings, t.name, now)
    budget = float(t.budget_amount)
    percent = used_percent(s.total, budget)
    if percent < 100:
        return None
    return (f"tenant '{t.name}' has used {s.total} {s.currency} of its monthly budget of "
            f"{budget:.2f} {s.currency} in {s.month} ({percent:.1f} %)")


def refuse_if_over_budget(registry: Any, settings: Any, tenant: Tenant, now: datetime,
                          what: str) -> None:
    """Raise :class:`BudgetExceeded` for new work (``what``: "a new deployment", "a new
    job") of a tenant past its budget that refuses new work (``on_budget = refuse-new``).
    Costs nothing for a tenant without a budget or in notify mode."""
    if tenant.on_budget != REFUSE_NEW or tenant.budget_amount is None:
        return
    reason = over_budget(registry, settings, tenant, now)
    if reason:
        raise BudgetExceeded(tenant.name, (
            f"budget exceeded: {reason}; {what} is refused (on_budget = refuse-new), running "
            "deployments and jobs continue. A platform admin can raise it with "
            f"'mlflow-tenants tenant update {tenant.name} --budget AMOUNT'"))

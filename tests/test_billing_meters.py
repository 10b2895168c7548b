"""The meters against a scripted timeline with a controllable clock: exact byte-hours and
instance-hours, month boundaries, gaps, concurrent observers, and statements priced from
them."""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from mlflow_tenant_plugins.billing.prices import PriceTable
from mlflow_tenant_plugins.billing.statement import statement_for, statements, to_csv
from mlflow_tenant_plugins.config import ConfigError, Settings
from mlflow_tenant_plugins.tenancy import Quotas
from mlflow_tenant_plugins.tenancy import meters as m

GIB = 2**30
NOV = datetime(2026, 11, 1, tzinfo=UTC)
NOV_SECONDS = 30 * 86400


def at(hours: float, start: datetime = NOV) -> datetime:
    return start + timedelta(hours=hours)


def tenant_name() -> str:
    return f"m{secrets.token_hex(4)}"


def test_a_scripted_timeline_gives_exact_instance_hours_and_byte_hours(registry):
    meters, t = m.Meters(registry.engine), tenant_name()
    # Endpoint: created with 1 instance at 10:00, scaled to 3 at 12:00, updated to 2 at
    # 15:30, deleted at 20:00: 2 + 3*3.5 + 2*4.5 = 21.5 instance-hours.
    for hour, level in ((10, 1), (12, 3), (15.5, 2), (20, 0)):
        meters.observe(t, m.ENDPOINT_INSTANCES, level, at(hour), "ml.m5.large")
    # Storage: 1 GiB from hour 0, 3 GiB from hour 24, 0 from hour 48: 24 + 72 GiB-hours.
    for hour, level in ((0, GIB), (24, 3 * GIB), (48, 0)):
        meters.observe(t, m.STORAGE, level, at(hour))
    used = meters.usage("2026-11", at(24 * 40), t)[t]
    assert used[m.MeterKey(m.ENDPOINT_INSTANCES, "ml.m5.large")] == 21.5 * 3600
    assert used[m.MeterKey(m.STORAGE)] == 96 * 3600 * GIB


def test_an_interval_across_a_month_boundary_is_split_at_midnight_utc(registry):
    meters, t = m.Meters(registry.engine), tenant_name()
    meters.observe(t, m.ENDPOINT_INSTANCES, 2, datetime(2026, 10, 31, 22, tzinfo=UTC), "x")
    meters.observe(t, m.ENDPOINT_INSTANCES, 0, datetime(2026, 11, 1, 3, tzinfo=UTC), "x")
    now = datetime(2026, 12, 5, tzinfo=UTC)
    key = m.MeterKey(m.ENDPOINT_INSTANCES, "x")
    assert meters.usage("2026-10", now, t)[t][key] == 2 * 2 * 3600
    assert meters.usage("2026-11", now, t)[t][key] == 2 * 3 * 3600


def test_a_gap_with_no_server_is_counted_from_the_last_level(registry):
    """Nobody observed between hour 1 and hour 50: the level held all along."""
    meters, t = m.Meters(registry.engine), tenant_name()
    meters.observe(t, m.STORAGE, GIB, at(1))
    gap_total = meters.usage("2026-11", at(50), t)[t][m.MeterKey(m.STORAGE)]
    meters.observe(t, m.STORAGE, GIB, at(50))  # the server comes back
    assert gap_total == 49 * 3600 * GIB
    assert meters.usage("2026-11", at(50), t)[t][m.MeterKey(m.STORAGE)] == gap_total


def test_a_past_month_reads_the_same_before_and_after_later_observations(registry):
    meters, t = m.Meters(registry.engine), tenant_name()
    meters.observe(t, m.STORAGE, 5 * GIB, at(100))
    first = meters.usage("2026-11", datetime(2026, 12, 10, tzinfo=UTC), t)
    meters.observe(t, m.STORAGE, GIB, datetime(2026, 12, 20, tzinfo=UTC))
    again = meters.usage("2026-11", datetime(2027, 1, 2, tzinfo=UTC), t)
    assert first == again
    assert again[t][m.MeterKey(m.STORAGE)] == 5 * GIB * (NOV_SECONDS - 100 * 3600)


def test_an_observation_older_than_the_last_changes_nothing(registry):
    meters, t = m.Meters(registry.engine), tenant_name()
    meters.observe(t, m.STORAGE, GIB, at(10))
    meters.observe(t, m.STORAGE, 9 * GIB, at(5))  # late, from a slow worker
    assert meters.levels(t)[m.MeterKey(m.STORAGE)] == GIB


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_registry(request: pytest.FixtureRequest):
    if request.param == "sqlite":
        return request.getfixturevalue("registry")
    from mlflow_tenant_plugins.tenancy import TenantRegistry

    return TenantRegistry(request.getfixturevalue("pg_url"))


def test_two_instances_observing_at_once_count_every_second_once(any_registry):
    """Two servers (two engines, two Meters) sample the same meter concurrently, each at the
    times of its own clock: the total is the integral once, not twice."""
    from mlflow_tenant_plugins.tenancy import TenantRegistry

    other = TenantRegistry(any_registry.database_uri)
    a, b = m.Meters(any_registry.engine), m.Meters(other.engine)
    t = tenant_name()
    a.observe(t, m.ENDPOINT_INSTANCES, 4, at(0), "ml.c5.large")
    barrier = threading.Barrier(2)

    def sample(meters: m.Meters, offset: float) -> None:
        barrier.wait(30)
        for i in range(1, 40):
            meters.observe(t, m.ENDPOINT_INSTANCES, 4, at(i + offset), "ml.c5.large")

    threads = [threading.Thread(target=sample, args=(x, o)) for x, o in ((a, 0.0), (b, 0.5))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    total = a.usage("2026-11", at(40), t)[t][m.MeterKey(m.ENDPOINT_INSTANCES, "ml.c5.large")]
    assert total == 4 * 40 * 3600


PRICES = PriceTable(currency="EUR", storage_gb_month=0.03, api_million_requests=2.0,
                    endpoint_instance_hour={"ml.m5.large": 0.134},
                    training_instance_hour={"ml.m5.large": 0.115}, discounts={"acme": 10})


def test_a_statement_prices_each_line_and_applies_the_discount():
    used = {
        m.MeterKey(m.STORAGE_BILLABLE): 2 * GIB * NOV_SECONDS,  # 2 GiB all month
        m.MeterKey(m.ENDPOINT_INSTANCES, "ml.m5.large"): 100 * 3600,
        m.MeterKey(m.ENDPOINT_INSTANCES, "ml.p3.2xlarge"): 3600,  # no price
        m.MeterKey(m.TRAINING_INSTANCES, "ml.m5.large"): 10 * 3600,
        m.MeterKey(m.API_REQUESTS): 2_500_000,
    }
    s = statement_for("acme", "2026-11", used, PRICES, storage_mode="overage",
                      allowance_bytes=GIB)
    amounts = {i.description: i.amount for i in s.items}
    assert amounts == {
        "storage over the allowance": Decimal("0.06"),
        "endpoint instance-hours ml.m5.large": Decimal("13.40"),
        "endpoint instance-hours ml.p3.2xlarge": Decimal("0.00"),
        "training instance-hours ml.m5.large": Decimal("1.15"),
        "API requests": Decimal("5.00"),
    }
    assert s.unpriced == ["endpoint instance-hours ml.p3.2xlarge"]
    assert (s.subtotal, s.discount, s.total) == (Decimal("19.61"), Decimal("1.96"),
                                                 Decimal("17.65"))
    assert s.to_dict()["total"] == "17.65" and s.currency == "EUR"
    rows = to_csv([s]).splitlines()
    assert rows[0].startswith("tenant,month,description") and rows[-1].endswith("17.65,EUR")


def test_a_hard_mode_tenant_pays_no_storage_overage():
    used = {m.MeterKey(m.STORAGE_BILLABLE): GIB * NOV_SECONDS}
    s = statement_for("t", "2026-11", used, PRICES, storage_mode="hard")
    assert s.items == [] and s.total == Decimal("0.00")


def test_statements_include_a_deleted_tenants_month(registry):
    name = tenant_name()
    registry.create_tenant(name, quotas=Quotas(storage_mode="overage",
                                               storage_allowance_bytes=0))
    meters = m.Meters(registry.engine)
    now = datetime.now(UTC)
    meters.observe(name, m.ENDPOINT_INSTANCES, 1, now - timedelta(hours=2), "ml.m5.large")
    registry.delete_tenant(name, force=True)
    assert meters.levels(name)[m.MeterKey(m.ENDPOINT_INSTANCES, "ml.m5.large")] == 0
    [s] = statements(registry, PRICES, m.month_of(now), now + timedelta(hours=5), name)
    hours = s.usage["endpoint_instance_hours"]["ml.m5.large"]
    assert 1.99 < hours < 2.01  # closed at deletion, not counted on


def test_the_price_table_refuses_unknown_keys_and_negative_prices():
    def load(prices: dict) -> PriceTable:
        return PriceTable.from_settings(Settings(extra={"prices": prices}))

    with pytest.raises(ConfigError, match="unknown key"):
        load({"storage_gb_mnth": 1})
    with pytest.raises(ConfigError, match=">= 0"):
        load({"endpoint_instance_hour": {"ml.m5.large": -1}})
    assert load({"currency": "usd"}).currency == "USD"

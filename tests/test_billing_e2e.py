"""Billing end to end on one real ``mlflow server --app-name tenant-auth`` (tenant-s3 artifacts
on moto's S3, a ``[prices]`` table in the settings file, the metering sampler every second and
request counts flushed every second): storage overage through the stock client with default
retries, API requests counted, who may read a statement, and ``mlflow-tenants bill`` in its
three formats agreeing with the route and with itself for a past month.

Statements of the current month grow while a meter is open (level x seconds up to now), so
the tests that compare totals first let the levels fall to 0 (the sampler closes them) and
compare reads taken around the same moment, retrying within a deadline if a flush of request
counts landed in between.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from mlflow import MlflowClient

from mlflow_tenant_plugins.tenancy import Quotas
from mlflow_tenant_plugins.tenancy import meters as m
from tests.fixtures.aws import MotoServer
from tests.fixtures.servers import MlflowServer, start_mlflow_server, stop_mlflow_server

BUCKET = "mlt-billing"
ROOT = "srv"
MIB, GIB, TIB = 2**20, 2**30, 2**40
TIMEOUT = 60
CLI = shutil.which("mlflow-tenants", path=str(Path(sys.executable).parent))
STATEMENT = "/api/2.0/tenants/statement"
STORAGE_ITEM = "storage over the allowance"
PRICES = """
[prices]
currency = "USD"
storage_gb_month = 2.5
api_million_requests = 1000.0
[prices.endpoint_instance_hour]
"ml.m5.large" = 0.134
[prices.training_instance_hour]
"ml.m5.large" = 0.115
"""
T = TypeVar("T")


class Billing:
    def __init__(self, server: MlflowServer, config: Path):
        self.server = server
        self.config = config

    def tenant(self, *roles: str, **quotas: Any) -> tuple[str, dict[str, str]]:
        """A fresh tenant and one key per role asked for."""
        name = f"b{secrets.token_hex(4)}"
        self.server.registry.create_tenant(name, quotas=Quotas(**quotas))
        return name, {r: self.server.registry.create_key(name, r)[1] for r in roles}

    def key(self, tenant: str, role: str) -> str:
        return self.server.registry.create_key(tenant, role)[1]

    def get(self, path: str, key: str, **params: str) -> requests.Response:
        return requests.get(f"{self.server.url}{path}", params=params, timeout=TIMEOUT,
                            headers={"Authorization": f"Bearer {key}"})

    def statement(self, key: str, **params: str) -> dict:
        r = self.get(STATEMENT, key, **params)
        assert r.status_code == 200, r.text
        return r.json()["statement"]

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update(MLFLOW_TENANT_DATABASE_URI=self.server.db_uri,
                   MLFLOW_TENANT_CONFIG=str(self.config))
        done = subprocess.run([CLI, *args], capture_output=True, text=True, env=env,
                              timeout=TIMEOUT)
        assert done.returncode == 0, f"{args}: {done.stderr}"
        return done

    def clis(self, *calls: tuple[str, ...]) -> list[subprocess.CompletedProcess]:
        """Independent runs side by side (each imports MLflow: seconds)."""
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(lambda args: self.cli(*args), calls))

    def levels(self, tenant: str) -> dict[m.MeterKey, int]:
        return m.Meters(self.server.registry.engine).levels(tenant)


@pytest.fixture(scope="module")
def billing(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Billing]:
    assert CLI, f"mlflow-tenants is not installed next to {sys.executable}"
    moto_server.client("s3").create_bucket(Bucket=BUCKET)
    workdir = tmp_path_factory.mktemp("billing-server")
    config = workdir / "platform.toml"
    config.write_text(PRICES)
    env = {**moto_server.env(), "MLFLOW_TENANT_AWS_ENDPOINT_URL": moto_server.url,
           "MLFLOW_TENANT_CONFIG": str(config),
           "MLFLOW_TENANT_METERING_INTERVAL_SECONDS": "1",
           "MLFLOW_TENANT_METERING_FLUSH_SECONDS": "1"}
    server = start_mlflow_server(workdir, artifacts_destination=f"tenant-s3://{BUCKET}/{ROOT}",
                                 extra_env=env)
    _key, server.admin_key = server.registry.create_key(None, "admin", admin_label="billing")
    yield Billing(server, config)
    stop_mlflow_server(server)


@pytest.fixture
def stock_client(billing: Billing, monkeypatch: pytest.MonkeyPatch):
    """``stock_client(key)`` -> MLflow's own client with default settings but the key."""
    for name in list(os.environ):
        if name.startswith("MLFLOW_"):
            monkeypatch.delenv(name)

    def _client(key: str) -> MlflowClient:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
        return MlflowClient(tracking_uri=billing.server.url)

    return _client


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 30.0) -> T:
    """``check()``'s first truthy answer, polled until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        time.sleep(0.2)


def current_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def previous_month() -> str:
    first = datetime.now(UTC).replace(day=1)
    return (first - timedelta(days=1)).strftime("%Y-%m")


def items(statement: dict) -> dict[str, dict]:
    return {i["description"]: i for i in statement["line_items"]}


def money(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


# -- storage overage ---------------------------------------------------------------------------
def test_overage_passes_the_allowance_refuses_at_the_ceiling_at_once_and_bills_the_excess(
    billing: Billing, stock_client, tmp_path: Path
) -> None:
    name = f"b{secrets.token_hex(4)}"
    pool = ThreadPoolExecutor(4)  # the CLI runs (seconds each) overlap the server's work
    creating = pool.submit(billing.cli, "tenant", "create", name, "--storage-mode", "overage",
                           "--storage-allowance", "1MB", "--storage", "3MB", "--json")
    two_mib = tmp_path / "two.bin"
    two_mib.write_bytes(b"x" * 2 * MIB)

    # A hard-mode tenant holding 2 MiB of 3 MiB: metered, never billed as overage.
    hard, hard_keys = billing.tenant("editor", "admin", storage_bytes=3 * MIB)
    hard_client = stock_client(hard_keys["editor"])
    hard_run = hard_client.create_run(hard_client.create_experiment("hard")).info.run_id
    hard_client.log_artifact(hard_run, str(two_mib))
    wait_for("the sampler observes the hard tenant's 2 MiB", lambda: billing.levels(hard).get(
        m.MeterKey(m.STORAGE)) == 2 * MIB)
    hard_statement = billing.statement(hard_keys["admin"])
    assert not [d for d in items(hard_statement) if "storage" in d], hard_statement
    assert hard_statement["usage"]["storage_allowance_bytes"] is None
    assert billing.levels(hard).get(m.MeterKey(m.STORAGE_BILLABLE)) == 0

    # The overage tenant, made by mlflow-tenants tenant create, through the stock client.
    assert json.loads(creating.result().stdout)["quotas"]["storage_mode"] == "overage"
    editor, admin = billing.key(name, "editor"), billing.key(name, "admin")
    client = stock_client(editor)  # default retries: every MLFLOW_ variable cleared
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    run = client.create_run(client.create_experiment("overage")).info.run_id
    client.log_artifact(run, str(two_mib), "first")  # past the allowance: it succeeds
    assert billing.server.registry.ledger.get(name, "storage_bytes").used == 2 * MIB
    started = time.monotonic()
    with pytest.raises(Exception) as refused:  # the stock client raises HTTPError
        client.log_artifact(run, str(two_mib), "second")
    elapsed = time.monotonic() - started
    assert elapsed < 2, elapsed
    text = str(refused.value)
    assert "409" in text and "RESOURCE_EXHAUSTED" in text and "too many" not in text
    assert f"quota exceeded for tenant '{name}': storage_bytes limit is 3.0 MiB" in text
    assert billing.server.registry.ledger.get(name, "storage_bytes").used == 2 * MIB
    shown = [pool.submit(billing.cli, *args) for args in (
        ("usage", name, "--json"), ("usage", name), ("usage", hard))]

    # The sampler sees exactly the bytes over the allowance; the statement bills them.
    wait_for("the sampler observes 1 MiB billable", lambda: billing.levels(name).get(
        m.MeterKey(m.STORAGE_BILLABLE)) == MIB)
    statement = wait_for("a storage line item", lambda: (
        s if STORAGE_ITEM in items(s := billing.statement(admin)) else None))
    assert statement["tenant"] == name and statement["month"] == current_month()
    item = items(statement)[STORAGE_ITEM]
    assert item["unit"] == "GiB-month" and item["unit_price"] == 2.5
    assert statement["usage"]["storage_allowance_bytes"] == MIB

    # Where usage is shown: the usage page, and the usage command (JSON and text).
    page = billing.get("/api/2.0/tenants/usage-page", billing.server.admin_key)
    assert page.status_code == 200, page.text
    row = page.text[page.text.index(f'data-tenant="{name}"'):]
    row = row[:row.index("</tr>")]
    assert "2.0 MiB of 3.0 MiB (67%)" in row and "overage: 1.0 MiB included" in row
    assert f'data-billable="{MIB}">billable excess 1.0 MiB' in row
    hard_row = page.text[page.text.index(f'data-tenant="{hard}"'):]
    hard_row = hard_row[:hard_row.index("</tr>")]
    assert "2.0 MiB of 3.0 MiB (67%)" in hard_row and "billable" not in hard_row
    as_json, as_text, hard_text = (f.result() for f in shown)
    pool.shutdown()
    storage = json.loads(as_json.stdout)["usage"]["storage_bytes"]
    assert storage == {"resource": "storage_bytes", "used": 2 * MIB, "limit": 3 * MIB,
                       "utilization": 0.6667, "mode": "overage", "allowance": MIB,
                       "billable_excess": MIB}
    assert (f"{name} storage: overage mode, allowance 1.0 MiB, used 2.0 MiB, billable excess "
            "1.0 MiB, ceiling 3.0 MiB") in as_text.stdout.splitlines()
    assert "overage" not in hard_text.stdout and "billable" not in hard_text.stdout


# -- API requests ------------------------------------------------------------------------------
def test_each_api_request_of_a_tenant_is_counted_in_its_statement(billing: Billing) -> None:
    name, keys = billing.tenant("viewer")
    n = 12
    for _ in range(n):
        r = billing.get("/api/2.0/mlflow/experiments/search", keys["viewer"], max_results="5")
        assert r.status_code == 200, r.text
    statement = wait_for(f"{n} requests in the statement", lambda: (
        s if (s := billing.statement(billing.server.admin_key, tenant=name)
              )["usage"]["api_requests"] >= n else None))
    assert statement["usage"]["api_requests"] == n  # the admin's reads are not the tenant's
    item = items(statement)["API requests"]
    assert item["unit"] == "million requests" and item["quantity"] == round(n / 1e6, 10)


# -- who reads a statement ---------------------------------------------------------------------
def test_a_statement_is_for_its_tenants_admins_and_platform_admins_only(
    billing: Billing
) -> None:
    a, a_keys = billing.tenant("admin", "editor")
    b, b_keys = billing.tenant("admin")
    month = current_month()

    own = billing.statement(a_keys["admin"], tenant=a, month=month)
    assert own["tenant"] == a and own["month"] == month and own["currency"] == "USD"
    assert billing.statement(a_keys["admin"])["tenant"] == a  # default: the caller's own
    assert billing.statement(b_keys["admin"])["tenant"] == b
    for key, tenant in ((a_keys["editor"], a), (b_keys["admin"], a)):
        refused = billing.get(STATEMENT, key, tenant=tenant)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error_code"] == "PERMISSION_DENIED"
        assert "line_items" not in refused.text
    assert billing.statement(billing.server.admin_key, tenant=a)["tenant"] == a
    assert billing.statement(billing.server.admin_key, tenant=b, month=month)["tenant"] == b

    for bad in ("2026-13", "november", "2026-11-01"):
        r = billing.get(STATEMENT, a_keys["admin"], month=bad)
        assert r.status_code == 400, r.text
        assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert f"invalid month '{bad}': expected YYYY-MM" in r.json()["message"]


# -- mlflow-tenants bill -----------------------------------------------------------------------
def _text_total(out: str) -> str:
    [total] = [line.split()[1] for line in out.splitlines() if line.split()[:1] == ["total"]]
    return total


def _csv_total(out: str) -> str:
    [total] = [r["amount"] for r in csv.DictReader(io.StringIO(out))
               if r["description"] == "total"]
    return total


def test_bill_agrees_in_every_format_with_the_route_and_a_past_month_stays_put(
    billing: Billing
) -> None:
    """Last month's meters are written straight into the registry (a TiB over the allowance
    from the 10th, a 3-hour job on two instances); the tenant is created after, so its open
    storage interval runs into this month until the sampler closes it (the ledger holds 0)."""
    name = f"b{secrets.token_hex(4)}"
    last, month = previous_month(), current_month()
    start, end = m.month_bounds(last)
    since = start + timedelta(days=10)
    meters = m.Meters(billing.server.registry.engine)
    meters.observe(name, m.STORAGE_BILLABLE, TIB, since)
    meters.add_interval(name, m.TRAINING_INSTANCES, 2, since, since + timedelta(hours=3),
                        "ml.m5.large")
    billing.server.registry.create_tenant(name, quotas=Quotas(
        storage_mode="overage", storage_allowance_bytes=0))
    pool = ThreadPoolExecutor(1)  # a first run, started about when the sampler closes it
    early = pool.submit(billing.cli, "bill", "--month", last, "--tenant", name, "--json")
    viewer = billing.key(name, "viewer")
    for _ in range(5):
        r = billing.get("/api/2.0/mlflow/experiments/search", viewer, max_results="5")
        assert r.status_code == 200, r.text
    wait_for("the sampler closes the storage meter", lambda: billing.levels(name).get(
        m.MeterKey(m.STORAGE_BILLABLE)) == 0)
    wait_for("the requests are flushed", lambda: billing.statement(
        billing.server.admin_key, tenant=name)["usage"]["api_requests"] >= 5)

    def one_round() -> tuple[dict, list[subprocess.CompletedProcess]] | None:
        before = billing.statement(billing.server.admin_key, tenant=name, month=month)
        runs = billing.clis(("bill", "--month", month, "--tenant", name),
                            ("bill", "--month", month, "--tenant", name, "--json"),
                            ("bill", "--month", month, "--tenant", name, "--csv"),
                            ("bill", "--month", last, "--tenant", name, "--json"))
        after = billing.statement(billing.server.admin_key, tenant=name, month=month)
        return (before, runs) if before == after else None

    route, (text, as_json, as_csv, past) = wait_for(
        "a statement unchanged around the CLI runs", one_round, timeout=60)
    [current] = json.loads(as_json.stdout)["statements"]
    assert current == route  # the CLI's JSON is the route's statement
    assert Decimal(route["total"]) > 0 and STORAGE_ITEM in items(route)
    assert items(route)["API requests"]["quantity"] == round(
        route["usage"]["api_requests"] / 1e6, 10)
    assert _text_total(text.stdout) == _csv_total(as_csv.stdout) == route["total"]

    # Last month: exact, and the same from a run started as the sampler closed the interval, a
    # run after it, and the route.
    gib_months = Decimal(TIB // GIB) * Decimal((end - since).total_seconds()) / Decimal(
        (end - start).total_seconds())
    expected = money(gib_months * Decimal("2.5")) + money(6 * Decimal("0.115"))
    [past_statement] = json.loads(past.stdout)["statements"]
    assert json.loads(early.result().stdout)["statements"] == [past_statement]
    pool.shutdown()
    assert past_statement["month"] == last and Decimal(past_statement["total"]) == expected
    assert items(past_statement)["training instance-hours ml.m5.large"]["quantity"] == 6
    assert items(past_statement)[STORAGE_ITEM]["quantity"] == round(float(gib_months), 10)
    assert "API requests" not in items(past_statement)
    assert billing.statement(billing.server.admin_key, tenant=name, month=last) \
        == past_statement

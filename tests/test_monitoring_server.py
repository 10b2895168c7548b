"""Monitoring on a running ``mlflow server --app-name tenant-auth --expose-prometheus DIR``
(two uvicorn workers, tenant-s3 artifacts and CloudWatch on moto's server, the usage publisher
every 2 s): the scraped series count exactly the requests each tenant made, ``/metrics`` is
for platform admins only, the server publishes usage to CloudWatch by itself, and the admin
usage page works in headless Chromium (a screenshot is saved under the test's tmp_path) and
refuses a tenant's user. One server for the module; each test makes its own tenants.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from mlflow_tenant_plugins.monitoring import labels
from mlflow_tenant_plugins.monitoring.lease import Lease
from mlflow_tenant_plugins.monitoring.publisher import LEASE_KEY
from mlflow_tenant_plugins.tenancy import Quotas
from tests.fixtures.aws import MotoServer
from tests.fixtures.servers import MlflowServer, start_mlflow_server, stop_mlflow_server

BUCKET = "mlt-monitoring"
ROOT = "srv"
TIMEOUT = 60


@dataclass
class Monitored:
    server: MlflowServer
    moto: MotoServer
    namespace: str

    def tenant(self, role: str = "editor", **quotas) -> tuple[str, str]:
        name = f"m{secrets.token_hex(4)}"
        self.server.registry.create_tenant(name, quotas=Quotas(**quotas))
        _info, key = self.server.registry.create_key(name, role)
        return name, key

    def get(self, path: str, key: str | None = None, **kw) -> requests.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers.update(kw.pop("headers", {}))
        return requests.get(f"{self.server.url}{path}", headers=headers, timeout=TIMEOUT, **kw)

    def post(self, path: str, key: str, json: dict, **kw) -> requests.Response:
        headers = {"Authorization": f"Bearer {key}", **kw.pop("headers", {})}
        return requests.post(f"{self.server.url}{path}", headers=headers, json=json,
                             timeout=TIMEOUT, **kw)

    def scrape(self) -> list:
        r = self.get("/metrics", self.server.admin_key)
        assert r.status_code == 200, r.text
        return [s for f in text_string_to_metric_families(r.text) for s in f.samples]


def value(samples: list, name: str, **want: str) -> float:
    found = [s.value for s in samples
             if s.name == name and all(s.labels.get(k) == v for k, v in want.items())]
    return sum(found)


@pytest.fixture(scope="module")
def mon(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Monitored]:
    moto_server.client("s3").create_bucket(Bucket=BUCKET)
    workdir = tmp_path_factory.mktemp("monitoring-server")
    namespace = f"MLT/Server-{secrets.token_hex(3)}"
    env = {**moto_server.env(), "MLFLOW_TENANT_AWS_ENDPOINT_URL": moto_server.url,
           "MLFLOW_TENANT_USAGE_PUBLISH_INTERVAL_SECONDS": "2",
           "MLFLOW_TENANT_USAGE_METRICS_NAMESPACE": namespace}
    server = start_mlflow_server(
        workdir, workers=2, artifacts_destination=f"tenant-s3://{BUCKET}/{ROOT}",
        extra_args=("--expose-prometheus", str(workdir / "prometheus")), extra_env=env,
        timeout=300,
    )
    _key, server.admin_key = server.registry.create_key(None, "admin", admin_label="ci")
    yield Monitored(server, moto_server, namespace)
    stop_mlflow_server(server)


def _artifact_dir(m: Monitored, key: str) -> str:
    exp = m.post("/api/2.0/mlflow/experiments/create", key, {"name": "monitored"})
    assert exp.status_code == 200, exp.text
    run = m.post("/api/2.0/mlflow/runs/create", key, {"experiment_id": exp.json()["experiment_id"]})
    assert run.status_code == 200, run.text
    return run.json()["run"]["info"]["artifact_uri"].removeprefix("mlflow-artifacts:")


def _put(m: Monitored, key: str, path: str, size: int) -> requests.Response:
    return requests.put(f"{m.server.url}/api/2.0/mlflow-artifacts/artifacts{path}",
                        data=b"x" * size, headers={"Authorization": f"Bearer {key}"},
                        timeout=TIMEOUT)


def test_metrics_are_for_platform_admins_only(mon: Monitored) -> None:
    _tenant, key = mon.tenant("admin")  # even a tenant's own admin sees no platform figures
    anonymous = mon.get("/metrics")
    tenant_user = mon.get("/metrics", key)
    assert anonymous.status_code == 401 and "mlflow_tenant" not in anonymous.text
    assert tenant_user.status_code == 403 and "mlflow_tenant" not in tenant_user.text
    assert tenant_user.json()["error_code"] == "PERMISSION_DENIED"
    assert mon.get("/metrics", mon.server.admin_key).status_code == 200


def test_scraped_series_count_exactly_the_requests_each_tenant_made(mon: Monitored) -> None:
    a, key_a = mon.tenant()
    b, key_b = mon.tenant()
    c, key_c = mon.tenant(storage_bytes=1024)
    before = mon.scrape()
    scraped_at = time.monotonic()

    search = "/api/2.0/mlflow/experiments/search"
    for _ in range(3):
        assert mon.post(search, key_a, {"max_results": 5}).status_code == 200
    for _ in range(2):  # a tenant's user asking for the platform's tenant list
        assert mon.get("/api/2.0/tenants/list", key_a).status_code == 403
    cross = mon.post(search, key_a, {"max_results": 5}, headers={"X-MLFLOW-WORKSPACE": b})
    assert cross.status_code == 403
    assert mon.post(search, key_b, {"max_results": 5}).status_code == 200
    assert mon.get("/api/2.0/tenants/whoami", "mlt_not-a-key").status_code == 401
    assert mon.get("/api/2.0/tenants/whoami").status_code == 401
    artifacts = _artifact_dir(mon, key_c)
    assert _put(mon, key_c, f"{artifacts}/small.bin", 100).status_code == 200
    refused = _put(mon, key_c, f"{artifacts}/big.bin", 2000)
    assert refused.status_code == 409 and refused.json()["error_code"] == "RESOURCE_EXHAUSTED"

    # The gauges are refreshed at most once a second per worker (MetricsMiddleware): a scrape
    # sooner than that after the last one would show the usage as it was then.
    time.sleep(max(0.0, scraped_at + 1.2 - time.monotonic()))
    after = mon.scrape()
    total = "mlflow_tenant_requests_total"
    assert value(after, total, tenant=a, route_group="tracking", status_class="2xx") == 3
    assert value(after, total, tenant=a, route_group="tracking", status_class="4xx") == 1
    assert value(after, total, tenant=a, route_group="tenant-admin", status_class="4xx") == 2
    assert value(after, total, tenant=b, route_group="tracking", status_class="2xx") == 1
    assert value(after, total, tenant=b) == 1  # A's attempt on B counts for A, not for B
    assert value(after, total, tenant=c, route_group="artifacts", status_class="2xx") == 1
    assert value(after, total, tenant=c, route_group="artifacts", status_class="4xx") == 1
    denials = "mlflow_tenant_permission_denials_total"
    assert value(after, denials, tenant=a, route_group="tenant-admin") == 2
    assert value(after, denials, tenant=a, route_group="tracking") == 1
    assert value(after, "mlflow_tenant_quota_refusals_total", tenant=c,
                 quota="storage_bytes") == 1
    assert value(after, "mlflow_tenant_request_duration_seconds_count", tenant=a,
                 route_group="tracking") == 4
    assert value(after, "mlflow_tenant_request_duration_seconds_bucket", tenant=a,
                 route_group="tracking", le="+Inf") == 4
    failures = "mlflow_tenant_auth_failures_total"
    for method in ("key", "none"):
        assert value(after, failures, method=method) - value(before, failures, method=method) == 1

    # Gauges: refreshed from the ledger when scraped.
    assert value(after, "mlflow_tenant_resource_used", tenant=c, resource="storage_bytes") == 100
    assert value(after, "mlflow_tenant_resource_limit", tenant=c,
                 resource="storage_bytes") == 1024
    assert value(after, "mlflow_tenant_resource_limit", tenant=a, resource="endpoints") == 2

    # Bounded labels: fixed route groups, tenants only from verified identities, no paths.
    ours = [s for s in after if s.name.startswith("mlflow_tenant_")]
    known = {t.name for t in mon.server.registry.list_tenants()}
    assert {s.labels["route_group"] for s in ours if "route_group" in s.labels} <= set(
        labels.ROUTE_GROUP_NAMES)
    assert {s.labels["tenant"] for s in ours if "tenant" in s.labels} <= known | {
        labels.PLATFORM, labels.UNAUTHENTICATED}
    assert not any("/" in v for s in ours for v in s.labels.values())


def test_server_publishes_usage_to_cloudwatch_by_itself(mon: Monitored) -> None:
    tenant, _key = mon.tenant(storage_bytes=1000)
    mon.server.registry.ledger.set_used(tenant, "storage_bytes", 950)
    cw = mon.moto.client("cloudwatch")
    dims = [{"Name": "Tenant", "Value": tenant}]
    deadline = time.monotonic() + 120
    peak = None
    # A cycle may publish between the tenant's creation and set_used (a 0 % point): wait for
    # the point that reflects the usage, not merely the first one.
    while peak != pytest.approx(95.0) and time.monotonic() < deadline:
        points = cw.get_metric_statistics(
            Namespace=mon.namespace, MetricName="StorageQuotaUtilization", Dimensions=dims,
            StartTime=time.time() - 600, EndTime=time.time() + 60, Period=60,
            Statistics=["Maximum"])["Datapoints"]
        peak = max((p["Maximum"] for p in points), default=None)
        time.sleep(0.5)
    assert peak is not None, "the server published no usage for the tenant within 120 s"
    assert peak == pytest.approx(95.0)
    alarms = cw.describe_alarms(AlarmNamePrefix="MLT-Server-")["MetricAlarms"]
    mine = [a for a in alarms if a["Dimensions"] == dims]
    assert len(mine) == 1 and mine[0]["Threshold"] == 90.0
    holder = Lease(mon.server.registry.engine, LEASE_KEY, 30).current_holder()
    assert holder is not None  # one worker holds the publisher lease


# -- the admin usage page in a browser -----------------------------------------------------------
@contextlib.contextmanager
def chromium(profile: Path) -> Iterator:
    chrome, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chrome and driver_path, "install Debian's chromium and chromium-driver (make test)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-quic", "--no-first-run", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={profile}", "--window-size=1400,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def _login(driver, mon: Monitored, key: str) -> None:
    """As a browser does after the Basic challenge: the credentials are cached for the origin."""
    host = urlsplit(mon.server.url).netloc
    driver.get(f"http://user:{key}@{host}/api/2.0/tenants/whoami")
    assert "principal" in driver.find_element("tag name", "body").text


def _simulated_deployment(mon: Monitored, tenant: str) -> None:
    """An endpoint of ``tenant`` as tenant-sagemaker leaves it (tags, alarms), made directly in
    moto, with its 5XX alarm firing (moto never evaluates alarms; set_alarm_state does)."""
    from mlflow_tenant_plugins.config import Settings
    from mlflow_tenant_plugins.deployments import alarms
    from mlflow_tenant_plugins.deployments.names import TAG_DEPLOYMENT, TAG_TENANT, VARIANT, Names

    names = Names(tenant, "churn")
    sm = mon.moto.client("sagemaker")
    sm.create_model(ModelName=names.model("d1"), ExecutionRoleArn="arn:aws:iam::123456789012:"
                    f"role/mlflow-sagemaker-{tenant}", PrimaryContainer={"Image": "mlflow-pyfunc"})
    sm.create_endpoint_config(EndpointConfigName=names.config("d1"), ProductionVariants=[{
        "VariantName": VARIANT, "ModelName": names.model("d1"), "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName=names.endpoint, EndpointConfigName=names.config("d1"),
                       Tags=[{"Key": TAG_TENANT, "Value": tenant},
                             {"Key": TAG_DEPLOYMENT, "Value": "churn"}])
    cw = mon.moto.client("cloudwatch")
    alarms.put_alarms(cw, names, alarms.resolve_thresholds(Settings(), tenant, {}), None, [])
    cw.set_alarm_state(AlarmName=names.alarm("5xx"), StateValue="ALARM",
                       StateReason="test: 5XX errors")
    ledger = mon.server.registry.ledger
    ledger.set_used(tenant, "endpoints", 1)
    ledger.set_used(tenant, "instances", 1)


def test_usage_page_in_chromium_shows_quotas_and_alarm_states_to_admins_only(
    mon: Monitored, tmp_path: Path
) -> None:
    busy, busy_key = mon.tenant("viewer", storage_bytes=1000, endpoints=2, instances=4)
    quiet, _ = mon.tenant()
    mon.server.registry.ledger.set_used(busy, "storage_bytes", 950)
    _simulated_deployment(mon, busy)

    with chromium(tmp_path / "admin-profile") as driver:
        _login(driver, mon, mon.server.admin_key)
        driver.get(f"{mon.server.url}/api/2.0/tenants/usage-page")
        assert driver.title.startswith("Tenant usage")
        row = driver.find_element("css selector", f'tr[data-tenant="{busy}"]').text
        shot = tmp_path / "usage-page.png"
        driver.save_screenshot(str(shot))
        quiet_row = driver.find_element("css selector", f'tr[data-tenant="{quiet}"]').text
        over = driver.find_elements("css selector", f'tr[data-tenant="{busy}"] .fill.over')
    assert "950 B of 1000 B (95%)" in row
    assert "1 of 2 (50%)" in row and "1 of 4 (25%)" in row
    assert "churn" in row and "Invocation5XXErrors: ALARM" in row
    assert "ModelLatency: OK" in row
    assert "no endpoints" in quiet_row
    assert len(over) == 1  # storage, the one quota at or over the 90% threshold
    assert shot.stat().st_size > 10_000

    refused = mon.get("/api/2.0/tenants/usage-page", busy_key)
    assert refused.status_code == 403 and busy not in refused.text
    with chromium(tmp_path / "tenant-profile") as driver:
        _login(driver, mon, busy_key)
        driver.get(f"{mon.server.url}/api/2.0/tenants/usage-page")
        body = driver.find_element("tag name", "body").text
    assert "PERMISSION_DENIED" in body and quiet not in body

"""The cross-check with AWS: Cost Explorer on moto's server (its results set through moto's
API) grouped by the ``mlt:tenant`` tag, read by ``aws_costs()`` and shown by ``mlflow-tenants
bill --aws --json`` beside the metered totals; every resource a deploy makes carries
``mlt:tenant``; and endpoint instances are metered from SageMaker, at once after a create,
update or delete and by the sampler's counter."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import requests

from mlflow_tenant_plugins.billing.costs import TAG, aws_costs
from mlflow_tenant_plugins.billing.sampler import EndpointInstances, sample
from mlflow_tenant_plugins.config import Settings
from mlflow_tenant_plugins.deployments.names import Names, tenant_token
from mlflow_tenant_plugins.tenancy import meters as m
from mlflow_tenant_plugins.tenancy.entities import Budget

CLI = shutil.which("mlflow-tenants", path=str(Path(sys.executable).parent))
MONTH = "2025-03"  # a month of its own: moto answers Cost Explorer by request body


def _group(tenant: str, amount: str) -> dict[str, Any]:
    return {"Keys": [f"{TAG}${tenant}"],
            "Metrics": {"UnblendedCost": {"Amount": amount, "Unit": "USD"}}}


def _page(groups: list[dict[str, Any]], token: str | None = None) -> dict[str, Any]:
    page: dict[str, Any] = {"ResultsByTime": [{
        "TimePeriod": {"Start": f"{MONTH}-01", "End": "2025-04-01"}, "Total": {},
        "Groups": groups, "Estimated": False}], "DimensionValueAttributes": []}
    if token:
        page["NextPageToken"] = token
    return page


def test_cost_explorer_costs_by_tenant_tag_show_beside_the_metered_totals(
        registry, moto_server, tmp_path):
    acme, beta = f"a{secrets.token_hex(4)}", f"b{secrets.token_hex(4)}"
    for name in (acme, beta):
        registry.create_tenant(name)
    meters = m.Meters(registry.engine)
    start = m.month_bounds(MONTH)[0]
    meters.add_interval(acme, m.ENDPOINT_INSTANCES, 2, start, start.replace(day=11),
                        "ml.m5.large")  # 2 x 240 h
    meters.add_interval(beta, m.ENDPOINT_INSTANCES, 1, start, start.replace(day=2),
                        "ml.m5.large")  # 24 h
    # Two pages, as Cost Explorer pages large answers: the reader follows NextPageToken.
    results = [_page([_group(acme, "61.2049"), _group("", "3.5")], token="page-2"),
               _page([_group(beta, "2.1"), _group(acme, "3.0")])]
    requests.post(f"{moto_server.url}/moto-api/static/ce/cost-and-usage-results",
                  json={"results": results}, timeout=10).raise_for_status()

    costs = aws_costs(Settings(), MONTH, client=moto_server.client("ce"))
    assert costs == {acme: "64.20 USD", beta: "2.10 USD", "(untagged)": "3.50 USD"}

    config = tmp_path / "platform.toml"
    config.write_text('[prices]\ncurrency = "USD"\n'
                      '[prices.endpoint_instance_hour]\n"ml.m5.large" = 0.134\n')
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TENANT")},
           **moto_server.env(), "MLFLOW_TENANT_CONFIG": str(config),
           "MLFLOW_TENANT_AWS_ENDPOINT_URL": moto_server.url}
    out = subprocess.run([CLI, "--db", registry.database_uri, "bill", "--month", MONTH,
                          "--aws", "--json"], capture_output=True, text=True, env=env,
                         timeout=180, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    shown = {s["tenant"]: s for s in json.loads(out.stdout)["statements"]}
    assert (shown[acme]["total"], shown[acme]["aws_cost"]) == ("64.32", "64.20 USD")
    assert (shown[beta]["total"], shown[beta]["aws_cost"]) == ("3.22", "2.10 USD")
    assert shown[acme]["usage"]["endpoint_instance_hours"] == {"ml.m5.large": 480.0}


class CountingSageMaker:
    """The SageMaker client, counting the calls made through it."""

    def __init__(self, client: Any):
        self.client, self.calls = client, []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if not callable(attr) or name.startswith(("get_paginator", "can_paginate")):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attr(*args, **kwargs)

        return call


def _tags(deploy_env: Any, tenant: str) -> dict[str, dict[str, str]]:
    """resource -> its tags, for everything of ``tenant``'s in SageMaker and CloudWatch."""
    sm, cw = deploy_env.aws.sagemaker, deploy_env.aws.cloudwatch
    token = tenant_token(tenant)
    arns: dict[str, str] = {}
    for page in sm.get_paginator("list_models").paginate():
        arns.update({f"model {x['ModelName']}": x["ModelArn"] for x in page["Models"]
                     if token in x["ModelName"]})
    for page in sm.get_paginator("list_endpoint_configs").paginate():
        arns.update({f"config {x['EndpointConfigName']}": x["EndpointConfigArn"]
                     for x in page["EndpointConfigs"] if token in x["EndpointConfigName"]})
    for x in sm.list_endpoints(NameContains=token)["Endpoints"]:
        arns[f"endpoint {x['EndpointName']}"] = x["EndpointArn"]
    out = {k: {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}
           for k, arn in arns.items()}
    for alarm in cw.describe_alarms()["MetricAlarms"]:
        if token in alarm["AlarmName"]:
            out[f"alarm {alarm['AlarmName']}"] = {
                t["Key"]: t["Value"] for t in cw.list_tags_for_resource(
                    ResourceARN=alarm["AlarmArn"])["Tags"]}
    return out


def test_a_deploy_tags_every_resource_it_makes_and_meters_its_instances_at_once(
        deploy_env, pyfunc_model):
    tenant = deploy_env.tenant(instances=4, instances_per_endpoint=3)
    svc = deploy_env.service()
    meters = m.Meters(deploy_env.registry.engine)
    m5, c5 = (m.MeterKey(m.ENDPOINT_INSTANCES, kind) for kind in ("ml.m5.large", "ml.c5.large"))

    svc.create(tenant, "audit", pyfunc_model, config={"instance_count": "2",
                                                      "max_instances": "3"})
    svc.wait_for_jobs(30)
    tags = _tags(deploy_env, tenant)
    kinds = sorted(k.split()[0] for k in tags)
    assert kinds == ["alarm"] * 5 + ["config", "endpoint", "model"], tags
    assert {k: t.get("mlt:tenant") for k, t in tags.items()} == {k: tenant for k in tags}
    assert meters.levels(tenant) == {m5: 2}  # observed when the create completed

    svc.update(tenant, "audit", config={"instance_type": "ml.c5.large", "instance_count": "1",
                                        "min_instances": "1", "max_instances": "1"})
    svc.wait_for_jobs(30)
    assert svc.get(tenant, "audit")["instance_type"] == "ml.c5.large"
    assert meters.levels(tenant) == {m5: 0, c5: 1}
    assert all(t.get("mlt:tenant") == tenant for t in _tags(deploy_env, tenant).values())

    # The sampler's counter: one DescribeEndpoint per endpoint per sample; the endpoint
    # config's instance type is read once and kept.
    counting = CountingSageMaker(deploy_env.aws.sagemaker)
    counter = EndpointInstances(SimpleNamespace(aws=SimpleNamespace(sagemaker=counting),
                                                owned_endpoints=svc.owned_endpoints))
    for _ in range(3):
        assert counter(tenant) == {"ml.c5.large": 1}
    assert counting.calls.count("describe_endpoint") == 3
    assert counting.calls.count("describe_endpoint_config") == 1
    [row] = [t for t in deploy_env.registry.list_tenants() if t.name == tenant]
    assert sample(deploy_env.registry, meters, datetime.now(UTC), svc.instances, [row]) == 1
    assert meters.levels(tenant)[c5] == 1

    svc.delete(tenant, "audit")
    assert {k: v for k, v in meters.levels(tenant).items()
            if k.meter == m.ENDPOINT_INSTANCES} == {m5: 0, c5: 0}
    assert svc.instances(tenant) == {}
    assert Names(tenant, "audit").endpoint not in str(_tags(deploy_env, tenant))


def test_the_sampler_counts_endpoints_only_where_the_platform_deploys(deploy_env):
    from mlflow_tenant_plugins.server import platform_endpoints

    svc = deploy_env.service()
    assert platform_endpoints(deploy_env.settings, lambda: svc)() is svc.instances
    assert platform_endpoints(Settings(), lambda: svc)() is None  # no execution role


def _sampled_since(registry: Any, tenant: str) -> datetime:
    """When the sampler last observed ``tenant``'s storage (it does so every run)."""
    from sqlalchemy import select

    with registry.engine.connect() as conn:
        since = conn.execute(select(m.MeterRow.since).where(
            m.MeterRow.tenant == tenant, m.MeterRow.meter == m.STORAGE)).scalar_one()
    return since.replace(tzinfo=UTC) if since.tzinfo is None else since


def _until(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def test_the_servers_sampler_meters_sagemaker_endpoints_and_fires_budget_alerts(
        sagemaker_moto, tmp_path):
    """``mlflow server``'s metering sampler, wired by ``create_app``: an endpoint that carries a
    tenant's tags is counted by type from SageMaker (nobody observed it at creation), and a
    tenant past its budget gets its two alerts, once each, on its topic."""
    from tests.fixtures.sagemaker import EXECUTION_ROLE_TEMPLATE
    from tests.fixtures.servers import start_mlflow_server, stop_mlflow_server
    from tests.test_billing_budgets import Inbox

    config = tmp_path / "platform.toml"
    config.write_text("[prices]\napi_million_requests = 1000.0\n")
    server = start_mlflow_server(tmp_path / "server", extra_env={
        **sagemaker_moto.env(), "MLFLOW_TENANT_CONFIG": str(config),
        "MLFLOW_TENANT_AWS_ENDPOINT_URL": sagemaker_moto.url,
        "MLFLOW_TENANT_DEPLOY_EXECUTION_ROLE_ARN": EXECUTION_ROLE_TEMPLATE,
        "MLFLOW_TENANT_METERING_INTERVAL_SECONDS": "1"})
    try:
        inbox = Inbox(sagemaker_moto)
        tenant = f"s{secrets.token_hex(4)}"
        server.registry.create_tenant(tenant, alarm_topic_arn=inbox.topic,
                                      budget=Budget(20))
        names, sm = Names(tenant, "made"), sagemaker_moto.client("sagemaker")
        tags = [{"Key": "mlt:tenant", "Value": tenant}, {"Key": "mlt:deployment",
                                                          "Value": "made"}]
        sm.create_model(ModelName=names.model("1"), ExecutionRoleArn=EXECUTION_ROLE_TEMPLATE
                        .format(tenant=tenant), PrimaryContainer={"Image": "x"}, Tags=tags)
        sm.create_endpoint_config(EndpointConfigName=names.config("1"), ProductionVariants=[{
            "VariantName": "primary", "ModelName": names.model("1"),
            "InstanceType": "ml.c5.large", "InitialInstanceCount": 2}], Tags=tags)
        sm.create_endpoint(EndpointName=names.endpoint, EndpointConfigName=names.config("1"),
                           Tags=tags)
        meters = m.Meters(server.registry.engine)
        key = m.MeterKey(m.ENDPOINT_INSTANCES, "ml.c5.large")
        _until(lambda: meters.levels(tenant).get(key) == 2, 60, "the sampler's count")

        m.Meters(server.registry.engine).add_count(tenant, m.API_REQUESTS, 25_000,
                                                   datetime.now(UTC))  # 25.00 of 20.00
        seen: list[dict] = []
        _until(lambda: seen.extend(inbox.messages()) or len(seen) >= 2, 60, "two alerts")
        after = datetime.now(UTC) + timedelta(seconds=2.5)
        _until(lambda: _sampled_since(server.registry, tenant) > after, 60,
               "two more sampler runs")
        seen.extend(inbox.messages())  # they sent nothing more
        assert sorted(msg["Subject"].split(" reached")[0] for msg in seen) == [
            "Budget 100 %", "Budget 80 %"]
        sm.delete_endpoint(EndpointName=names.endpoint)
        _until(lambda: meters.levels(tenant).get(key) == 0, 60, "the endpoint's end")
    finally:
        stop_mlflow_server(server)

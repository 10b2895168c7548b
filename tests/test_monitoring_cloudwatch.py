"""Tenant usage in CloudWatch (moto's server): metrics and quota alarms a publish leaves,
alarms kept in step, ``mlflow-tenants usage --publish``; and the usage page's rendering.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from mlflow_tenant_plugins.config import Settings
from mlflow_tenant_plugins.monitoring.publisher import UsagePublisher, publish_line
from mlflow_tenant_plugins.monitoring.snapshot import snapshot
from mlflow_tenant_plugins.tenancy import Quotas, TenantRegistry
from tests.fixtures.aws import MotoServer


# -- publishing to CloudWatch (moto's server) ---------------------------------------------------
def _settings(moto: MotoServer, **kw) -> Settings:
    return replace(Settings(), aws_endpoint_url=moto.url, aws_region="us-east-1",
                   usage_metrics_namespace=f"MLT/Test-{secrets.token_hex(3)}", **kw)


@pytest.fixture
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    for name, value in moto_server.env().items():
        monkeypatch.setenv(name, value)
    return moto_server


def _tenants(registry: TenantRegistry, topic: str) -> tuple[str, str, str]:
    mark = secrets.token_hex(3)
    full, light, own = f"full-{mark}", f"light-{mark}", f"own-{mark}"
    registry.create_tenant(full, quotas=Quotas(storage_bytes=1000))
    registry.ledger.set_used(full, "storage_bytes", 950)
    registry.create_tenant(light, quotas=Quotas(storage_bytes=1000, endpoints=4))
    registry.ledger.set_used(light, "storage_bytes", 100)
    registry.ledger.set_used(light, "endpoints", 1)
    registry.create_tenant(own, alarm_topic_arn=topic)
    return full, light, own


def test_publish_leaves_tenant_metrics_and_quota_alarms_in_cloudwatch(
    registry, aws_env: MotoServer
) -> None:
    sns = aws_env.client("sns")
    platform_topic = sns.create_topic(Name=f"platform-{secrets.token_hex(3)}")["TopicArn"]
    tenant_topic = sns.create_topic(Name=f"tenant-{secrets.token_hex(3)}")["TopicArn"]
    full, light, own = _tenants(registry, tenant_topic)
    settings = _settings(aws_env, usage_alarm_topic_arn=platform_topic)
    publisher = UsagePublisher(registry, settings)

    report = publisher.publish()

    everyone = len(registry.list_tenants())
    assert report.tenants == everyone and report.data_points == 8 * everyone
    line = publish_line({"namespace": settings.usage_metrics_namespace, **report.to_dict()})
    assert line.startswith(f"published {8 * everyone} data points of {everyone} tenant(s)")
    cw = aws_env.client("cloudwatch")
    ns = settings.usage_metrics_namespace
    listed = {(m["MetricName"], m["Dimensions"][0]["Value"])
              for m in cw.list_metrics(Namespace=ns)["Metrics"]}
    for metric in ("StorageBytes", "StorageQuotaUtilization", "Endpoints", "Instances",
                   "QuotaUtilization"):
        assert {(metric, full), (metric, light), (metric, own)} <= listed

    def stat(metric: str, tenant: str) -> float:
        points = cw.get_metric_statistics(
            Namespace=ns, MetricName=metric, Dimensions=[{"Name": "Tenant", "Value": tenant}],
            StartTime=time.time() - 600, EndTime=time.time() + 60, Period=60,
            Statistics=["Maximum"])["Datapoints"]
        assert points, f"no {metric} for {tenant}"
        return max(p["Maximum"] for p in points)

    assert stat("StorageBytes", full) == 950
    assert stat("StorageQuotaUtilization", full) == pytest.approx(95.0)
    assert stat("Endpoints", light) == 1
    assert stat("QuotaUtilization", light) == pytest.approx(25.0)  # endpoints 1 of 4

    alarms = {a["AlarmName"]: a for a in cw.describe_alarms(
        AlarmNamePrefix=publisher.alarm_prefix)["MetricAlarms"]}
    assert set(alarms) == {publisher.alarm_name(t.name) for t in registry.list_tenants()}
    alarm = alarms[publisher.alarm_name(full)]
    assert alarm["MetricName"] == "QuotaUtilization" and alarm["Namespace"] == ns
    assert alarm["Threshold"] == 90.0
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["Dimensions"] == [{"Name": "Tenant", "Value": full}]
    assert alarm["AlarmActions"] == [platform_topic]
    assert alarms[publisher.alarm_name(own)]["AlarmActions"] == [tenant_topic]


def test_republish_rewrites_only_changed_alarms_and_deletes_those_of_deleted_tenants(
    registry, aws_env: MotoServer
) -> None:
    full, light, own = _tenants(registry, "arn:aws:sns:us-east-1:123456789012:t")
    publisher = UsagePublisher(registry, _settings(aws_env, usage_alarm_threshold_percent=80))
    assert len(publisher.publish().alarms_written) == len(registry.list_tenants())

    registry.delete_tenant(own, force=True)
    again = publisher.publish()

    assert again.alarms_written == []
    assert again.alarms_deleted == [publisher.alarm_name(own)]
    left = {a["AlarmName"]: a for a in aws_env.client("cloudwatch").describe_alarms(
        AlarmNamePrefix=publisher.alarm_prefix)["MetricAlarms"]}
    assert set(left) == {publisher.alarm_name(t.name) for t in registry.list_tenants()}
    assert {publisher.alarm_name(full), publisher.alarm_name(light)} <= set(left)
    assert {a["Threshold"] for a in left.values()} == {80.0}


def test_snapshot_reads_every_tenant_in_one_query(registry) -> None:
    full, light, _own = _tenants(registry, "arn:aws:sns:us-east-1:123456789012:t")
    by_name = {u.tenant: u for u in snapshot(registry)}
    assert by_name[full].used["storage_bytes"] == 950
    assert by_name[full].utilization("storage_bytes") == pytest.approx(0.95)
    assert by_name[light].max_utilization == pytest.approx(0.25)
    assert [u.tenant for u in snapshot(registry, [light])] == [light]


def test_usage_page_renders_bars_against_quotas_without_aws_when_no_endpoints(registry) -> None:
    from flask import Flask

    from mlflow_tenant_plugins.monitoring import page

    full, _light, _own = _tenants(registry, "arn:aws:sns:us-east-1:123456789012:t")
    with Flask(__name__).app_context():
        html = page.render(snapshot(registry, [full]), 90.0)
    assert f'data-tenant="{full}"' in html
    assert "950 B of 1000 B (95%)" in html and 'class="fill over"' in html
    assert "no endpoints" in html
    assert "<script" not in html


def test_cli_usage_publish_puts_the_usage_into_cloudwatch_once(
    registry: TenantRegistry, moto_server: MotoServer
) -> None:
    db = str(registry.engine.url)
    full, light, own = _tenants(registry, "arn:aws:sns:us-east-1:123456789012:t")
    everyone = {t.name for t in registry.list_tenants()}
    namespace = f"MLT/Cli-{secrets.token_hex(3)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(moto_server.env(), MLFLOW_TENANT_AWS_ENDPOINT_URL=moto_server.url,
               MLFLOW_TENANT_USAGE_METRICS_NAMESPACE=namespace)
    script = shutil.which("mlflow-tenants", path=str(Path(sys.executable).parent))
    assert script, "the package's console script is installed next to the interpreter"
    done = subprocess.run([script, "--db", db, "usage", "--publish", "--json"], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["published"]["namespace"] == namespace
    assert out["published"]["tenants"] == len(everyone)
    assert out["published"]["data_points"] == 8 * len(everyone)
    assert {r["tenant"] for r in out["usage"]} == everyone >= {full, light, own}
    metrics = moto_server.client("cloudwatch").list_metrics(
        Namespace=namespace, MetricName="StorageBytes")["Metrics"]
    assert {m["Dimensions"][0]["Value"] for m in metrics} == everyone

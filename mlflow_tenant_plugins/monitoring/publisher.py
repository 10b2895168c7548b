"""Tenant usage to CloudWatch: metrics with a ``Tenant`` dimension and one alarm per tenant.

Every publish puts, per tenant, ``StorageBytes``, ``StorageQuotaBytes``,
``StorageQuotaUtilization``, ``Endpoints``, ``EndpointQuotaUtilization``, ``Instances``,
``InstanceQuotaUtilization`` and ``QuotaUtilization`` (the highest of the three
utilisations, in percent), and keeps one alarm per tenant on ``QuotaUtilization`` at the
configured threshold, its action the tenant's SNS topic or else the platform's. Alarms are
written only when missing or changed, and those of tenants that no longer exist are deleted,
so a publish costs a few calls when nothing changed.

The server publishes periodically when ``usage_publish_interval_seconds`` is set, from a
daemon thread in every worker; a lease in the database lets one of them through at a time.
``mlflow-tenants usage --publish`` publishes once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mlflow_tenant_plugins.config import Settings
from mlflow_tenant_plugins.monitoring.lease import Lease, Periodic
from mlflow_tenant_plugins.monitoring.snapshot import TenantUsage, snapshot
from mlflow_tenant_plugins.tenancy import TenantRegistry
from mlflow_tenant_plugins.tenancy.models import utcnow

_logger = logging.getLogger(__name__)
LEASE_KEY = "usage-publisher"
ALARM_METRIC = "QuotaUtilization"
TAG_TENANT = "mlt:tenant"
_BATCH = 150  # metric data per PutMetricData call (AWS allows 1000 and 1 MB)


def cloudwatch_client(settings: Settings) -> Any:
    import boto3
    from botocore.config import Config

    kwargs: dict[str, Any] = {
        "region_name": settings.aws_region or None,
        "config": Config(retries={"max_attempts": 4, "mode": "standard"}),
    }
    if settings.aws_endpoint_url:
        kwargs["endpoint_url"] = settings.aws_endpoint_url
    return boto3.client("cloudwatch", **kwargs)


def metric_data(u: TenantUsage, when: datetime) -> list[dict[str, Any]]:
    dims = [{"Name": "Tenant", "Value": u.tenant}]

    def point(name: str, value: float, unit: str) -> dict[str, Any]:
        return {"MetricName": name, "Dimensions": dims, "Timestamp": when,
                "Value": float(value), "Unit": unit}

    return [
        point("StorageBytes", u.used["storage_bytes"], "Bytes"),
        point("StorageQuotaBytes", u.limits["storage_bytes"], "Bytes"),
        point("StorageQuotaUtilization", 100 * u.utilization("storage_bytes"), "Percent"),
        point("Endpoints", u.used["endpoints"], "Count"),
        point("EndpointQuotaUtilization", 100 * u.utilization("endpoints"), "Percent"),
        point("Instances", u.used["instances"], "Count"),
        point("InstanceQuotaUtilization", 100 * u.utilization("instances"), "Percent"),
        point(ALARM_METRIC, 100 * u.max_utilization, "Percent"),
    ]


@dataclass
class PublishReport:
    tenants: int = 0
    data_points: int = 0
    alarms_written: list[str] = field(default_factory=list)
    alarms_deleted: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"tenants": self.tenants, "data_points": self.data_points,
                "alarms_written": self.alarms_written, "alarms_deleted": self.alarms_deleted}


class UsagePublisher:
    def __init__(self, registry: TenantRegistry, settings: Settings,
                 cloudwatch: Any | None = None):
        self.registry = registry
        self.settings = settings
        self.cloudwatch = cloudwatch if cloudwatch is not None else cloudwatch_client(settings)
        self.namespace = settings.usage_metrics_namespace
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.namespace).strip("-") or "mlflow-tenants"
        self.alarm_prefix = f"{safe}-quota-utilization-"

    def alarm_name(self, tenant: str) -> str:
        return self.alarm_prefix + tenant

    @property
    def period(self) -> int:
        """Alarm period: a whole number of minutes covering at least one publish."""
        interval = self.settings.usage_publish_interval_seconds or 300.0
        return max(60, -(-int(interval) // 60) * 60)

    def publish(self, tenants: list[str] | None = None) -> PublishReport:
        """Put every tenant's metrics (or ``tenants``'), then make the alarms match."""
        usages = snapshot(self.registry, tenants)
        when = utcnow()
        points = [p for u in usages for p in metric_data(u, when)]
        for i in range(0, len(points), _BATCH):
            self.cloudwatch.put_metric_data(Namespace=self.namespace,
                                            MetricData=points[i:i + _BATCH])
        report = PublishReport(tenants=len(usages), data_points=len(points))
        self._sync_alarms(usages, report, prune=tenants is None)
        return report

    def _desired_alarm(self, u: TenantUsage) -> dict[str, Any]:
        topic = u.alarm_topic_arn or self.settings.usage_alarm_topic_arn
        actions = [topic] if topic else []
        threshold = self.settings.usage_alarm_threshold_percent
        return {
            "AlarmName": self.alarm_name(u.tenant),
            "AlarmDescription": f"Tenant '{u.tenant}' uses {threshold:g}% or more of one of its "
                                "quotas (storage, endpoints or instances)",
            "Namespace": self.namespace,
            "MetricName": ALARM_METRIC,
            "Dimensions": [{"Name": "Tenant", "Value": u.tenant}],
            "Statistic": "Maximum",
            "Period": self.period,
            "EvaluationPeriods": 1,
            "Threshold": float(threshold),
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "missing",
            "ActionsEnabled": bool(actions),
            "AlarmActions": actions,
        }

    @staticmethod
    def _differs(desired: dict[str, Any], existing: dict[str, Any] | None) -> bool:
        if existing is None:
            return True
        keys = ("Namespace", "MetricName", "Statistic", "Period", "EvaluationPeriods",
                "Threshold", "ComparisonOperator", "AlarmActions", "ActionsEnabled")
        return any(desired[k] != existing.get(k) for k in keys) or (
            desired["Dimensions"] != existing.get("Dimensions"))

    def existing_alarms(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        paginator = self.cloudwatch.get_paginator("describe_alarms")
        for page in paginator.paginate(AlarmNamePrefix=self.alarm_prefix,
                                       AlarmTypes=["MetricAlarm"]):
            found.update({a["AlarmName"]: a for a in page.get("MetricAlarms", [])})
        return found

    def _sync_alarms(self, usages: list[TenantUsage], report: PublishReport,
                     prune: bool) -> None:
        existing = self.existing_alarms()
        for u in usages:
            desired = self._desired_alarm(u)
            if self._differs(desired, existing.get(desired["AlarmName"])):
                self.cloudwatch.put_metric_alarm(
                    **desired, Tags=[{"Key": TAG_TENANT, "Value": u.tenant}])
                report.alarms_written.append(desired["AlarmName"])
        if prune:
            wanted = {self.alarm_name(u.tenant) for u in usages}
            stale = sorted(set(existing) - wanted)
            for i in range(0, len(stale), 100):
                self.cloudwatch.delete_alarms(AlarmNames=stale[i:i + 100])
            report.alarms_deleted = stale


class PeriodicPublisher(Periodic):
    """Publishes every ``interval`` seconds while this contender holds the lease (see
    :class:`~.lease.Periodic` for the retries)."""

    def __init__(self, publisher: UsagePublisher, lease: Lease, interval: float):
        super().__init__(self._publish, lease, interval, name="mlt-usage-publisher")
        self.publisher = publisher
        self.published = 0

    def _publish(self) -> None:
        report = self.publisher.publish()
        self.published += 1
        _logger.info("published usage of %d tenants to CloudWatch (%d data points)",
                     report.tenants, report.data_points)


def lease_seconds(interval: float) -> float:
    """Long enough to outlive a slow publish; short enough that a dead holder's turn passes
    to another contender within a few intervals."""
    return max(3 * interval, 30.0)


def start_periodic(registry: TenantRegistry, settings: Settings) -> PeriodicPublisher | None:
    """Start the publisher thread if ``usage_publish_interval_seconds`` is set."""
    interval = settings.usage_publish_interval_seconds
    if interval <= 0:
        return None
    lease = Lease(registry.engine, LEASE_KEY, lease_seconds(interval))
    try:
        publisher = UsagePublisher(registry, settings)
    except Exception:  # e.g. no region configured: log it, keep serving
        _logger.exception("cannot publish tenant usage to CloudWatch")
        return None
    return PeriodicPublisher(publisher, lease, interval).start()


def publish_once(registry: TenantRegistry, settings: Settings,
                 tenant: str | None = None) -> dict[str, Any]:
    """One publish for ``mlflow-tenants usage --publish`` (no lease: an admin's explicit
    publish may overlap the server's; a second sample in the same minute is harmless)."""
    publisher = UsagePublisher(registry, settings)
    report = publisher.publish([registry.get_tenant(tenant).name] if tenant else None)
    return {"namespace": publisher.namespace, **report.to_dict()}


def publish_line(done: dict[str, Any]) -> str:
    alarms = ""
    if done["alarms_written"] or done["alarms_deleted"]:
        alarms = (f"; alarms written {len(done['alarms_written'])}, "
                  f"deleted {len(done['alarms_deleted'])}")
    return (f"published {done['data_points']} data points of {done['tenants']} tenant(s) to "
            f"CloudWatch namespace {done['namespace']}{alarms}")

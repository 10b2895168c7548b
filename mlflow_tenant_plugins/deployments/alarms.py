"""CloudWatch alarms every endpoint gets: 5XX and 4XX errors, p99 model latency, CPU and memory.

Thresholds come from, in order of precedence, the deployment's config, the tenant's table in
the platform config (``[deploy_tenant_alarms.<tenant>]``) and the platform defaults. Actions go
to the tenant's SNS topic when it has one. Blue/green updates name these alarms in their
AutoRollbackConfiguration, so a firing alarm rolls the update back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.config import Settings
from mlflow_tenant_plugins.deployments.names import TAG_DEPLOYMENT, TAG_TENANT, VARIANT, Names
from mlflow_tenant_plugins.deployments.options import OPTIONS


@dataclass(frozen=True)
class AlarmKind:
    key: str  # config key holding the threshold
    suffix: str  # alarm name suffix
    namespace: str
    metric: str
    statistic: str  # a Statistic, or a percentile as ExtendedStatistic
    scale: float = 1.0  # threshold as configured -> the metric's unit

    def threshold(self, configured: float) -> float:
        return configured * self.scale


KINDS = (
    AlarmKind("alarm_5xx_errors", "5xx", "AWS/SageMaker", "Invocation5XXErrors", "Sum"),
    AlarmKind("alarm_4xx_errors", "4xx", "AWS/SageMaker", "Invocation4XXErrors", "Sum"),
    # ModelLatency is reported in microseconds.
    AlarmKind("alarm_latency_p99_ms", "latency-p99", "AWS/SageMaker", "ModelLatency", "p99",
              1000.0),
    AlarmKind("alarm_cpu_percent", "cpu", "/aws/sagemaker/Endpoints", "CPUUtilization",
              "Average"),
    AlarmKind("alarm_memory_percent", "memory", "/aws/sagemaker/Endpoints", "MemoryUtilization",
              "Average"),
)
THRESHOLD_KEYS = (*(k.key for k in KINDS), "alarm_period_seconds", "alarm_evaluation_periods")


def tenant_overrides(settings: Settings, tenant: str) -> dict[str, Any]:
    """The tenant's own thresholds from the config file, validated like deployment config."""
    table = (settings.extra.get("deploy_tenant_alarms") or {}).get(tenant) or {}
    if not isinstance(table, dict):
        raise MlflowException.invalid_parameter_value(
            f"deploy_tenant_alarms.{tenant} in the platform config must be a table"
        )
    out = {}
    for key, value in table.items():
        name = key if key.startswith("alarm_") else f"alarm_{key}"
        if name not in THRESHOLD_KEYS:
            raise MlflowException.invalid_parameter_value(
                f"deploy_tenant_alarms.{tenant}.{key} is not an alarm setting; valid: "
                f"{', '.join(k.removeprefix('alarm_') for k in THRESHOLD_KEYS)}"
            )
        out[name] = OPTIONS[name].parse(name, value)
    return out


def resolve_thresholds(settings: Settings, tenant: str, config: dict[str, Any],
                       previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Deployment config > previous deployment settings > tenant table > platform defaults."""
    values: dict[str, Any] = {k: getattr(settings, f"deploy_{k}") for k in THRESHOLD_KEYS}
    values["alarm_period_seconds"] = int(values["alarm_period_seconds"])
    values["alarm_evaluation_periods"] = int(values["alarm_evaluation_periods"])
    values.update(tenant_overrides(settings, tenant))
    values.update({k: v for k, v in (previous or {}).items() if k in THRESHOLD_KEYS})
    values.update({k: v for k, v in config.items() if k in THRESHOLD_KEYS})
    return values


def alarm_names(names: Names) -> list[str]:
    return [names.alarm(k.suffix) for k in KINDS]


def put_alarms(cloudwatch: Any, names: Names, thresholds: dict[str, Any],
               topic_arn: str | None, created: list[str]) -> None:
    """Create or overwrite the endpoint's alarms; appends each new name to ``created``."""
    actions = [topic_arn] if topic_arn else []
    for kind in KINDS:
        name = names.alarm(kind.suffix)
        args: dict[str, Any] = {
            "AlarmName": name,
            "AlarmDescription": (
                f"{kind.metric} of deployment '{names.deployment}' of tenant '{names.tenant}'"
            ),
            "Namespace": kind.namespace,
            "MetricName": kind.metric,
            "Dimensions": [
                {"Name": "EndpointName", "Value": names.endpoint},
                {"Name": "VariantName", "Value": VARIANT},
            ],
            "Period": int(thresholds["alarm_period_seconds"]),
            "EvaluationPeriods": int(thresholds["alarm_evaluation_periods"]),
            "Threshold": kind.threshold(float(thresholds[kind.key])),
            "ComparisonOperator": "GreaterThanOrEqualToThreshold"
            if kind.statistic == "Sum" else "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
            "ActionsEnabled": bool(actions),
            "AlarmActions": actions,
            "OKActions": actions,
            "Tags": [
                {"Key": TAG_TENANT, "Value": names.tenant},
                {"Key": TAG_DEPLOYMENT, "Value": names.deployment},
            ],
        }
        if kind.statistic.startswith("p"):
            args["ExtendedStatistic"] = kind.statistic
        else:
            args["Statistic"] = kind.statistic
        cloudwatch.put_metric_alarm(**args)
        if name not in created:
            created.append(name)


def delete_alarms(cloudwatch: Any, names: list[str]) -> None:
    for i in range(0, len(names), 100):
        if names[i : i + 100]:
            cloudwatch.delete_alarms(AlarmNames=names[i : i + 100])


def find_alarms(cloudwatch: Any, names: Names) -> list[str]:
    """Every alarm of this endpoint, ours or left by a crashed worker."""
    found: list[str] = []
    for page in cloudwatch.get_paginator("describe_alarms").paginate(
        AlarmNamePrefix=names.alarm_prefix, PaginationConfig={"MaxItems": 1000}
    ):
        found += [a["AlarmName"] for a in page.get("MetricAlarms", [])]
    return found


def describe(cloudwatch: Any, names: Names) -> list[dict[str, Any]]:
    wanted = alarm_names(names)
    found = {
        a["AlarmName"]: a
        for a in cloudwatch.describe_alarms(AlarmNames=wanted).get("MetricAlarms", [])
    }
    out = []
    for kind in KINDS:
        alarm = found.get(names.alarm(kind.suffix))
        if alarm is None:
            continue
        out.append({
            "name": alarm["AlarmName"],
            "metric": kind.metric,
            "statistic": kind.statistic,
            "threshold": alarm.get("Threshold"),
            "state": alarm.get("StateValue"),
            "actions": alarm.get("AlarmActions", []),
        })
    return out

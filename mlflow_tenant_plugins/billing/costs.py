"""AWS Cost Explorer's cost for a month, grouped by the ``mlt:tenant`` tag, beside the metered
statements so an operator sees any drift.

Every AWS resource the platform creates carries ``mlt:tenant`` (endpoints, models, endpoint
configs, alarms, scaling targets where taggable, training jobs); S3 objects are attributed by
prefix, not tag (Cost Explorer cannot split one bucket by prefix: use S3 Storage Lens or the
meters). The tag must be activated as a cost-allocation tag in the billing console (Billing →
Cost allocation tags) before Cost Explorer groups by it; costs before activation are untagged.
"""

from __future__ import annotations

from typing import Any

from mlflow_tenant_plugins.tenancy.meters import month_bounds

TAG = "mlt:tenant"
UNTAGGED = "(untagged)"


def ce_client(settings: Any) -> Any:
    import boto3

    kwargs: dict[str, Any] = {"region_name": "us-east-1"}  # Cost Explorer's one endpoint
    if settings.aws_endpoint_url:
        kwargs["endpoint_url"] = settings.aws_endpoint_url
    return boto3.client("ce", **kwargs)


def aws_costs(settings: Any, month: str, client: Any = None) -> dict[str, str]:
    """tenant -> "amount unit" of unblended cost in ``month`` (UTC), by the tenant tag."""
    start, end = month_bounds(month)
    client = client or ce_client(settings)
    kwargs: dict[str, Any] = {
        "TimePeriod": {"Start": start.date().isoformat(), "End": end.date().isoformat()},
        "Granularity": "MONTHLY", "Metrics": ["UnblendedCost"],
        "GroupBy": [{"Type": "TAG", "Key": TAG}],
    }
    totals: dict[str, tuple[float, str]] = {}
    while True:
        page = client.get_cost_and_usage(**kwargs)
        for result in page.get("ResultsByTime", []):
            for group in result.get("Groups", []):
                key = (group.get("Keys") or [""])[0]
                tenant = key.split("$", 1)[1] if "$" in key else key
                metric = group.get("Metrics", {}).get("UnblendedCost", {})
                amount, unit = float(metric.get("Amount", 0) or 0), metric.get("Unit", "USD")
                old = totals.get(tenant or UNTAGGED, (0.0, unit))[0]
                totals[tenant or UNTAGGED] = (old + amount, unit)
        token = page.get("NextPageToken")
        if not token:
            break
        kwargs["NextPageToken"] = token
    return {t: f"{a:.2f} {u}" for t, (a, u) in totals.items()}

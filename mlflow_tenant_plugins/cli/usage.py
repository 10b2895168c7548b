"""``mlflow-tenants usage`` (with reconciliation and publishing) and ``validate``."""

from __future__ import annotations

import click

from mlflow_tenant_plugins.cli.common import App, emit, fmt_amount, size, table, verb
from mlflow_tenant_plugins.cli.root import cli
from mlflow_tenant_plugins.tenancy.text import printable


# -- usage: read the ledger; reconciliation and publishing extend this verb -----------------
def storage_terms(quotas, used: int) -> dict:
    """How the tenant's storage is charged: its mode, the allowance included in overage mode
    and the bytes over it, which are billable (hard mode refuses instead, so nothing is)."""
    overage = quotas.storage_mode == "overage"
    allowance = quotas.storage_allowance_bytes
    return {"mode": quotas.storage_mode, "allowance": allowance if overage else None,
            "billable_excess": quotas.billable_bytes(used)}


def usage_report(registry, tenant: str | None) -> list[dict]:
    """Use against quota for one tenant or all of them, as plain data; storage also carries
    its charging terms (:func:`storage_terms`)."""
    tenants = [registry.get_tenant(tenant)] if tenant else registry.list_tenants()
    report = []
    for t in tenants:
        usage = {u.resource: {**u.to_dict(), "utilization": round(u.utilization, 4)}
                 for u in registry.ledger.for_tenant(t.name)}
        if "storage_bytes" in usage:
            usage["storage_bytes"].update(storage_terms(t.quotas,
                                                        usage["storage_bytes"]["used"]))
        report.append({"tenant": t.name, "status": t.status, "usage": usage})
    return report


def overage_lines(report: list[dict]) -> list[str]:
    """One line per tenant in overage mode (hard-mode tenants: the table says it all)."""
    lines = []
    for r in report:
        s = r["usage"].get("storage_bytes") or {}
        if s.get("mode") == "overage":
            lines.append(f"{r['tenant']} storage: overage mode, allowance "
                         f"{size(s['allowance'])}, used {size(s['used'])}, billable excess "
                         f"{size(s['billable_excess'])}, ceiling {size(s['limit'])}")
    return lines


def usage_lines(report: list[dict]) -> list[str]:
    rows = [(r["tenant"], resource, fmt_amount(resource, u["used"]),
             fmt_amount(resource, u["limit"]), f"{u['utilization']:.0%}")
            for r in report for resource, u in r["usage"].items()]
    if not rows:
        return ["no tenants"]
    return table(("TENANT", "RESOURCE", "USED", "LIMIT", "USE"), rows) + overage_lines(report)


def reconcile_storage(app: App, tenant: str | None, destination: str, dry_run: bool):
    """The artifact store's truth into the ledger (artifacts.reconcile does the listing)."""
    from mlflow_tenant_plugins.artifacts.reconcile import reconcile

    if tenant:
        app.registry.get_tenant(tenant)  # unknown tenant: one clear line
    return reconcile(app.registry, destination, settings=app.settings, dry_run=dry_run,
                     tenants=[tenant] if tenant else None)


def reconcile_lines(report) -> list[str]:
    verb_ = "would correct" if report.dry_run else "corrected"
    lines = [f"{t.tenant}: ledger {size(t.ledger_bytes)} -> S3 {size(t.s3_bytes)} "
             f"({t.objects} objects), {verb_ if t.status in ('corrected', 'drift') else t.status}"
             for t in report.tenants if t.status != "ok"]
    lines += [f"prefix {p} belongs to no tenant" for p in report.unknown_prefixes]
    return lines or [f"no drift in {len(report.tenants)} tenant(s)"]


def reconcile_deployments(app: App, tenant: str | None, dry_run: bool):
    """SageMaker's truth into the endpoint and instance ledger (deployments.reconcile)."""
    from mlflow_tenant_plugins.deployments.reconcile import reconcile
    from mlflow_tenant_plugins.deployments.service import DeploymentService

    if tenant:
        app.registry.get_tenant(tenant)  # unknown tenant: one clear line
    service = DeploymentService(app.registry, app.settings)
    return reconcile(service, [tenant] if tenant else None, dry_run=dry_run)


def deployment_lines(report, dry_run: bool) -> list[str]:
    verb_ = "would correct" if dry_run else "corrected"
    lines = [f"{t.tenant}: ledger {t.ledger} -> SageMaker {t.sagemaker}, "
             f"{verb_ if t.status in ('corrected', 'drift') else t.status}"
             for t in report if t.status != "ok"]
    return lines or [f"no deployment drift in {len(report)} tenant(s)"]


@verb(cli, "usage")
@click.argument("tenant", required=False)
@click.option("--publish", is_flag=True, help="Also publish the usage to CloudWatch once: "
              "metrics and quota alarms (settings usage_* and aws_*).")
@click.option("--reconcile", "destination", metavar="TENANT_S3_URI",
              help="First list each tenant's prefix under the server's --artifacts-destination "
              "(tenant-s3://BUCKET/PREFIX), page by page, and correct the storage ledger's "
              "drift, reporting what changed.")
@click.option("--reconcile-deployments", "reconcile_deployments_", is_flag=True,
              help="First count each tenant's SageMaker endpoints and the instances they "
              "reserve (with your own AWS credentials) and correct the endpoint and instance "
              "ledger's drift, e.g. after a worker died mid-deploy; tenants with a deploy in "
              "flight are left alone.")
@click.option("--dry-run", is_flag=True,
              help="With --reconcile or --reconcile-deployments: report drift, change nothing.")
def usage(app: App, tenant: str | None, publish: bool, destination: str | None,
          reconcile_deployments_: bool, dry_run: bool, as_json: bool) -> None:
    """Show each tenant's use against its quotas (of TENANT, or of every tenant)."""
    reconciled: dict = {}
    if destination:
        storage = reconcile_storage(app, tenant, destination, dry_run)
        reconciled["reconcile"] = storage.to_dict()
        if not as_json:
            for line in reconcile_lines(storage):
                click.echo(printable(line))
    if reconcile_deployments_:
        report = reconcile_deployments(app, tenant, dry_run)
        reconciled["reconcile_deployments"] = [t.to_dict() for t in report]
        if not as_json:
            for line in deployment_lines(report, dry_run):
                click.echo(printable(line))
    if dry_run and not reconciled:
        raise click.UsageError("--dry-run goes with --reconcile or --reconcile-deployments")
    if reconciled and as_json:
        emit(True, {**reconciled, "usage": usage_report(app.registry, tenant)}, [])
        return
    report = usage_report(app.registry, tenant)
    if publish:
        from mlflow_tenant_plugins.monitoring.publisher import publish_line, publish_once

        done = publish_once(app.registry, app.settings, tenant)
        data = {"usage": report[0] if tenant else report, "published": done}
        emit(as_json, data, [*usage_lines(report), publish_line(done)])
        return
    emit(as_json, report[0] if tenant else report, usage_lines(report))


@verb(cli, "validate")
@click.argument("data")
@click.option("--rules", required=True, metavar="RULES", help="The tenant's rules file (YAML).")
@click.option("--run-id", metavar="ID", help="Log the dataset, verdict and report to this run "
              "(server from MLFLOW_TRACKING_URI, key from MLFLOW_TRACKING_TOKEN).")
def validate_data(app: App, data: str, rules: str, run_id: str | None, as_json: bool) -> int:
    """Check DATA (CSV or Parquet) against RULES; exit 1 when it fails them."""
    from mlflow_tenant_plugins.validation.command import run

    return run(data, rules, run_id=run_id, as_json=as_json, tracking_uri=app.tracking_uri)

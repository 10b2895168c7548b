"""``mlflow-tenants tenant``: create, inspect, change, suspend and delete tenants, with the
quota options they share."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import click

from mlflow_tenant_plugins.cli.common import (
    COUNT,
    SIZE,
    App,
    emit,
    size,
    table,
    usage_summary,
    verb,
    when,
)
from mlflow_tenant_plugins.cli.root import cli


def tenant_lines(t) -> list[str]:
    q = t.quotas
    return [f"{label + ':':<16}{value}" for label, value in (
        ("tenant", f"{t.name} ({t.display_name})"),
        ("status", t.status),
        ("storage", f"{size(q.storage_bytes)} ({q.storage_bytes} bytes)"),
        ("endpoints", q.endpoints),
        ("instances", f"{q.instances} in all, {q.instances_per_endpoint} per endpoint"),
        ("instance types", ", ".join(q.instance_types) or "(none)"),
        ("alarm topic", t.alarm_topic_arn or "(none)"),
        ("validation", "required" if t.require_validation else "not required"),
        ("budget", "(none)" if t.budget_amount is None
         else f"{t.budget_amount:.2f} a month, on reaching it: {t.on_budget}"),
        ("created", f"{when(t.created_at)}; updated {when(t.updated_at)}"),
    )]


def quota_options(f: Callable) -> Callable:
    options = [
        click.option("--display-name", help="Human-readable name."),
        click.option("--storage", type=SIZE, help="Artifact storage quota: bytes or e.g. 10GB "
                     "(binary units: 10GB = 10 GiB)."),
        click.option("--endpoints", type=COUNT, help="Most SageMaker endpoints at once."),
        click.option("--instances", type=COUNT, help="Most instances over all endpoints."),
        click.option("--instances-per-endpoint", type=COUNT, help="Most instances per endpoint."),
        click.option("--instance-types", metavar="LIST",
                     help="Allowed instance types, comma-separated, e.g. ml.m5.large,ml.c5.large."),
        click.option("--storage-mode", type=click.Choice(["hard", "overage"]),
                     help="hard: refuse writes past --storage. overage: writes past "
                     "--storage-allowance succeed and the excess is billable, up to --storage."),
        click.option("--storage-allowance", type=SIZE,
                     help="Storage included in overage mode (e.g. 10GB)."),
        click.option("--jobs", type=COUNT, help="Most jobs running at once."),
        click.option("--training-instances", type=COUNT,
                     help="Most training instances over all running jobs."),
        click.option("--training-instance-types", metavar="LIST",
                     help="Instance types jobs may run on, comma-separated."),
        click.option("--max-job-runtime", "max_job_runtime_seconds", type=COUNT,
                     help="Longest a job may run, in seconds."),
        click.option("--training-instance-hours", type=COUNT,
                     help="Training instance-hours per calendar month (UTC)."),
        click.option("--alarm-topic-arn", metavar="ARN",
                     help="SNS topic for endpoint alarms ('' to clear on update)."),
        click.option("--require-validation/--no-require-validation", default=None,
                     help="Whether a model must pass validation before it is deployed."),
        click.option("--budget", metavar="AMOUNT",
                     help="Monthly budget in the price table's currency: alerts at 80 % and "
                     "100 % ('' or 'none' clears it on update)."),
        click.option("--on-budget", type=click.Choice(["notify", "refuse-new"]),
                     help="At 100 % of the budget: notify only, or also refuse new "
                     "deployments and jobs (running ones continue)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _amount(text: str) -> float | None:
    """``--budget``: an amount >= 0, or '' / 'none' for no budget."""
    if text.strip().lower() in ("", "none"):
        return None
    try:
        amount = float(text)
    except ValueError:
        amount = -1.0
    if not math.isfinite(amount) or amount < 0:
        raise click.BadParameter(f"expected an amount >= 0 (e.g. 250 or 99.50), or '' or "
                                 f"'none' to clear, got {text!r}", param_hint="'--budget'")
    return amount


def with_budget(tenant, budget: str | None, on_budget: str | None):
    """The tenant's budget with ``--budget`` / ``--on-budget`` applied (``tenant`` None: a
    new tenant), or None when neither was given."""
    from mlflow_tenant_plugins.tenancy.entities import Budget

    if budget is None and on_budget is None:
        return None
    amount = _amount(budget) if budget is not None else (
        tenant.budget_amount if tenant else None)
    return Budget(amount, on_budget or (tenant.on_budget if tenant else "notify"))


def _types(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(t.strip() for t in value.split(",") if t.strip())


def with_quotas(base, storage, endpoints, instances, instances_per_endpoint, instance_types,
                jobs=None, training_instances=None, training_instance_types=None,
                max_job_runtime_seconds=None, training_instance_hours=None,
                storage_mode=None, storage_allowance=None):
    """``base`` with the given quota options applied, or None when none was given."""
    changes = {
        "storage_bytes": storage, "endpoints": endpoints, "instances": instances,
        "instances_per_endpoint": instances_per_endpoint,
        "instance_types": _types(instance_types),
        "jobs": jobs, "training_instances": training_instances,
        "training_instance_types": _types(training_instance_types),
        "max_job_runtime_seconds": max_job_runtime_seconds,
        "training_instance_hours": training_instance_hours,
        "storage_mode": storage_mode, "storage_allowance_bytes": storage_allowance,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    return replace(base, **changes) if changes else None


@cli.group()
def tenant() -> None:
    """Create, inspect, change, suspend and delete tenants (= MLflow workspaces)."""


@verb(tenant, "create")
@click.argument("name")
@quota_options
def tenant_create(app: App, name: str, display_name, alarm_topic_arn, require_validation,
                  budget, on_budget, as_json: bool, **quota) -> None:
    """Create tenant NAME, its MLflow workspace and its workspace roles."""
    from mlflow_tenant_plugins.tenancy import Quotas

    t = app.registry.create_tenant(
        name, display_name=display_name, quotas=with_quotas(Quotas(), **quota) or Quotas(),
        alarm_topic_arn=alarm_topic_arn or None, require_validation=bool(require_validation),
        budget=with_budget(None, budget, on_budget),
    )
    emit(as_json, t.to_dict(), [f"created tenant {t.name}", *tenant_lines(t)])


@verb(tenant, "list")
def tenant_list(app: App, as_json: bool) -> None:
    """List every tenant with its quotas."""
    tenants = app.registry.list_tenants()
    rows = [(t.name, t.status, size(t.quotas.storage_bytes), t.quotas.endpoints,
             t.quotas.instances, t.display_name) for t in tenants]
    lines = table(("NAME", "STATUS", "STORAGE", "ENDPOINTS", "INSTANCES", "DISPLAY NAME"), rows)
    emit(as_json, [t.to_dict() for t in tenants], lines if tenants else ["no tenants"])


@verb(tenant, "show")
@click.argument("name")
def tenant_show(app: App, name: str, as_json: bool) -> None:
    """Show tenant NAME, its quotas and its use."""
    t = app.registry.get_tenant(name)
    usage = app.registry.ledger.for_tenant(name)
    data = {**t.to_dict(), "usage": {u.resource: u.to_dict() for u in usage}}
    emit(as_json, data, [*tenant_lines(t), f"{'in use:':<16}{usage_summary(usage)}"])


@verb(tenant, "update")
@click.argument("name")
@quota_options
def tenant_update(app: App, name: str, display_name, alarm_topic_arn, require_validation,
                  budget, on_budget, as_json: bool, **quota) -> None:
    """Change the display name, quotas or settings of tenant NAME."""
    if all(v is None for v in (display_name, alarm_topic_arn, require_validation, budget,
                               on_budget, *quota.values())):
        raise click.UsageError("nothing to update: give at least one option")
    registry = app.registry
    current = registry.get_tenant(name)
    quotas = with_quotas(current.quotas, **quota)
    t = registry.update_tenant(name, display_name=display_name, quotas=quotas,
                               alarm_topic_arn=alarm_topic_arn,
                               require_validation=require_validation,
                               budget=with_budget(current, budget, on_budget))
    emit(as_json, t.to_dict(), [f"updated tenant {t.name}", *tenant_lines(t)])


def _status_command(verb_name: str, status: str, doc: str) -> None:
    @verb(tenant, verb_name, help=doc)
    @click.argument("name")
    def command(app: App, name: str, as_json: bool) -> None:
        t = app.registry.set_status(name, status)
        emit(as_json, t.to_dict(), [f"tenant {t.name} is {t.status}"])


_status_command("suspend", "suspended", "Suspend tenant NAME: its keys stop working at once.")
_status_command("resume", "active", "Resume suspended tenant NAME.")


@verb(tenant, "delete")
@click.argument("name")
@click.option("--force", is_flag=True,
              help="Delete even while the tenant holds resources or MLflow objects.")
def tenant_delete(app: App, name: str, force: bool, as_json: bool) -> None:
    """Delete tenant NAME with its workspace, keys and bindings."""
    app.registry.delete_tenant(name, force=force)
    emit(as_json, {"name": name, "deleted": True}, [f"deleted tenant {name}"])

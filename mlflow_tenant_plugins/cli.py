"""The admin CLI ``mlflow-tenants``: tenants, quotas, keys, members and usage.

Every verb takes ``--json``. Bad input ends with one line ``error: …`` on stderr and exit
status 2, never a traceback, so a script can tell a refused request (2) from a broken platform
(1). MLflow is imported only once a verb needs the registry: it takes seconds to import.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import click

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1
DEBUG_ENV = "MLFLOW_TENANTS_DEBUG"
# MLflow error codes that mean "the request was wrong", as opposed to "the platform broke".
_BAD_INPUT_CODES = {
    "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST",
    "INVALID_STATE", "RESOURCE_EXHAUSTED", "BAD_REQUEST", "PERMISSION_DENIED",
}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class App:
    """What every verb shares: where the registry lives, opened on first use."""

    def __init__(self, db: str | None, tracking_uri: str | None):
        self.db = db
        self.tracking_uri = tracking_uri

    @cached_property
    def registry(self):
        from mlflow_tenant_plugins.tenancy import TenantRegistry

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        if self.db:  # an explicit --db wins over the configuration as a whole
            return TenantRegistry(self.db, self.tracking_uri or self.db)
        from mlflow_tenant_plugins.config import load_settings

        settings = load_settings()
        return TenantRegistry(
            settings.database_uri, self.tracking_uri or settings.effective_tracking_uri
        )


# -- parameter types: bad values become one-line usage errors ------------------------------
class _MlflowParsed(click.ParamType):
    """Runs one of the registry's own parsers, so the CLI accepts exactly what it accepts."""

    def __init__(self, name: str, parse: Callable[[str], Any]):
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        from mlflow.exceptions import MlflowException

        try:
            return self._parse(value)
        except MlflowException as exc:
            self.fail(exc.message, param, ctx)


def _size(value: str) -> int:
    from mlflow_tenant_plugins.tenancy.quotas import parse_size

    return parse_size(value)


def _count(value: str) -> int:
    from mlflow_tenant_plugins.tenancy.quotas import parse_count

    return parse_count(value, "count")


class _Duration(click.ParamType):
    """``30d``, ``12h``, ``2w``…: checked without importing MLflow, so a typo fails fast."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, timedelta):
            return value
        match = _DURATION.match(str(value))
        if not match or int(match.group(1)) == 0:
            self.fail(f"invalid duration {value!r}: use a positive whole number with a unit "
                      "s, m, h, d or w, e.g. 30d or 12h", param, ctx)
        return timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})


SIZE = _MlflowParsed("size", _size)
COUNT = _MlflowParsed("count", _count)
DURATION = _Duration()
ROLE_CHOICES = ("viewer", "editor", "deployer", "admin")  # checked against Role in tests


# -- output -----------------------------------------------------------------------------------
def json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(f)


def verb(group: click.Group, name: str, **kwargs: Any) -> Callable:
    """A command of ``group`` that takes ``--json`` and is handed the shared :class:`App`."""
    return lambda f: group.command(name, **kwargs)(json_option(click.pass_obj(f)))


def emit(as_json: bool, data: Any, lines: Iterable[str]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        for line in lines:
            click.echo(line)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(c) for c in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]


def when(t: datetime | None) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if t else "never"


def size(n: int) -> str:
    from mlflow_tenant_plugins.tenancy.quotas import format_size

    return format_size(n)


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
        ("created", f"{when(t.created_at)}; updated {when(t.updated_at)}"),
    )]


def key_status(k, tenant_status: dict[str, str]) -> str:
    if k.revoked_at:
        return "revoked"
    if k.expires_at and k.expires_at <= datetime.now(UTC):
        return "expired"
    if k.tenant and tenant_status.get(k.tenant) != "active":
        return "suspended"
    return "active"


# -- the command tree ---------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", metavar="URI", help="Registry database (default: from the configuration, "
              "MLFLOW_TENANT_CONFIG / MLFLOW_TENANT_DATABASE_URI).")
@click.option("--tracking-uri", metavar="URI",
              help="Tracking store holding MLflow's workspaces (default: the registry database).")
@click.pass_context
def cli(ctx: click.Context, db: str | None, tracking_uri: str | None) -> None:
    """Administer the tenants of a multi-tenant MLflow platform."""
    ctx.obj = App(db, tracking_uri)


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
        click.option("--alarm-topic-arn", metavar="ARN",
                     help="SNS topic for endpoint alarms ('' to clear on update)."),
        click.option("--require-validation/--no-require-validation", default=None,
                     help="Whether a model must pass validation before it is deployed."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def with_quotas(base, storage, endpoints, instances, instances_per_endpoint, instance_types):
    """``base`` with the given quota options applied, or None when none was given."""
    changes = {
        "storage_bytes": storage, "endpoints": endpoints, "instances": instances,
        "instances_per_endpoint": instances_per_endpoint,
        "instance_types": None if instance_types is None
        else tuple(t.strip() for t in instance_types.split(",") if t.strip()),
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
                  as_json: bool, **quota) -> None:
    """Create tenant NAME, its MLflow workspace and its workspace roles."""
    from mlflow_tenant_plugins.tenancy import Quotas

    t = app.registry.create_tenant(
        name, display_name=display_name, quotas=with_quotas(Quotas(), **quota) or Quotas(),
        alarm_topic_arn=alarm_topic_arn or None, require_validation=bool(require_validation),
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
                  as_json: bool, **quota) -> None:
    """Change the display name, quotas or settings of tenant NAME."""
    if all(v is None for v in (display_name, alarm_topic_arn, require_validation,
                               *quota.values())):
        raise click.UsageError("nothing to update: give at least one option")
    registry = app.registry
    quotas = with_quotas(registry.get_tenant(name).quotas, **quota)
    t = registry.update_tenant(name, display_name=display_name, quotas=quotas,
                               alarm_topic_arn=alarm_topic_arn,
                               require_validation=require_validation)
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


@cli.group()
def key() -> None:
    """Create, list and revoke API keys."""


@verb(key, "create")
@click.argument("tenant", required=False)
@click.option("--role", type=click.Choice(ROLE_CHOICES, case_sensitive=False),
              help="The key's role in the tenant.")
@click.option("--platform-admin", is_flag=True, help="A key for the whole platform (no tenant).")
@click.option("--principal", metavar="NAME",
              help="Who the key speaks for (default: a service principal of its own).")
@click.option("--description", default="", help="What the key is for.")
@click.option("--expires-in", type=DURATION, metavar="DURATION",
              help="Lifetime such as 30d, 12h, 2w (default: no expiry).")
def key_create(app: App, tenant: str | None, role: str | None, platform_admin: bool,
               principal: str | None, description: str, expires_in: timedelta | None,
               as_json: bool) -> None:
    """Create a key for TENANT with --role, or a --platform-admin key.

    The key is printed once, alone on the last line, and never stored."""
    if platform_admin:
        if tenant or role:
            raise click.UsageError("a --platform-admin key takes neither TENANT nor --role")
        record, secret = app.registry.create_key(
            None, "admin", principal=principal, description=description, expires_in=expires_in)
    else:
        if not tenant or not role:
            raise click.UsageError("give TENANT and --role ROLE, or --platform-admin")
        record, secret = app.registry.create_key(
            tenant, role, principal=principal, description=description, expires_in=expires_in)
    scope = f"tenant {record.tenant}, role {record.role}" if record.tenant else "platform admin"
    emit(as_json, {**record.to_dict(), "key": secret}, [
        f"created key {record.key_id} for {record.principal} ({scope}), "
        f"expires {when(record.expires_at)}",
        "store it now: it is not shown again",
        secret,
    ])


@verb(key, "list")
@click.argument("tenant", required=False)
def key_list(app: App, tenant: str | None, as_json: bool) -> None:
    """List keys (never the keys themselves), of TENANT or of every tenant."""
    registry = app.registry
    keys = registry.list_keys(tenant)
    statuses = {t.name: t.status for t in registry.list_tenants()}
    data = [{**k.to_dict(), "status": key_status(k, statuses)} for k in keys]
    rows = [(k.key_id, k.tenant or "(platform)", k.principal, k.role, d["status"],
             when(k.expires_at), when(k.last_used_at), k.description)
            for k, d in zip(keys, data, strict=True)]
    lines = table(("KEY ID", "TENANT", "PRINCIPAL", "ROLE", "STATUS", "EXPIRES", "LAST USED",
                   "DESCRIPTION"), rows)
    emit(as_json, data, lines if keys else ["no keys"])


@verb(key, "revoke")
@click.argument("key_id")
def key_revoke(app: App, key_id: str, as_json: bool) -> None:
    """Revoke key KEY_ID (a leaked key itself is accepted too); it stops working at once."""
    from mlflow_tenant_plugins.tenancy.keys import key_id_of

    record = app.registry.revoke_key(key_id_of(key_id) or key_id)
    emit(as_json, record.to_dict(), [f"revoked key {record.key_id} of {record.principal} "
                                     f"at {when(record.revoked_at)}"])


@cli.group()
def member() -> None:
    """Bind principals (users, roles, identities) to tenant roles."""


@verb(member, "list")
@click.argument("tenant")
def member_list(app: App, tenant: str, as_json: bool) -> None:
    """List the principals bound to TENANT and their roles."""
    members = app.registry.members(tenant)
    lines = table(("PRINCIPAL", "ROLE", "KIND"), [(m.principal, m.role, m.kind) for m in members])
    emit(as_json, [m.to_dict() for m in members], lines if members else ["no members"])


@verb(member, "bind")
@click.argument("tenant")
@click.argument("principal")
@click.option("--role", required=True, type=click.Choice(ROLE_CHOICES, case_sensitive=False))
def member_bind(app: App, tenant: str, principal: str, role: str, as_json: bool) -> None:
    """Give PRINCIPAL the role --role in TENANT (replacing any role it had there)."""
    m = app.registry.bind(principal, tenant, role)
    emit(as_json, m.to_dict(), [f"{m.principal} is {m.role} in {m.tenant}"])


@verb(member, "unbind")
@click.argument("tenant")
@click.argument("principal")
def member_unbind(app: App, tenant: str, principal: str, as_json: bool) -> None:
    """Remove PRINCIPAL's role in TENANT."""
    registry = app.registry
    if principal not in {m.principal for m in registry.members(tenant)}:
        raise click.UsageError(f"'{principal}' is not a member of tenant '{tenant}'")
    registry.unbind(principal, tenant)
    emit(as_json, {"principal": principal, "tenant": tenant, "unbound": True},
         [f"{principal} is no longer a member of {tenant}"])


# -- AWS IAM identities: bindings the server's 'iam' auth method maps callers through -------
@cli.group()
def iam() -> None:
    """Bind AWS IAM identities (role or user ARNs) to tenant roles."""


def _iam_bindings(app: App):
    from mlflow_tenant_plugins.tenancy.iam_bindings import IamBindings

    return IamBindings(app.registry)


@verb(iam, "bind")
@click.argument("tenant")
@click.argument("arn")
@click.option("--role", required=True, type=click.Choice(ROLE_CHOICES, case_sensitive=False))
def iam_bind(app: App, tenant: str, arn: str, role: str, as_json: bool) -> None:
    """Let the AWS identity ARN act in TENANT with --role. Every session of a role counts as
    the role; a role ARN is bound by its name (assumed-role ARNs carry no path)."""
    b = _iam_bindings(app).bind(tenant, arn, role)
    emit(as_json, b.to_dict(), [f"{b.arn} is {b.role} in {b.tenant}"])


@verb(iam, "list")
@click.argument("tenant", required=False)
def iam_list(app: App, tenant: str | None, as_json: bool) -> None:
    """List IAM bindings, of TENANT or of every tenant."""
    found = _iam_bindings(app).list(tenant)
    lines = table(("TENANT", "ARN", "ROLE", "BOUND"),
                  [(b.tenant, b.arn, b.role, when(b.created_at)) for b in found])
    emit(as_json, [b.to_dict() for b in found], lines if found else ["no IAM bindings"])


@verb(iam, "unbind")
@click.argument("tenant")
@click.argument("arn")
def iam_unbind(app: App, tenant: str, arn: str, as_json: bool) -> None:
    """Remove the binding of ARN in TENANT; the server refuses it within its cache bound."""
    unbound = _iam_bindings(app).unbind(tenant, arn)
    emit(as_json, {"arn": unbound, "tenant": tenant, "unbound": True},
         [f"{unbound} is no longer bound to {tenant}"])


# -- usage: read the ledger; reconciliation and publishing extend this verb -----------------
def usage_summary(usage) -> str:
    return ", ".join(f"{u.resource} {fmt_amount(u.resource, u.used)} of "
                     f"{fmt_amount(u.resource, u.limit)}" for u in usage)


def fmt_amount(resource: str, n: int) -> str:
    return size(n) if resource == "storage_bytes" else str(n)


def usage_report(registry, tenant: str | None) -> list[dict]:
    """Use against quota for one tenant or all of them, as plain data."""
    tenants = [registry.get_tenant(tenant)] if tenant else registry.list_tenants()
    return [{"tenant": t.name, "status": t.status,
             "usage": {u.resource: {**u.to_dict(), "utilization": round(u.utilization, 4)}
                       for u in registry.ledger.for_tenant(t.name)}}
            for t in tenants]


def usage_lines(report: list[dict]) -> list[str]:
    rows = [(r["tenant"], resource, fmt_amount(resource, u["used"]),
             fmt_amount(resource, u["limit"]), f"{u['utilization']:.0%}")
            for r in report for resource, u in r["usage"].items()]
    return table(("TENANT", "RESOURCE", "USED", "LIMIT", "USE"), rows) if rows else ["no tenants"]


def reconcile_storage(app: App, tenant: str | None, destination: str, dry_run: bool):
    """The artifact store's truth into the ledger (artifacts.reconcile does the listing)."""
    from mlflow_tenant_plugins.artifacts.reconcile import reconcile

    if tenant:
        app.registry.get_tenant(tenant)  # unknown tenant: one clear line
    return reconcile(app.registry, destination, dry_run=dry_run,
                     tenants=[tenant] if tenant else None)


def reconcile_lines(report) -> list[str]:
    verb_ = "would correct" if report.dry_run else "corrected"
    lines = [f"{t.tenant}: ledger {size(t.ledger_bytes)} -> S3 {size(t.s3_bytes)} "
             f"({t.objects} objects), {verb_ if t.status in ('corrected', 'drift') else t.status}"
             for t in report.tenants if t.status != "ok"]
    lines += [f"prefix {p} belongs to no tenant" for p in report.unknown_prefixes]
    return lines or [f"no drift in {len(report.tenants)} tenant(s)"]


@verb(cli, "usage")
@click.argument("tenant", required=False)
@click.option("--publish", is_flag=True, help="Also publish the usage to CloudWatch once: "
              "metrics and quota alarms (settings usage_* and aws_*).")
@click.option("--reconcile", "destination", metavar="TENANT_S3_URI",
              help="First list each tenant's prefix under the server's --artifacts-destination "
              "(tenant-s3://BUCKET/PREFIX), page by page, and correct the storage ledger's "
              "drift, reporting what changed.")
@click.option("--dry-run", is_flag=True, help="With --reconcile: report drift, change nothing.")
def usage(app: App, tenant: str | None, publish: bool, destination: str | None,
          dry_run: bool, as_json: bool) -> None:
    """Show each tenant's use against its quotas (of TENANT, or of every tenant)."""
    if destination:
        reconciled = reconcile_storage(app, tenant, destination, dry_run)
        if as_json:
            emit(True, {"reconcile": reconciled.to_dict(),
                        "usage": usage_report(app.registry, tenant)}, [])
            return
        for line in reconcile_lines(reconciled):
            click.echo(line)
    elif dry_run:
        raise click.UsageError("--dry-run goes with --reconcile")
    report = usage_report(app.registry, tenant)
    if publish:
        from mlflow_tenant_plugins.monitoring.publisher import publish_line, publish_once

        done = publish_once(app.registry, tenant)
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


# -- entry point ---------------------------------------------------------------------------------
def one_line(message: object) -> str:
    return " ".join(str(message).split())


def fail(message: object, status: int) -> int:
    click.echo(f"error: {one_line(message)}", err=True)
    return status


def exit_status_for(exc: BaseException) -> int:
    """Print one line for ``exc`` and return the exit status it deserves."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        exc.show()  # a bare group name asks for its help
        return EXIT_BAD_INPUT
    if isinstance(exc, click.UsageError):
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        return fail(f"{exc.format_message()}{hint}", EXIT_BAD_INPUT)
    if isinstance(exc, click.ClickException):
        return fail(exc.format_message(), exc.exit_code)
    exceptions = sys.modules.get("mlflow.exceptions")
    if exceptions and isinstance(exc, exceptions.MlflowException):
        status = EXIT_BAD_INPUT if exc.error_code in _BAD_INPUT_CODES else EXIT_FAILURE
        return fail(exc.message, status)
    config = sys.modules.get("mlflow_tenant_plugins.config")
    if config and isinstance(exc, config.ConfigError):
        return fail(f"configuration: {exc}", EXIT_BAD_INPUT)
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc and isinstance(exc, sa_exc.ArgumentError):
        return fail(f"invalid database URI: {exc}", EXIT_BAD_INPUT)
    if sa_exc and isinstance(exc, sa_exc.DBAPIError):
        first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else exc
        return fail(f"database error: {first}", EXIT_FAILURE)
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").startswith("psycopg"):
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3.
        return fail(f"database driver {exc.name} is not installed: install it, or name the "
                    "driver you have in the URI, e.g. postgresql+psycopg2://…", EXIT_BAD_INPUT)
    return fail(f"{type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for the traceback)",
                EXIT_FAILURE)


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``mlflow-tenants``."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if not debug:
        warnings.simplefilter("ignore")  # library deprecation chatter is not admin output
    try:
        status = cli.main(args=argv, prog_name="mlflow-tenants", standalone_mode=False)
    except click.Abort:
        status = fail("aborted", EXIT_FAILURE)
    except Exception as exc:
        if debug:
            raise
        status = exit_status_for(exc)
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()

"""``mlflow-tenants key``, ``member`` and ``iam``: who may act in a tenant, and with which role."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click

from mlflow_tenant_plugins.cli.common import (
    DURATION,
    ROLE_CHOICES,
    App,
    emit,
    table,
    verb,
    when,
)
from mlflow_tenant_plugins.cli.root import cli
from mlflow_tenant_plugins.tenancy.text import printable


def key_status(k, tenant_status: dict[str, str]) -> str:
    if k.revoked_at:
        return "revoked"
    if k.expires_at and k.expires_at <= datetime.now(UTC):
        return "expired"
    if k.tenant and tenant_status.get(k.tenant) != "active":
        return "suspended"
    return "active"


@cli.group()
def key() -> None:
    """Create, list and revoke API keys."""


@verb(key, "create")
@click.argument("tenant", required=False)
@click.option("--role", type=click.Choice(ROLE_CHOICES, case_sensitive=False),
              help="The key's role in the tenant.")
@click.option("--platform-admin", is_flag=True, help="A key for the whole platform (no tenant).")
@click.option("--label", metavar="NAME",
              help="With --platform-admin: the admin's name, as admin:NAME (default: "
                   "admin:key-<key id>). A tenant key always speaks for key:<key id>.")
@click.option("--description", default="", help="What the key is for.")
@click.option("--expires-in", type=DURATION, metavar="DURATION",
              help="Lifetime such as 30d, 12h, 2w (default: no expiry).")
def key_create(app: App, tenant: str | None, role: str | None, platform_admin: bool,
               label: str | None, description: str, expires_in: timedelta | None,
               as_json: bool) -> None:
    """Create a key for TENANT with --role, or a --platform-admin key.

    The key is printed once, alone on the last line, and never stored."""
    if platform_admin:
        if tenant or role:
            raise click.UsageError("a --platform-admin key takes neither TENANT nor --role")
        record, secret = app.registry.create_key(
            None, "admin", admin_label=label, description=description, expires_in=expires_in)
    else:
        if not tenant or not role:
            raise click.UsageError("give TENANT and --role ROLE, or --platform-admin")
        if label:
            raise click.UsageError("--label names platform admins; a tenant key speaks for "
                                   "a principal of its own (key:<key id>)")
        record, secret = app.registry.create_key(
            tenant, role, description=description, expires_in=expires_in)
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


def listed_member(names: list[str], given: str, tenant: str) -> str:
    """The member ``given`` names: itself, else the one 'member list' printed as ``given``
    (a name with a control character is listed escaped, and must not hide behind another)."""
    if given in names:
        return given
    shown = [n for n in names if printable(n) == given]
    if not shown:
        raise click.UsageError(f"'{given}' is not a member of tenant '{tenant}'")
    if len(shown) > 1:
        raise click.UsageError(f"several members of tenant '{tenant}' are listed as "
                               f"'{given}': see 'member list --json' for the exact names")
    return shown[0]


@verb(member, "unbind")
@click.argument("tenant")
@click.argument("principal")
def member_unbind(app: App, tenant: str, principal: str, as_json: bool) -> None:
    """Remove PRINCIPAL's role in TENANT (as 'member list' shows it, escapes and all)."""
    registry = app.registry
    principal = listed_member([m.principal for m in registry.members(tenant)], principal, tenant)
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

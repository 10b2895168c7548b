"""``mlflow-tenants bill``: each tenant's statement for a month, from the meters and the
price table (``[prices]`` in the settings file)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from mlflow_tenant_plugins.cli.common import App, db_option
from mlflow_tenant_plugins.cli.root import cli


@cli.command("bill")
@click.option("--month", help="YYYY-MM (UTC); default: the current month, so far.")
@click.option("--tenant", help="Only this tenant's statement.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: one row per line item.")
@click.option("--aws", "with_aws", is_flag=True,
              help="Add AWS Cost Explorer's cost for the month by the mlt:tenant tag.")
@db_option
@click.pass_obj
def bill(app: App, month: str | None, tenant: str | None, as_json: bool, as_csv: bool,
         with_aws: bool) -> None:
    """Statements: line items (quantity, unit price, amount) and totals per tenant."""
    from mlflow.exceptions import MlflowException

    from mlflow_tenant_plugins.billing.prices import PriceTable
    from mlflow_tenant_plugins.billing.routes import check_month
    from mlflow_tenant_plugins.billing.statement import statements, to_csv, to_lines
    from mlflow_tenant_plugins.tenancy.text import printable

    if as_json and as_csv:
        raise MlflowException.invalid_parameter_value("choose one of --json and --csv")
    now = datetime.now(UTC)
    month = check_month(month, now)
    if tenant:
        app.registry.get_tenant(tenant)
    found = statements(app.registry, PriceTable.from_settings(app.settings), month, now, tenant)
    aws = None
    if with_aws:
        from mlflow_tenant_plugins.billing.costs import aws_costs

        aws = aws_costs(app.settings, month)
    if as_csv:
        click.echo(to_csv(found), nl=False)
        return
    if as_json:
        out = [s.to_dict() for s in found]
        if aws is not None:
            for d in out:
                d["aws_cost"] = aws.get(d["tenant"])
        doc = {"month": month, "statements": out}
        if aws is not None:  # all of it, untagged and tenants without a statement included
            doc["aws_costs"] = aws
        click.echo(json.dumps(doc, indent=2))
        return
    lines = to_lines(found)
    if aws is not None:
        lines += [f"AWS Cost Explorer, {month}, by tag mlt:tenant:"]
        lines += [f"  {t}: {c}" for t, c in sorted(aws.items())] or ["  nothing tagged"]
    click.echo("\n".join(printable(line) for line in lines))

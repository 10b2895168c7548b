"""``mlflow-tenants validate DATA --rules RULES [--run-id ID] [--json]``: the body of the verb,
kept here so the CLI module only wires it in. Exit 0 when the data passes, 1 when it fails
the rules (the report on stdout), 2 for bad input (raised, printed as one line by the CLI)."""

from __future__ import annotations

import json

import click

from mlflow_tenant_plugins.tenancy.text import printable
from mlflow_tenant_plugins.validation.core import validate

EXIT_FAILED = 1


def _text(result, run_id: str | None) -> list[str]:
    report = result.report
    ds, rules = report["dataset"], report["rules"]
    head = (f"data '{ds['name']}' ({ds['rows']} rows, digest {ds['digest']}), rules "
            f"{rules['source']} (digest {rules['digest']})")
    lines = [f"pass: {head}"] if result.passed else [
        f"fail: {head}: {len(report['failures'])} rule(s) failed",
        *(f"  - {f['message']}" for f in report["failures"]),
    ]
    if result.report_path:
        lines.append(f"logged to run {run_id}: input '{ds['name']}', tag "
                     f"mlflow_tenant.validation, report {result.report_path}")
    return lines


def run(data: str, rules: str, *, run_id: str | None = None, as_json: bool = False,
        tracking_uri: str | None = None) -> int:
    """Validate, print the outcome, and return the exit status."""
    result = validate(data, rules, run_id=run_id, tracking_uri=tracking_uri,
                      log=run_id is not None, raise_on_failure=False)
    if as_json:
        out = {**result.report, "run_id": result.run_id, "report_path": result.report_path}
        click.echo(json.dumps(out, indent=2, default=str))
    else:
        # Column names and values come from the data: escaped, they cannot drive a terminal.
        click.echo("\n".join(printable(line) for line in _text(result, run_id)))
    if result.passed:
        return 0
    click.echo(f"error: data failed {len(result.failures)} validation rule(s)", err=True)
    return EXIT_FAILED

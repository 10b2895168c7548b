"""The root group of ``mlflow-tenants`` and its console script; the verbs attach to ``cli``
from their own modules."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence

import click

from mlflow_tenant_plugins.cli.common import DEBUG_ENV, EXIT_FAILURE, App, exit_status_for, fail


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


# -- entry point ---------------------------------------------------------------------------------
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

"""What every verb of ``mlflow-tenants`` shares: the :class:`App`, parameter types, output
and the error handling that turns an exception into one ``error: …`` line and an exit status."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import click

from mlflow_tenant_plugins.cli.database import resolve as resolve_database
from mlflow_tenant_plugins.tenancy.text import printable

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
    def databases(self) -> tuple[str, str]:
        """(registry database, tracking store): the platform's, or one line saying how to name
        them (cli/database.py)."""
        return resolve_database(self.db, self.tracking_uri)

    @cached_property
    def registry(self):
        from mlflow_tenant_plugins.tenancy import TenantRegistry

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        return TenantRegistry(*self.databases)

    @cached_property
    def settings(self):
        """The platform settings as this invocation uses them: read once, here (the CLI is an
        entry point), with the database that ``--db`` or the configuration names."""
        from mlflow_tenant_plugins.config import load_settings

        database, tracking = self.databases
        return dataclasses.replace(load_settings(), database_uri=database, tracking_uri=tracking)


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


def db_option(f: Callable) -> Callable:
    """``--db`` after the verb too (``mlflow-tenants usage --db URI``), as before it."""

    def remember(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value:
            ctx.obj.db = value

    return click.option("--db", metavar="URI", expose_value=False, callback=remember,
                        help="Registry database (as `mlflow-tenants --db URI`).")(f)


def verb(group: click.Group, name: str, **kwargs: Any) -> Callable:
    """A command of ``group`` that takes ``--json`` and ``--db`` and is handed the shared
    :class:`App`."""
    return lambda f: group.command(name, **kwargs)(db_option(json_option(click.pass_obj(f))))


def emit(as_json: bool, data: Any, lines: Iterable[str]) -> None:
    """Print ``data`` as JSON (ASCII, so escaped) or ``lines`` with tenant text made
    printable: a description must not drive the admin's terminal."""
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        for line in lines:
            click.echo(printable(line))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(c) for c in headers]] + [["-" if c is None else printable(str(c)) for c in r]
                                           for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]


def when(t: datetime | None) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if t else "never"


def size(n: int) -> str:
    from mlflow_tenant_plugins.tenancy.quotas import format_size

    return format_size(n)


def usage_summary(usage) -> str:
    return ", ".join(f"{u.resource} {fmt_amount(u.resource, u.used)} of "
                     f"{fmt_amount(u.resource, u.limit)}" for u in usage)


def fmt_amount(resource: str, n: int) -> str:
    return size(n) if resource == "storage_bytes" else str(n)


# -- errors: one line on stderr and an exit status ----------------------------------------------
def one_line(message: object) -> str:
    return " ".join(str(message).split())


def fail(message: object, status: int) -> int:
    click.echo(f"error: {printable(one_line(message))}", err=True)
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

"""The admin CLI reads the platform settings once, as an entry point, and hands them on: the
parts a verb calls see the database that ``--db`` names, never a second reading of the
configuration pointing elsewhere."""

from __future__ import annotations

import pytest

from mlflow_tenant_plugins.tenancy import TenantRegistry


@pytest.fixture
def two_databases(tmp_path, monkeypatch):
    """The configuration names one database; the admin's ``--db`` names another."""
    chosen = f"sqlite:///{tmp_path}/chosen.db"
    TenantRegistry(chosen).create_tenant("acme")
    monkeypatch.setenv("MLFLOW_TENANT_DATABASE_URI", f"sqlite:///{tmp_path}/configured.db")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("MLFLOW_TENANT_CONFIG", raising=False)
    return chosen


@pytest.mark.parametrize("db_after_verb", [False, True])
def test_usage_reconcile_deployments_hands_on_the_settings_of_the_db_named(
        two_databases, monkeypatch, db_after_verb):
    from click.testing import CliRunner

    from mlflow_tenant_plugins.cli import cli
    from mlflow_tenant_plugins.deployments import reconcile as reconcile_module

    seen = []
    monkeypatch.setattr(reconcile_module, "reconcile",
                        lambda service, tenants, dry_run: seen.append(service.settings) or [])
    db = ["--db", two_databases]
    args = (["usage", *db] if db_after_verb else [*db, "usage"]) + [
        "acme", "--reconcile-deployments", "--dry-run"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert [s.database_uri for s in seen] == [two_databases]
    assert seen[0].effective_tracking_uri == two_databases


def test_usage_publish_hands_on_the_settings_of_the_db_named(two_databases, monkeypatch):
    from click.testing import CliRunner

    from mlflow_tenant_plugins.cli import cli
    from mlflow_tenant_plugins.monitoring import publisher

    seen = []

    def publish_once(registry, settings, tenant=None):
        seen.append((registry.engine.url.database, settings.database_uri, tenant))
        return {"namespace": "n", "data_points": 0, "tenants": 0, "alarms_written": [],
                "alarms_deleted": []}

    monkeypatch.setattr(publisher, "publish_once", publish_once)
    result = CliRunner().invoke(cli, ["--db", two_databases, "usage", "acme", "--publish"])
    assert result.exit_code == 0, result.output
    assert seen == [(two_databases.removeprefix("sqlite:///"), two_databases, "acme")]

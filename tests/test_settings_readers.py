"""docs/settings.md says which process reads each setting (server, admin CLI, an admin's
direct deploy); a tenant's machine reads none of them."""

import dataclasses
from pathlib import Path

from mlflow_tenant_plugins.config import PROCESSES, Settings, readers

DOC = (Path(__file__).resolve().parent.parent / "docs" / "settings.md").read_text()


def test_every_setting_names_the_processes_that_read_it():
    for field in dataclasses.fields(Settings):
        if field.name != "extra":
            got = readers(field.name)
            assert got and set(got) <= set(PROCESSES), (field.name, got)
    # What the admin CLI must be given to find the platform: the database, and where
    # workspaces live.
    assert "CLI" in readers("database_uri") and "CLI" in readers("tracking_uri")
    assert readers("auth_methods") == ("server",)


def test_the_settings_reference_has_a_read_by_column_and_says_what_a_tenant_needs():
    assert "| setting | environment variable | default | read by | what it is for |" in DOC
    assert "| `database_uri` | `MLFLOW_TENANT_DATABASE_URI` |" in DOC
    row = next(line for line in DOC.splitlines() if line.startswith("| `database_uri`"))
    assert "| server, CLI, admin deploy |" in row
    assert "MLFLOW_TRACKING_URI" in DOC and "MLFLOW_TRACKING_TOKEN" in DOC

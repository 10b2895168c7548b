"""docs/settings.md is generated from config.py's comments and must match it."""

from pathlib import Path

from mlflow_tenant_plugins.config_doc import render

DOC = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def test_settings_reference_matches_config():
    assert DOC.read_text() == render(), (
        "docs/settings.md is stale: python -m mlflow_tenant_plugins.config_doc > docs/settings.md"
    )


def test_every_setting_is_documented():
    for line in [r for r in render().splitlines() if r.startswith("| `")]:
        assert line.rstrip().endswith("|") and not line.endswith("|  |"), line

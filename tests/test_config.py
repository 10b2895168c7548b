"""Settings: a TOML file named by MLFLOW_TENANT_CONFIG, each key overridable from the
environment, nothing required, and every bad value refused with a message naming the setting
and where the value came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_tenant_plugins.config import CONFIG_ENV, ConfigError, Settings, load_settings


def config_file(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "tenants.toml"
    path.write_text(text)
    return {CONFIG_ENV: str(path)}


def test_nothing_is_required_and_the_default_is_one_shared_sqlite_file():
    settings = load_settings({})
    assert settings == Settings()
    assert settings.database_uri == "sqlite:///mlflow.db"
    assert settings.effective_tracking_uri == settings.database_uri


def test_file_values_are_read_with_their_types(tmp_path):
    env = config_file(tmp_path, """
database_uri = "postgresql+psycopg2://db/platform"
tracking_uri = "postgresql+psycopg2://db/tracking"
auth_cache_ttl_seconds = 2
auth_methods = ["key", "iam"]
proxy_addresses = ["10.0.0.1"]
""")
    settings = load_settings(env)
    assert settings.database_uri == "postgresql+psycopg2://db/platform"
    assert settings.effective_tracking_uri == "postgresql+psycopg2://db/tracking"
    assert settings.auth_cache_ttl_seconds == 2.0
    assert settings.auth_methods == ("key", "iam")
    assert settings.proxy_addresses == ("10.0.0.1",)


def test_environment_wins_over_the_file(tmp_path):
    env = config_file(tmp_path, 'database_uri = "sqlite:///file.db"\nauth_methods = ["key"]\n')
    env.update({
        "MLFLOW_TENANT_DATABASE_URI": "sqlite:///env.db",
        "MLFLOW_TENANT_AUTH_METHODS": "key, alb ,proxy",
        "MLFLOW_TENANT_AUTH_CACHE_TTL_SECONDS": "0.5",
    })
    settings = load_settings(env)
    assert settings.database_uri == "sqlite:///env.db"
    assert settings.auth_methods == ("key", "alb", "proxy")
    assert settings.auth_cache_ttl_seconds == 0.5


def test_inside_mlflow_server_the_registry_defaults_to_the_backend_store():
    server_env = {"_MLFLOW_SERVER_FILE_STORE": "postgresql+psycopg2://db/mlflow"}
    assert load_settings(server_env).database_uri == "postgresql+psycopg2://db/mlflow"
    explicit = {**server_env, "MLFLOW_TENANT_DATABASE_URI": "sqlite:///own.db"}
    assert load_settings(explicit).database_uri == "sqlite:///own.db"


def test_known_toml_tables_are_kept_for_the_part_that_reads_them(tmp_path):
    env = config_file(tmp_path, "[deploy_tenant_alarms.acme]\ncpu_percent = 50\n")
    assert load_settings(env).extra == {"deploy_tenant_alarms": {"acme": {"cpu_percent": 50}}}


@pytest.mark.parametrize(("text", "message"), [
    # Before: kept silently in `extra`, read by nobody; the role a platform meant went unused.
    ('[deployments]\nexecution_role = "arn:aws:iam::1:role/x"\n',
     r"unknown table \[deployments\] in .*tenants.toml "
     r"\(known tables: \[deploy_tenant_alarms\], \[prices\]\)"),
    ("[deploy_tenant_alarm.acme]\nalarm_cpu_percent = 50\n",
     r"unknown table \[deploy_tenant_alarm\] .*; did you mean \[deploy_tenant_alarms\]\?"),
])
def test_unknown_toml_tables_are_refused_naming_the_known_ones(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(config_file(tmp_path, text))


@pytest.mark.parametrize(("text", "env", "message"), [
    ('auth_cache_ttl_seconds = "soon"', {}, r"'auth_cache_ttl_seconds' \(in .*tenants.toml\) "
                                            r"must be a number, got 'soon'"),
    ("auth_cache_ttl_seconds = -1", {}, "must be a finite number >= 0, got -1"),
    ("auth_cache_ttl_seconds = true", {}, "must be a number, got True"),
    ("auth_cache_ttl_seconds = nan", {}, "must be a finite number >= 0"),
    ("database_uri = 5", {}, "'database_uri' .* must be a string, got 5"),
    ("auth_methods = [1, 2]", {}, "'auth_methods' .* must be a list of strings"),
    ('databse_uri = "sqlite:///x.db"', {}, "unknown setting 'databse_uri' .*did you mean "
                                           "'database_uri'"),
    ("database_uri = ", {}, "is not valid TOML"),
    ("", {"MLFLOW_TENANT_AUTH_CACHE_TTL_SECONDS": "5s"},
     r"'auth_cache_ttl_seconds' \(from MLFLOW_TENANT_AUTH_CACHE_TTL_SECONDS\) must be a number"),
    ("", {"MLFLOW_TENANT_ARTIFACT_CREDENTIAL_DURATION_SECONDS": "inf"}, "finite number"),
])
def test_bad_values_are_refused_with_a_message_naming_setting_and_source(
    tmp_path, text, env, message
):
    with pytest.raises(ConfigError, match=message):
        load_settings({**config_file(tmp_path, text), **env})


def test_unreadable_config_file_names_the_variable_and_the_path(tmp_path):
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match=f"cannot read {CONFIG_ENV}={missing}: No such file"):
        load_settings({CONFIG_ENV: str(missing)})

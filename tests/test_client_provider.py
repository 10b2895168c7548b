"""The ``tenant`` request auth provider, in process: where credentials come from, the
headers it sets, the errors that say what to fix, and that it stays client-only."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.client import profiles as profiles_mod
from mlflow_tenant_plugins.client.auth_provider import TenantAuth, TenantAuthProvider
from mlflow_tenant_plugins.client.aws_iam import default_server_id
from mlflow_tenant_plugins.client.profiles import Credential, key_label, resolve_credential
from mlflow_tenant_plugins.wire import IAM_HEADER

KEY = "mlt_0123456789ab_" + "s" * 43
OTHER_KEY = "mlt_ba9876543210_" + "t" * 43
URL = "http://mlflow.example.test:5000/api/2.0/mlflow/experiments/search"


def _profiles(tmp_path: Path, text: str, mode: int = 0o600) -> dict[str, str]:
    path = tmp_path / "tenants.toml"
    path.write_text(text)
    path.chmod(mode)
    return {"MLFLOW_TENANT_PROFILES": str(path)}


def _prepared(auth: TenantAuth, url: str = URL, **headers: str) -> requests.PreparedRequest:
    return auth(requests.Request("POST", url, headers=headers, json={}).prepare())


# -- where the credential comes from ----------------------------------------------------------
def test_plugin_key_variable_wins_over_the_tracking_token():
    cred = resolve_credential({"MLFLOW_TENANT_KEY": KEY, "MLFLOW_TRACKING_TOKEN": OTHER_KEY,
                               "MLFLOW_TENANT_PROFILES": "/nonexistent"})
    assert (cred.kind, cred.key, cred.source) == ("key", KEY, "MLFLOW_TENANT_KEY")


def test_tracking_token_is_used_as_stock_mlflow_does():
    cred = resolve_credential({"MLFLOW_TRACKING_TOKEN": KEY,
                               "MLFLOW_TENANT_PROFILES": "/nonexistent"})
    assert (cred.key, cred.source) == (KEY, "MLFLOW_TRACKING_TOKEN")


def test_named_profile_wins_over_keys_in_the_environment(tmp_path):
    env = _profiles(tmp_path, f'[acme]\nkey = "{KEY}"\ntenant = "acme"\n')
    cred = resolve_credential({**env, "MLFLOW_TENANT_PROFILE": "acme",
                               "MLFLOW_TRACKING_TOKEN": OTHER_KEY})
    assert (cred.key, cred.tenant) == (KEY, "acme")
    assert cred.source.startswith("profile 'acme' in ")


def test_profile_named_default_is_used_when_nothing_else_is_set(tmp_path):
    env = _profiles(tmp_path, f'[default]\nkey = "{KEY}"\n[other]\nkey = "{OTHER_KEY}"\n')
    assert resolve_credential(env).key == KEY


def test_missing_profile_error_lists_the_profiles_that_exist(tmp_path):
    env = _profiles(tmp_path, f'[acme]\nkey = "{KEY}"\n[globex]\nkey = "{OTHER_KEY}"\n')
    with pytest.raises(MlflowException, match=r"profile 'initech' not found .*"
                                              r"\(profiles there: acme, globex\)"):
        resolve_credential({**env, "MLFLOW_TENANT_PROFILE": "initech"})


def test_no_credentials_error_says_what_to_set(tmp_path):
    with pytest.raises(MlflowException) as err:
        resolve_credential({"MLFLOW_TENANT_PROFILES": str(tmp_path / "none.toml")})
    assert "MLFLOW_TRACKING_TOKEN" in err.value.message
    assert "MLFLOW_TENANT_KEY" in err.value.message and "MLFLOW_TENANT_PROFILE" in err.value.message


@pytest.mark.parametrize(("body", "complaint"), [
    ('[p]\ntenant = "acme"\n', "has no key"),
    ('[p]\nkey = "k"\ncolour = "red"\n', "colour"),
    ('[p]\nauth = "kerberos"\n', "not one of key, aws-iam"),
    ('[p]\nkey = 42\n', "non-string"),
    ("[p\n", "not valid TOML"),
])
def test_bad_profiles_say_what_is_wrong(tmp_path, body, complaint):
    env = _profiles(tmp_path, body)
    with pytest.raises(MlflowException, match=complaint):
        resolve_credential({**env, "MLFLOW_TENANT_PROFILE": "p"})


def test_profiles_file_readable_by_others_gets_one_warning(tmp_path, caplog):
    env = _profiles(tmp_path, f'[default]\nkey = "{KEY}"\n', mode=0o644)
    profiles_mod._warned_paths.discard(env["MLFLOW_TENANT_PROFILES"])
    with caplog.at_level(logging.WARNING, logger="mlflow_tenant_plugins.client.profiles"):
        resolve_credential(env)
        resolve_credential(env)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "chmod 600" in warnings[0] and KEY not in warnings[0]


def test_private_profiles_file_gets_no_warning(tmp_path, caplog):
    env = _profiles(tmp_path, f'[default]\nkey = "{KEY}"\n', mode=0o600)
    with caplog.at_level(logging.WARNING, logger="mlflow_tenant_plugins.client.profiles"):
        resolve_credential(env)
    assert not caplog.records


# -- headers ------------------------------------------------------------------------------------
def test_key_is_sent_as_bearer_and_the_profile_tenant_as_workspace():
    request = _prepared(TenantAuth(Credential("key", "test", key=KEY, tenant="acme")),
                        Authorization="Bearer something-else")
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["X-MLFLOW-WORKSPACE"] == "acme"


def test_a_workspace_the_caller_named_is_kept():
    auth = TenantAuth(Credential("key", "test", key=KEY, tenant="acme"))
    assert _prepared(auth, **{"X-MLFLOW-WORKSPACE": "globex"}).headers[
        "X-MLFLOW-WORKSPACE"] == "globex"


def test_workspace_admin_routes_get_no_workspace_header():
    auth = TenantAuth(Credential("key", "test", key=KEY, tenant="acme"))
    request = _prepared(auth, "http://h/ajax-api/3.0/mlflow/workspaces/acme")
    assert "X-MLFLOW-WORKSPACE" not in request.headers


def test_aws_iam_profile_sends_a_signed_identity_instead_of_a_token(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example-secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    auth = TenantAuth(Credential("aws-iam", "test", sts_endpoint="https://sts.example.test"))
    request = _prepared(auth, Authorization=f"Bearer {KEY}")
    assert "Authorization" not in request.headers
    signed = json.loads(base64.b64decode(request.headers[IAM_HEADER]))
    assert signed["url"] == "https://sts.example.test"
    assert signed["headers"]["X-MLflow-Tenant-Server-Id"] == "mlflow.example.test:5000"
    assert "x-mlflow-tenant-server-id" in signed["headers"]["Authorization"]
    assert "example-secret" not in request.headers[IAM_HEADER]


def test_default_server_id_is_the_tracking_hosts_name_and_port():
    assert default_server_id("https://user:pw@MLflow.Example.com/path") == "mlflow.example.com"
    assert default_server_id("http://127.0.0.1:5000") == "127.0.0.1:5000"


# -- refusals name the credential, never its value ----------------------------------------------
def _refused(auth: TenantAuth, status: int, body: bytes) -> requests.Response:
    response = requests.Response()
    response.status_code, response._content = status, body
    return auth._explain_refusal(response)


def test_401_message_names_the_key_id_and_where_it_came_from():
    auth = TenantAuth(Credential("key", "MLFLOW_TRACKING_TOKEN", key=KEY))
    body = json.loads(_refused(auth, 401, json.dumps(
        {"error_code": "UNAUTHENTICATED", "message": "invalid API key"}).encode()).content)
    assert body["error_code"] == "UNAUTHENTICATED"
    assert "invalid API key" in body["message"]
    assert "mlt_0123456789ab_…" in body["message"] and "MLFLOW_TRACKING_TOKEN" in body["message"]
    assert KEY not in body["message"]


def test_403_without_a_json_body_still_gets_an_mlflow_error():
    auth = TenantAuth(Credential("key", "profile 'acme' in f", key="not-a-tenant-key-at-all"))
    body = json.loads(_refused(auth, 403, b"<html>Forbidden</html>").content)
    assert body["error_code"] == "PERMISSION_DENIED"
    assert "profile 'acme'" in body["message"] and "not-a-tenant-key" not in body["message"]


def test_other_answers_are_left_alone():
    auth = TenantAuth(Credential("key", "x", key=KEY))
    assert _refused(auth, 404, b"nope").content == b"nope"


def test_credential_repr_and_labels_never_show_the_secret():
    assert KEY not in repr(Credential("key", "x", key=KEY))
    assert key_label(KEY) == "API key mlt_0123456789ab_…"
    assert "hunter2" not in key_label("hunter2")


# -- the plugin as MLflow loads it ---------------------------------------------------------------
def test_mlflow_finds_the_provider_by_the_name_tenant(monkeypatch):
    from mlflow.tracking.request_auth.registry import fetch_auth

    monkeypatch.setenv("MLFLOW_TENANT_KEY", KEY)
    monkeypatch.delenv("MLFLOW_TENANT_PROFILE", raising=False)
    auth = fetch_auth("tenant")
    assert isinstance(auth, TenantAuth) and auth.credential.key == KEY
    assert TenantAuthProvider().get_auth() is auth  # reused while the environment is unchanged


SERVER_SIDE = ("flask", "sqlalchemy", "mlflow_tenant_plugins.tenancy")
# A module set to None in sys.modules is one Python cannot import (and find_spec reports
# absent), as on a tenant's machine without the server's dependencies.
BLOCKER = """
import sys
for name in %r:
    sys.modules[name] = None
"""


def test_provider_works_on_a_machine_without_server_side_modules():
    """Import and use the provider with flask, SQLAlchemy and the registry unimportable."""
    script = BLOCKER % (SERVER_SIDE,) + """
import os, warnings
warnings.simplefilter("ignore")
os.environ["MLFLOW_TENANT_KEY"] = %r
from mlflow.tracking.request_auth.registry import fetch_auth
auth = fetch_auth("tenant")
print(type(auth).__name__)
""" % KEY
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "TenantAuth"


def test_importing_the_provider_imports_nothing_server_side():
    script = """
import sys, warnings
warnings.simplefilter("ignore")
import mlflow_tenant_plugins.client.auth_provider
# docs/architecture.md "Layers": no registry, no Flask app, no SQLAlchemy models on a
# tenant's machine.
# (tenancy's plain value modules - errors, quotas - are free of all three.)
server_side = ("registry", "models", "db", "usage", "workspaces", "iam_bindings")
print(sorted(m for m in sys.modules if m.split(".")[0] in ("flask", "sqlalchemy", "alembic")
             or m.split(".")[-1] in server_side and m.startswith("mlflow_tenant_plugins.")))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", (
        "importing the client plugin (which imports mlflow, which loads every plugin entry "
        f"point) pulled in server-side modules: {done.stdout.strip()}")

"""``MLFLOW_TRACKING_AUTH=tenant`` end to end: the stock MlflowClient and the ``mlflow`` CLI,
as subprocesses, against the tenant-auth server, with keys from the environment and from
profiles, and the refusals they report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_tenant_plugins.tenancy.keys import key_id_of
from tests.fixtures.servers import MlflowServer

CLIENT_SCRIPT = r"""
import json, os, sys, tempfile
import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
out = {}
for profile in sys.argv[1:]:
    if profile == "-":
        os.environ.pop("MLFLOW_TENANT_PROFILE", None)
    else:
        os.environ["MLFLOW_TENANT_PROFILE"] = profile
    try:
        client = MlflowClient()
        if profile == "-":  # the key from MLFLOW_TENANT_KEY: write through every route kind
            exp = client.create_experiment("made-with-tenant-auth")
            with mlflow.start_run(experiment_id=exp):
                mlflow.log_metric("auc", 0.9)
                path = os.path.join(tempfile.mkdtemp(), "notes.txt")
                open(path, "w").write("hello")
                mlflow.log_artifact(path)
                run_id = mlflow.active_run().info.run_id
            out["artifacts"] = [f.path for f in client.list_artifacts(run_id)]
        out[profile] = {"ok": sorted(e.name for e in client.search_experiments())}
    except MlflowException as exc:
        out[profile] = {"error": exc.message}
print("RESULT " + json.dumps(out))
"""


def _write_profiles(path: Path, profiles: dict[str, dict[str, str]]) -> Path:
    path.write_text("".join(f"[{name}]\n" + "".join(f'{k} = "{v}"\n' for k, v in p.items())
                            for name, p in profiles.items()))
    path.chmod(0o600)
    return path


@pytest.fixture
def setup(tenant_server: MlflowServer, make_tenant, tmp_path: Path):
    tenant, key = make_tenant("editor")
    other, other_key = make_tenant("editor")
    _info, revoked = tenant_server.registry.create_key(tenant, "viewer")
    tenant_server.registry.revoke_key(key_id_of(revoked))
    profiles = _write_profiles(tmp_path / "tenants.toml", {
        "mine": {"key": key, "tenant": tenant},
        "revoked": {"key": revoked},
        "wrong-tenant": {"key": key, "tenant": other},
    })
    env = tenant_server.client_env(
        MLFLOW_TRACKING_AUTH="tenant", MLFLOW_TENANT_KEY=key, MLFLOW_TENANT_PROFILES=str(profiles))
    return tenant_server, env, {"key": key, "other_key": other_key, "revoked": revoked,
                                "tenant": tenant, "other": other}


def test_stock_client_with_tenant_auth_works_and_reports_what_to_fix(setup):
    server, env, s = setup
    done = subprocess.run(
        [sys.executable, "-c", CLIENT_SCRIPT, "-", "mine", "revoked", "wrong-tenant", "absent"],
        env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["-"] == {"ok": ["made-with-tenant-auth"]}
    assert result["artifacts"] == ["notes.txt"]
    assert result["mine"] == {"ok": ["made-with-tenant-auth"]}
    revoked = result["revoked"]["error"]
    assert "invalid API key" in revoked
    assert f"API key mlt_{key_id_of(s['revoked'])}_…" in revoked and "profile 'revoked'" in revoked
    assert f"not allowed in workspace '{s['other']}'" in result["wrong-tenant"]["error"]
    assert "profile 'wrong-tenant'" in result["wrong-tenant"]["error"]
    assert "tenant profile 'absent' not found" in result["absent"]["error"]
    assert "profiles there: mine, revoked, wrong-tenant" in result["absent"]["error"]
    secrets_used = (s["key"], s["revoked"])
    assert not any(k in done.stdout + done.stderr for k in secrets_used)
    log = server.process.log_path.read_text()
    assert not any(k in log for k in secrets_used)
    # The other tenant sees none of it.
    seen = server.session(s["other_key"]).post(
        server.url + "/api/2.0/mlflow/experiments/search", json={"max_results": 50}).json()
    assert "made-with-tenant-auth" not in [e["name"] for e in seen.get("experiments", [])]


def test_mlflow_cli_uses_a_profile_and_names_the_refused_key(setup):
    server, env, s = setup
    env = {**env, "MLFLOW_TENANT_PROFILE": "mine"}
    created = server.session(s["key"]).post(server.url + "/api/2.0/mlflow/experiments/create",
                                            json={"name": "cli-visible"})
    assert created.status_code == 200, created.text
    ok = subprocess.run([sys.executable, "-m", "mlflow", "experiments", "search"], env=env,
                        capture_output=True, text=True, timeout=180)
    assert ok.returncode == 0, ok.stderr
    assert "cli-visible" in ok.stdout
    env["MLFLOW_TENANT_PROFILE"] = "revoked"
    refused = subprocess.run([sys.executable, "-m", "mlflow", "experiments", "search"], env=env,
                             capture_output=True, text=True, timeout=180)
    assert refused.returncode != 0
    assert f"mlt_{key_id_of(s['revoked'])}_…" in refused.stderr
    assert s["revoked"] not in refused.stderr


def test_no_credentials_configured_is_a_clear_client_error(setup, tmp_path):
    _server, env, _s = setup
    env = {k: v for k, v in env.items() if k not in ("MLFLOW_TENANT_KEY", "MLFLOW_TRACKING_TOKEN")}
    env["MLFLOW_TENANT_PROFILES"] = str(tmp_path / "missing.toml")
    done = subprocess.run([sys.executable, "-m", "mlflow", "experiments", "search"], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode != 0
    assert "no tenant credentials configured" in done.stderr

"""SSRF towards the instance's own credentials: MLflow fetches URLs tenants choose (webhook
deliveries, an AI gateway secret's ``api_base``). Replayed through a real tenant-auth server
with the stock client and plain HTTP, at the metadata service and at a listener on loopback
that records every connection: the caller gets a clear refusal (webhooks are platform-admin
only: 403 for a tenant, 400 for the platform admin; a gateway ``api_base``: 400), nothing is
stored, the listener is never contacted. And the server refuses to start with MLflow's
private-IP switches on.
"""

from __future__ import annotations

import secrets

import pytest
from mlflow import MlflowClient
from mlflow.entities.webhook import WebhookAction, WebhookEntity, WebhookEvent
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.startup_checks import private_ip_switches_on, secure_mlflow_settings
from tests.fixtures.listener import Listener
from tests.fixtures.servers import MlflowServer, start_mlflow_server

METADATA = "169.254.169.254"


def _targets(port: int) -> list[str]:
    return [
        f"http://{METADATA}/latest/meta-data/",
        f"https://{METADATA}/latest/meta-data/iam/security-credentials/",
        f"https://127.0.0.1:{port}/hook",
        f"https://localhost:{port}/hook",
        f"https://[::ffff:127.0.0.1]:{port}/hook",
        f"https://2130706433:{port}/hook",
        f"https://0x7f.0.0.1:{port}/hook",
        f"http://127.0.0.1:{port}/hook",
    ]


def _client(monkeypatch, server: MlflowServer, key: str, workspace: str) -> MlflowClient:
    """The stock client, authenticated by MLFLOW_TRACKING_TOKEN, in one workspace."""
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
    monkeypatch.setenv("MLFLOW_WORKSPACE", workspace)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return MlflowClient(tracking_uri=server.url)


def test_webhook_at_metadata_or_loopback_is_refused_and_never_called(
    tenant_server, make_tenant, monkeypatch
):
    """Webhooks are MLflow-admin only: a tenant admin is refused outright (403); the platform
    admin, who may create them, is refused these targets (400)."""
    tenant, key = make_tenant("admin")
    event = WebhookEvent(WebhookEntity.REGISTERED_MODEL, WebhookAction.CREATED)
    listener = Listener()
    for who, code in ((key, "PERMISSION_DENIED"),
                      (tenant_server.admin_key, "INVALID_PARAMETER_VALUE")):
        client = _client(monkeypatch, tenant_server, who, tenant)
        for url in _targets(listener.port):
            with pytest.raises(MlflowException) as err:
                client.create_webhook(name=f"w{secrets.token_hex(3)}", url=url, events=[event])
            assert err.value.error_code == code, (url, err.value.message)
    assert list(client.list_webhooks()) == []
    _client(monkeypatch, tenant_server, key, tenant).create_registered_model(
        f"m{secrets.token_hex(3)}")  # an event, should any hook exist
    listener.close()
    assert listener.contacts == 0


def test_gateway_api_base_at_metadata_or_loopback_is_refused_and_never_called(
    tenant_server, make_tenant
):
    listener = Listener()
    _tenant, key = make_tenant("admin")
    s = tenant_server.session(key)
    url = tenant_server.url
    for target in _targets(listener.port):
        name = f"s{secrets.token_hex(3)}"
        r = s.post(f"{url}/api/3.0/mlflow/gateway/secrets/create", json={
            "secret_name": name, "secret_value": {"api_key": "sk-test"}, "provider": "openai",
            "auth_config": {"api_base": target}})
        assert r.status_code == 400, (target, r.status_code, r.text[:300])
        body = r.json()
        assert body["error_code"] == "INVALID_PARAMETER_VALUE", body
        assert "api_base" in body["message"], body
        assert name not in s.get(f"{url}/api/3.0/mlflow/gateway/secrets/list").text
    listener.close()
    assert listener.contacts == 0


def test_switches_detected_whatever_their_spelling():
    env = {"MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
           "MLFLOW_GATEWAY_API_BASE_ALLOW_PRIVATE_IPS": "1",
           "MLFLOW_ICON_URL_ALLOW_PRIVATE_IPS": "false",
           "MLFLOW_FUTURE_THING_ALLOW_PRIVATE_IPS": " Yes ",
           "MLFLOW_OTHER": "true"}
    assert private_ip_switches_on(env) == ["MLFLOW_FUTURE_THING_ALLOW_PRIVATE_IPS",
                                           "MLFLOW_GATEWAY_API_BASE_ALLOW_PRIVATE_IPS",
                                           "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"]
    with pytest.raises(MlflowException, match="MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"):
        secure_mlflow_settings(dict(env))
    ok = {"MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "false"}
    secure_mlflow_settings(ok)
    assert ok["MLFLOW_MODEL_CATALOG_URI"] == ""  # bundled catalogue unless the admin sets one


def test_server_refuses_to_start_with_private_ips_allowed(tmp_path):
    with pytest.raises(RuntimeError) as err:
        start_mlflow_server(tmp_path, extra_env={"MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true"},
                            timeout=240)
    assert "refuses to start with MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS on" in str(err.value)

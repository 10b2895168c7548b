"""API-key authentication on a real tenant-auth server: Bearer and HTTP Basic, tenant
resolution without a workspace header, roles, and every bad credential answered with a
one-line 401 that does not reveal whether a tenant or key exists — and no key in the log.
"""

from __future__ import annotations

import base64
import time
from datetime import timedelta

import requests

from tests.fixtures.servers import MlflowServer


def _get_experiments(server: MlflowServer, headers: dict) -> requests.Response:
    return requests.post(f"{server.url}/api/2.0/mlflow/experiments/search",
                         json={"max_results": 5}, headers=headers, timeout=30)


def test_bearer_key_lands_in_its_own_tenant_without_a_workspace_header(
    tenant_server, make_tenant
):
    tenant, key = make_tenant("editor")
    s = tenant_server.session(key)
    r = s.post(f"{tenant_server.url}/api/2.0/mlflow/experiments/create", json={"name": "e1"})
    assert r.status_code == 200, r.text
    who = s.get(f"{tenant_server.url}/api/2.0/tenants/whoami").json()
    assert who["tenant"] == tenant and who["role"] == "editor"
    # it is in the tenant's workspace: the platform admin finds it there
    admin = tenant_server.session(tenant_server.admin_key, workspace=tenant)
    found = admin.get(f"{tenant_server.url}/api/2.0/mlflow/experiments/get-by-name",
                      params={"experiment_name": "e1"})
    assert found.status_code == 200


def test_http_basic_with_the_key_as_password_logs_in(tenant_server, make_tenant):
    _tenant, key = make_tenant("viewer")
    token = base64.b64encode(f"anyone:{key}".encode()).decode()
    r = _get_experiments(tenant_server, {"Authorization": f"Basic {token}"})
    assert r.status_code == 200, r.text


def test_viewer_reads_but_cannot_write(tenant_server, make_tenant):
    tenant, editor_key = make_tenant("editor")
    _info, viewer_key = tenant_server.registry.create_key(tenant, "viewer")
    url = tenant_server.url
    exp = tenant_server.session(editor_key).post(
        f"{url}/api/2.0/mlflow/experiments/create", json={"name": "shared"}).json()
    viewer = tenant_server.session(viewer_key)
    got = viewer.get(f"{url}/api/2.0/mlflow/experiments/get",
                     params={"experiment_id": exp["experiment_id"]})
    assert got.status_code == 200
    for path, body in (("/experiments/create", {"name": "nope"}),
                       ("/runs/create", {"experiment_id": exp["experiment_id"]}),
                       ("/experiments/delete", {"experiment_id": exp["experiment_id"]})):
        r = viewer.post(f"{url}/api/2.0/mlflow{path}", json=body)
        assert r.status_code == 403, (path, r.status_code, r.text)
        assert r.json()["error_code"] == "PERMISSION_DENIED"


def test_tenant_admin_manages_own_keys_but_not_other_tenants(tenant_server, make_tenant):
    tenant, admin_key = make_tenant("admin")
    other, _ = make_tenant("admin")
    s, url = tenant_server.session(admin_key), tenant_server.url
    made = s.post(f"{url}/api/2.0/tenants/keys/create", json={"tenant": tenant, "role": "viewer"})
    assert made.status_code == 200, made.text
    assert made.json()["secret"].startswith("mlt_")
    assert s.get(f"{url}/api/2.0/tenants/keys/list", params={"tenant": tenant}).status_code == 200
    refused = s.post(f"{url}/api/2.0/tenants/keys/create", json={"tenant": other, "role": "admin"})
    assert refused.status_code == 403
    assert s.get(f"{url}/api/2.0/tenants/list").status_code == 403
    bad = s.post(f"{url}/api/2.0/tenants/keys/create", json={"tenant": tenant, "role": "root"})
    assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_bad_credentials_get_one_line_401_that_reveals_nothing(tenant_server, make_tenant):
    tenant, key = make_tenant("editor")
    reg = tenant_server.registry
    revoked_info, revoked = reg.create_key(tenant, "viewer")
    reg.revoke_key(revoked_info.key_id)
    _i, expiring = reg.create_key(tenant, "viewer", expires_in=timedelta(seconds=1))
    time.sleep(1.5)
    unknown = key[:-6] + "AAAAAA"
    cases = {
        "missing": {},
        "malformed": {"Authorization": "Bearer not-a-key"},
        "garbage scheme": {"Authorization": "Token abc"},
        "bad basic": {"Authorization": "Basic %%%"},
        "unknown": {"Authorization": f"Bearer {unknown}"},
        "revoked": {"Authorization": f"Bearer {revoked}"},
        "expired": {"Authorization": f"Bearer {expiring}"},
    }
    messages = {}
    for name, headers in cases.items():
        r = _get_experiments(tenant_server, headers)
        assert r.status_code == 401, (name, r.status_code)
        body = r.json()
        assert body["error_code"] == "UNAUTHENTICATED"
        assert "\n" not in body["message"] and "Traceback" not in r.text
        assert tenant not in body["message"]
        assert r.headers.get("WWW-Authenticate", "").startswith("Basic")
        messages[name] = body["message"]
    # unknown, revoked and expired keys are indistinguishable
    assert messages["unknown"] == messages["revoked"] == messages["expired"]


def test_revocation_and_suspension_take_effect_within_the_cache_bound(
    tenant_server, make_tenant
):
    """The server under test runs with MLFLOW_TENANT_AUTH_CACHE_TTL_SECONDS=1."""
    tenant, key = make_tenant("editor")
    reg = tenant_server.registry
    assert _get_experiments(tenant_server, {"Authorization": f"Bearer {key}"}).status_code == 200
    reg.set_status(tenant, "suspended")
    time.sleep(1.2)
    assert _get_experiments(tenant_server, {"Authorization": f"Bearer {key}"}).status_code == 401
    reg.set_status(tenant, "active")
    time.sleep(1.2)
    assert _get_experiments(tenant_server, {"Authorization": f"Bearer {key}"}).status_code == 200
    info = next(k for k in reg.list_keys(tenant) if k.principal.endswith(key.split("_")[1]))
    reg.revoke_key(info.key_id)
    time.sleep(1.2)
    assert _get_experiments(tenant_server, {"Authorization": f"Bearer {key}"}).status_code == 401


def test_keys_never_appear_in_the_server_log(tenant_server, make_tenant):
    _tenant, key = make_tenant("editor")
    s = tenant_server.session(key)
    s.post(f"{tenant_server.url}/api/2.0/mlflow/experiments/create", json={"name": "logme"})
    s.get(f"{tenant_server.url}/api/2.0/mlflow/experiments/get", params={"experiment_id": "999"})
    _get_experiments(tenant_server, {"Authorization": f"Bearer {key}x"})
    secret_part = key.split("_", 2)[2]
    log = tenant_server.process.log_path.read_text(errors="replace")
    assert secret_part not in log
    assert tenant_server.admin_key.split("_", 2)[2] not in log

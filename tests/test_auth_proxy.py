"""Trusted proxy headers: honoured from the proxy's address, ignored from any other.

The server trusts 127.0.0.1 (where the test client connects from). The untrusted branch is
exercised end to end too: uvicorn, trusting loopback for ``X-Forwarded-For``, reports the
forwarded address as the client, which is not a trusted proxy.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import requests

from mlflow_tenant_plugins.auth.proxy import TrustedProxyMethod, is_trusted, parse_networks
from mlflow_tenant_plugins.auth.ttl_cache import TtlCache
from mlflow_tenant_plugins.config import ConfigError, Settings
from mlflow_tenant_plugins.tenancy.roles import Role
from tests.fixtures.servers import MlflowServer, start_mlflow_server, stop_mlflow_server

SEARCH = "/api/2.0/mlflow/experiments/search"
CREATE = "/api/2.0/mlflow/experiments/create"


@pytest.fixture(scope="module")
def proxy_server(tmp_path_factory) -> Iterator[MlflowServer]:
    server = start_mlflow_server(tmp_path_factory.mktemp("proxy-server"), extra_env={
        "MLFLOW_TENANT_AUTH_METHODS": "proxy,key",
        "MLFLOW_TENANT_PROXY_ADDRESSES": "10.20.0.0/16, 127.0.0.1",
        # These tests exercise provisioning from asserted claims; the default ("registry")
        # is covered in tests/test_trust_rules.py.
        "MLFLOW_TENANT_EXTERNAL_ROLES": "asserted",
    })
    yield server
    stop_mlflow_server(server)


@pytest.fixture(scope="module")
def tenant(proxy_server: MlflowServer) -> str:
    name = f"p{secrets.token_hex(4)}"
    proxy_server.registry.create_tenant(name)
    return name


def _post(server: MlflowServer, path: str, body: dict, **headers: str) -> requests.Response:
    return requests.post(server.url + path, json=body, timeout=30,
                         headers={k.replace("_", "-"): v for k, v in headers.items()})


# -- unit: the address check -----------------------------------------------------------------
NETS = parse_networks(("10.20.0.0/16", "192.0.2.7", "2001:db8::/32"))


@pytest.mark.parametrize(("addr", "trusted"), [
    ("10.20.3.4", True), ("192.0.2.7", True), ("192.0.2.8", False), ("10.21.0.1", False),
    ("2001:db8::1", True), ("::ffff:10.20.0.9", True), ("2001:db9::1", False),
    (None, False), ("", False), ("not-an-ip", False),
])
def test_only_configured_addresses_and_networks_are_trusted(addr, trusted):
    assert is_trusted(addr, NETS) is trusted


def test_headers_from_an_untrusted_address_are_ignored_as_if_absent():
    method = TrustedProxyMethod(Settings(proxy_addresses=("10.20.0.0/16",)), registry=None,
                                cache=TtlCache(1))
    headers = {"x-forwarded-user": "mallory", "x-forwarded-tenant": "acme",
               "x-forwarded-role": "admin"}
    assert method(headers, "203.0.113.9") is None  # the registry is never consulted


@pytest.mark.parametrize("addresses", [(), ("10.0.0.300",), ("example.com",)])
def test_proxy_method_without_valid_addresses_stops_the_server_at_start(addresses):
    with pytest.raises(ConfigError, match="proxy_addresses"):
        TrustedProxyMethod(Settings(proxy_addresses=addresses), registry=None,
                           cache=TtlCache(1))


# -- end to end --------------------------------------------------------------------------------
def test_trusted_proxy_headers_act_in_the_named_tenant_with_the_named_role(proxy_server, tenant):
    user = f"erin-{secrets.token_hex(3)}"
    made = _post(proxy_server, CREATE, {"name": f"via-proxy-{user}"}, X_Forwarded_User=user,
                 X_Forwarded_Tenant=tenant, X_Forwarded_Role="editor")
    assert made.status_code == 200, made.text
    found = _post(proxy_server, SEARCH, {"max_results": 100}, X_Forwarded_User=user)
    assert found.status_code == 200, found.text  # no tenant header: its single binding
    assert f"via-proxy-{user}" in [e["name"] for e in found.json()["experiments"]]
    assert proxy_server.registry.bindings_of(f"proxy:{user}") == {tenant: Role.EDITOR}


def test_role_header_absent_means_viewer(proxy_server, tenant):
    user = f"frank-{secrets.token_hex(3)}"
    headers = {"X_Forwarded_User": user, "X_Forwarded_Tenant": tenant}
    assert _post(proxy_server, SEARCH, {"max_results": 1}, **headers).status_code == 200
    assert _post(proxy_server, CREATE, {"name": "no"}, **headers).status_code == 403


def test_headers_relayed_for_an_untrusted_client_get_401(proxy_server, tenant):
    refused = _post(proxy_server, SEARCH, {"max_results": 1}, X_Forwarded_User="mallory",
                    X_Forwarded_Tenant=tenant, X_Forwarded_Role="admin",
                    X_Forwarded_For="203.0.113.9")
    assert refused.status_code == 401
    assert refused.json()["message"].startswith("no credentials")


def test_invalid_role_header_gets_401_with_the_reason(proxy_server, tenant):
    refused = _post(proxy_server, SEARCH, {"max_results": 1}, X_Forwarded_User="gina",
                    X_Forwarded_Tenant=tenant, X_Forwarded_Role="superuser")
    assert refused.status_code == 401
    assert "is not a role" in refused.json()["message"]


def test_proxy_user_cannot_reach_another_tenant(proxy_server, tenant):
    other = f"p{secrets.token_hex(4)}"
    proxy_server.registry.create_tenant(other)
    headers = {"X_Forwarded_User": "hank", "X_Forwarded_Tenant": tenant}
    named = _post(proxy_server, SEARCH, {"max_results": 1}, X_MLFLOW_WORKSPACE=other, **headers)
    assert named.status_code == 403


def test_api_keys_still_work_beside_the_proxy(proxy_server, tenant):
    _info, key = proxy_server.registry.create_key(tenant, "viewer")
    ok = _post(proxy_server, SEARCH, {"max_results": 1}, Authorization=f"Bearer {key}")
    assert ok.status_code == 200, ok.text

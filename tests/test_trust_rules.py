"""The trust rules, replayed black-box against a real tenant-auth server.

- Names nobody can squat: a key speaks for ``key:<key id>``; no caller chooses a principal, and
  none can be MLflow's bootstrap admin or carry MLflow's ``is_admin`` unless the platform made
  it a platform admin.
- One canonical request: repeated, folded or empty identity and workspace headers, and
  oversized bodies, are refused at the edge on every route, authenticated or not.
- Authority from the live registry: a demoted or unbound key loses its power within the
  credential cache's bound.
- No oracle: revoking another tenant's key id answers as an unknown id does.

Raw requests go through ``http.client`` so that header lists are sent exactly as written
(``requests`` merges repeated names).
"""

from __future__ import annotations

import http.client
import json
import secrets
import time
from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient

from tests.fixtures.servers import MlflowServer


def raw(server: MlflowServer, method: str, path: str, headers: list[tuple[str, str]],
        body: bytes | None = None) -> tuple[int, bytes]:
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if body:
            conn.send(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def world(tenant_server: MlflowServer, tmp_path_factory):
    """Tenants acme (admin and editor keys) and globex (editor key, an experiment, a run with
    an artifact holding a marker nobody else may ever see)."""
    reg = tenant_server.registry
    acme, globex = f"a{secrets.token_hex(4)}", f"g{secrets.token_hex(4)}"
    for t in (acme, globex):
        reg.create_tenant(t)
    _i, acme_admin = reg.create_key(acme, "admin")
    _i, acme_editor = reg.create_key(acme, "editor")
    _i, globex_editor = reg.create_key(globex, "editor")
    marker = f"globex-secret-{secrets.token_hex(6)}"
    import os

    saved = os.environ.get("MLFLOW_TRACKING_TOKEN")
    os.environ["MLFLOW_TRACKING_TOKEN"] = globex_editor
    try:
        client = MlflowClient(tracking_uri=tenant_server.url)
        exp_id = client.create_experiment(marker)
        run = client.create_run(exp_id)
        src = tmp_path_factory.mktemp("globex") / "secret.txt"
        src.write_text(marker)
        client.log_artifact(run.info.run_id, str(src))
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
        else:
            os.environ["MLFLOW_TRACKING_TOKEN"] = saved
    artifact_path = f"{exp_id}/{run.info.run_id}/artifacts/secret.txt"
    return {"server": tenant_server, "acme": acme, "globex": globex, "acme_admin": acme_admin,
            "acme_editor": acme_editor, "globex_editor": globex_editor, "marker": marker,
            "exp_id": exp_id, "artifact": artifact_path}


def _post(server: MlflowServer, key: str, path: str, body: dict) -> requests.Response:
    return requests.post(server.url + path, json=body, timeout=60,
                         headers={"Authorization": f"Bearer {key}"})


# -- names nobody can squat ----------------------------------------------------------------
@pytest.mark.parametrize("principal", ["platform-admin", "mlflow-bootstrap-admin", "admin:root",
                                       "oidc:alice@globex.example"])
def test_a_tenant_admin_cannot_choose_whom_a_new_key_speaks_for(world, principal):
    server = world["server"]
    before = {k.key_id for k in server.registry.list_keys(world["acme"])}
    resp = _post(server, world["acme_admin"], "/api/2.0/tenants/keys/create",
                 {"tenant": world["acme"], "role": "viewer", "principal": principal})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "secret" not in resp.json()
    assert {k.key_id for k in server.registry.list_keys(world["acme"])} == before


def test_a_key_speaks_for_a_principal_named_after_itself(world):
    resp = _post(world["server"], world["acme_admin"], "/api/2.0/tenants/keys/create",
                 {"tenant": world["acme"], "role": "viewer"})
    assert resp.status_code == 200, resp.text
    key = resp.json()["key"]
    assert key["principal"] == f"key:{key['key_id']}"


@pytest.mark.parametrize("principal", ["key:000000000000", "admin:root", "platform-admin",
                                       "mlflow-bootstrap-admin", "alice"])
def test_a_tenant_admin_binds_only_people_and_workload_identities(world, principal):
    resp = _post(world["server"], world["acme_admin"], "/api/2.0/tenants/members/bind",
                 {"tenant": world["acme"], "principal": principal, "role": "admin"})
    assert resp.status_code == 400, resp.text
    assert principal not in {m.principal for m in world["server"].registry.members(world["acme"])}


def test_a_tenant_admin_key_reaches_none_of_mlflows_server_admin_routes(world):
    server, headers = world["server"], {"Authorization": f"Bearer {world['acme_admin']}"}
    listed = requests.get(f"{server.url}/api/3.0/mlflow/workspaces", headers=headers, timeout=60)
    assert world["globex"] not in listed.text
    for method, path in [("PATCH", f"/api/3.0/mlflow/workspaces/{world['globex']}"),
                         ("DELETE", f"/api/3.0/mlflow/workspaces/{world['globex']}?mode=CASCADE"),
                         ("GET", "/api/2.0/mlflow/users/list"),
                         ("PATCH", "/api/2.0/mlflow/users/update-admin")]:
        resp = requests.request(method, server.url + path, headers=headers, timeout=60,
                                json={"description": "x", "username": "x", "is_admin": True})
        assert resp.status_code in (401, 403, 404), (method, path, resp.status_code, resp.text)
    assert server.registry.mirror.workspace_exists(world["globex"])


def test_a_principal_holding_mlflow_admin_it_was_not_granted_is_refused(world):
    """The old backdoor (``users/update-admin`` on a key's user) no longer opens anything."""
    server = world["server"]
    info, key = server.registry.create_key(world["acme"], "viewer")
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{server.url}/api/3.0/mlflow/workspaces"
    assert requests.get(url, headers=headers, timeout=60).status_code == 200
    server.registry.mirror.auth.update_user(info.principal, is_admin=True)
    wait_for(lambda: requests.get(url, headers=headers, timeout=60).status_code == 401,
             "the admin flag to be noticed")
    resp = requests.get(url, headers=headers, timeout=60)
    assert world["globex"] not in resp.text


# -- one canonical request -----------------------------------------------------------------
def _artifact_get(world, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    return raw(world["server"], "GET",
               f"/api/2.0/mlflow-artifacts/artifacts/{world['artifact']}", headers)


def test_the_owner_reads_its_artifact_through_the_proxy(world):
    status, body = _artifact_get(world, [("Authorization", f"Bearer {world['globex_editor']}")])
    assert status == 200 and world["marker"].encode() in body


@pytest.mark.parametrize("spelling", [
    [("X-MLFLOW-WORKSPACE", "{globex}"), ("X-MLFLOW-WORKSPACE", "{acme}")],
    [("X-MLFLOW-WORKSPACE", "{acme}"), ("X-MLFLOW-WORKSPACE", "{globex}")],
    [("X-MLFLOW-WORKSPACE", "{acme}"), ("x_mlflow_workspace", "{globex}")],
    [("x_mlflow_workspace", "{globex}")],
    [("X-MLFLOW-WORKSPACE", ""), ("X-MLFLOW-WORKSPACE", "{globex}")],
    [("Authorization", "")],
])
def test_ambiguous_workspace_headers_are_refused_before_anything_reads_them(world, spelling):
    headers = [("Authorization", f"Bearer {world['acme_editor']}")]
    headers += [(n, v.format(**world)) for n, v in spelling]
    status, body = _artifact_get(world, headers)
    assert status == 400, body
    assert json.loads(body)["error_code"] == "INVALID_PARAMETER_VALUE"
    assert world["marker"].encode() not in body


def test_an_empty_workspace_header_means_the_callers_own_tenant(world):
    """MLflow's UI sends the header empty before a workspace is chosen: the caller lands in
    its own tenant, and globex's artifact stays out of reach."""
    status, body = _artifact_get(world, [("Authorization", f"Bearer {world['acme_editor']}"),
                                         ("X-MLFLOW-WORKSPACE", "")])
    assert status in (403, 404) and world["marker"].encode() not in body
    listed = raw(world["server"], "GET", "/ajax-api/3.0/mlflow/workspaces", [
        ("Authorization", f"Bearer {world['acme_editor']}"), ("X-MLFLOW-WORKSPACE", "")])
    assert listed[0] == 200 and world["acme"].encode() in listed[1]
    assert world["globex"].encode() not in listed[1]


def test_a_repeated_authorization_header_is_refused(world):
    status, body = _artifact_get(world, [
        ("Authorization", f"Bearer {world['acme_editor']}"),
        ("Authorization", f"Bearer {world['globex_editor']}")])
    assert status == 400 and world["marker"].encode() not in body


def test_an_oversized_body_is_refused_on_an_unauthenticated_route(world):
    server = world["server"]
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:  # declare 500 MB and send none of it: the edge answers from the header alone
        conn.putrequest("POST", "/health")
        conn.putheader("Content-Length", str(500 * 1024 * 1024))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    finally:
        conn.close()


def test_an_oversized_chunked_body_is_refused_while_it_streams(tenant_server, tmp_path):
    """No declared length: the body is counted as it arrives (limit lowered for the test)."""
    from tests.fixtures.servers import start_mlflow_server, stop_mlflow_server

    server = start_mlflow_server(tmp_path / "small", extra_env={
        "MLFLOW_TENANT_MAX_REQUEST_BODY_BYTES": "65536"})
    try:
        chunks = (b"x" * 16384 for _ in range(64))  # 1 MiB in chunks, to a route without login
        resp = requests.post(f"{server.url}/health", data=chunks, timeout=60)
        assert resp.status_code == 413, resp.text
        assert resp.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
        small = requests.post(f"{server.url}/health", data=(b"x" for _ in range(3)), timeout=60)
        assert small.status_code != 413  # a small body goes on as usual
    finally:
        stop_mlflow_server(server)


_KEYS = st.sampled_from(["acme_editor", "globex_editor", "none"])
_WS = st.sampled_from(["{acme}", "{globex}", "default", "", " {globex} ", "{globex},{acme}"])
_NAMES = st.sampled_from(["X-MLFLOW-WORKSPACE", "x-mlflow-workspace", "x_mlflow_workspace",
                          "X_Mlflow_Workspace"])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(auth=st.lists(_KEYS, min_size=1, max_size=2),
       spaces=st.lists(st.tuples(_NAMES, _WS), max_size=3))
def test_no_header_combination_lets_acme_read_globex_artifacts(world, auth, spaces):
    """Whatever acme's credentials arrive with — repeated, folded, padded, empty or joined
    workspace headers — globex's artifact is served only to globex's own key, alone."""
    headers = [("Authorization", f"Bearer {world[k]}") for k in auth if k != "none"]
    headers += [(n, v.format(**world)) for n, v in spaces]
    status, body = _artifact_get(world, headers)
    globex_alone = [k for k in auth if k != "none"] == ["globex_editor"]
    if world["marker"].encode() in body:
        assert status == 200 and globex_alone, (headers, status)


# -- authority from the live registry ------------------------------------------------------
def test_a_demoted_admin_key_loses_its_power(world):
    server, reg = world["server"], world["server"].registry
    info, key = reg.create_key(world["acme"], "admin")
    create = {"tenant": world["acme"], "role": "admin"}
    assert _post(server, key, "/api/2.0/tenants/keys/create", create).status_code == 200
    reg.bind(info.principal, world["acme"], "viewer")
    wait_for(lambda: _post(server, key, "/api/2.0/tenants/keys/create", create).status_code
             == 403, "the demotion to take effect")
    listed = {k.key_id: k.role for k in reg.list_keys(world["acme"])}
    assert listed[info.key_id] == "viewer"


def test_an_unbound_key_stops_working_and_cannot_rebind_itself(world):
    server, reg = world["server"], world["server"].registry
    info, key = reg.create_key(world["acme"], "admin")
    reg.unbind(info.principal, world["acme"])
    wait_for(lambda: _post(server, key, "/api/2.0/tenants/members/bind", {
        "tenant": world["acme"], "principal": info.principal, "role": "admin"}).status_code
        == 401, "the unbinding to take effect")
    assert info.principal not in {m.principal for m in reg.members(world["acme"])}


def test_a_key_principal_cannot_be_bound_in_another_tenant(world):
    reg = world["server"].registry
    info, _key = reg.create_key(world["acme"], "viewer")
    with pytest.raises(Exception, match="another tenant"):
        reg.bind(info.principal, world["globex"], "admin")


# -- no oracle -----------------------------------------------------------------------------
def test_revoking_another_tenants_key_answers_as_an_unknown_key_does(world):
    server, reg = world["server"], world["server"].registry
    foreign, _k = reg.create_key(world["globex"], "viewer")
    answers = []
    for key_id in (foreign.key_id, "0123456789ab"):
        resp = _post(server, world["acme_admin"], "/api/2.0/tenants/keys/revoke",
                     {"key_id": key_id})
        body = resp.json()
        answers.append((resp.status_code, body["error_code"],
                        body["message"].replace(key_id, "ID")))
    assert answers[0] == answers[1] and answers[0][0] == 404, answers
    assert reg.get_key(foreign.key_id).revoked_at is None


# -- asserted identities take roles from the registry by default ----------------------------
@pytest.fixture
def local_registry(tmp_path):
    from mlflow_tenant_plugins.tenancy import TenantRegistry

    registry = TenantRegistry(f"sqlite:///{tmp_path}/registry.db")
    registry.create_tenant("acme")
    registry.create_tenant("globex")
    return registry


def test_an_asserted_role_grants_nothing_the_registry_did_not(local_registry):
    from mlflow_tenant_plugins.auth.authenticator import Refusal
    from mlflow_tenant_plugins.auth.external import external_identity
    from mlflow_tenant_plugins.tenancy.roles import Role

    reg = local_registry
    unbound = external_identity(reg, "proxy:mallory", "acme", Role.ADMIN, "proxy")
    assert isinstance(unbound, Refusal)
    assert reg.bindings_of("proxy:mallory") == {}  # nothing provisioned on first sight
    reg.bind("proxy:bob", "acme", "viewer")
    bob = external_identity(reg, "proxy:bob", "acme", Role.ADMIN, "proxy")
    assert (bob.tenant, bob.role) == ("acme", Role.VIEWER)  # the registry's role, not the claim
    assert isinstance(external_identity(reg, "proxy:bob", "globex", Role.VIEWER, "proxy"),
                      Refusal)


def test_asserted_mode_provisions_the_claimed_role(local_registry):
    from mlflow_tenant_plugins.auth.external import external_identity
    from mlflow_tenant_plugins.tenancy.roles import Role

    carol = external_identity(local_registry, "oidc:carol", "acme", Role.EDITOR, "oidc",
                              provision=True)
    assert (carol.tenant, carol.role) == ("acme", Role.EDITOR)
    assert local_registry.bindings_of("oidc:carol") == {"acme": Role.EDITOR}


def test_an_unknown_external_roles_setting_stops_the_server_at_start():
    from mlflow_tenant_plugins.auth.external import provisions
    from mlflow_tenant_plugins.config import ConfigError, Settings

    assert provisions(Settings()) is False
    with pytest.raises(ConfigError, match="external_roles"):
        provisions(Settings(external_roles="claims"))


# -- authentication cannot stall a worker ---------------------------------------------------
def test_unknown_kids_arriving_fast_hold_at_most_four_key_fetches():
    """A caller sending tokens with fresh kids makes the server fetch keys; past four fetches in
    flight the next caller is told to retry instead of queueing behind them."""
    import threading

    from mlflow_tenant_plugins.auth.base import MAX_OUTBOUND_CHECKS
    from mlflow_tenant_plugins.auth.oidc import AlbKeys, KeysBusy

    release, entered = threading.Event(), threading.Semaphore(0)

    class Slow:
        status_code = 404
        content = b""

    def fetch(_url):
        entered.release()
        release.wait(30)
        return Slow()

    keys = AlbKeys("http://127.0.0.1:9/{region}/{kid}", "us-east-1", fetch=fetch)
    kids = [secrets.token_hex(8) for _ in range(MAX_OUTBOUND_CHECKS)]
    outcomes: list[Exception] = []

    def ask(kid: str) -> None:
        try:
            keys.get(kid)
        except Exception as exc:  # the 404 for an unknown kid, once released
            outcomes.append(exc)

    threads = [threading.Thread(target=ask, args=(k,)) for k in kids]
    for t in threads:
        t.start()
    for _ in kids:
        assert entered.acquire(timeout=30)
    with pytest.raises(KeysBusy):
        keys.get(secrets.token_hex(8))
    release.set()
    for t in threads:
        t.join(30)
    assert keys.fetches == MAX_OUTBOUND_CHECKS
    assert len(outcomes) == MAX_OUTBOUND_CHECKS and not any(
        isinstance(e, KeysBusy) for e in outcomes)


def test_a_person_bound_later_elsewhere_keeps_landing_in_its_home_tenant(local_registry):
    """Another tenant's admin binding a person cannot move it or lock it out: naming no
    tenant lands in the oldest binding; naming a bound workspace picks that one."""
    from mlflow_tenant_plugins.auth.external import external_identity
    from mlflow_tenant_plugins.tenancy.roles import Role

    reg = local_registry
    reg.bind("proxy:bob", "globex", "editor")
    reg.bind("proxy:bob", "acme", "viewer")  # later, by acme's admin
    home = external_identity(reg, "proxy:bob", None, Role.VIEWER, "proxy")
    assert (home.tenant, home.role) == ("globex", Role.EDITOR)
    chosen = external_identity(reg, "proxy:bob", None, Role.VIEWER, "proxy", requested="acme")
    assert (chosen.tenant, chosen.role) == ("acme", Role.VIEWER)
    elsewhere = external_identity(reg, "proxy:bob", None, Role.VIEWER, "proxy",
                                  requested="initech")
    assert elsewhere.tenant == "globex"  # an unbound workspace provisions nothing
    assert set(reg.bindings_of("proxy:bob")) == {"globex", "acme"}


def test_unbinding_answers_alike_for_members_elsewhere_and_nobody(local_registry):
    from mlflow.exceptions import MlflowException

    reg = local_registry
    reg.bind("oidc:alice@globex.example", "globex", "editor")
    answers = []
    for who in ("oidc:alice@globex.example", "oidc:nobody@globex.example"):
        with pytest.raises(MlflowException) as exc:
            reg.unbind(who, "acme")
        answers.append((exc.value.error_code, exc.value.message.replace(who, "WHO")))
    assert answers[0] == answers[1] and answers[0][0] == "RESOURCE_DOES_NOT_EXIST"
    assert list(reg.bindings_of("oidc:alice@globex.example")) == ["globex"]

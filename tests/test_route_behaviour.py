"""Route classes checked by behaviour, not by names.

``GET /api/2.0/tenants/routes`` lists how the running app classes each route; this module
probes them over HTTP. Every route classed ``authenticated`` (MLflow admits any logged-in
caller) must be one reviewed below, must show tenant B nothing of tenant A, and must let A's
viewer change nothing. The routes this package reserves for platform admins refuse every
tenant role, under ``--static-prefix`` too and however the path is spelled.
"""

from __future__ import annotations

import json
import secrets

import pytest
import requests

from mlflow_tenant_plugins.routes import is_platform_only
from tests.fixtures.servers import MlflowServer, start_mlflow_server, stop_mlflow_server
from tests.test_route_coverage import sample_path, served_routes

# Every route MLflow admits any authenticated caller to, and why it is safe on a shared server.
REVIEWED_AUTHENTICATED = {
    ("/", "GET"): "the UI's index.html: static",
    ("/version", "GET"): "MLflow's version string",
    ("/ajax-api/3.0/mlflow/gateway/budgets/get", "GET"): "store query scoped to the workspace",
    ("/api/3.0/mlflow/gateway/budgets/get", "GET"): "store query scoped to the workspace",
    ("/ajax-api/3.0/mlflow/gateway/budgets/list", "GET"): "store query scoped to the workspace",
    ("/api/3.0/mlflow/gateway/budgets/list", "GET"): "store query scoped to the workspace",
    ("/ajax-api/3.0/mlflow/gateway/budgets/windows", "GET"):
        "filtered to the request's workspace (and GLOBAL policies, which only platform "
        "admins can create)",
    ("/api/3.0/mlflow/gateway/budgets/windows", "GET"): "as the ajax twin",
    ("/ajax-api/3.0/mlflow/gateway/provider-config", "GET"): "static provider catalogue",
    ("/ajax-api/3.0/mlflow/gateway/supported-models", "GET"): "static model catalogue",
    ("/ajax-api/3.0/mlflow/gateway/supported-providers", "GET"): "static provider list",
    ("/ajax-api/3.0/mlflow/ui-telemetry", "GET"): "server-wide telemetry switch",
    ("/ajax-api/3.0/mlflow/ui-telemetry", "POST"): "UI usage events; no tenant object",
    ("/ajax-api/2.0/mlflow/users/current", "GET"): "the caller itself",
    ("/api/2.0/mlflow/users/current", "GET"): "the caller itself",
    ("/ajax-api/3.0/mlflow/users/current/permissions", "GET"): "the caller's own grants",
    ("/api/3.0/mlflow/users/current/permissions", "GET"): "the caller's own grants",
    ("/ajax-api/3.0/mlflow/scorers/online-configs", "GET"):
        "without scorer_ids an empty answer; with them MLflow checks each experiment",
    ("/api/3.0/mlflow/scorers/online-configs", "GET"): "as the ajax twin",
}
# Routes MLflow admits any authenticated caller to that this package reserves for platform
# admins (mlflow_tenant_plugins.routes): checked with every tenant role.
PLATFORM_ONLY_PROBES = [
    ("POST", "/ajax-api/3.0/jobs/",
     {"job_name": "invoke_scorer", "params": {"experiment_id": "0"}}),
    ("POST", "/ajax-api/3.0/mlflow/demo/generate", {}),
    ("GET", "/ajax-api/2.0/mlflow/gateway-proxy", None),
    ("POST", "/ajax-api/2.0/mlflow/gateway-proxy", {"gateway_path": "api/2.0/endpoints/"}),
    ("GET", "/ajax-api/3.0/mlflow/assistant/config", None),
    ("PUT", "/ajax-api/3.0/mlflow/assistant/config", {}),
    # MLflow's account management: the registry is the only writer of its tables, and
    # users/list names every tenant's principals to any workspace member.
    ("GET", "/api/2.0/mlflow/users/list", None),
    ("GET", "/ajax-api/2.0/mlflow/users/list", None),
    ("POST", "/api/2.0/mlflow/users/create", {"username": "oidc:x", "password": "p"}),
    ("GET", "/api/3.0/mlflow/roles/list?workspace=default", None),
    ("POST", "/api/3.0/mlflow/roles/create", {"name": "r", "workspace": "default"}),
]


@pytest.fixture(scope="module")
def routes(tenant_server: MlflowServer) -> list[dict]:
    return served_routes(tenant_server)


@pytest.fixture(scope="module")
def world(tenant_server: MlflowServer) -> dict:
    """Tenant A with an experiment, a run, a registered model and a budget policy, all
    carrying a marker; A's viewer and editor keys; tenant B's editor and viewer keys."""
    reg, url = tenant_server.registry, tenant_server.url
    a, b = f"rba{secrets.token_hex(3)}", f"rbb{secrets.token_hex(3)}"
    mark = f"mark{secrets.token_hex(4)}"
    for name in (a, b):
        reg.create_tenant(name)
    keys = {(t, role): reg.create_key(t, role)[1] for t in (a, b) for role in ("viewer",
                                                                                 "editor")}
    editor = tenant_server.session(keys[(a, "editor")])
    exp = editor.post(f"{url}/api/2.0/mlflow/experiments/create", json={"name": mark})
    assert exp.status_code == 200, exp.text
    exp_id = exp.json()["experiment_id"]
    run = editor.post(f"{url}/api/2.0/mlflow/runs/create",
                      json={"experiment_id": exp_id, "run_name": mark}).json()["run"]["info"]
    assert editor.post(f"{url}/api/2.0/mlflow/registered-models/create",
                       json={"name": mark}).status_code == 200
    # Budget policies are created by MLflow admins only: the platform admin sets one in A.
    admin_in_a = tenant_server.session(tenant_server.admin_key, workspace=a)
    budget = admin_in_a.post(f"{url}/api/3.0/mlflow/gateway/budgets/create", json={
        "budget_unit": "USD", "budget_amount": 12345.0, "budget_action": "ALERT",
        "target_scope": "WORKSPACE", "duration": {"unit": "DAYS", "value": 1},
        "created_by": mark})
    assert budget.status_code == 200, budget.text
    policy_id = budget.json()["budget_policy"]["budget_policy_id"]
    return {"url": url, "a": a, "b": b, "mark": mark, "keys": keys, "exp": exp_id,
            "run": run["run_id"], "policy": policy_id,
            # What only A's objects hold (short numeric ids would match anything, and a 404
            # may repeat the id the caller sent): the marker, the run's uuid, A's name.
            "secrets": [mark, run["run_id"], a]}


def _probe(session: requests.Session, url: str, method: str, path: str, world: dict):
    """One request per route, with the parameters that would name tenant A's objects."""
    params = {"budget_policy_id": world["policy"], "experiment_id": world["exp"],
              "run_id": world["run"]}
    body = {"records": [{"event_name": "x", "timestamp_ns": 1, "params": {}}],
            **params} if method != "GET" else None
    return session.request(method, url + sample_path(path), params=params if method == "GET"
                           else None, json=body, timeout=60)


def test_authenticated_routes_are_exactly_the_reviewed_ones(routes):
    """A route MLflow opens to every caller (now, or after an upgrade) fails here until
    someone has decided whether it is safe on a shared server."""
    found = {(r["path"], r["method"]) for r in routes if r["access"] == "authenticated"}
    assert found == set(REVIEWED_AUTHENTICATED), {
        "unreviewed": sorted(found - set(REVIEWED_AUTHENTICATED)),
        "no longer authenticated": sorted(set(REVIEWED_AUTHENTICATED) - found)}


def test_no_authenticated_route_shows_another_tenant_anything(routes, tenant_server, world):
    leaks = []
    for role in ("viewer", "editor"):
        s = tenant_server.session(world["keys"][(world["b"], role)])
        for r in routes:
            if r["access"] != "authenticated":
                continue
            resp = _probe(s, world["url"], r["method"], r["path"], world)
            leaked = [x for x in world["secrets"] if x in resp.text]
            if leaked:
                leaks.append((role, r["method"], r["path"], leaked, resp.text[:200]))
    assert not leaks


def test_budget_routes_show_a_tenant_only_its_own_policies(tenant_server, world):
    url, policy = world["url"], world["policy"]
    own = tenant_server.session(world["keys"][(world["a"], "viewer")])
    other = tenant_server.session(world["keys"][(world["b"], "editor")])
    for api in ("/api/3.0", "/ajax-api/3.0"):
        got = own.get(f"{url}{api}/mlflow/gateway/budgets/get", params={"budget_policy_id":
                                                                         policy})
        assert got.status_code == 200 and world["mark"] in got.text, got.text
        listed = own.get(f"{url}{api}/mlflow/gateway/budgets/list").json()
        assert policy in json.dumps(listed)
        windows = own.get(f"{url}{api}/mlflow/gateway/budgets/windows")
        assert windows.status_code == 200, windows.text
        assert other.get(f"{url}{api}/mlflow/gateway/budgets/get",
                         params={"budget_policy_id": policy}).status_code == 404
        assert policy not in other.get(f"{url}{api}/mlflow/gateway/budgets/list").text
        assert policy not in other.get(f"{url}{api}/mlflow/gateway/budgets/windows").text


def _fingerprint(tenant_server: MlflowServer, world: dict) -> str:
    """What A's editor can see of A: every object a route could have created or changed."""
    s = tenant_server.session(world["keys"][(world["a"], "editor")])
    url = world["url"]
    parts = [
        s.post(f"{url}/api/2.0/mlflow/experiments/search", json={"max_results": 1000}),
        s.post(f"{url}/api/2.0/mlflow/runs/search",
               json={"experiment_ids": [world["exp"]], "run_view_type": "ALL"}),
        s.get(f"{url}/api/2.0/mlflow/registered-models/search"),
        s.get(f"{url}/api/3.0/mlflow/gateway/budgets/list"),
        s.post(f"{url}/ajax-api/3.0/jobs/search", json={}),
    ]
    for p in parts:
        assert p.status_code == 200, (p.url, p.text)
    return json.dumps([p.json() for p in parts], sort_keys=True)


def test_no_authenticated_route_lets_a_viewer_change_anything(routes, tenant_server, world):
    before = _fingerprint(tenant_server, world)
    viewer = tenant_server.session(world["keys"][(world["a"], "viewer")])
    for r in routes:
        if r["access"] == "authenticated":
            _probe(viewer, world["url"], r["method"], r["path"], world)
        assert r["access"] != "authenticated" or r["method"] in ("GET", "POST")
    assert _fingerprint(tenant_server, world) == before


@pytest.mark.parametrize("role", ["viewer", "editor", "admin"])
def test_platform_only_routes_refuse_every_tenant_role(tenant_server, world, role):
    key = tenant_server.registry.create_key(world["a"], role)[1]
    s = tenant_server.session(key)
    before = _fingerprint(tenant_server, world)
    for method, path, body in PLATFORM_ONLY_PROBES:
        resp = s.request(method, world["url"] + path, json=body, timeout=60)
        assert resp.status_code == 403, (role, method, path, resp.status_code, resp.text[:200])
        assert resp.json()["error_code"] == "PERMISSION_DENIED"
    assert _fingerprint(tenant_server, world) == before


def test_jobs_are_scoped_to_their_workspace(tenant_server, world):
    """MLflow's job store filters by workspace; a job made in A (by the platform admin, the
    only one who may submit) is invisible to B, by id and in search."""
    url = world["url"]
    admin_in_a = tenant_server.session(tenant_server.admin_key, workspace=world["a"])
    job = admin_in_a.post(f"{url}/ajax-api/3.0/jobs/", json={
        "job_name": "invoke_scorer",
        "params": {"experiment_id": world["exp"], "serialized_scorer": "{}", "trace_ids": []}})
    assert job.status_code == 200, job.text
    job_id = job.json()["job_id"]
    admin_in_b = tenant_server.session(tenant_server.admin_key, workspace=world["b"])
    assert admin_in_b.get(f"{url}/ajax-api/3.0/jobs/{job_id}").status_code == 404
    assert job_id not in admin_in_b.post(f"{url}/ajax-api/3.0/jobs/search", json={}).text
    other = tenant_server.session(world["keys"][(world["b"], "editor")])
    assert other.get(f"{url}/ajax-api/3.0/jobs/{job_id}").status_code in (403, 404)
    assert other.patch(f"{url}/ajax-api/3.0/jobs/cancel/{job_id}").status_code in (403, 404)
    assert job_id not in other.post(f"{url}/ajax-api/3.0/jobs/search", json={}).text


# --static-prefix: the platform-only check must see through the prefix and every spelling.

@pytest.mark.parametrize("path", [
    "/PREFIX/ajax-api/3.0/mlflow/assistant/config",
    "/PREFIX//ajax-api/3.0/mlflow/assistant/config",
    "/PREFIX/ajax-api/3.0/mlflow/assistant/config/",
    "/PREFIX/ajax-api/3.0/mlflow/%61ssistant/config",
    "/PREFIX/ajax-api/3.0/mlflow/%2561ssistant/config",
    "/prefix/AJAX-API/3.0/mlflow/assistant/config",
    "/PREFIX/ajax-api/3.0/mlflow/x/../assistant/config",
    "/ajax-api/3.0/mlflow/assistant/config",
    "/PREFIX/ajax-api/3.0/jobs/",
    "/PREFIX/ajax-api/3.0/jobs",
])
def test_platform_only_sees_through_prefix_and_spelling(path):
    assert is_platform_only(path, "/PREFIX")


@pytest.mark.parametrize("path", [
    "/PREFIX/ajax-api/3.0/jobs/search", "/PREFIX/ajax-api/2.0/mlflow/runs/get",
    "/PREFIX/ajax-api/3.0/mlflow/demo/delete", "/ajax-api/3.0/jobs/abc",
])
def test_platform_only_leaves_tenant_routes_alone(path):
    assert not is_platform_only(path, "/PREFIX")


@pytest.fixture(scope="module")
def prefixed_server(tmp_path_factory):
    server = start_mlflow_server(tmp_path_factory.mktemp("prefixed"),
                                 extra_args=("--static-prefix", "/PREFIX"),
                                 health_path="/PREFIX/health")
    _k, server.admin_key = server.registry.create_key(None, "admin", admin_label="ci")
    yield server
    stop_mlflow_server(server)


def test_static_prefix_does_not_open_the_assistant_config_to_tenants(prefixed_server):
    reg = prefixed_server.registry
    tenant = f"sp{secrets.token_hex(3)}"
    reg.create_tenant(tenant)
    s = prefixed_server.session(reg.create_key(tenant, "editor")[1])
    url = prefixed_server.url
    for path in ("/PREFIX/ajax-api/3.0/mlflow/assistant/config",
                 "/PREFIX//ajax-api/3.0/mlflow/assistant/config",
                 "/PREFIX/ajax-api/3.0/mlflow/assistant/config/",
                 "/PREFIX/ajax-api/3.0/mlflow/%61ssistant/config"):
        for method in ("GET", "PUT"):
            r = s.request(method, url + path, json={}, timeout=60)
            assert r.status_code == 403, (method, path, r.status_code, r.text[:200])
    assert s.post(f"{url}/PREFIX/ajax-api/3.0/jobs/", json={}).status_code == 403
    # The prefixed server still serves the tenant, and the platform admin still reaches it.
    assert s.post(f"{url}/PREFIX/api/2.0/mlflow/experiments/search",
                  json={"max_results": 1}).status_code == 200
    admin = prefixed_server.session(prefixed_server.admin_key)
    assert admin.get(f"{url}/PREFIX/ajax-api/3.0/mlflow/assistant/config").status_code == 200

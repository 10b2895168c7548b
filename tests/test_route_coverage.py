"""Route coverage, black-box: every (route, method) the running tenant-auth app serves —
Flask and native FastAPI, ``/api`` and ``/ajax-api``, graphql, the artifact proxy with its
multipart and presigned routes, logged models, traces, prompts, gateway, jobs, webhooks and
our own routes — is classified, and the classes hold when probed over HTTP.

The classification is compared with ``tests/data/route_classes.json``: an MLflow upgrade
that adds, removes or reclassifies a route fails here until someone has looked at it
(regenerate with ``REGENERATE_ROUTE_SNAPSHOT=1``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import requests

from tests.fixtures.servers import MlflowServer

SNAPSHOT = Path(__file__).parent / "data" / "route_classes.json"
ACCESS = {"public", "authenticated", "tenant-scoped", "self-authorizing", "admin-only", "ours"}


def sample_path(path: str) -> str:
    """A concrete path for a Flask or FastAPI route pattern."""
    path = re.sub(r"<(?:int:)?\w+>", "1", path)
    path = re.sub(r"<path:\w+>", "1/x", path)
    return re.sub(r"\{\w+(?::\w+)?\}", "x", path)


def served_routes(server: MlflowServer) -> list[dict]:
    """The running app's route classes, as a platform admin reads them."""
    r = server.session(server.admin_key).get(f"{server.url}/api/2.0/tenants/routes")
    assert r.status_code == 200, r.text
    return r.json()["routes"]


@pytest.fixture(scope="module")
def routes(tenant_server: MlflowServer) -> list[dict]:
    return served_routes(tenant_server)


def test_every_served_route_is_classified(routes, record_property):
    assert len(routes) > 400
    unknown = [r for r in routes if r["access"] not in ACCESS]
    assert not unknown, unknown
    counts = {a: sum(r["access"] == a for r in routes) for a in sorted(ACCESS)}
    record_property("route_count", len(routes))
    print(f"\nroute coverage: {len(routes)} (route, method) pairs: {counts}")
    # Families the issue names must all be present and classified.
    paths = {r["path"] for r in routes}
    for family in ("/ajax-api/2.0/mlflow/runs/get", "/graphql", "/mlflow-artifacts/mpu/",
                   "/mlflow-artifacts/presigned/", "/mlflow/logged-models", "/mlflow/traces",
                   "/gateway/", "/jobs", "/mlflow/webhooks", "/api/2.0/tenants/"):
        assert any(family in p for p in paths), family


def test_route_classes_match_the_reviewed_snapshot(routes):
    current = sorted((r["kind"], r["path"], r["method"], r["access"]) for r in routes)
    if os.environ.get("REGENERATE_ROUTE_SNAPSHOT"):
        SNAPSHOT.write_text("[\n" + ",\n".join(json.dumps(c) for c in current) + "\n]\n")
    reviewed = sorted(tuple(c) for c in json.loads(SNAPSHOT.read_text()))
    added = sorted(set(current) - set(reviewed))
    removed = sorted(set(reviewed) - set(current))
    assert not added and not removed, (
        f"routes changed since the last review; classify them and regenerate the snapshot.\n"
        f"added: {added}\nremoved: {removed}"
    )


def test_every_protected_route_refuses_a_request_without_credentials(routes, tenant_server):
    open_routes = []
    for r in routes:
        if r["access"] == "public":
            continue
        resp = requests.request(r["method"], tenant_server.url + sample_path(r["path"]), timeout=30)
        if resp.status_code != 401:
            open_routes.append((r["method"], r["path"], resp.status_code))
    assert not open_routes


def test_admin_only_routes_refuse_a_tenant_admin(routes, tenant_server, make_tenant):
    _tenant, key = make_tenant("admin")
    s = tenant_server.session(key)
    allowed = []
    for r in routes:
        if r["access"] != "admin-only" or "/build/" in r["path"]:
            continue
        resp = s.request(r["method"], tenant_server.url + sample_path(r["path"]), json={},
                         timeout=30)
        if resp.status_code != 403:
            allowed.append((r["method"], r["path"], resp.status_code))
    assert not allowed


def test_gap_assistant_config_is_server_wide_so_tenants_cannot_change_it(
    tenant_server, make_tenant
):
    """MLflow admits any authenticated caller to the assistant's config and skill install;
    those are server-global, so on a shared server only platform admins may use them."""
    _tenant, key = make_tenant("admin")
    url = f"{tenant_server.url}/ajax-api/3.0/mlflow/assistant/config"
    assert tenant_server.session(key).put(url, json={}).status_code == 403
    assert tenant_server.session(tenant_server.admin_key).get(url).status_code != 403

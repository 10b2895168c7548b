"""Replays of MLflow's published auth bypasses and artifact traversals, each tried by tenant B
against tenant A's objects on a real tenant-auth server: ``/ajax-api`` twins, graphql nested
fields, presigned and multipart upload routes, model-version search, ``#``/``?`` fragments
and ``..`` in artifact paths and ``artifact_location``, ``DELETE`` on an artifact root.
All are refused, and A's data is intact afterwards.
"""

from __future__ import annotations

import secrets

import pytest
import requests

from tests.fixtures.servers import MlflowServer

MARK = f"replayA{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def two(tenant_server: MlflowServer, tmp_path_factory):
    reg = tenant_server.registry
    names = [f"ra{secrets.token_hex(3)}", f"rb{secrets.token_hex(3)}"]
    keys = []
    for n in names:
        reg.create_tenant(n)
        keys.append(reg.create_key(n, "editor")[1])
    a = tenant_server.session(keys[0])
    url = tenant_server.url
    exp = a.post(f"{url}/api/2.0/mlflow/experiments/create", json={"name": MARK}).json()
    run = a.post(f"{url}/api/2.0/mlflow/runs/create",
                 json={"experiment_id": exp["experiment_id"]}).json()["run"]["info"]
    art = f"{exp['experiment_id']}/{run['run_id']}/artifacts/secret.txt"
    put = a.put(f"{url}/api/2.0/mlflow-artifacts/artifacts/{art}", data=MARK.encode())
    assert put.status_code == 200, put.text
    a.post(f"{url}/api/2.0/mlflow/registered-models/create", json={"name": MARK})
    a.post(f"{url}/api/2.0/mlflow/model-versions/create",
           json={"name": MARK, "source": f"runs:/{run['run_id']}/x", "run_id": run["run_id"]})
    b = tenant_server.session(keys[1])
    b_exp = b.post(f"{url}/api/2.0/mlflow/experiments/create", json={"name": "mine"}).json()
    return {"url": url, "a": a, "b": b, "exp": exp["experiment_id"], "run": run["run_id"],
            "art": art, "b_exp": b_exp["experiment_id"], "a_name": names[0]}


def _no_leak(resp: requests.Response, sent: str = "") -> None:
    assert resp.status_code in (400, 401, 403, 404), (resp.request.method, resp.url,
                                                      resp.status_code, resp.text[:200])
    # A 404 repeats the name the caller itself sent ("... name=<sent> not found"), as MLflow's do.
    assert MARK not in resp.text.replace(f"name={sent} not found", "")


def test_ajax_api_twins_are_as_protected_as_api(two):
    b, url = two["b"], two["url"]
    for prefix in ("/api/2.0", "/ajax-api/2.0"):
        _no_leak(b.get(f"{url}{prefix}/mlflow/experiments/get",
                       params={"experiment_id": two["exp"]}))
        _no_leak(b.get(f"{url}{prefix}/mlflow/runs/get", params={"run_id": two["run"]}))
        _no_leak(b.get(f"{url}{prefix}/mlflow/registered-models/get", params={"name": MARK}),
                 sent=MARK)
        _no_leak(b.post(f"{url}{prefix}/mlflow/runs/delete", json={"run_id": two["run"]}))
        _no_leak(b.get(f"{url}{prefix}/mlflow-artifacts/artifacts/{two['art']}"))


def test_graphql_nested_model_versions_do_not_leak(two):
    b, url = two["b"], two["url"]
    for query in (
        '{ mlflowSearchModelVersions(input: {filter: "name=\'%s\'"}) '
        "{ modelVersions { name source runId } } }" % MARK,
        '{ mlflowGetRun(input: {runId: "%s"}) { run { info { runId } '
        "modelVersions { name source } } } }" % two["run"],
        '{ mlflowGetExperiment(input: {experimentId: "%s"}) { experiment { name } } }'
        % two["exp"],
    ):
        for path in ("/graphql", "/ajax-api/graphql"):
            r = b.post(f"{url}{path}", json={"query": query})
            assert MARK not in r.text, (path, query, r.text[:300])


def test_model_version_search_hides_other_tenants(two):
    b, url = two["b"], two["url"]
    for flt in (f"name='{MARK}'", f"run_id='{two['run']}'", ""):
        r = b.get(f"{url}/api/2.0/mlflow/model-versions/search", params={"filter": flt})
        assert MARK not in r.text


def test_presigned_and_multipart_routes_refuse_other_tenants_paths(two):
    b, url = two["b"], two["url"]
    base = f"{url}/api/2.0/mlflow-artifacts"
    _no_leak(b.post(f"{base}/mpu/create/{two['art']}", json={"path": "x", "num_parts": 1}))
    _no_leak(b.post(f"{base}/mpu/complete/{two['art']}",
                    json={"path": "x", "upload_id": "u", "parts": []}))
    _no_leak(b.post(f"{base}/mpu/abort/{two['art']}", json={"path": "x", "upload_id": "u"}))
    _no_leak(b.get(f"{base}/presigned/{two['art']}"))
    _no_leak(b.put(f"{base}/artifacts/{two['art']}", data=b"overwritten"))


@pytest.mark.parametrize("tail", [
    "{b_exp}/../{exp}/{run}/artifacts/secret.txt",
    "{b_exp}/%2e%2e/{exp}/{run}/artifacts/secret.txt",
    "{b_exp}/%252e%252e/{exp}/{run}/artifacts/secret.txt",
    "{b_exp}/..%2f{exp}/{run}/artifacts/secret.txt",
    # '#' and '?' sent inside the path (percent-encoded), not as fragment/query
    "{b_exp}/x%23/../../{exp}/{run}/artifacts/secret.txt",
    "{b_exp}/x%3F/../../{exp}/{run}/artifacts/secret.txt",
    "{b_exp}\\..\\{exp}\\{run}\\artifacts\\secret.txt",
    "workspaces/{a_name}/{exp}/{run}/artifacts/secret.txt",
])
def test_traversal_in_artifact_paths_is_refused(two, tail):
    b, url = two["b"], two["url"]
    path = tail.format(**two)
    for method in ("GET", "PUT", "DELETE"):
        r = b.request(method, f"{url}/api/2.0/mlflow-artifacts/artifacts/{path}", data=b"x")
        assert MARK not in r.text
        assert r.status_code in (400, 403, 404), (method, path, r.status_code)


def test_artifact_location_cannot_point_into_another_tenant(two):
    b, url = two["b"], two["url"]
    for loc in (f"mlflow-artifacts:/workspaces/{two['a_name']}/{two['exp']}",
                f"mlflow-artifacts:/{two['b_exp']}/../{two['exp']}",
                "file:///tmp", f"mlflow-artifacts:/{two['exp']}#x"):
        r = b.post(f"{url}/api/2.0/mlflow/experiments/create",
                   json={"name": f"loc-{secrets.token_hex(3)}", "artifact_location": loc})
        assert r.status_code in (400, 403), (loc, r.status_code, r.text[:200])


def test_delete_on_an_artifact_root_is_refused(two):
    b, url = two["b"], two["url"]
    for path in (two["exp"], f"{two['exp']}/{two['run']}", ""):
        _no_leak(b.delete(f"{url}/api/2.0/mlflow-artifacts/artifacts/{path}"))


def test_tenant_a_data_is_intact_after_the_replays(two):
    a, url = two["a"], two["url"]
    r = a.get(f"{url}/api/2.0/mlflow-artifacts/artifacts/{two['art']}")
    assert r.status_code == 200 and r.text == MARK
    r = a.get(f"{url}/api/2.0/mlflow/runs/get", params={"run_id": two["run"]})
    assert r.json()["run"]["info"]["lifecycle_stage"] == "active"

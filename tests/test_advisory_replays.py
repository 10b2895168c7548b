"""Replays of MLflow's published auth bypasses and artifact traversals, each tried by tenant B
against tenant A's objects on a real tenant-auth server: ``/ajax-api`` twins, graphql nested
fields, presigned and multipart upload routes, model-version search, ``#``/``?`` fragments
and ``..`` in artifact paths and ``artifact_location``, ``DELETE`` on an artifact root.
All are refused, and A's data is intact afterwards. Then MLflow's 2026 advisories, each
named by its identifier: LogInputs, unauthenticated jobs and OTLP routes, traces and
assessments, ``artifact_location`` SSRF, the default admin password.
"""

from __future__ import annotations

import json
import secrets

import pytest
import requests

from tests.fixtures.listener import Listener
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


# MLflow's 2026 advisories, replayed through the tenant-auth app.

def _viewer_of_a(tenant_server: MlflowServer, two) -> requests.Session:
    return tenant_server.session(tenant_server.registry.create_key(two["a_name"], "viewer")[1])


def test_log_inputs_needs_update_on_the_run_ghsa_3p64_6gvh_82v5(two, tenant_server):
    """LogInputs was missing from MLflow's run-update validators: a viewer, or another
    tenant, could attach datasets to a run."""
    url, run = two["url"], two["run"]
    dataset = {"dataset": {"name": f"ds-{MARK}", "digest": "d0", "source_type": "local",
                           "source": "{}"}, "tags": []}
    for who in (_viewer_of_a(tenant_server, two), two["b"]):
        for prefix in ("/api/2.0", "/ajax-api/2.0"):
            r = who.post(f"{url}{prefix}/mlflow/runs/log-inputs",
                         json={"run_id": run, "datasets": [dataset]})
            assert r.status_code in (403, 404), (prefix, r.status_code, r.text[:200])
    got = two["a"].get(f"{url}/api/2.0/mlflow/runs/get", params={"run_id": run}).json()
    assert f"ds-{MARK}" not in json.dumps(got["run"].get("inputs", {}))


def test_jobs_and_otel_routes_refuse_callers_without_credentials_cve_2026_0545_2652(two):
    url = two["url"]
    for method, path, kwargs in (
        ("POST", "/ajax-api/3.0/jobs/", {"json": {"job_name": "invoke_scorer", "params": {}}}),
        ("POST", "/ajax-api/3.0/jobs/search", {"json": {}}),
        ("GET", "/ajax-api/3.0/jobs/x", {}),
        ("PATCH", "/ajax-api/3.0/jobs/cancel/x", {}),
        ("POST", "/v1/traces", {"data": b"", "headers": {
            "Content-Type": "application/x-protobuf", "X-Mlflow-Experiment-Id": two["exp"]}}),
    ):
        r = requests.request(method, url + path, timeout=60, **kwargs)
        assert r.status_code == 401, (method, path, r.status_code, r.text[:200])


def test_other_tenants_cannot_submit_jobs_or_send_spans_into_a_cve_2026_0545_2652(two):
    url, b = two["url"], two["b"]
    r = b.post(f"{url}/ajax-api/3.0/jobs/", json={
        "job_name": "invoke_scorer",
        "params": {"experiment_id": two["exp"], "serialized_scorer": "{}", "trace_ids": []}})
    assert r.status_code == 403, r.text[:200]
    r = b.post(f"{url}/v1/traces", data=b"", headers={
        "Content-Type": "application/x-protobuf", "X-Mlflow-Experiment-Id": two["exp"]})
    assert r.status_code in (403, 404), (r.status_code, r.text[:200])


@pytest.fixture(scope="module")
def a_trace(two) -> str:
    trace_id = f"tr-{secrets.token_hex(16)}"
    r = two["a"].post(f"{two['url']}/api/3.0/mlflow/traces", json={"trace": {"trace_info": {
        "trace_id": trace_id, "request_time": "2026-01-01T00:00:00Z", "state": "OK",
        "trace_location": {"type": "MLFLOW_EXPERIMENT",
                           "mlflow_experiment": {"experiment_id": two["exp"]}},
        "request_preview": MARK, "trace_metadata": {}, "tags": {"mark": MARK}}}})
    assert r.status_code == 200, r.text
    return trace_id


def test_traces_and_assessments_of_another_tenant_are_refused_cve_2025_15381(
    two, a_trace, tenant_server
):
    """Traces and assessments once had no validators: anyone could read a trace or
    attach, change and delete assessments."""
    url, b = two["url"], two["b"]
    base = f"{url}/api/3.0/mlflow/traces/{a_trace}"
    assessment = {"assessment": {"assessment_name": f"x{MARK}", "trace_id": a_trace,
                                 "source": {"source_type": "HUMAN", "source_id": "b"},
                                 "feedback": {"value": "bad"}}}
    _no_leak(b.get(base))
    _no_leak(b.get(f"{url}/api/3.0/mlflow/traces/get", params={"trace_id": a_trace}))
    _no_leak(b.post(f"{base}/assessments", json=assessment))
    _no_leak(b.patch(f"{base}/tags", json={"key": "k", "value": "v"}))
    found = b.post(f"{url}/api/3.0/mlflow/traces/search", json={
        "locations": [{"type": "MLFLOW_EXPERIMENT",
                       "mlflow_experiment": {"experiment_id": two["exp"]}}]})
    assert a_trace not in found.text and MARK not in found.text, found.text[:200]
    _no_leak(b.post(f"{url}/api/3.0/mlflow/traces/delete-traces", json={
        "experiment_id": two["exp"], "trace_ids": [a_trace]}))
    # A's viewer reads the trace but may not judge it.
    viewer = _viewer_of_a(tenant_server, two)
    assert viewer.get(base).status_code == 200
    assert viewer.post(f"{base}/assessments", json=assessment).status_code == 403
    got = two["a"].get(base).json()
    assert f"x{MARK}" not in json.dumps(got) and got["trace"]["trace_info"]["tags"]["mark"] == MARK


def test_artifact_location_cannot_make_the_server_fetch_a_url_ghsa_vf52_gj9c_hw99(two):
    """An http(s) artifact_location made the server fetch it on /get-artifact. Workspaces
    refuse any client-given location; the server never connects."""
    url, b = two["url"], two["b"]
    with Listener() as listener:
        for loc in (f"http://127.0.0.1:{listener.port}/mlflow-artifacts/artifacts",
                    f"https://127.0.0.1:{listener.port}/x",
                    "http://169.254.169.254/latest/meta-data/"):
            r = b.post(f"{url}/api/2.0/mlflow/experiments/create",
                       json={"name": f"ssrf-{secrets.token_hex(3)}", "artifact_location": loc})
            assert r.status_code in (400, 403), (loc, r.status_code, r.text[:200])
        for path in ("/get-artifact", "/ajax-api/2.0/mlflow/get-artifact"):
            _no_leak(b.get(f"{url}{path}", params={"run_id": two["run"], "path": "secret.txt"}))
    assert listener.contacts == 0


@pytest.mark.parametrize("user", ["admin", "platform-admin", "mlflow-bootstrap-admin"])
def test_default_admin_password_does_not_log_in_ghsa_gq3w_7jj3_x7gr(two, user):
    """basic-auth shipped admin/password1234; the tenant-auth app takes no passwords."""
    url = two["url"]
    for method, path in (("GET", "/api/2.0/mlflow/experiments/search"),
                         ("POST", "/api/2.0/mlflow/users/create"),
                         ("GET", "/api/3.0/mlflow/workspaces")):
        r = requests.request(method, url + path, auth=(user, "password1234"),
                             json={"username": "x", "password": "y"}, timeout=60)
        assert r.status_code == 401, (user, path, r.status_code, r.text[:200])

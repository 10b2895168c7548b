"""Cross-tenant matrix, black-box: tenant B tries to get, list, search, update, delete and
download every kind of tenant A's objects — by id, by name and by search — through the
stock ``MlflowClient`` and raw HTTP against a real tenant-auth server. Every attempt is
refused or returns nothing of A's. A unique marker is in every name A creates; no response
body B receives may contain it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tests.fixtures.servers import MlflowServer


@dataclass
class TenantSide:
    name: str
    key: str
    ids: dict = field(default_factory=dict)


@contextlib.contextmanager
def as_tenant(server: MlflowServer, key: str) -> Iterator[MlflowClient]:
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_URI")}
    os.environ["MLFLOW_TRACKING_TOKEN"] = key
    os.environ["MLFLOW_TRACKING_URI"] = server.url
    try:
        yield MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


MARK = f"secretA{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def world(tenant_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory):
    reg = tenant_server.registry
    a = TenantSide(f"a{secrets.token_hex(3)}", "")
    b = TenantSide(f"b{secrets.token_hex(3)}", "")
    for side in (a, b):
        reg.create_tenant(side.name)
        _info, side.key = reg.create_key(side.name, "editor")
    with as_tenant(tenant_server, a.key) as client:
        exp_id = client.create_experiment(f"{MARK}-exp")
        run = client.create_run(exp_id, run_name=f"{MARK}-run", tags={"t": MARK})
        client.log_metric(run.info.run_id, "m", 1.0)
        client.log_param(run.info.run_id, "p", MARK)
        src = tmp_path_factory.mktemp("art") / "file.txt"
        src.write_text(MARK)
        client.log_artifact(run.info.run_id, str(src), artifact_path="d")
        client.set_terminated(run.info.run_id)
        client.create_registered_model(f"{MARK}-model")
        mv = client.create_model_version(f"{MARK}-model", f"runs:/{run.info.run_id}/d",
                                         run_id=run.info.run_id)
        client.set_registered_model_alias(f"{MARK}-model", "champion", mv.version)
        logged = client.create_logged_model(exp_id, name=f"{MARK}-lm")
        trace = client.start_trace(f"{MARK}-trace", experiment_id=exp_id)
        client.end_trace(trace.trace_id)
        import mlflow.genai

        mlflow.set_tracking_uri(tenant_server.url)
        mlflow.set_registry_uri(tenant_server.url)
        try:
            mlflow.genai.register_prompt(name=f"{MARK}-prompt", template="Hi {{name}} " + MARK)
        finally:  # process-wide settings: leave them as found for the tests that follow
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
            os.environ.pop("MLFLOW_REGISTRY_URI", None)
        a.ids = {
            "experiment_id": exp_id,
            "run_id": run.info.run_id,
            "model": f"{MARK}-model",
            "version": mv.version,
            "logged_model_id": logged.model_id,
            "trace_id": trace.trace_id,
            "prompt": f"{MARK}-prompt",
            "artifact_uri": run.info.artifact_uri,
        }
    return tenant_server, a, b


def _refused(fn) -> None:
    with pytest.raises(MlflowException) as info:
        fn()
    assert info.value.get_http_status_code() in (403, 404), info.value
    assert MARK not in str(info.value)


def _not_in_tenant(fn, sent: str = "") -> None:
    """Another tenant's object answers as a missing one does: 404 RESOURCE_DOES_NOT_EXIST.
    The message may repeat what B ``sent`` (a name), as MLflow's do; nothing else of A's."""
    with pytest.raises(MlflowException) as info:
        fn()
    assert (info.value.get_http_status_code(), info.value.error_code) == \
        (404, "RESOURCE_DOES_NOT_EXIST"), info.value
    assert MARK not in str(info.value).replace(sent or "\0", "")


def test_b_cannot_read_a_experiment_by_id_name_or_search(world):
    server, a, b = world
    with as_tenant(server, b.key) as client:
        _not_in_tenant(lambda: client.get_experiment(a.ids["experiment_id"]))
        assert client.get_experiment_by_name(f"{MARK}-exp") is None
        found = client.search_experiments(filter_string=f"name LIKE '%{MARK}%'")
        assert list(found) == []
        assert all(MARK not in e.name for e in client.search_experiments())


def test_b_cannot_change_or_delete_a_experiment(world):
    server, a, b = world
    with as_tenant(server, b.key) as client:
        eid = a.ids["experiment_id"]
        _not_in_tenant(lambda: client.rename_experiment(eid, "stolen"))
        _not_in_tenant(lambda: client.set_experiment_tag(eid, "k", "v"))
        _not_in_tenant(lambda: client.delete_experiment(eid))
    with as_tenant(server, a.key) as client:
        assert client.get_experiment(eid).name == f"{MARK}-exp"


def test_b_cannot_read_or_write_a_run_metrics_params_tags(world):
    server, a, b = world
    rid = a.ids["run_id"]
    with as_tenant(server, b.key) as client:
        _not_in_tenant(lambda: client.get_run(rid))
        _not_in_tenant(lambda: client.get_metric_history(rid, "m"))
        _not_in_tenant(lambda: client.log_metric(rid, "m", 2.0))
        _not_in_tenant(lambda: client.log_param(rid, "q", "x"))
        _not_in_tenant(lambda: client.set_tag(rid, "t", "x"))
        _not_in_tenant(lambda: client.delete_run(rid))
        _not_in_tenant(lambda: client.list_artifacts(rid))
        with contextlib.suppress(MlflowException):
            runs = client.search_runs([a.ids["experiment_id"]])
            assert list(runs) == []


def test_b_cannot_download_a_artifacts(world, tmp_path):
    server, a, b = world
    rid = a.ids["run_id"]
    with as_tenant(server, b.key) as client:
        _refused(lambda: client.download_artifacts(rid, "d", str(tmp_path)))
    assert not any(tmp_path.rglob("file.txt"))
    s = server.session(b.key)
    exp = a.ids["experiment_id"]
    for path in (
        f"{exp}/{rid}/artifacts/d/file.txt",
        f"workspaces/{a.name}/{exp}/{rid}/artifacts/d/file.txt",
    ):
        r = s.get(f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{path}")
        assert r.status_code in (400, 403, 404), (path, r.status_code)
        assert MARK not in r.text
    r = s.get(f"{server.url}/get-artifact", params={"run_uuid": rid, "path": "d/file.txt"})
    assert r.status_code == 404 and MARK not in r.text


def test_b_cannot_see_a_registered_models_versions_or_aliases(world):
    server, a, b = world
    name = a.ids["model"]
    with as_tenant(server, b.key) as client:
        _not_in_tenant(lambda: client.get_registered_model(name), name)
        _not_in_tenant(lambda: client.get_model_version(name, a.ids["version"]), name)
        _not_in_tenant(lambda: client.get_model_version_by_alias(name, "champion"), name)
        _not_in_tenant(lambda: client.set_registered_model_alias(name, "x", a.ids["version"]), name)
        _not_in_tenant(lambda: client.rename_registered_model(name, "stolen"), name)
        _not_in_tenant(lambda: client.delete_registered_model(name), name)
        assert list(client.search_registered_models(f"name LIKE '%{MARK}%'")) == []
        assert list(client.search_model_versions(f"name = '{name}'")) == []
        assert list(client.search_model_versions(f"run_id = '{a.ids['run_id']}'")) == []


def test_b_cannot_see_a_logged_models_traces_or_prompts(world):
    server, a, b = world
    with as_tenant(server, b.key) as client:
        _not_in_tenant(lambda: client.get_logged_model(a.ids["logged_model_id"]))
        _not_in_tenant(lambda: client.delete_logged_model(a.ids["logged_model_id"]))
        with contextlib.suppress(MlflowException):
            found = client.search_logged_models([a.ids["experiment_id"]])
            assert list(found) == []
        _not_in_tenant(lambda: client.get_trace(a.ids["trace_id"]))
        with contextlib.suppress(MlflowException):
            assert list(client.search_traces(locations=[a.ids["experiment_id"]])) == []
        import mlflow.genai

        mlflow.set_tracking_uri(server.url)
        mlflow.set_registry_uri(server.url)
        try:
            with pytest.raises(MlflowException) as prompt:
                mlflow.genai.load_prompt(f"prompts:/{a.ids['prompt']}/1")
            assert prompt.value.error_code == "RESOURCE_DOES_NOT_EXIST"
            assert all(MARK not in p.name for p in mlflow.genai.search_prompts())
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)


def test_b_graphql_cannot_reach_a_objects(world):
    server, a, b = world
    s = server.session(b.key)
    queries = [
        '{ mlflowGetExperiment(input: {experimentId: "%s"}) { experiment { name } } }'
        % a.ids["experiment_id"],
        '{ mlflowGetRun(input: {runId: "%s"}) { run { info { runName } } } }' % a.ids["run_id"],
        '{ mlflowSearchModelVersions(input: {filter: "name=\'%s\'"}) '
        "{ modelVersions { name source } } }" % a.ids["model"],
    ]
    for query in queries:
        r = s.post(f"{server.url}/graphql", json={"query": query})
        assert MARK not in r.text, (query, r.text[:300])


def test_b_search_pages_are_full_and_tokens_work(world):
    """Filtering others' objects out must not leave short or empty pages."""
    server, a, b = world
    with as_tenant(server, b.key) as client:
        made = {client.create_experiment(f"page-{i}") for i in range(7)}
        seen: list[str] = []
        token = None
        for _ in range(10):
            page = client.search_experiments(max_results=3, page_token=token)
            seen += [e.experiment_id for e in page]
            token = page.token
            if not token:
                break
            assert len(page) == 3
        assert made <= set(seen)
        assert a.ids["experiment_id"] not in seen


def test_naming_another_tenant_workspace_is_refused(world):
    server, a, b = world
    r = server.session(b.key, workspace=a.name).get(
        f"{server.url}/api/2.0/mlflow/experiments/get",
        params={"experiment_id": a.ids["experiment_id"]},
    )
    assert r.status_code == 403
    assert r.json()["error_code"] == "PERMISSION_DENIED"


def test_platform_admin_reaches_any_tenant(world):
    server, a, _b = world
    r = server.session(server.admin_key, workspace=a.name).get(
        f"{server.url}/api/2.0/mlflow/experiments/get",
        params={"experiment_id": a.ids["experiment_id"]},
    )
    assert r.status_code == 200 and r.json()["experiment"]["name"] == f"{MARK}-exp"


def test_refusals_are_mlflow_json(world):
    server, a, b = world
    r = server.session(b.key).get(
        f"{server.url}/api/2.0/mlflow/runs/get", params={"run_id": a.ids["run_id"]}
    )
    assert r.status_code == 404
    assert r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    anonymous = requests.get(f"{server.url}/api/2.0/mlflow/runs/get",
                             params={"run_id": a.ids["run_id"]}, timeout=30)
    assert anonymous.status_code == 401
    assert anonymous.json()["error_code"] == "UNAUTHENTICATED" and anonymous.json()["message"]
    health = requests.get(f"{server.url}/health", timeout=30)
    assert (health.status_code, health.text) == (200, "OK")  # the probe needs no credentials


def _twin(real: str) -> str:
    """An id of the same shape as ``real`` that exists nowhere."""
    if real.isdigit():  # experiment ids: far beyond any experiment of this test session
        return str(10**12 + secrets.randbelow(10**6))
    return "".join(secrets.choice("0123456789" if c.isdigit() else "abcdef")
                   if c in "0123456789abcdef" else c for c in real)


def test_another_tenants_object_and_a_missing_one_answer_identically(world):
    """Same status, headers that matter and body, the id aside: nothing tells them apart."""
    server, a, b = world
    s, url = server.session(b.key), server.url
    ids = a.ids
    requests_by_id = [
        ("GET", "/api/2.0/mlflow/runs/get", "run_id", ids["run_id"]),
        ("GET", "/ajax-api/2.0/mlflow/runs/get", "run_id", ids["run_id"]),
        ("GET", "/api/2.0/mlflow/experiments/get", "experiment_id", ids["experiment_id"]),
        ("POST", "/api/2.0/mlflow/runs/delete", "run_id", ids["run_id"]),
        ("GET", "/api/2.0/mlflow/registered-models/get", "name", ids["model"]),
        ("GET", "/api/2.0/mlflow/registered-models/get", "name", ids["prompt"]),
        ("GET", "/api/2.0/mlflow/artifacts/list", "run_id", ids["run_id"]),
        ("GET", "/get-artifact", "run_uuid", ids["run_id"]),
        ("GET", "/api/2.0/mlflow/logged-models/{}", None, ids["logged_model_id"]),
        ("GET", "/api/3.0/mlflow/traces/get", "trace_id", ids["trace_id"]),
    ]
    for method, path, param, theirs in requests_by_id:
        answers = []
        for value in (theirs, _twin(theirs) if param != "name" else f"{theirs}x"):
            target = url + path.format(value)
            args = {} if param is None else {param: value}
            r = (s.get(target, params=args) if method == "GET" else s.post(target, json=args))
            answers.append((r.status_code, r.headers.get("content-type"),
                            r.text.replace(value, "<id>")))
            assert MARK not in r.text.replace(value, "<id>"), (path, r.text)
        assert answers[0] == answers[1], (path, answers)
        assert answers[0][0] == 404 and '"RESOURCE_DOES_NOT_EXIST"' in answers[0][2], answers
    mv = s.get(f"{url}/api/2.0/mlflow/model-versions/get",
               params={"name": ids["model"], "version": ids["version"]})
    twin = s.get(f"{url}/api/2.0/mlflow/model-versions/get",
                 params={"name": ids["model"] + "x", "version": ids["version"]})
    assert (mv.status_code, mv.text.replace(ids["model"], "<id>")) == \
        (twin.status_code, twin.text.replace(ids["model"] + "x", "<id>")) and mv.status_code == 404

"""A tenant user's first hour with the stock client (issue 14, items 1 and 2), against a real
tenant-auth server with nothing but ``MLFLOW_TRACKING_URI`` and ``MLFLOW_TRACKING_TOKEN`` set.

1. Code that never names an experiment (experiment ``"0"``) lands in the tenant's own
   ``Default`` experiment — runs, autologged models, traces — and search, get and the UI's
   GraphQL agree on it; nothing reaches the ``default`` workspace.
2. An object that is not in your tenant answers 404 ``RESOURCE_DOES_NOT_EXIST`` as on a stock
   server; a role that does not allow an action on your own tenant's object stays 403.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.auth.experiment_zero import rewrite_json, rewrite_query
from tests.fixtures.servers import MlflowServer

# MLflow's own scikit-learn autolog example, unchanged: no experiment is ever named.
AUTOLOG_SCRIPT = r"""
import json
import mlflow
from sklearn.datasets import load_diabetes
from sklearn.ensemble import RandomForestRegressor

mlflow.autolog()
X, y = load_diabetes(return_X_y=True)
with mlflow.start_run() as run:
    RandomForestRegressor(n_estimators=5, max_depth=3).fit(X, y)
    mlflow.log_param("extra", "yes")

@mlflow.trace
def answer(question):
    return "42"

answer("why")
mlflow.flush_trace_async_logging()
print("RESULT " + json.dumps({"run_id": run.info.run_id,
                              "experiment_id": run.info.experiment_id,
                              "trace_id": mlflow.get_last_active_trace_id()}))
"""


@contextlib.contextmanager
def stock_client(server: MlflowServer, key: str) -> Iterator[MlflowClient]:
    """The stock client with only the tracking URI and the token from the environment."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_URI")}
    os.environ.update(MLFLOW_TRACKING_TOKEN=key, MLFLOW_TRACKING_URI=server.url)
    try:
        yield MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _error(fn) -> MlflowException:
    with pytest.raises(MlflowException) as info:
        fn()
    return info.value


# -- item 1: experiment "0" -----------------------------------------------------------------

def test_unchanged_autolog_example_lands_in_the_tenants_own_default_experiment(
        tenant_server: MlflowServer, make_tenant):
    _tenant, key = make_tenant("editor")
    done = subprocess.run([sys.executable, "-c", AUTOLOG_SCRIPT], env=tenant_server.client_env(key),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "PERMISSION_DENIED" not in done.stderr and "Failed to" not in done.stderr, \
        done.stderr[-3000:]
    out = json.loads(done.stdout.split("RESULT ", 1)[1])
    with stock_client(tenant_server, key) as client:
        default = client.get_experiment_by_name("Default")
        assert default is not None and out["experiment_id"] == default.experiment_id != "0"
        run = client.get_run(out["run_id"])
        assert run.data.params["extra"] == "yes" and "n_estimators" in run.data.params
        assert any(k.startswith("training_") for k in run.data.metrics)
        assert client.search_logged_models([default.experiment_id]), "autolog logged no model"
        # "0" and the real id are the same experiment, whichever way it is asked for.
        assert client.get_experiment("0").experiment_id == default.experiment_id
        assert [r.info.run_id for r in client.search_runs(["0"])] == [out["run_id"]]
        assert [m.model_id for m in client.search_logged_models(["0"])] == \
            [m.model_id for m in client.search_logged_models([default.experiment_id])]
        trace = client.get_trace(out["trace_id"])
        assert trace.info.experiment_id == default.experiment_id
        assert [t.info.trace_id for t in client.search_traces(locations=["0"])] == \
            [out["trace_id"]]
        assert trace.data.spans, "the spans (OTLP, x-mlflow-experiment-id: 0) were lost"
    # Nothing reached the default workspace's experiment 0.
    admin = tenant_server.session(tenant_server.admin_key, workspace="default")
    r = admin.post(f"{tenant_server.url}/api/2.0/mlflow/runs/search",
                   json={"experiment_ids": ["0"]})
    assert r.status_code == 200 and out["run_id"] not in r.text


def test_experiment_zero_is_the_same_default_for_rest_ui_and_graphql(
        tenant_server: MlflowServer, make_tenant):
    tenant, key = make_tenant("editor")
    s, url = tenant_server.session(key), tenant_server.url
    first = s.get(f"{url}/api/2.0/mlflow/experiments/get", params={"experiment_id": "0"})
    assert first.status_code == 200, first.text
    default = first.json()["experiment"]
    assert default["name"] == "Default" and default["experiment_id"] != "0"
    assert f"workspaces/{tenant}/" in default["artifact_location"]
    ui = s.get(f"{url}/ajax-api/2.0/mlflow/experiments/get", params={"experiment_id": "0"})
    assert ui.json()["experiment"]["experiment_id"] == default["experiment_id"]
    by_name = s.get(f"{url}/api/2.0/mlflow/experiments/get-by-name",
                    params={"experiment_name": "Default"})
    assert by_name.json()["experiment"]["experiment_id"] == default["experiment_id"]
    listed = s.post(f"{url}/ajax-api/2.0/mlflow/experiments/search", json={"max_results": 100})
    assert [e["experiment_id"] for e in listed.json()["experiments"]] == \
        [default["experiment_id"]]
    query = ("query MlflowGetExperimentQuery($input: MlflowGetExperimentInput!) "
             "{ mlflowGetExperiment(input: $input) { experiment { experimentId name } } }")
    gql = s.post(f"{url}/graphql", json={"query": query, "operationName":
                                         "MlflowGetExperimentQuery",
                                         "variables": {"input": {"experimentId": "0"}}})
    assert gql.json()["data"]["mlflowGetExperiment"]["experiment"] == \
        {"experimentId": default["experiment_id"], "name": "Default"}
    made = s.post(f"{url}/api/2.0/mlflow/runs/create", json={"experiment_id": "0"})
    assert made.json()["run"]["info"]["experiment_id"] == default["experiment_id"]


def test_each_tenant_has_its_own_default_and_zero_never_crosses(
        tenant_server: MlflowServer, make_tenant):
    a, a_key = make_tenant("editor")
    _b, b_key = make_tenant("editor")
    with stock_client(tenant_server, a_key) as client:
        a_run = client.create_run("0").info
    with stock_client(tenant_server, b_key) as client:
        b_default = client.get_experiment("0")
        assert b_default.experiment_id != a_run.experiment_id
        assert client.search_runs(["0"]).to_list() == []
        assert _error(lambda: client.get_run(a_run.run_id)).error_code == \
            "RESOURCE_DOES_NOT_EXIST"
    # Naming the other tenant's workspace is still refused before any rewrite.
    r = tenant_server.session(b_key, workspace=a).get(
        f"{tenant_server.url}/api/2.0/mlflow/experiments/get", params={"experiment_id": "0"})
    assert r.status_code == 403 and r.json()["error_code"] == "PERMISSION_DENIED"


def test_a_viewer_reads_its_default_experiment_but_cannot_write_to_it(
        tenant_server: MlflowServer, make_tenant):
    tenant, _editor_key = make_tenant("editor")
    _info, viewer_key = tenant_server.registry.create_key(tenant, "viewer")
    with stock_client(tenant_server, viewer_key) as client:
        assert client.get_experiment("0").name == "Default"
        refused = _error(lambda: client.create_run("0"))
        assert refused.error_code == "PERMISSION_DENIED"


def test_default_exists_once_zero_is_used_or_asked_for_by_name(
        tenant_server: MlflowServer, make_tenant):
    """A tenant that never uses "0" gets no experiment it did not make; asking for
    ``Default`` by name (``mlflow.set_experiment("Default")``) finds the same one "0" serves."""
    _tenant, key = make_tenant("editor")
    with stock_client(tenant_server, key) as client:
        client.create_experiment("mine")
        assert [e.name for e in client.search_experiments()] == ["mine"]
        default = client.get_experiment_by_name("Default")
        assert default is not None
        assert sorted(e.name for e in client.search_experiments()) == ["Default", "mine"]
        assert client.get_experiment("0").experiment_id == default.experiment_id


def test_only_zero_at_experiment_fields_is_rewritten():
    body = json.dumps({"experiment_id": "0", "run_name": "0", "tags": [
        {"key": "experiment_id", "value": "0"}], "trace_info": {"trace_metadata": {
            "experiment_id": "0"}, "trace_location": {"mlflow_experiment": {
                "experiment_id": "0"}}}}).encode()
    out = json.loads(rewrite_json(body, (("experiment_id",), ("trace_info", "trace_location",
                                          "mlflow_experiment", "experiment_id")), "7"))
    assert out["experiment_id"] == "7" and out["run_name"] == "0"
    assert out["tags"] == [{"key": "experiment_id", "value": "0"}]
    assert out["trace_info"]["trace_metadata"] == {"experiment_id": "0"}
    assert out["trace_info"]["trace_location"]["mlflow_experiment"]["experiment_id"] == "7"
    assert rewrite_json(b'{"experiment_ids": ["1", "0"]}', (("experiment_ids",),), "7") == \
        b'{"experiment_ids": ["1", "7"]}'
    assert rewrite_json(b'{"experiment_id": "00"}', (("experiment_id",),), "7") is None
    assert rewrite_json(b"not json", (("experiment_id",),), "7") is None
    assert rewrite_query(b"experiment_id=0&x=0", "7") == b"experiment_id=7&x=0"
    assert rewrite_query(b"experiment_ids=3&experiment_ids=0", "7") == \
        b"experiment_ids=3&experiment_ids=7"
    assert rewrite_query(b"experiment_id=10", "7") is None


# -- item 2: missing objects ----------------------------------------------------------------

def test_missing_objects_answer_404_resource_does_not_exist(
        tenant_server: MlflowServer, make_tenant):
    _tenant, key = make_tenant("editor")
    missing = {
        "run": lambda c: c.get_run("0123456789abcdef0123456789abcdef"),
        "experiment": lambda c: c.get_experiment("999999"),
        "registered model": lambda c: c.get_registered_model("nope"),
        "model version": lambda c: c.get_model_version("nope", "1"),
        "logged model": lambda c: c.get_logged_model("m-0123456789abcdef0123456789abcdef"),
        "trace": lambda c: c.get_trace("tr-0123456789abcdef0123456789abcdef"),
        "run in create": lambda c: c.create_run("999999"),
        "log to run": lambda c: c.log_param("0123456789abcdef0123456789abcdef", "k", "v"),
        "delete model": lambda c: c.delete_registered_model("nope"),
    }
    with stock_client(tenant_server, key) as client:
        for what, call in missing.items():
            err = _error(lambda call=call: call(client))
            assert (err.get_http_status_code(), err.error_code) == \
                (404, "RESOURCE_DOES_NOT_EXIST"), (what, err.message)
        import mlflow.genai

        with pytest.raises(MlflowException) as prompt:
            mlflow.genai.load_prompt("prompts:/nope/1")
        assert prompt.value.error_code == "RESOURCE_DOES_NOT_EXIST", prompt.value.message


def test_a_role_that_does_not_allow_the_action_on_own_objects_stays_403(
        tenant_server: MlflowServer, make_tenant):
    tenant, editor_key = make_tenant("editor")
    _info, viewer_key = tenant_server.registry.create_key(tenant, "viewer")
    with stock_client(tenant_server, editor_key) as client:
        exp = client.create_experiment("own")
        run_id = client.create_run(exp).info.run_id
        client.create_registered_model("own-model")
    with stock_client(tenant_server, viewer_key) as client:
        assert client.get_run(run_id).info.run_id == run_id
        for call in (lambda: client.set_tag(run_id, "k", "v"),
                     lambda: client.delete_run(run_id),
                     lambda: client.rename_experiment(exp, "x"),
                     lambda: client.delete_registered_model("own-model")):
            err = _error(call)
            assert (err.get_http_status_code(), err.error_code) == (403, "PERMISSION_DENIED")
        # ... while the same action on an object that is not there is a 404.
        err = _error(lambda: client.set_tag("0123456789abcdef0123456789abcdef", "k", "v"))
        assert err.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_native_routes_answer_404_for_an_experiment_or_run_not_in_the_tenant(
        tenant_server: MlflowServer, make_tenant):
    """MLflow's FastAPI routes (artifact proxy, OTLP export) deny a missing object in their
    own middleware; inside a tenant they answer the store's 404 too."""
    tenant, key = make_tenant("editor")
    _other, other_key = make_tenant("editor")
    with stock_client(tenant_server, other_key) as client:
        theirs = client.create_run(client.create_experiment("theirs")).info
    s, url = tenant_server.session(key), tenant_server.url
    base = f"{url}/api/2.0/mlflow-artifacts/artifacts/workspaces/{tenant}"
    answers = {}
    for label, exp, run in (("theirs", theirs.experiment_id, theirs.run_id),
                            ("missing", "987654", "0123456789abcdef0123456789abcdef")):
        r = s.get(f"{base}/{exp}/{run}/artifacts/model.pkl")
        answers[label] = (r.status_code, r.text.replace(exp, "<id>"))
        otlp = s.post(f"{url}/v1/traces", data=b"",
                      headers={"Content-Type": "application/x-protobuf",
                               "x-mlflow-experiment-id": exp})
        assert (otlp.status_code, otlp.json()["error_code"]) == \
            (404, "RESOURCE_DOES_NOT_EXIST"), (label, otlp.text)
    assert answers["theirs"] == answers["missing"]
    assert answers["missing"][0] == 404 and "RESOURCE_DOES_NOT_EXIST" in answers["missing"][1]

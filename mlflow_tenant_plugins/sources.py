"""Locations a tenant names in MLflow requests must be its own, checked before MLflow stores them.

MLflow reads a model version's ``source`` and a trace's location tags with the server's own
credentials (``get-artifact``, trace downloads, deployments). A tenant may therefore name only:

- as a model version ``source``: ``runs:/RUN_ID/…`` of a run in its own workspace, ``models:/…``
  (MLflow resolves it in the request's workspace) or ``mlflow-artifacts:/…`` of its own
  workspace — see :func:`mlflow_tenant_plugins.artifacts.fence.check_source`; a prompt version's
  placeholder source stays as MLflow wants it;
- no trace tag that names where the trace's data lives (``mlflow.artifactLocation``,
  ``mlflow.trace.archiveLocation``): the server sets those itself.

Registered as a Flask ``before_request`` after MLflow's authorization, so a caller is
authenticated and authorized before its body is read. Under this check the repository fence
(:mod:`mlflow_tenant_plugins.artifacts.fence`) refuses any read outside the tenant's storage,
whatever got stored. MLflow internals used here: the view names below (checked at startup),
and through ``mlflow_hooks.server`` the server's tracking store and the prompt placeholders.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, Response, request
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE, RESOURCE_DOES_NOT_EXIST
from mlflow.utils.workspace_context import get_request_workspace

from mlflow_tenant_plugins.artifacts import fence
from mlflow_tenant_plugins.mlflow_hooks.server import (
    artifacts_destination,
    prompt_source_placeholders,
    tracking_store,
)

CREATE_MODEL_VERSION = "_create_model_version"
TRACE_WRITES = (
    "_start_trace_v3", "_deprecated_start_trace_v2", "_deprecated_end_trace_v2",
    "_set_trace_tag", "_set_trace_tag_v3",
)
LOCATION_TAGS = frozenset({"mlflow.artifactLocation", "mlflow.trace.archiveLocation"})
_MAX_DEPTH = 8


def _body() -> dict[str, Any]:
    """The JSON body as MLflow's handlers read it (``get_json(force=True)``, then a
    double-encoded string decoded once more)."""
    data = request.get_json(force=True, silent=True)
    try:
        if isinstance(data, str):
            data = json.loads(data)
    except ValueError:
        data = None
    if data is None and not request.get_data():
        return {}
    if not isinstance(data, dict):
        raise MlflowException.invalid_parameter_value("expected a JSON object in the body")
    return data


def _is_prompt(body: dict[str, Any]) -> bool:
    """As MLflow decides it: tags collapse by key (last wins), the value compared lowercased."""
    from mlflow.prompt.constants import IS_PROMPT_TAG_KEY

    tags = body.get("tags")
    found = {t.get("key"): t.get("value") for t in tags if isinstance(t, dict)} \
        if isinstance(tags, list) else {}
    value = found.get(IS_PROMPT_TAG_KEY)
    return isinstance(value, str) and value.lower() == "true"


def _check_own_run(source: str) -> None:
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    run_id, _path = RunsArtifactRepository.parse_runs_uri(source)
    try:
        tracking_store().get_run(run_id)  # the store answers only for this workspace
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise MlflowException(
                f"model version source {source!r}: run {run_id!r} is not a run of your tenant",
                RESOURCE_DOES_NOT_EXIST,
            ) from None
        raise


def check_model_version_source(body: dict[str, Any]) -> None:
    source = body.get("source")
    if source is None:
        return  # MLflow refuses a missing source
    if _is_prompt(body) and source in prompt_source_placeholders():
        return  # a prompt version's placeholder, never read as a location
    if fence.check_source(source, get_request_workspace()) == "runs":
        _check_own_run(source)


def _location_tags(node: Any, depth: int = 0) -> set[str]:
    """Location tag keys anywhere in a trace write's body (``{key: …}`` entries and maps)."""
    if depth > _MAX_DEPTH:
        raise MlflowException.invalid_parameter_value("the request body is nested too deeply")
    found: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("key"), str) and node["key"].strip() in LOCATION_TAGS:
            found.add(node["key"])
        found |= {k for k in node if isinstance(k, str) and k.strip() in LOCATION_TAGS}
        for value in node.values():
            found |= _location_tags(value, depth + 1)
    elif isinstance(node, list):
        for value in node:
            found |= _location_tags(value, depth + 1)
    return found


def check_request() -> Response | None:
    endpoint = request.endpoint
    try:
        if endpoint == CREATE_MODEL_VERSION:
            check_model_version_source(_body())
        elif endpoint in TRACE_WRITES and (tags := _location_tags(_body())):
            raise MlflowException.invalid_parameter_value(
                f"trace tags {sorted(tags)} name where a trace's data lives: the server sets "
                "them, a client may not"
            )
    except MlflowException as exc:
        return Response(exc.serialize_as_json(), status=exc.get_http_status_code(),
                        mimetype="application/json")
    return None


def install(app: Flask) -> None:
    """Check request locations on ``app`` (after MLflow's own before-request hooks) and fence
    the server's artifact repositories. Refuses to start if MLflow renamed a checked view."""
    missing = [e for e in (CREATE_MODEL_VERSION, *TRACE_WRITES) if e not in app.view_functions]
    if missing:
        raise MlflowException(f"tenant-auth: MLflow views not found: {missing}", INVALID_STATE)
    app.before_request(check_request)
    fence.install(artifacts_destination() or None)

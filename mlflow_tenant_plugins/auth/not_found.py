"""An object that is not in your tenant answers 404, as on a stock server.

MLflow's engine looks up the object a request addresses to learn its workspace and, when the
lookup fails, denies (403) rather than answering 404, so that the answer is no oracle of which
ids exist anywhere. Inside a tenant that turns every typo into a "missing grant". Here the
question "does it exist?" is asked only *in the caller's own workspace*, where the caller may
know anyway: after the engine refuses a request with 403, we look the addressed object up
through MLflow's workspace-aware stores in the request's workspace. If the store says
``RESOURCE_DOES_NOT_EXIST``, the answer becomes the store's own 404 body. The store answers
exactly that for an object of another workspace as for a missing one, so the two cannot be
told apart; an object of your own tenant that your role may not touch stays 403.

Only the refusal path pays the lookup. Create routes whose name is the *new* object
(``registered-models/create``) are left alone: a 403 there is about the role.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.mlflow_hooks.server import registry_store, tracking_store

_logger = logging.getLogger(__name__)

# MLflow's API routes, and the UI's artifact downloads (``/get-artifact``,
# ``/model-versions/get-artifact``), which are Flask routes at the root.
_MLFLOW_ROUTE = re.compile(r"/(?:ajax-)?api/\d+\.\d+/mlflow/(?P<rest>.*)$"
                           r"|^/(?P<ui>(?:model-versions/)?get-artifact)$")
_LOGGED_MODEL = re.compile(r"logged-models/(?P<id>[^/]+)(?:/.*)?$")
_NOT_ADDRESSING = {"registered-models/create", "logged-models/search"}
_NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"

Lookup = Callable[[], Any]


def _params() -> dict[str, Any]:
    params: dict[str, Any] = dict(request.args.items())
    if request.is_json:
        body = request.get_json(silent=True)
        if isinstance(body, dict):
            params.update(body)
    params.update(request.view_args or {})
    return params


def _text(params: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = params.get(name)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


def addressed_objects(rest: str, params: dict[str, Any]) -> list[Lookup]:
    """Lookups of the existing objects a request to ``/mlflow/<rest>`` addresses."""
    if rest in _NOT_ADDRESSING:
        return []
    tracking, lookups = tracking_store, []
    if (m := _LOGGED_MODEL.match(rest)) and "model_id" not in params:
        params = {**params, "model_id": m.group("id")}
    if rest.startswith("logged-models/") and (model_id := _text(params, "model_id")):
        lookups.append(lambda: tracking().get_logged_model(model_id))
    if trace_id := _text(params, "trace_id", "request_id"):
        lookups.append(lambda: tracking().get_trace_info(trace_id))
    if run_id := _text(params, "run_id", "run_uuid"):
        lookups.append(lambda: tracking().get_run(run_id))
    if experiment_id := _text(params, "experiment_id"):
        lookups.append(lambda: tracking().get_experiment(experiment_id))
    if rest.startswith(("registered-models/", "model-versions/")) and (
            name := _text(params, "name")):
        version = _text(params, "version") if rest.startswith("model-versions/") else None
        if version is not None:
            lookups.append(lambda: registry_store().get_model_version(name, version))
        else:
            lookups.append(lambda: registry_store().get_registered_model(name))
    return lookups


def missing_object(lookups: list[Lookup]) -> MlflowException | None:
    """The store's "does not exist" for the first addressed object it cannot find."""
    for lookup in lookups:
        try:
            lookup()
        except MlflowException as exc:
            if exc.error_code == _NOT_FOUND:
                return exc
            return None  # another failure: keep the refusal as it was
    return None


def _not_found_for_missing(response: Response) -> Response:
    if response.status_code != 403:
        return response
    route = _MLFLOW_ROUTE.search(request.path)
    if route is None:
        return response
    try:
        rest = route.group("rest") or route.group("ui")
        missing = missing_object(addressed_objects(rest, _params()))
    except Exception:  # the refusal stands; never a 500 from here
        _logger.exception("looking up the object of a refused request failed")
        return response
    if missing is None:
        return response
    return Response(missing.serialize_as_json(), status=404, mimetype="application/json")


def install(flask_app: Flask) -> None:
    """Register once MLflow's engine is installed. Flask runs after-request hooks on a
    response a before-request hook returned, so this sees the engine's 403 (the engine's own
    after-request hook leaves 4xx responses alone)."""
    flask_app.after_request(_not_found_for_missing)

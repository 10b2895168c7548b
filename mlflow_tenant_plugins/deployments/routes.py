"""REST routes of the ``tenant-sagemaker`` target on the platform server.

Paths are exact (parameters in the query or JSON body, as MLflow's own REST API and MLflow's
validator table want). Writes need the ``deployer`` role in the request's tenant, reads
``viewer``; the tenant is the request's (``current_tenant()``), never one named in the body.
Errors are MLflow-format JSON: 400 INVALID_PARAMETER_VALUE, 403 PERMISSION_DENIED, 404
RESOURCE_DOES_NOT_EXIST, 409 RESOURCE_EXHAUSTED (a full quota) or RESOURCE_CONFLICT (another
operation in flight on the deployment, or its endpoint not InService) — none of which the stock
client retries.

    POST /api/2.0/tenants/deployments/create   {name, model_uri, flavor?, config?}   deployer
    POST /api/2.0/tenants/deployments/update   {name, model_uri?, flavor?, config?}  deployer
    POST /api/2.0/tenants/deployments/delete   {name}                                deployer
    GET  /api/2.0/tenants/deployments/get      ?name=                                viewer
    GET  /api/2.0/tenants/deployments/list                                           viewer
    POST /api/2.0/tenants/deployments/predict  {name, body, content_type?}           viewer
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from flask import Blueprint, Flask, jsonify, request
from mlflow.exceptions import MlflowException
from mlflow.server.handlers import catch_mlflow_exception

from mlflow_tenant_plugins.auth.identity import current_tenant, require_role
from mlflow_tenant_plugins.deployments.service import DeploymentService
from mlflow_tenant_plugins.mlflow_hooks.server import backend_store_uri, tenant_workspace
from mlflow_tenant_plugins.platform import Platform, attach, current_platform
from mlflow_tenant_plugins.tenancy import Role
from mlflow_tenant_plugins.wire import DEPLOYMENTS_PREFIX

PREFIX = DEPLOYMENTS_PREFIX
ROUTES: dict[str, tuple[str, Role]] = {
    "/create": ("POST", Role.DEPLOYER),
    "/update": ("POST", Role.DEPLOYER),
    "/delete": ("POST", Role.DEPLOYER),
    "/get": ("GET", Role.VIEWER),
    "/list": ("GET", Role.VIEWER),
    "/predict": ("POST", Role.VIEWER),
}
blueprint = Blueprint("tenant_deployments", __name__, url_prefix=PREFIX)


def server_fetch(uri: str, dst: str, tenant: str) -> str:
    """Download model files inside the server: ``mlflow-artifacts:`` locations (where the
    proxied artifact store keeps a tenant's models) come from the server's own artifact
    repository, scoped to the tenant's workspace exactly as MLflow's artifact routes do."""
    from mlflow_tenant_plugins.mlflow_hooks import artifacts as mlflow_artifacts

    with tenant_workspace(tenant):
        if urllib.parse.urlparse(uri).scheme == "mlflow-artifacts":
            path = mlflow_artifacts.proxied_artifact_path(uri)
            return mlflow_artifacts.tenant_artifact_repository(tenant).download_artifacts(
                path, dst)
        import mlflow.artifacts

        return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst,
                                                   tracking_uri=backend_store_uri() or None)


def get_service() -> DeploymentService:
    """The platform's deployment service (built on first use, once per worker)."""
    return current_platform().deployment_service()


def register(app: Flask, platform: Platform) -> None:
    """Mount the routes on ``app`` with ``platform`` (tests, or an app without tenant-auth's
    assembly; tenant-auth registers the blueprint and attaches its platform itself)."""
    attach(app, platform)
    app.register_blueprint(blueprint)


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise MlflowException.invalid_parameter_value("expected a JSON object in the body")
    return data


def _str(data: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise MlflowException.invalid_parameter_value(f"missing parameter '{key}'")
        return None
    if not isinstance(value, str):
        raise MlflowException.invalid_parameter_value(f"'{key}' must be a string")
    return value


def _config(data: dict[str, Any]) -> dict[str, Any]:
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise MlflowException.invalid_parameter_value("'config' must be an object")
    return config


def _authorize(path: str) -> str:
    tenant = current_tenant()
    require_role(ROUTES[path][1], tenant)
    return tenant


@blueprint.route("/create", methods=["POST"])
@catch_mlflow_exception
def create():
    tenant = _authorize("/create")
    data = _body()
    out = get_service().create(tenant, _str(data, "name"), _str(data, "model_uri"),
                               _str(data, "flavor", False), _config(data))
    return jsonify({"deployment": out})


@blueprint.route("/update", methods=["POST"])
@catch_mlflow_exception
def update():
    tenant = _authorize("/update")
    data = _body()
    out = get_service().update(tenant, _str(data, "name"), _str(data, "model_uri", False),
                               _str(data, "flavor", False), _config(data))
    return jsonify({"deployment": out})


@blueprint.route("/delete", methods=["POST"])
@catch_mlflow_exception
def delete():
    tenant = _authorize("/delete")
    return jsonify({"deployment": get_service().delete(tenant, _str(_body(), "name"))})


@blueprint.route("/get", methods=["GET"])
@catch_mlflow_exception
def get():
    tenant = _authorize("/get")
    return jsonify({"deployment": get_service().get(tenant, _str(request.args, "name"))})


@blueprint.route("/list", methods=["GET"])
@catch_mlflow_exception
def list_deployments():
    tenant = _authorize("/list")
    return jsonify({"deployments": get_service().list(tenant)})


@blueprint.route("/predict", methods=["POST"])
@catch_mlflow_exception
def predict():
    tenant = _authorize("/predict")
    data = _body()
    body = _str(data, "body")
    content_type = _str(data, "content_type", False) or "application/json"
    result, result_type = get_service().predict(tenant, _str(data, "name"),
                                                body.encode(), content_type)
    return jsonify({"body": result.decode("utf-8", errors="replace"),
                    "content_type": result_type})

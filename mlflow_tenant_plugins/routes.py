"""Mounts our routes on MLflow's Flask app and gives each an entry in the basic-auth engine's
validator table — without one, the engine's fail-closed net answers 403 (FACTS.md). The
validator only requires an authenticated caller; each handler checks the caller's role.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

from flask import Blueprint, jsonify
from mlflow.server.handlers import catch_mlflow_exception

from mlflow_tenant_plugins import admin_api
from mlflow_tenant_plugins.auth.engine import authenticate_current_request
from mlflow_tenant_plugins.auth.identity import require_platform_admin
from mlflow_tenant_plugins.tenancy import TenantRegistry

# Path prefixes our blueprints own; the route-coverage check classifies them as ours.
OWN_PREFIXES = ("/api/2.0/tenants/",)
# MLflow routes that change server-wide state yet admit any authenticated caller: on one
# server shared by many tenants they are for platform admins only (gap closed in the
# tenant middleware; tests/test_route_coverage.py names it).
PLATFORM_ONLY_PREFIXES = (
    # The AI assistant's config (PUT) and skills install are server-global.
    "/ajax-api/3.0/mlflow/assistant",
)


_route_classes: list = []


def set_route_classes(classes: list) -> None:
    _route_classes[:] = classes


@admin_api.blueprint.route("/routes", methods=["GET"])
@catch_mlflow_exception
def list_route_classes():
    """Platform admins: how every served route is authorized (the startup classification)."""
    require_platform_admin()
    return jsonify({"routes": [r.to_dict() for r in _route_classes]})


def _authenticated() -> bool:
    return authenticate_current_request() is not None


def _blueprints(registry: TenantRegistry) -> list[Blueprint]:
    from mlflow_tenant_plugins.monitoring import page as usage_page

    admin_api.init(registry)
    usage_page.init(registry)
    found = [admin_api.blueprint, usage_page.blueprint]
    if importlib.util.find_spec("mlflow_tenant_plugins.deployments.routes") is not None:
        from mlflow_tenant_plugins.deployments import routes as deployment_routes

        found.append(deployment_routes.blueprint)
    return found


def register_routes(engine: ModuleType, registry: TenantRegistry) -> None:
    app = engine.app
    for bp in _blueprints(registry):
        app.register_blueprint(bp)
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(OWN_PREFIXES):
            continue
        if rule.arguments:
            raise RuntimeError(
                f"route {rule.rule} has path parameters; MLflow's validator table matches "
                "exact paths: pass parameters in the query or body"
            )
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            engine.BEFORE_REQUEST_VALIDATORS[(rule.rule, method)] = _authenticated

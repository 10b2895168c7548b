"""Mounts our routes on MLflow's Flask app and gives each an entry in the basic-auth engine's
validator table — without one, the engine's fail-closed net answers 403. The validator only
requires an authenticated caller; each handler checks the caller's role and reads the
platform from ``platform.current_platform()``.
"""

from __future__ import annotations

import posixpath
from urllib.parse import unquote

from flask import Blueprint, Flask, jsonify
from mlflow.server.handlers import catch_mlflow_exception

from mlflow_tenant_plugins import admin_api
from mlflow_tenant_plugins.auth.engine import authenticate_current_request
from mlflow_tenant_plugins.auth.identity import require_platform_admin
from mlflow_tenant_plugins.mlflow_hooks.basic_auth import register_validator
from mlflow_tenant_plugins.platform import current_platform
from mlflow_tenant_plugins.wire import API_PREFIX

# Path prefixes our blueprints own; the route-coverage check classifies them as ours.
OWN_PREFIXES = (API_PREFIX + "/",)
# MLflow routes that admit any authenticated caller yet change server-wide state or act
# outside the caller's role: on one server shared by many tenants they are for platform
# admins only (refused in the tenant middleware; tests/test_route_behaviour.py names each).
PLATFORM_ONLY_PREFIXES = (
    # The AI assistant's config (PUT) and skills install are server-global.
    "/ajax-api/3.0/mlflow/assistant",
    "/api/3.0/mlflow/assistant",
)
PLATFORM_ONLY_PATHS = frozenset({
    # Job submission: MLflow checks nothing but a login; a viewer could start a scorer job
    # that logs assessments, or name another principal as the job's `username` (the UI only
    # polls and cancels jobs, both owner-gated).
    "/ajax-api/3.0/jobs",
    # Demo data: any viewer could create experiments, runs, models and prompts, and the
    # handler switches the process-wide workspace while it runs.
    "/ajax-api/3.0/mlflow/demo/generate",
    # The legacy deployments proxy forwards any caller's request to the server-wide
    # MLFLOW_DEPLOYMENTS_TARGET under the server's network identity, unscoped by tenant.
    "/ajax-api/2.0/mlflow/gateway-proxy",
    "/api/2.0/mlflow/gateway-proxy",
})

_MAX_DECODE_ROUNDS = 4


def _canonical(path: str) -> str:
    """Lower-case, percent-decoded until stable, one slash between segments, no trailing
    slash: every spelling a router might accept for the same route maps to one string."""
    for _ in range(_MAX_DECODE_ROUNDS):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    path = "/" + "/".join(seg for seg in path.replace("\\", "/").split("/") if seg)
    return path.lower()


def _candidates(path: str, prefix: str) -> set[str]:
    """The path as given and with the static prefix removed, each with and without its dot
    segments resolved: a route is platform-only if any reading of the path names one."""
    found = set()
    for p in {_canonical(path), posixpath.normpath(_canonical(path))}:
        found.add(p)
        canon_prefix = _canonical(prefix) if prefix else ""
        if canon_prefix not in ("", "/") and (p == canon_prefix
                                             or p.startswith(canon_prefix + "/")):
            found.add(p[len(canon_prefix):] or "/")
    return found


# MLflow's own account and permission management (users, roles, role grants and
# assignments). The registry is the only writer of MLflow's permission tables: it mirrors
# tenants, bindings and principals into them, so a change made here directly would not be
# what the platform believes (``member list``, live authority), and ``users/list`` names every
# principal of every tenant to any workspace member. Tenants manage members through
# ``/api/2.0/tenants/members/…``. A caller may still read who it is.
ACCOUNT_PREFIXES = tuple(
    f"/{api}/{version}/mlflow/{kind}/"
    for api in ("api", "ajax-api") for version in ("2.0", "3.0") for kind in ("users", "roles")
)
SELF_SERVICE_SUFFIXES = ("/mlflow/users/current", "/mlflow/users/current/permissions")


def _is_account_management(p: str) -> bool:
    return p.startswith(ACCOUNT_PREFIXES) and not p.endswith(SELF_SERVICE_SUFFIXES)


def is_platform_only(path: str, static_prefix: str) -> bool:
    """Whether ``path`` reaches a route reserved for platform admins, however it is spelled
    (percent-encoding, repeated or trailing slashes, case, dot segments) and with or without
    the server's ``--static-prefix``. Errs towards True: a false positive costs a tenant a
    403 on a malformed path, a false negative hands a tenant a server-wide setting."""
    for p in _candidates(path, static_prefix):
        if p in PLATFORM_ONLY_PATHS or p.startswith(PLATFORM_ONLY_PREFIXES) \
                or _is_account_management(p):
            return True
    return False


@admin_api.blueprint.route("/routes", methods=["GET"])
@catch_mlflow_exception
def list_route_classes():
    """Platform admins: how every served route is authorized (the startup classification)."""
    require_platform_admin()
    return jsonify({"routes": [r.to_dict() for r in current_platform().route_classes]})


def _authenticated() -> bool:
    return authenticate_current_request() is not None


def _blueprints() -> list[Blueprint]:
    from mlflow_tenant_plugins.billing import routes as billing_routes
    from mlflow_tenant_plugins.deployments import routes as deployment_routes
    from mlflow_tenant_plugins.jobs import routes as job_routes
    from mlflow_tenant_plugins.monitoring import page as usage_page

    return [admin_api.blueprint, usage_page.blueprint, deployment_routes.blueprint,
            job_routes.blueprint, billing_routes.blueprint]


def register_routes(app: Flask) -> None:
    """Our blueprints on MLflow's Flask app, each route in the engine's validator table."""
    for bp in _blueprints():
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
            register_validator(rule.rule, method, _authenticated)

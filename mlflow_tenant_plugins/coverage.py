"""Route coverage: every (route, method) the app serves, and how it is authorized.

Run at startup (the server refuses to start with a route it cannot classify) and served to
platform admins at ``GET /api/2.0/tenants/routes`` so a black-box test can check the
running app. Classes:

- ``public``: no login (health, static files, server-info), as MLflow's engine defines them;
- ``ours``: a route of this package, authenticated by the engine, role checked by its handler;
- ``authenticated``: any authenticated caller (MLflow's discovery/UI routes; no tenant data);
- ``tenant-scoped``: an MLflow validator resolves the object's workspace and the caller's role;
- ``self-authorizing``: MLflow filters the handler's results by the caller (search, graphql);
- ``admin-only``: no validator, so MLflow's fail-closed net refuses every non-admin.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from types import ModuleType

from starlette.routing import Mount

from mlflow_tenant_plugins.routes import OWN_PREFIXES, PLATFORM_ONLY_PREFIXES

_FLASK_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")
_FASTAPI_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
_SKIP_METHODS = {"HEAD", "OPTIONS"}


@dataclass(frozen=True)
class RouteClass:
    path: str
    method: str
    kind: str  # "flask" or "fastapi"
    access: str

    def to_dict(self) -> dict:
        return asdict(self)


def _sample_flask_path(rule: str) -> str:
    def repl(m: re.Match) -> str:
        return {"int": "1", "path": "1/x"}.get(m.group(1) or "", "x")

    return _FLASK_PARAM.sub(repl, rule)


def _validator_access(validator) -> str:
    """MLflow's validators that admit any logged-in caller, recognised by name."""
    name = getattr(validator, "__qualname__", "")
    if name == "_allow_authenticated" or "require_authentication" in name:
        return "authenticated"
    return "tenant-scoped"


def _classify_flask(engine: ModuleType, path: str, method: str) -> str:
    if engine.is_unprotected_route(path):
        return "public"
    if path.startswith(PLATFORM_ONLY_PREFIXES):
        return "admin-only"
    if path.startswith(OWN_PREFIXES):
        return "ours" if engine.BEFORE_REQUEST_VALIDATORS.get((path, method)) else "unclassified"
    with engine.app.test_request_context(path, method=method):
        from flask import request

        validator = engine._find_validator(request)
        if validator is not None:
            return _validator_access(validator)
        if engine._is_proxy_artifact_path(path):
            validator = engine._get_proxy_artifact_validator(method, request.view_args)
            return "tenant-scoped" if validator is not None else "admin-only"
        if engine._authorized_outside_before_request(request):
            return "self-authorizing"
    return "admin-only"


def _native_routes(routes: list) -> Iterator[tuple[str, set[str] | None]]:
    """(path, methods) of the routes FastAPI serves itself, not the mounted Flask app.
    FastAPI ≥ 0.16x wraps included routers; their effective routes carry full paths."""
    for route in routes:
        if isinstance(route, Mount):
            continue
        if hasattr(route, "effective_candidates"):
            yield from _native_routes(route.effective_candidates())
        elif hasattr(route, "original_route"):
            yield route.path, getattr(route.original_route, "methods", None)
        elif hasattr(route, "methods"):
            yield route.path, route.methods


def classify_routes(engine: ModuleType, fastapi_app) -> list[RouteClass]:
    """Every served (route, method), classified with MLflow's own engine functions."""
    found: list[RouteClass] = []
    for rule in engine.app.url_map.iter_rules():
        path = _sample_flask_path(rule.rule)
        for method in sorted((rule.methods or set()) - _SKIP_METHODS):
            found.append(
                RouteClass(rule.rule, method, "flask", _classify_flask(engine, path, method))
            )
    for route_path, methods in _native_routes(fastapi_app.routes):
        path = _FASTAPI_PARAM.sub("x", route_path)
        for method in sorted(set(methods or ()) - _SKIP_METHODS):
            if engine.is_unprotected_route(path):
                access = "public"
            elif path.startswith(PLATFORM_ONLY_PREFIXES):
                access = "admin-only"
            elif (validator := engine._find_fastapi_validator(path, method)) is not None:
                access = _validator_access(validator)
            else:
                access = "admin-only"  # the FastAPI fail-closed net
            found.append(RouteClass(route_path, method, "fastapi", access))
    return found


def summary(routes: list[RouteClass]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in routes:
        counts[r.access] = counts.get(r.access, 0) + 1
    return dict(sorted(counts.items()))

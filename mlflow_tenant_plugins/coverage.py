"""Route coverage: every (route, method) the app serves, and how it is authorized.

Run at startup (the server refuses to start with a route it cannot classify) and served to
platform admins at ``GET /api/2.0/tenants/routes`` so a black-box test can check the
running app. Classes:

- ``public``: no login (health, static files, server-info), as MLflow's engine defines them;
- ``ours``: a route of this package, authenticated by the engine, role checked by its handler;
- ``authenticated``: MLflow's validator admits any authenticated caller (discovery/UI routes);
- ``tenant-scoped``: MLflow's validator refuses a caller with no grants at all;
- ``self-authorizing``: MLflow filters the handler's results by the caller (search, graphql);
- ``admin-only``: no validator (MLflow's fail-closed net refuses every non-admin), or a route
  this package reserves for platform admins (``routes.is_platform_only``).

Validators are classed by what they do, not by their names: each is called once, at startup,
for a principal that exists nowhere (no user row, no grant). One that admits that principal
admits everyone and is ``authenticated``; tests/test_route_behaviour.py then probes every such
route over HTTP with a viewer, an editor and another tenant's key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from starlette.requests import Request
from starlette.routing import Mount

from mlflow_tenant_plugins.mlflow_hooks import basic_auth as engine
from mlflow_tenant_plugins.mlflow_hooks.server import static_prefix
from mlflow_tenant_plugins.routes import OWN_PREFIXES, is_platform_only

_FLASK_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")
_FASTAPI_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")
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


# A principal no caller can be: no user row, no role, no grant anywhere.
PROBE_PRINCIPAL = "\x00route-probe"


def _admits_nobody_flask(validator) -> bool:
    """Call a Flask validator, inside the route's request context, as PROBE_PRINCIPAL.
    An exception or a False means it checked something the probe lacks."""
    with engine.authenticated_as(PROBE_PRINCIPAL):
        try:
            return validator() is True
        except Exception:
            return False


def _admits_nobody_fastapi(validator, path: str, method: str) -> bool:
    """Drive a FastAPI validator's coroutine as PROBE_PRINCIPAL. One that suspends (a
    thread, real I/O) is doing a lookup: it is not a blanket yes."""
    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    request = Request({"type": "http", "method": method, "path": path, "headers": [],
                       "query_string": b""}, receive)
    coro = validator(PROBE_PRINCIPAL, request)
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value is True
    except Exception:
        return False
    coro.close()
    return False


def _sample_fastapi_param(m: re.Match) -> str:
    # A path parameter gets two segments, as real names do (MCP servers: namespace/slug).
    return "x/x" if m.group(2) == "path" else "x"


def _classify_flask(path: str, method: str) -> str:
    if engine.is_unprotected_route(path):
        return "public"
    if is_platform_only(path, static_prefix()):
        return "admin-only"
    if path.startswith(OWN_PREFIXES):
        return "ours" if engine.has_validator(path, method) else "unclassified"
    with engine.flask_app().test_request_context(path, method=method):
        from flask import request

        validator = engine.find_validator(request)
        if validator is not None:
            if not _admits_nobody_flask(validator):
                return "tenant-scoped"
            # Admitted, but MLflow filters the response by the caller.
            if engine.authorized_outside_before_request(request):
                return "self-authorizing"
            return "authenticated"
        if engine.is_proxy_artifact_path(path):
            validator = engine.proxy_artifact_validator(method, request.view_args)
            return "tenant-scoped" if validator is not None else "admin-only"
        if engine.authorized_outside_before_request(request):
            return "self-authorizing"
    return "admin-only"


def _native_routes(routes: list) -> Iterator[tuple[str, set[str] | None, object]]:
    """(path, methods, endpoint) of the routes FastAPI serves itself, not the mounted Flask
    app. FastAPI ≥ 0.16x wraps included routers; their effective routes carry full paths."""
    for route in routes:
        if isinstance(route, Mount):
            continue
        if hasattr(route, "effective_candidates"):
            yield from _native_routes(route.effective_candidates())
        elif hasattr(route, "original_route"):
            original = route.original_route
            yield route.path, getattr(original, "methods", None), getattr(original, "endpoint",
                                                                          None)
        elif hasattr(route, "methods"):
            yield route.path, route.methods, getattr(route, "endpoint", None)


def _classify_fastapi(path: str, method: str, endpoint) -> str:
    if engine.is_unprotected_route(path):
        return "public"
    if is_platform_only(path, static_prefix()):
        return "admin-only"
    validator = engine.find_fastapi_validator(path, method)
    if validator is None:
        return "admin-only"  # the FastAPI fail-closed net
    if not _admits_nobody_fastapi(validator, path, method):
        return "tenant-scoped"
    # Admitted, but MLflow filters the response by the caller (job search, gateway models).
    filters = engine.fastapi_response_filters()
    return "self-authorizing" if endpoint in filters else "authenticated"


def classify_routes(fastapi_app) -> list[RouteClass]:
    """Every served (route, method), classified with MLflow's own engine functions."""
    found: list[RouteClass] = []
    for rule in engine.flask_app().url_map.iter_rules():
        path = _sample_flask_path(rule.rule)
        for method in sorted((rule.methods or set()) - _SKIP_METHODS):
            found.append(
                RouteClass(rule.rule, method, "flask", _classify_flask(path, method))
            )
    for route_path, methods, endpoint in _native_routes(fastapi_app.routes):
        path = _FASTAPI_PARAM.sub(_sample_fastapi_param, route_path)
        for method in sorted(set(methods or ()) - _SKIP_METHODS):
            access = _classify_fastapi(path, method, endpoint)
            found.append(RouteClass(route_path, method, "fastapi", access))
    return found


def summary(routes: list[RouteClass]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in routes:
        counts[r.access] = counts.get(r.access, 0) + 1
    return dict(sorted(counts.items()))

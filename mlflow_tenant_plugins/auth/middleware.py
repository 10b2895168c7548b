"""Tenant resolution, in front of everything MLflow serves (Flask and native FastAPI routes).

The caller's tenant is its workspace. A caller that names no workspace lands in its own
tenant: we add the ``X-MLFLOW-WORKSPACE`` header before MLflow resolves the workspace.
Naming a workspace the caller is not bound to is refused here with 403 (MLflow's engine would
refuse it too, route by route; refusing once, first, also keeps the refusal uniform).
Unauthenticated requests get the 401 with a one-line reason; nothing reaches MLflow.
"""

from __future__ import annotations

import json

import anyio
from mlflow.utils.workspace_utils import WORKSPACE_HEADER_NAME

from mlflow_tenant_plugins.auth.authenticator import Authenticator
from mlflow_tenant_plugins.auth.base import Refusal, unauthenticated_body
from mlflow_tenant_plugins.mlflow_hooks.basic_auth import is_unprotected_route
from mlflow_tenant_plugins.mlflow_hooks.server import static_prefix
from mlflow_tenant_plugins.routes import is_platform_only

_WS_HEADER = WORKSPACE_HEADER_NAME.lower().encode()
# The authentication result, left in the request's scope for observers outside this
# middleware (monitoring.metrics): ASGI hands them the same scope object.
AUTH_RESULT_SCOPE_KEY = "mlt.auth_result"


async def _send_json(send, status: int, body: str, extra: list | None = None) -> None:
    payload = body.encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(payload)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class TenantMiddleware:
    def __init__(self, app, authenticator: Authenticator):
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or is_unprotected_route(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        # The edge (auth.edge) has refused repeated or folded identity and workspace
        # headers, so this dict holds the one value every later parser will see.
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        client = scope.get("client")
        # Off the event loop: a cache miss may query the database, replay a signed STS call
        # or fetch an ALB key; on the loop, one slow caller would stall every request.
        result = await anyio.to_thread.run_sync(
            self.authenticator.authenticate, headers, client[0] if client else None)
        scope[AUTH_RESULT_SCOPE_KEY] = result
        if isinstance(result, Refusal):
            if result.retry_after:
                await _send_json(send, 503, json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE",
                                                        "message": result.reason}),
                                 [(b"retry-after", str(result.retry_after).encode())])
                return
            await _send_json(send, 401, unauthenticated_body(result.reason),
                             [(b"www-authenticate", b'Basic realm="mlflow"')])
            return
        if is_platform_only(scope["path"], static_prefix()) and not result.platform_admin:
            await _send_json(send, 403, _FORBIDDEN_BODY.decode())
            return
        named = headers.get(WORKSPACE_HEADER_NAME.lower(), "").strip()
        if named and not result.may_act_in(named):
            body = json.dumps({
                "error_code": "PERMISSION_DENIED",
                "message": f"not allowed in workspace '{named}': your credentials "
                           f"belong to tenant '{result.tenant}'",
            })
            await _send_json(send, 403, body)
            return
        workspace = named or result.tenant
        # MLflow sees exactly the workspace that was checked: the client's spelling (padding
        # included) is replaced by the checked value, or by the caller's own tenant.
        scope = dict(scope)
        scope["headers"] = [(k, v) for k, v in scope.get("headers", [])
                            if k.lower() != _WS_HEADER]
        if workspace:
            scope["headers"].append((_WS_HEADER, workspace.encode("latin-1")))
        await self.app(scope, receive, _json_forbidden(send))


_FORBIDDEN_BODY = json.dumps({
    "error_code": "PERMISSION_DENIED",
    "message": "permission denied: your role in this tenant does not allow this request, "
               "or the object is not in your tenant",
}).encode()


def _json_forbidden(send):
    """MLflow's engine answers 403 with plain text; the platform promises MLflow-format JSON
    (``PERMISSION_DENIED``) on every refusal, so rewrite those bodies on the way out."""
    rewriting = False

    async def wrapped(message) -> None:
        nonlocal rewriting
        if message["type"] == "http.response.start" and message["status"] == 403:
            content_type = dict(message.get("headers", [])).get(b"content-type", b"")
            if not content_type.startswith(b"application/json"):
                rewriting = True
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in (b"content-type", b"content-length")]
                headers += [(b"content-type", b"application/json"),
                            (b"content-length", str(len(_FORBIDDEN_BODY)).encode())]
                await send({**message, "headers": headers})
                return
        if rewriting and message["type"] == "http.response.body":
            if not message.get("more_body", False):
                await send({"type": "http.response.body", "body": _FORBIDDEN_BODY})
            return
        await send(message)

    return wrapped

"""The bridge to MLflow's basic-auth engine: our ``authorization_function``.

MLflow's engine calls it (several times per request) to learn the caller; we answer with a
werkzeug ``Authorization`` whose username is the principal's basic-auth user, and MLflow
authorizes the route from that user's workspace roles. Refusals are MLflow-format JSON 401s
with ``WWW-Authenticate: Basic`` so browsers show their login prompt.
"""

from __future__ import annotations

import json

from flask import Response, g, request
from werkzeug.datastructures import Authorization

from mlflow_tenant_plugins.auth.authenticator import Authenticator, Refusal
from mlflow_tenant_plugins.auth.identity import set_identity
from mlflow_tenant_plugins.tenancy.entities import Identity

_authenticator: Authenticator | None = None
_G_RESULT = "mlt_auth_result"


def install(authenticator: Authenticator) -> None:
    """Called once per worker by the app factory, before the first request."""
    global _authenticator
    _authenticator = authenticator


def get_authenticator() -> Authenticator:
    if _authenticator is None:
        raise RuntimeError("tenant-auth is not initialised: start the server with "
                           "`mlflow server --app-name tenant-auth`")
    return _authenticator


def unauthenticated_body(reason: str) -> str:
    return json.dumps({"error_code": "UNAUTHENTICATED", "message": reason})


def _authenticate_flask_request() -> Identity | Refusal:
    result = getattr(g, _G_RESULT, None)
    if result is None:
        result = get_authenticator().authenticate(request.headers, request.remote_addr)
        setattr(g, _G_RESULT, result)
        if isinstance(result, Identity):
            set_identity(result)
    return result


def authenticate_current_request() -> Identity | None:
    result = _authenticate_flask_request()
    return result if isinstance(result, Identity) else None


def authorization_function() -> Authorization | Response:
    result = _authenticate_flask_request()
    if isinstance(result, Refusal):
        return Response(
            unauthenticated_body(result.reason),
            status=401,
            mimetype="application/json",
            headers={"WWW-Authenticate": 'Basic realm="mlflow"'},
        )
    return Authorization("basic", {"username": result.principal, "password": ""})

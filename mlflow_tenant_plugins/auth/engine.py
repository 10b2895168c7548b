"""The Flask-request glue: who made the current Flask request, and the bridge to MLflow's
basic-auth engine (our ``authorization_function``).

A request is authenticated once (the result kept in Flask's ``g``) by the platform's
authenticator (``platform.current_platform()``, attached by the app factory). MLflow's engine calls
``authorization_function`` (several times per request) to learn the caller; we answer with a
werkzeug ``Authorization`` whose username is the principal's basic-auth user, and MLflow
authorizes the route from that user's workspace roles. Refusals are MLflow-format JSON 401s
with ``WWW-Authenticate: Basic`` so browsers show their login prompt.

Our own handlers ask ``auth.identity`` (which stands on this module) who the caller is.
"""

from __future__ import annotations

import logging

from flask import Response, g, request
from werkzeug.datastructures import Authorization

from mlflow_tenant_plugins.auth.authenticator import Authenticator
from mlflow_tenant_plugins.auth.base import Refusal, unauthenticated_body
from mlflow_tenant_plugins.platform import current_platform
from mlflow_tenant_plugins.tenancy.entities import Identity

_logger = logging.getLogger(__name__)
_G_RESULT = "mlt_auth_result"


def get_authenticator() -> Authenticator:
    authenticator = current_platform().authenticator
    if authenticator is None:
        raise RuntimeError("this platform has no authenticator")
    return authenticator


def _authenticate_flask_request() -> Identity | Refusal:
    result = getattr(g, _G_RESULT, None)
    if result is None:
        result = get_authenticator().authenticate(request.headers, request.remote_addr)
        setattr(g, _G_RESULT, result)
    return result


def set_identity(identity: Identity) -> None:
    """Take ``identity`` as the current request's caller (for in-process callers that already
    know it; nothing is authenticated for this request afterwards)."""
    setattr(g, _G_RESULT, identity)


def authenticate_current_request() -> Identity | None:
    result = _authenticate_flask_request()
    return result if isinstance(result, Identity) else None


def _holds_unwarranted_admin(identity: Identity) -> bool:
    """MLflow's engine skips every check for a user with ``is_admin``. Only the platform's
    own platform admins may carry it: any other principal found with it (set by a bug, or by
    an old backdoor through ``users/update-admin``) is refused, never served as an admin."""
    if identity.platform_admin:
        return False
    from mlflow_tenant_plugins.mlflow_hooks.basic_auth import user_is_admin

    return user_is_admin(identity.principal)


def _refusal(reason: str) -> Response:
    return Response(
        unauthenticated_body(reason),
        status=401,
        mimetype="application/json",
        headers={"WWW-Authenticate": 'Basic realm="mlflow"'},
    )


def authorization_function() -> Authorization | Response:
    result = _authenticate_flask_request()
    if isinstance(result, Refusal):
        return _refusal(result.reason)
    if _holds_unwarranted_admin(result):
        _logger.error("principal %s holds MLflow admin rights it was not granted by the "
                      "platform; refusing it (a platform admin should revoke them)",
                      result.principal)
        return _refusal("this principal's rights are inconsistent; ask a platform admin")
    return Authorization("basic", {"username": result.principal, "password": ""})

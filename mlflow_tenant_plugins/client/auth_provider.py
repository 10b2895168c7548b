"""``MLFLOW_TRACKING_AUTH=tenant``: the stock client, the ``mlflow`` CLI and
``mlflow deployments`` send the tenant's credentials with every request.

MLflow asks the provider named by ``MLFLOW_TRACKING_AUTH`` for a ``requests`` auth object
on every request (``mlflow.utils.rest_utils.http_request``); :class:`TenantAuth` sets the
``Authorization`` header (an API key) or the AWS IAM identity header, and the workspace
header to the profile's tenant unless the caller named a workspace. When the server answers
401 or 403 it adds to MLflow's error message which credential was sent (by key id or
profile, never its value), so the user knows what to fix.

Credentials go only to the origin they were made for. ``requests`` drops ``Authorization``
when a redirect changes host, port or scheme, but carries every other header along, the
IAM identity header among them (replayed within its 15 minutes, it logs in as the user):
so a redirect to another origin is refused before ``requests`` follows it.

This module is imported by every MLflow client process that has the package installed
(MLflow loads all request auth providers): it imports nothing heavy and nothing server-side.
"""

from __future__ import annotations

import hashlib
import json
import threading
from urllib.parse import urljoin, urlsplit

from mlflow.exceptions import MlflowException
from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider
from requests.auth import AuthBase
from requests.models import PreparedRequest, Response

from mlflow_tenant_plugins.client.profiles import Credential, fingerprint, resolve_credential
from mlflow_tenant_plugins.wire import IAM_HEADER, WORKSPACE_HEADER

_REFUSALS = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:  # a port that is not a number: an origin of its own
        port = -1
    return scheme, (parts.hostname or "").lower(), port


def same_origin(sent_to: str, redirected_to: str) -> bool:
    """Whether a credential sent to ``sent_to`` may follow a redirect to ``redirected_to``:
    same scheme, host and port, or the same host upgraded from http to https on the default
    ports (the rule ``requests`` applies to ``Authorization``)."""
    old, new = _origin(sent_to), _origin(redirected_to)
    if old == new:
        return True
    return (old[0], new[0]) == ("http", "https") and old[1] == new[1] \
        and (old[2], new[2]) == (80, 443)


class TenantAuth(AuthBase):
    def __init__(self, credential: Credential):
        self.credential = credential
        self._signer = None
        if credential.kind == "aws-iam":
            from mlflow_tenant_plugins.client.aws_iam import IamSigner

            self._signer = IamSigner(credential.aws_profile, credential.aws_region,
                                     credential.sts_endpoint, credential.server_id)

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        if self._signer is None:
            request.headers["Authorization"] = f"Bearer {self.credential.key}"
        else:
            # The IAM identity replaces any token MLflow added from MLFLOW_TRACKING_TOKEN.
            request.headers.pop("Authorization", None)
            request.headers[IAM_HEADER] = self._signer.header_value(request.url or "")
        tenant = self.credential.tenant
        # Workspace administration routes carry the workspace in the path (as MLflow does).
        if tenant and WORKSPACE_HEADER not in request.headers \
                and "/mlflow/workspaces" not in urlsplit(request.url or "").path:
            request.headers[WORKSPACE_HEADER] = tenant
        request.register_hook("response", self._explain_refusal)
        if self._signer is not None:
            request.register_hook("response", self._refuse_cross_origin_redirect)
        return request

    def _refuse_cross_origin_redirect(self, response: Response, *_args, **_kwargs
                                      ) -> Response:
        """Stop ``requests`` from following a redirect to another origin with the IAM header
        (hooks run before it follows; it copies the request it sent)."""
        if not response.is_redirect or response.request is None:
            return response
        sent_to = response.request.url or response.url
        target = urljoin(sent_to, response.headers.get("location", ""))
        if same_origin(sent_to, target):
            return response
        response.request.headers.pop(IAM_HEADER, None)  # even if someone catches the error
        response.close()
        raise MlflowException(
            f"the tracking server at {_origin_text(sent_to)} redirected to another origin, "
            f"{_origin_text(target)}: tenant auth does not send the AWS IAM identity there. "
            "If that server is the platform, set MLFLOW_TRACKING_URI to it")

    def _explain_refusal(self, response: Response, *_args, **_kwargs) -> Response:
        """Name the credential in the server's 401/403 message (MLflow shows that message)."""
        if response.status_code not in _REFUSALS:
            return response
        hint = f"[tenant auth sent {self.credential.describe()}]"
        try:
            body = json.loads(response.content)
        except ValueError:
            body = None
        if isinstance(body, dict):
            body["message"] = f"{body.get('message') or 'refused'} {hint}"
            body.setdefault("error_code", _REFUSALS[response.status_code])
        else:
            body = {"error_code": _REFUSALS[response.status_code],
                    "message": f"HTTP {response.status_code} from the tracking server {hint}"}
        response._content = json.dumps(body).encode()
        response.headers["Content-Type"] = "application/json"
        response.headers.pop("Content-Length", None)
        return response


def _origin_text(url: str) -> str:
    scheme, host, port = _origin(url)
    host = host.encode("unicode_escape").decode("ascii")  # from the server: shown as data
    return f"{scheme}://{host}:{port}" if port not in (None, _DEFAULT_PORTS.get(scheme)) \
        else f"{scheme}://{host}"


_lock = threading.Lock()
_auth_by_config: dict[str, TenantAuth] = {}


def current_auth() -> TenantAuth:
    """The auth object for the current environment and profile file, reused while they stay
    the same (MLflow asks for it on every request; an IAM signature is reused for minutes)."""
    key = hashlib.sha256(repr(fingerprint()).encode()).hexdigest()
    with _lock:
        auth = _auth_by_config.get(key)
    if auth is None:
        auth = TenantAuth(resolve_credential())
        with _lock:
            if len(_auth_by_config) >= 16:  # the profile file keeps changing: start afresh
                _auth_by_config.clear()
            auth = _auth_by_config.setdefault(key, auth)
    return auth


class TenantAuthProvider(RequestAuthProvider):
    def get_name(self) -> str:
        return "tenant"

    def get_auth(self) -> TenantAuth:
        return current_auth()

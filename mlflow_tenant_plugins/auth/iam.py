"""AWS IAM identity, server side: replay the client's presigned ``sts:GetCallerIdentity``.

The client sends a signed request (its format is ``mlflow_tenant_plugins.wire``) that it never
sent itself. We check what AWS would not check for us — the server id is ours and inside
the signature, the signature is under 15 minutes old (moto does not check dates; AWS checks
them loosely), it is a GetCallerIdentity and nothing else, and it was signed for the STS
host we verify with — then POST it to the configured ``sts_endpoint`` (never to a URL the
client chose) and take the ARN STS answers with. An assumed-role ARN stands for its role.
The ARN maps to a tenant role through the IAM bindings (``mlflow-tenants iam bind``).

STS is asked once per signature: its answer is cached until the signature expires, while
the binding lookup is cached only for ``auth_cache_ttl_seconds``, so an unbinding takes
effect within that bound.
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

import requests
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.auth.base import OutboundGate, Refusal, busy, digest
from mlflow_tenant_plugins.auth.ttl_cache import TtlCache
from mlflow_tenant_plugins.config import ConfigError, Settings
from mlflow_tenant_plugins.tenancy import TenantRegistry
from mlflow_tenant_plugins.tenancy.entities import Identity
from mlflow_tenant_plugins.tenancy.iam_bindings import IamBindings, normalize_arn
from mlflow_tenant_plugins.tenancy.principals import iam_principal
from mlflow_tenant_plugins.wire import (
    IAM_HEADER,
    MAX_SIGNATURE_AGE_SECONDS,
    SERVER_ID_HEADER,
    WORKSPACE_HEADER,
    IamError,
    SignedRequest,
    decode_signed_request,
)

_logger = logging.getLogger(__name__)

METHOD = "iam"
MAX_CLOCK_SKEW_SECONDS = 5 * 60
STS_TIMEOUT_SECONDS = 10.0
_HEADER = IAM_HEADER.lower()
_SERVER_ID = SERVER_ID_HEADER.lower()
_WORKSPACE = WORKSPACE_HEADER.lower()
_NEVER_FORWARD = {"host", "content-length", "connection", "transfer-encoding", "expect"}

Post = Callable[..., requests.Response]


def _refusal(reason: str) -> Refusal:
    return Refusal(reason, method=METHOD)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    port = parts.port if parts.port not in (None, default) else None
    host = (parts.hostname or "").lower()
    return f"{parts.scheme}://{host}:{port}" if port else f"{parts.scheme}://{host}"


def arn_from_sts(body: bytes) -> str:
    """The ``Arn`` of a GetCallerIdentity answer (XML, AWS's default protocol)."""
    try:
        node = ET.fromstring(body).find(".//{*}GetCallerIdentityResult/{*}Arn")
    except ET.ParseError:
        node = None
    if node is None or not (node.text or "").strip():
        raise IamError("AWS STS answered without an ARN")
    return node.text.strip()


def sts_error_code(body: bytes) -> str:
    try:
        node = ET.fromstring(body).find(".//{*}Error/{*}Code")
    except ET.ParseError:
        return "unreadable error"
    return node.text.strip() if node is not None and node.text else "unknown error"


class IamMethod:
    def __init__(self, settings: Settings, registry: TenantRegistry, cache: TtlCache,
                 bindings: IamBindings | None = None, post: Post | None = None):
        if not settings.server_id:
            raise ConfigError("auth method 'iam' needs server_id (MLFLOW_TENANT_SERVER_ID): "
                              "the id clients sign, e.g. this server's host name")
        if not settings.sts_endpoint.startswith(("https://", "http://")):
            raise ConfigError("auth method 'iam' needs sts_endpoint to be an http(s) URL")
        self.server_id = settings.server_id
        self.endpoint = settings.sts_endpoint
        self.registry = registry
        self.bindings = bindings or IamBindings(registry)
        self.cache = cache
        self._post = post or requests.Session().post
        self.gate = OutboundGate()
        self.sts_calls = 0

    def __call__(self, headers: Mapping[str, str], _addr: str | None
                 ) -> Identity | Refusal | None:
        raw = headers.get(_HEADER)
        if raw is None:
            return None
        try:
            signed = decode_signed_request(raw)
            remaining = self._check(signed)
        except IamError as exc:
            return _refusal(f"AWS IAM credentials refused: {exc}")
        arn = self.cache.get_bounded("iam-sts:" + digest(raw),
                                     lambda: self._ask_sts(signed, remaining))
        if isinstance(arn, Refusal):
            return arn
        workspace = (headers.get(_WORKSPACE) or "").strip()
        return self.cache.get("iam-id:" + digest(arn, workspace),
                              lambda: self._identity(arn, workspace))

    def _check(self, signed: SignedRequest) -> float:
        """Checks of our own; returns the seconds the signature stays acceptable."""
        if _SERVER_ID not in signed.signed_headers or _SERVER_ID not in signed.headers:
            raise IamError(f"the signature does not cover a {SERVER_ID_HEADER} header")
        if signed.headers[_SERVER_ID] != self.server_id:
            raise IamError(f"the request was signed for server id "
                           f"'{signed.headers[_SERVER_ID]}', this server is '{self.server_id}'")
        if "x-amz-date" not in signed.signed_headers:
            raise IamError("the signature does not cover X-Amz-Date")
        age = time.time() - signed.signed_at.timestamp()
        if age > MAX_SIGNATURE_AGE_SECONDS:
            raise IamError("the signature is older than 15 minutes: sign a fresh request")
        if age < -MAX_CLOCK_SKEW_SECONDS:
            raise IamError("the signature is dated in the future: check the client's clock")
        if _origin(signed.url) != _origin(self.endpoint):
            raise IamError(f"the request was signed for {_origin(signed.url)}, this server "
                           f"verifies with {_origin(self.endpoint)}: set sts_endpoint to it "
                           "in your tenant profile")
        return MAX_SIGNATURE_AGE_SECONDS - age

    def _ask_sts(self, signed: SignedRequest, remaining: float
                 ) -> tuple[str | Refusal, float | None]:
        if not self.gate.try_enter():
            return busy(METHOD), 0
        try:
            return self._replay(signed, remaining)
        finally:
            self.gate.leave()

    def _replay(self, signed: SignedRequest, remaining: float
                ) -> tuple[str | Refusal, float | None]:
        forward = {k: v for k, v in signed.headers.items()
                   if (k in signed.signed_headers or k in ("authorization", "content-type"))
                   and k not in _NEVER_FORWARD}
        self.sts_calls += 1
        try:
            response = self._post(self.endpoint, data=signed.body.encode(), headers=forward,
                                  timeout=STS_TIMEOUT_SECONDS, allow_redirects=False)
        except requests.RequestException as exc:
            _logger.warning("AWS STS at %s unreachable: %s", self.endpoint, type(exc).__name__)
            return _refusal("AWS STS could not be reached to verify the IAM identity"), 0
        if response.status_code >= 500 or response.status_code in (429, 503):
            _logger.warning("AWS STS at %s answered HTTP %s", self.endpoint, response.status_code)
            return _refusal("AWS STS failed to verify the IAM identity; retry"), 0
        if response.status_code != 200:
            code = sts_error_code(response.content)
            return _refusal(f"AWS STS refused the signed request ({code})"), None
        try:
            return normalize_arn(arn_from_sts(response.content)), remaining
        except (IamError, MlflowException) as exc:
            message = exc.message if isinstance(exc, MlflowException) else str(exc)
            return _refusal(f"AWS IAM identity not usable: {message}"), None

    def _identity(self, arn: str, workspace: str) -> Identity | Refusal:
        bindings = self.bindings.lookup(arn)
        principal = iam_principal(arn)
        admin = self.registry.is_platform_admin(principal)
        if workspace in bindings:
            return Identity(principal, workspace, bindings[workspace], admin, METHOD)
        if len(bindings) == 1:
            (tenant, role), = bindings.items()
            return Identity(principal, tenant, role, admin, METHOD)
        if admin:
            return Identity(principal, None, None, True, METHOD)
        if not bindings:
            return _refusal(f"AWS identity {arn} is not bound to a tenant: a platform admin "
                           f"can bind it with 'mlflow-tenants iam bind TENANT {arn} --role ROLE'")
        return _refusal(f"AWS identity {arn} is bound to several tenants "
                       f"({', '.join(sorted(bindings))}): name one with MLFLOW_WORKSPACE "
                       "or the tenant of your profile")

"""The wire protocol between a tenant's machine and the platform server, in one place.

Header names, API prefixes, the field a quota refusal names its quota in, and the AWS IAM
signed-request format (encoded by ``client/aws_iam.py`` on the tenant's machine, decoded by
``auth/iam.py`` on the server). Both sides import this module, so the two ends cannot drift.

It imports nothing of the package and only the standard library: the client plugin loads it
in every MLflow process of a tenant's machine, and the server's layers (auth, monitoring,
deployments) stand on it without pulling in each other.

The IAM signed request (header :data:`IAM_HEADER`) is base64 of the JSON document
``{"v": WIRE_VERSION, "method": "POST", "url": …, "body": …, "headers": {…}}``: an
``sts:GetCallerIdentity`` request the client signed (SigV4) but never sent. The server checks
its shape here and the rest (server id, age, STS host) in ``auth/iam.py`` before replaying it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl

# Bumped when the signed-request document changes shape; the server refuses other versions
# with a message telling the user to upgrade.
WIRE_VERSION = 1

# -- headers ------------------------------------------------------------------------------------
IAM_HEADER = "X-MLflow-Tenant-Iam"
SERVER_ID_HEADER = "X-MLflow-Tenant-Server-Id"
# MLflow's own (mlflow.utils.workspace_utils.WORKSPACE_HEADER_NAME), spelled here so that the
# client plugin need not import MLflow's server-side helpers to name it.
WORKSPACE_HEADER = "X-MLFLOW-WORKSPACE"

# -- API prefixes -------------------------------------------------------------------------------
API_PREFIX = "/api/2.0/tenants"
DEPLOYMENTS_PREFIX = f"{API_PREFIX}/deployments"
JOBS_PREFIX = f"{API_PREFIX}/jobs"

# -- errors -------------------------------------------------------------------------------------
# A RESOURCE_EXHAUSTED refusal names the quota it hit in this JSON field (beside error_code and
# message), so nothing has to read the quota from the message's words.
QUOTA_FIELD = "quota"

# -- the AWS IAM signed request -----------------------------------------------------------------
STS_BODY = "Action=GetCallerIdentity&Version=2011-06-15"
STS_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
# The server accepts a signature for this long; the client re-signs well before.
MAX_SIGNATURE_AGE_SECONDS = 15 * 60
MAX_SIGNED_REQUEST_CHARS = 16_384
_GET_CALLER_IDENTITY = sorted(parse_qsl(STS_BODY))
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=[^,\s]+,\s*SignedHeaders=([a-z0-9;._-]+),"
    r"\s*Signature=[0-9a-f]{64}$"
)


class IamError(ValueError):
    """Why a signed request is refused before STS is asked, in one line."""


@dataclass(frozen=True)
class SignedRequest:
    url: str
    body: str
    headers: dict[str, str]  # lower-case names
    signed_headers: frozenset[str]
    signed_at: datetime


def encode_signed_request(method: str, url: str, body: str, headers: dict[str, str]) -> str:
    """The :data:`IAM_HEADER` value for a request the client signed."""
    doc = {"v": WIRE_VERSION, "method": method, "url": url, "body": body, "headers": headers}
    return base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode("ascii")


def decode_signed_request(raw: str) -> SignedRequest:
    """The signed request in an :data:`IAM_HEADER` value, if it has the one shape allowed: a
    SigV4-signed ``sts:GetCallerIdentity`` POST with a date. Raises :class:`IamError`."""
    if len(raw) > MAX_SIGNED_REQUEST_CHARS:
        raise IamError("the signed request is too large")
    try:
        doc = json.loads(base64.b64decode(raw.strip(), validate=True))
    except (binascii.Error, ValueError):
        raise IamError(f"the {IAM_HEADER} header is not base64-encoded JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != WIRE_VERSION:
        raise IamError(f"unsupported {IAM_HEADER} format: upgrade mlflow-tenant-plugins")
    url, body, raw_headers = doc.get("url"), doc.get("body"), doc.get("headers")
    if not isinstance(url, str) or not isinstance(body, str) or not isinstance(raw_headers, dict):
        raise IamError("the signed request lacks its url, body or headers")
    if doc.get("method") != "POST" or sorted(parse_qsl(body)) != _GET_CALLER_IDENTITY:
        raise IamError("the signed request is not an sts:GetCallerIdentity POST")
    headers: dict[str, str] = {}
    for name, value in raw_headers.items():
        if not isinstance(value, str) or name.lower() in headers:
            raise IamError("the signed request has malformed or repeated headers")
        headers[name.lower()] = value
    match = _AUTHORIZATION.match(headers.get("authorization", ""))
    if not match:
        raise IamError("the signed request carries no AWS SigV4 Authorization header")
    try:
        signed_at = datetime.strptime(headers.get("x-amz-date", ""), "%Y%m%dT%H%M%SZ")
    except ValueError:
        raise IamError("the signed request has no valid X-Amz-Date") from None
    return SignedRequest(url, body, headers, frozenset(match.group(1).split(";")),
                         signed_at.replace(tzinfo=UTC))

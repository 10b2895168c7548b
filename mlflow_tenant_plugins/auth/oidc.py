"""AWS ALB OIDC: the ``x-amzn-oidc-data`` header, an ES256 JWT the load balancer signs.

Verified as AWS documents it: ``alg`` is ES256, ``signer`` is one of our ALB ARNs (checked
before anything is fetched, so foreign tokens cost nothing), ``exp`` has not passed, and the
signature over the first two segments *exactly as sent* verifies with the ALB's public key
for the token's ``kid`` (fetched from ``alb_public_key_url`` once per kid: a kid's key never
changes). The ALB pads its base64url segments with ``=``, which strict JWT libraries reject;
padded and unpadded segments are both accepted here.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import requests
from cachetools import LRUCache
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from mlflow_tenant_plugins.auth.base import OutboundGate, Refusal, busy, digest
from mlflow_tenant_plugins.auth.external import external_identity, parse_role, provisions
from mlflow_tenant_plugins.auth.ttl_cache import TtlCache
from mlflow_tenant_plugins.config import ConfigError, Settings
from mlflow_tenant_plugins.tenancy import TenantRegistry
from mlflow_tenant_plugins.tenancy.entities import Identity
from mlflow_tenant_plugins.tenancy.roles import Role
from mlflow_tenant_plugins.wire import WORKSPACE_HEADER

_logger = logging.getLogger(__name__)

METHOD = "oidc"
HEADER = "x-amzn-oidc-data"
PRINCIPAL_PREFIX = "oidc:"  # keeps asserted names apart from key and admin principals
MAX_TOKEN_CHARS = 16_384
UNKNOWN_KID_SECONDS = 60.0
_KID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_+/-]*={0,2}$")
_ALB_REGION = re.compile(r"^arn:aws[a-z-]*:elasticloadbalancing:([a-z0-9-]+):")

Fetch = Callable[[str], requests.Response]


def _refusal(reason: str) -> Refusal:
    return Refusal(reason, method=METHOD)


class TokenError(ValueError):
    """Why a token is refused, in one line."""


class KeyUnavailable(TokenError):
    """The key endpoint could not be asked: a transient failure, never cached."""


class KeysBusy(KeyUnavailable):
    """Too many key fetches in flight on this worker (unknown kids arriving fast)."""


@dataclass(frozen=True)
class AlbToken:
    header: dict
    claims: dict
    signing_input: bytes
    signature: bytes


def b64url_decode(segment: str) -> bytes:
    """base64url with or without ``=`` padding (the ALB pads)."""
    if not _SEGMENT.match(segment):
        raise TokenError("a segment is not base64url")
    body = segment.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise TokenError("a segment is not base64url") from None


def parse_token(raw: str) -> AlbToken:
    raw = raw.strip()
    if len(raw) > MAX_TOKEN_CHARS:
        raise TokenError("token too long")
    parts = raw.split(".")
    if len(parts) != 3 or not all(parts):
        raise TokenError("not a JWT (expected three dot-separated segments)")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TokenError("header or claims are not JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenError("header or claims are not JSON objects")
    return AlbToken(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"),
                    b64url_decode(parts[2]))


def _expiry(token: AlbToken) -> float:
    """The earliest ``exp`` of header (where the ALB puts it) and claims."""
    found = []
    for source in (token.header, token.claims):
        if "exp" in source:
            try:
                found.append(float(source["exp"]))
            except (TypeError, ValueError):
                raise TokenError("exp is not a number") from None
    if not found:
        raise TokenError("token has no expiry")
    return min(found)


def verify_signature(key: ec.EllipticCurvePublicKey, token: AlbToken) -> None:
    """ES256: the signature is r || s, 32 bytes each (JWS), not DER."""
    if len(token.signature) != 64:
        raise TokenError("signature does not verify")
    r = int.from_bytes(token.signature[:32], "big")
    s = int.from_bytes(token.signature[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), token.signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise TokenError("signature does not verify") from None


class AlbKeys:
    """The ALB's public keys by kid: each fetched once, unknown kids remembered briefly."""

    def __init__(self, url_template: str, default_region: str, timeout: float = 5.0,
                 fetch: Fetch | None = None):
        self.url_template = url_template
        self.default_region = default_region
        self._fetch = fetch or (lambda url: requests.get(url, timeout=timeout,
                                                         allow_redirects=False))
        self._keys: LRUCache = LRUCache(maxsize=1024)
        self._unknown: LRUCache = LRUCache(maxsize=1024)
        self._lock = threading.Lock()
        self.gate = OutboundGate()
        self.fetches = 0

    def get(self, kid: str, region: str | None = None) -> ec.EllipticCurvePublicKey:
        if not isinstance(kid, str) or not _KID.match(kid):
            raise TokenError("kid is missing or malformed")
        region = region or self.default_region
        with self._lock:
            key = self._keys.get((region, kid))
            unknown_until = self._unknown.get((region, kid), 0.0)
        if key is not None:
            return key
        if unknown_until > time.monotonic():
            raise TokenError("unknown signing key (kid)")
        if not self.gate.try_enter():
            raise KeysBusy("too many ALB key fetches in flight")
        try:
            key = self._download(kid, region)
        finally:
            self.gate.leave()
        with self._lock:
            self._keys[(region, kid)] = key
        return key

    def _download(self, kid: str, region: str) -> ec.EllipticCurvePublicKey:
        url = self.url_template.format(region=region, kid=kid)
        self.fetches += 1
        try:
            response = self._fetch(url)
        except requests.RequestException as exc:
            _logger.warning("cannot fetch ALB public key %s: %s", url, type(exc).__name__)
            raise KeyUnavailable("the ALB public key could not be fetched") from None
        if response.status_code in (403, 404):
            with self._lock:
                self._unknown[(region, kid)] = time.monotonic() + UNKNOWN_KID_SECONDS
            raise TokenError("unknown signing key (kid)")
        if response.status_code != 200:
            _logger.warning("ALB public key %s: HTTP %s", url, response.status_code)
            raise KeyUnavailable("the ALB public key could not be fetched")
        try:
            key = serialization.load_pem_public_key(response.content)
        except ValueError:
            raise TokenError("the ALB public key for this kid is not a PEM key") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise TokenError("the ALB public key for this kid is not a P-256 key")
        return key


class AlbOidcMethod:
    """``x-amzn-oidc-data`` -> the identity its claims name, provisioned on first sight."""

    def __init__(self, settings: Settings, registry: TenantRegistry, cache: TtlCache,
                 keys: AlbKeys | None = None):
        if not settings.alb_arns:
            raise ConfigError("auth method 'oidc' needs alb_arns (MLFLOW_TENANT_ALB_ARNS): "
                              "the ARN(s) of the load balancer(s) that sign the tokens")
        self.settings = settings
        self.registry = registry
        self.cache = cache
        self.keys = keys or AlbKeys(settings.alb_public_key_url, settings.alb_region)
        self.provision = provisions(settings)

    def __call__(self, headers: Mapping[str, str], _addr: str | None
                 ) -> Identity | Refusal | None:
        raw = headers.get(HEADER)
        if not raw:
            return None
        requested = (headers.get(WORKSPACE_HEADER.lower()) or "").strip() or None
        return self.cache.get_bounded("oidc:" + digest(raw, requested or ""),
                                      lambda: self._verify(raw, requested))

    def _verify(self, raw: str, requested: str | None = None
                ) -> tuple[Identity | Refusal, float | None]:
        try:
            token = parse_token(raw)
            expires = self._check(token)
        except KeysBusy:
            return busy(METHOD), 0
        except KeyUnavailable as exc:
            return _refusal(f"invalid ALB OIDC token: {exc}"), 0
        except TokenError as exc:
            return _refusal(f"invalid ALB OIDC token: {exc}"), None
        s = self.settings
        subject = token.claims.get(s.alb_principal_claim)
        if not isinstance(subject, str) or not subject.strip():
            return _refusal(f"ALB OIDC token has no '{s.alb_principal_claim}' claim"), None
        tenant = token.claims.get(s.alb_tenant_claim)
        if tenant is not None and not isinstance(tenant, str):
            return _refusal(f"ALB OIDC token's '{s.alb_tenant_claim}' claim is not a string"), None
        role = parse_role(token.claims.get(s.alb_role_claim, Role.VIEWER.value),
                          f"ALB OIDC token's '{s.alb_role_claim}' claim", METHOD)
        if isinstance(role, Refusal):
            return role, None
        principal = PRINCIPAL_PREFIX + subject.strip()
        identity = self.cache.get(
            "oidc-id:" + digest(principal, tenant or "", role.value, requested or ""),
            lambda: external_identity(self.registry, principal, tenant or None, role, METHOD,
                                      provision=self.provision, requested=requested))
        return identity, max(expires - time.time(), 0)

    def _check(self, token: AlbToken) -> float:
        """Everything but the claims mapping; returns the expiry."""
        if token.header.get("alg") != "ES256":
            raise TokenError("alg must be ES256")
        signer = token.header.get("signer")
        if signer not in self.settings.alb_arns:
            raise TokenError("signer is not a trusted load balancer")
        expires = _expiry(token)
        if expires <= time.time():
            raise TokenError("token has expired")
        match = _ALB_REGION.match(signer)
        key = self.keys.get(token.header.get("kid"), match.group(1) if match else None)
        verify_signature(key, token)
        return expires

"""The tenant API key method: ``Authorization: Bearer mlt_…``, or HTTP Basic whose password
is a key (so a person can log in to the UI from the browser's own prompt)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from mlflow_tenant_plugins.auth.base import Refusal, digest
from mlflow_tenant_plugins.auth.ttl_cache import TtlCache
from mlflow_tenant_plugins.tenancy import TenantRegistry
from mlflow_tenant_plugins.tenancy.entities import Identity

METHOD = "key"
INVALID_KEY = Refusal("invalid API key: it is unknown, expired or revoked", method=METHOD)


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The API key carried by the Authorization header, or None."""
    value = headers.get("authorization") or headers.get("Authorization") or ""
    scheme, _, param = value.strip().partition(" ")
    scheme, param = scheme.lower(), param.strip()
    if scheme == "bearer" and param:
        return param
    if scheme == "basic" and param:
        try:
            decoded = base64.b64decode(param, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _user, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None


class KeyMethod:
    """A key's identity from the registry (its principal's live binding), or the one refusal
    for every key that is unknown, expired or revoked; both kept for the cache's TTL."""

    def __init__(self, registry: TenantRegistry, cache: TtlCache):
        self.registry = registry
        self.cache = cache

    def __call__(self, headers: Mapping[str, str], _addr: str | None
                 ) -> Identity | Refusal | None:
        key = key_from_headers(headers)
        if key is None:
            return None
        return self.cache.get("key:" + digest(key),
                              lambda: self.registry.verify_key(key) or INVALID_KEY)

"""Reading credentials off a request's headers: ``Bearer mlt_…`` or HTTP Basic whose password
is a key (so a person can log in to the UI from the browser's own prompt)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping


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

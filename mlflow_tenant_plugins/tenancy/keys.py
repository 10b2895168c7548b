"""API keys: ``mlt_<key id>_<secret>``, 256 random bits, stored only as a SHA-256 digest.

A fast digest is the right tool here (as for GitHub's tokens): the key is random, not a
password, so there is nothing to brute-force; slow hashes would cost every request.
The ``mlt_`` prefix lets secret scanners recognise a leaked key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

PREFIX = "mlt_"
_KEY = re.compile(r"^mlt_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


def new_key() -> tuple[str, str]:
    """A fresh ``(key_id, key)``; the key is shown once and never stored."""
    key_id = secrets.token_hex(6)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str | None:
    """The key id of a well-formed key, else None (malformed keys never reach the database)."""
    match = _KEY.match(key)
    return match.group(1) if match else None


def hashes_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())

"""Where the client's tenant credentials come from: the environment or a profile file.

Order: the profile named by ``MLFLOW_TENANT_PROFILE``; else a key in ``MLFLOW_TENANT_KEY``
or ``MLFLOW_TRACKING_TOKEN`` (what stock MLflow sends); else the profile ``default``.
Profiles live in ``~/.mlflow/tenants.toml`` (``MLFLOW_TENANT_PROFILES`` names another file),
one table per profile::

    [acme]                      # API key
    key = "mlt_…"
    tenant = "acme"             # optional: sent as the workspace header

    [acme-ci]                   # AWS IAM identity
    auth = "aws-iam"
    tenant = "acme"
    aws_profile = "ci"          # optional, else boto3's default chain
    aws_region = "eu-west-1"    # optional
    sts_endpoint = "https://sts.eu-west-1.amazonaws.com"  # optional, must match the server's
    server_id = "mlflow.example.com"  # optional, default: the tracking server's host[:port]
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException

_logger = logging.getLogger(__name__)

PROFILE_ENV = "MLFLOW_TENANT_PROFILE"
PROFILES_FILE_ENV = "MLFLOW_TENANT_PROFILES"
KEY_ENV = "MLFLOW_TENANT_KEY"
TOKEN_ENV = "MLFLOW_TRACKING_TOKEN"
DEFAULT_PROFILE = "default"
AUTH_KINDS = ("key", "aws-iam")
PROFILE_FIELDS = ("auth", "key", "tenant", "aws_profile", "aws_region", "sts_endpoint",
                  "server_id")
_KEY = re.compile(r"^mlt_([0-9a-f]{12})_")
_warned_paths: set[str] = set()


def profiles_path(environ: os._Environ | dict) -> Path:
    return Path(environ.get(PROFILES_FILE_ENV) or Path.home() / ".mlflow" / "tenants.toml")


def key_label(key: str) -> str:
    """How a key is named in messages: its public key id, never its secret part."""
    match = _KEY.match(key)
    if match:
        return f"API key mlt_{match.group(1)}_…"
    return f"a {len(key)}-character token that is not a tenant key (those start with mlt_)"


@dataclass(frozen=True)
class Credential:
    """What to send: a key, or an AWS IAM identity; and the tenant to act in, if known."""

    kind: str  # "key" or "aws-iam"
    source: str  # e.g. "MLFLOW_TRACKING_TOKEN" or "profile 'acme' in ~/.mlflow/tenants.toml"
    key: str = ""
    tenant: str | None = None
    aws_profile: str | None = None
    aws_region: str | None = None
    sts_endpoint: str | None = None
    server_id: str | None = None

    def describe(self) -> str:
        if self.kind == "key":
            return f"{key_label(self.key)} from {self.source}"
        aws = f"AWS profile '{self.aws_profile}'" if self.aws_profile else "default AWS credentials"
        return f"AWS IAM identity ({aws}) from {self.source}"

    def __repr__(self) -> str:  # never print the key
        return f"Credential({self.describe()!r}, tenant={self.tenant!r})"


def read_profiles(path: Path) -> dict[str, dict]:
    """Profiles in ``path`` ({} when it does not exist); warns once when others may read it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise MlflowException(f"cannot read tenant profiles {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO) and str(path) not in _warned_paths:
        _warned_paths.add(str(path))
        _logger.warning("%s is accessible by group or others (mode %s) and may hold API keys: "
                        "run 'chmod 600 %s'", path, oct(stat.S_IMODE(mode)), path)
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise MlflowException(f"cannot read tenant profiles {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise MlflowException(f"tenant profiles {path} are not valid TOML: {exc}") from None
    return {name: table for name, table in doc.items() if isinstance(table, dict)}


def _from_profile(name: str, path: Path, profiles: dict[str, dict]) -> Credential:
    if name not in profiles:
        existing = ", ".join(sorted(profiles)) or "none"
        raise MlflowException(
            f"tenant profile '{name}' not found in {path} (profiles there: {existing}); "
            f"fix {PROFILE_ENV} or add a [{name}] table to that file")
    table = profiles[name]
    source = f"profile '{name}' in {path}"
    unknown = sorted(set(table) - set(PROFILE_FIELDS))
    bad = [k for k in PROFILE_FIELDS if k in table and not isinstance(table[k], str)]
    if unknown or bad:
        raise MlflowException(
            f"{source}: unknown or non-string setting(s) {', '.join(unknown + bad)}; "
            f"allowed (all strings): {', '.join(PROFILE_FIELDS)}")
    auth = table.get("auth") or "key"
    if auth not in AUTH_KINDS:
        raise MlflowException(f"{source}: auth = '{auth}' is not one of {', '.join(AUTH_KINDS)}")
    if auth == "key" and not table.get("key", "").strip():
        raise MlflowException(f"{source} has no key: add key = \"mlt_…\" (a tenant API key) "
                              "or auth = \"aws-iam\"")
    return Credential(
        kind=auth, source=source, key=table.get("key", "").strip(),
        tenant=table.get("tenant") or None, aws_profile=table.get("aws_profile") or None,
        aws_region=table.get("aws_region") or None,
        sts_endpoint=table.get("sts_endpoint") or None, server_id=table.get("server_id") or None,
    )


def resolve_credential(environ: os._Environ | dict | None = None) -> Credential:
    """The credential the environment asks for, or an error saying what to configure."""
    env = os.environ if environ is None else environ
    path = profiles_path(env)
    chosen = (env.get(PROFILE_ENV) or "").strip()
    if chosen:
        return _from_profile(chosen, path, read_profiles(path))
    for variable in (KEY_ENV, TOKEN_ENV):
        value = (env.get(variable) or "").strip()
        if value:
            return Credential(kind="key", source=variable, key=value)
    profiles = read_profiles(path)
    if DEFAULT_PROFILE in profiles:
        return _from_profile(DEFAULT_PROFILE, path, profiles)
    existing = f" (profiles there: {', '.join(sorted(profiles))})" if profiles else ""
    raise MlflowException(
        f"no tenant credentials configured: set {TOKEN_ENV} or {KEY_ENV} to a tenant API key, "
        f"or choose a profile of {path}{existing} with {PROFILE_ENV}")


def fingerprint(environ: os._Environ | dict | None = None) -> tuple:
    """What the resolved credential depends on, to reuse it while none of it changes."""
    env = os.environ if environ is None else environ
    path = profiles_path(env)
    try:
        stamp = path.stat()
        file_state = (stamp.st_mtime_ns, stamp.st_size, stamp.st_ino)
    except OSError:
        file_state = None
    variables = (PROFILE_ENV, KEY_ENV, TOKEN_ENV, "AWS_PROFILE", "AWS_ACCESS_KEY_ID")
    return (str(path), file_state, *(env.get(v) for v in variables))

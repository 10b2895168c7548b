"""S3 clients whose credentials reach only one tenant's prefix (defence in depth).

Path checks keep a correct server inside a tenant's prefix; these credentials keep a buggy one
there: every S3 call made for a tenant is signed by an assumed-role session that IAM allows on
``arn:aws:s3:::BUCKET/<fence>/*`` only. Modes (setting ``artifact_credentials``):

- ``session-policy``: one platform role, assumed per tenant with a session policy naming the
  tenant's prefix. AWS grants the intersection of the role's policy and the session policy.
- ``role-per-tenant``: ``artifact_role_arn`` with ``{tenant}`` filled in; each role's own policy
  names its prefix, and the same session policy is passed as a second fence.
- ``ambient``: the process's own credentials (development and demos; no IAM fence).

Sessions are botocore ``RefreshableCredentials``: cached per tenant, refreshed
``artifact_credential_refresh_seconds`` before expiry (advisory: a failed refresh keeps the
current, still valid, credentials, so a transfer in flight is never failed by a refresh), and
each request is signed with one frozen set of credentials. A tenant's client resolves
credentials only from its own provider and never falls back to the ambient chain (fail closed).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import CredentialProvider, CredentialResolver, RefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError
from mlflow.environment_variables import (
    MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE,
    MLFLOW_S3_ENDPOINT_URL,
    MLFLOW_S3_IGNORE_TLS,
)

from mlflow_tenant_plugins.artifacts.errors import (
    CONFIG_ERRORS,
    StorageUnavailable,
    describe_config_error,
    error_code,
)
from mlflow_tenant_plugins.config import ConfigError, Settings

MODES = ("auto", "ambient", "session-policy", "role-per-tenant")
# What an artifact repository does with objects; nothing on the bucket beyond listing.
OBJECT_ACTIONS = (
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:GetObjectTagging",
    "s3:PutObjectTagging",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
)
# STS answers that no retry fixes: the server's identity or the role's trust is wrong.
_STS_CONFIG_CODES = ("AccessDenied", "InvalidClientTokenId", "SignatureDoesNotMatch",
                     "ExpiredToken", "UnrecognizedClientException", "NoSuchEntity",
                     "MalformedPolicyDocument", "RegionDisabledException", "ValidationError")
_SESSION_POLICY_MAX = 2048  # AWS's limit for an inline session policy (packed)
_MAX_POOL = 32  # MLflow's download pool uses up to 20 threads per repository
# Tenant clients kept at once (about 0.5 MB each); the least recently used is dropped first
# and its tenant assumes its role again on next use.
MAX_CACHED_TENANTS = 256


def resolve_mode(settings: Settings) -> str:
    mode = settings.artifact_credentials or "auto"
    if mode not in MODES:
        raise ConfigError(f"artifact_credentials must be one of {MODES}, got {mode!r}")
    if mode == "auto":
        return "session-policy" if settings.artifact_role_arn else "ambient"
    if not settings.artifact_role_arn:
        raise ConfigError(f"artifact_credentials={mode!r} needs artifact_role_arn")
    if mode == "role-per-tenant" and "{tenant}" not in settings.artifact_role_arn:
        raise ConfigError("artifact_role_arn must contain '{tenant}' for role-per-tenant")
    return mode


def kms_key_for(settings: Settings, tenant: str) -> str | None:
    """The tenant's SSE-KMS key from ``artifact_kms_key_ids`` ("tenant=key", "*=key")."""
    keys: dict[str, str] = {}
    for entry in settings.artifact_kms_key_ids:
        name, sep, key = entry.partition("=")
        if not sep or not name.strip() or not key.strip():
            raise ConfigError(f"artifact_kms_key_ids entry {entry!r} is not 'tenant=key-id'")
        keys[name.strip()] = key.strip()
    return keys.get(tenant) or keys.get("*")


def session_policy(bucket: str, fence: str, kms_key: str | None = None) -> dict[str, Any]:
    """IAM policy allowing object actions under ``fence/`` and listing only that prefix."""
    statements: list[dict[str, Any]] = [
        {
            "Sid": "TenantObjects",
            "Effect": "Allow",
            "Action": list(OBJECT_ACTIONS),
            "Resource": f"arn:aws:s3:::{bucket}/{fence}/*",
        },
        {
            "Sid": "TenantListing",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": f"arn:aws:s3:::{bucket}",
            "Condition": {"StringLike": {"s3:prefix": [f"{fence}/*"]}},
        },
    ]
    if kms_key:
        statements.append({
            "Sid": "TenantKms",
            "Effect": "Allow",
            "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
            # A key id or alias cannot name a resource; the S3 fence above still applies.
            "Resource": kms_key if kms_key.startswith("arn:") else "*",
        })
    return {"Version": "2012-10-17", "Statement": statements}


class _Only(CredentialProvider):
    """The one credential source of a tenant's botocore session."""

    METHOD = "mlflow-tenant-assume-role"

    def __init__(self, credentials: RefreshableCredentials):
        self._credentials = credentials

    def load(self) -> RefreshableCredentials:
        return self._credentials


class TenantCredentials:
    """Per-tenant S3 clients for one settings object; thread-safe, one STS session per tenant.

    All clients share one botocore data loader: a botocore session of its own per tenant
    would parse the S3 service model again (about 12 MB and a second of CPU per tenant).
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.mode = resolve_mode(settings)
        self._clients: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
        self._core = botocore.session.get_session()  # ambient credentials, shared loader
        self._ambient: Any = None
        self._sts_client: Any = None
        self._lock = threading.Lock()
        self._sts_lock = threading.Lock()  # refreshes run outside ``_lock``, in any thread

    # -- clients ---------------------------------------------------------------------------
    def _client_kwargs(self) -> dict[str, Any]:
        endpoint = self.settings.aws_endpoint_url or MLFLOW_S3_ENDPOINT_URL.get() or None
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE.get()},
            max_pool_connections=_MAX_POOL,
            retries={"mode": "standard"},
        )
        kwargs: dict[str, Any] = {
            "endpoint_url": endpoint,
            "region_name": self.settings.aws_region or None,
            "config": config,
        }
        if MLFLOW_S3_IGNORE_TLS.get():
            kwargs["verify"] = False
        return kwargs

    def ambient_client(self) -> Any:
        """An S3 client with the process's own credentials (admin tasks such as reconcile)."""
        with self._lock:
            if self._ambient is None:
                session = boto3.session.Session(botocore_session=self._core)
                self._ambient = session.client("s3", **self._client_kwargs())
            return self._ambient

    def warm(self) -> None:
        """Build what every tenant's first client needs: botocore's endpoint rules and S3's
        service model (shared through the loader), and the STS client or the ambient client."""
        if self.mode == "ambient":
            self.ambient_client()
            return
        self._sts()
        self._core.get_service_model("s3")

    def missing(self) -> str | None:
        """What keeps this process from signing AWS requests for artifacts, or None.
        Resolves the process's credential chain (env, profile, files, container/instance
        metadata) without calling AWS: the startup check (:mod:`.startup`)."""
        try:
            found = self._core.get_credentials()
        except (BotoCoreError, ValueError) as error:
            return describe_config_error(error)
        if found is None:
            role = self.settings.artifact_role_arn
            need = "S3" if self.mode == "ambient" else f"sts:AssumeRole of {role}"
            return (f"no AWS credentials for the server process, which needs them for {need} "
                    "(looked in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, the "
                    "shared credentials and config files, container and instance metadata)")
        return None

    def client_for(self, tenant: str, bucket: str, fence: str) -> Any:
        """The S3 client acting for ``tenant``; created once, its credentials kept fresh."""
        if self.mode == "ambient":
            return self.ambient_client()
        cache_key = (tenant, bucket, fence)
        with self._lock:  # creation is rare (once per tenant): one AssumeRole, not a stampede
            client = self._clients.get(cache_key)
            if client is None:
                client = self._clients[cache_key] = self._new_client(tenant, bucket, fence)
                while len(self._clients) > MAX_CACHED_TENANTS:
                    self._clients.popitem(last=False)
            self._clients.move_to_end(cache_key)
            return client

    def _new_client(self, tenant: str, bucket: str, fence: str) -> Any:
        margin = self.settings.artifact_credential_refresh_seconds

        def fetch() -> dict[str, str]:
            return self._assume(tenant, bucket, fence)

        credentials = RefreshableCredentials.create_from_metadata(
            metadata=fetch(),
            refresh_using=fetch,
            method=_Only.METHOD,
            advisory_timeout=margin,
            mandatory_timeout=margin / 2,
        )
        core = botocore.session.Session()
        core.register_component("data_loader", self._core.get_component("data_loader"))
        core.register_component("credential_provider", CredentialResolver([_Only(credentials)]))
        return boto3.session.Session(botocore_session=core).client("s3", **self._client_kwargs())

    # -- STS -------------------------------------------------------------------------------
    def role_arn(self, tenant: str) -> str:
        arn = self.settings.artifact_role_arn
        return arn.replace("{tenant}", tenant) if self.mode == "role-per-tenant" else arn

    def _sts(self) -> Any:
        """STS with the process's own credentials (one client; botocore clients are
        thread-safe)."""
        with self._sts_lock:
            if self._sts_client is None:
                kwargs = self._client_kwargs()
                self._sts_client = boto3.session.Session(botocore_session=self._core).client(
                    "sts",
                    endpoint_url=self.settings.aws_endpoint_url or None,
                    region_name=kwargs["region_name"],
                    **({"verify": False} if "verify" in kwargs else {}),
                )
            return self._sts_client

    def _assume(self, tenant: str, bucket: str, fence: str) -> dict[str, str]:
        policy = json.dumps(
            session_policy(bucket, fence, kms_key_for(self.settings, tenant)),
            separators=(",", ":"),
        )
        if len(policy) > _SESSION_POLICY_MAX:
            raise ConfigError(f"session policy for tenant {tenant!r} exceeds AWS's size limit")
        params: dict[str, Any] = {
            "RoleArn": self.role_arn(tenant),
            "RoleSessionName": f"mlflow-tenant-{tenant}"[:64],
            "Policy": policy,
            "DurationSeconds": int(self.settings.artifact_credential_duration_seconds),
        }
        if self.settings.artifact_role_external_id:
            params["ExternalId"] = self.settings.artifact_role_external_id
        try:
            response: Mapping[str, Any] = self._sts().assume_role(**params)
        except CONFIG_ERRORS as error:
            raise StorageUnavailable(describe_config_error(error)) from error
        except ClientError as error:
            if error_code(error) not in _STS_CONFIG_CODES:
                raise
            raise StorageUnavailable(
                f"the server cannot assume the artifact role {params['RoleArn']} for tenant "
                f"'{tenant}' ({error_code(error)}: {error.response['Error'].get('Message', '')})"
            ) from error
        creds = response["Credentials"]
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": creds["Expiration"].isoformat(),
        }

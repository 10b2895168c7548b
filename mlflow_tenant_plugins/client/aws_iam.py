"""AWS IAM identity on the client: a presigned ``sts:GetCallerIdentity`` sent as a header.

The technique of Vault's AWS auth and aws-iam-authenticator: the client signs (SigV4, with
its boto3 credentials) a GetCallerIdentity request it never sends itself; the server replays
it to AWS STS and learns the caller's ARN from the answer. No secret leaves the client: a
signature is valid for one request body, to one STS host, for 15 minutes. The platform's
server id is one of the signed headers, so a server that receives the signed request cannot
use it to log in to another platform. The header and its format are defined in
``mlflow_tenant_plugins.wire``, which the server decodes with.
"""

from __future__ import annotations

import logging
import threading
import time
from urllib.parse import urlsplit

from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.wire import (
    SERVER_ID_HEADER,
    STS_BODY,
    STS_CONTENT_TYPE,
    encode_signed_request,
)

# A signature is reused for this long, so the server verifies it with STS once and then
# answers from its cache; the server accepts it for wire.MAX_SIGNATURE_AGE_SECONDS.
RESIGN_AFTER_SECONDS = 300.0
_logger = logging.getLogger(__name__)


def presign_caller_identity(credentials, region: str, endpoint_url: str, server_id: str) -> str:
    """The header value: a GetCallerIdentity request to ``endpoint_url`` signed with
    ``credentials`` (botocore credentials), the server id among its signed headers."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method="POST", url=endpoint_url, data=STS_BODY, headers={
        "Content-Type": STS_CONTENT_TYPE, SERVER_ID_HEADER: server_id,
    })
    SigV4Auth(credentials, "sts", region).add_auth(request)
    return encode_signed_request("POST", endpoint_url, STS_BODY, dict(request.headers.items()))


def default_server_id(tracking_url: str) -> str:
    """Without a configured server id, the tracking server's host[:port] — what a server's
    ``server_id`` is usually set to."""
    return urlsplit(tracking_url).netloc.rpartition("@")[2].lower()


def server_id_host(server_id: str) -> str | None:
    """The host part of a server id (``host`` or ``host:port``), or None when it has none."""
    try:
        return urlsplit(f"//{server_id}").hostname
    except ValueError:
        return None


class IamSigner:
    """Signs with boto3's credential chain (or a named AWS profile), once per
    ``RESIGN_AFTER_SECONDS`` per server id; boto3 is imported only when first used."""

    def __init__(self, aws_profile: str | None = None, region: str | None = None,
                 sts_endpoint: str | None = None, server_id: str | None = None):
        self.aws_profile = aws_profile
        self.region = region
        self.sts_endpoint = sts_endpoint
        self.server_id = server_id
        self._lock = threading.Lock()
        self._signed: dict[str, tuple[float, str]] = {}
        self._session = None
        self._target: tuple[str, str] | None = None  # (STS endpoint URL, region)
        self._warned: set[tuple[str, str]] = set()

    def describe(self) -> str:
        source = f"AWS profile '{self.aws_profile}'" if self.aws_profile else \
            "boto3's default credential chain"
        return f"AWS IAM identity from {source}"

    def header_value(self, tracking_url: str) -> str:
        server_id = self.server_id or default_server_id(tracking_url)
        if self.server_id:
            self._warn_if_elsewhere(tracking_url)
        with self._lock:
            signed_at, value = self._signed.get(server_id, (0.0, ""))
            if time.monotonic() - signed_at < RESIGN_AFTER_SECONDS:
                return value
            value = self._sign(server_id)
            self._signed[server_id] = (time.monotonic(), value)
            return value

    def _warn_if_elsewhere(self, tracking_url: str) -> None:
        """An explicit server id signs for that platform whatever host is contacted: say so,
        once per host, when the host contacted is not the server id's."""
        host = (urlsplit(tracking_url).hostname or "").lower()
        if host == (server_id_host(self.server_id or "") or "").lower():
            return
        with self._lock:
            if (self.server_id, host) in self._warned:
                return
            self._warned.add((self.server_id, host))
        _logger.warning(
            "tenant auth signs the AWS IAM identity for server id '%s' but is sending it to "
            "%s: a server there could use it for 15 minutes to act as you on '%s'. Check "
            "MLFLOW_TRACKING_URI and server_id in your tenant profile",
            self.server_id, host.encode("unicode_escape").decode("ascii"), self.server_id)

    def _sign(self, server_id: str) -> str:
        import boto3
        import botocore.exceptions

        try:
            if self._target is None:
                self._session = boto3.Session(profile_name=self.aws_profile)
                region = self.region or self._session.region_name or "us-east-1"
                sts = self._session.client("sts", region_name=region,
                                           endpoint_url=self.sts_endpoint or None)
                self._target = (sts.meta.endpoint_url, sts.meta.region_name)
            credentials = self._session.get_credentials()
            if credentials is None:
                raise MlflowException(
                    f"no AWS credentials found for the {self.describe()}: configure them "
                    "(aws configure, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, an instance "
                    "role) or set aws_profile in your tenant profile")
            endpoint_url, region = self._target
            return presign_caller_identity(
                credentials.get_frozen_credentials(), region, endpoint_url, server_id)
        except botocore.exceptions.BotoCoreError as exc:
            raise MlflowException(f"cannot sign the AWS IAM identity request: {exc}") from None

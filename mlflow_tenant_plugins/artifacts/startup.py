"""What the server checks about its ``tenant-s3`` destination before it serves anything.

A server that started without AWS credentials used to look healthy and fail every upload
with 500 (``NoCredentialsError``), which the stock client retried for about 500 s. The choice
here is to **refuse to start**, not to report unhealthy on a readiness endpoint: no request of
any tenant can succeed without credentials, a load balancer would send traffic to a "live" but
useless server, and a refusal with one line naming what is missing is what the admin needs at
the moment they start it. The check resolves the credential chain and the settings without
calling AWS (an outage of STS must not stop a restart). Credentials that exist but do not work
(revoked keys, a role that cannot be assumed) are found per request and answered with a
non-retried 507 naming them (:class:`.errors.StorageUnavailable`).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE

from mlflow_tenant_plugins.config import ConfigError, Settings

# uvicorn's exit status for "failed before serving": its supervisor then stops instead of
# restarting the worker forever (uvicorn.config.STARTUP_FAILURE).
STARTUP_FAILURE = 3


class ArtifactDestinationError(MlflowException):
    def __init__(self, message: str):
        super().__init__(message, INVALID_STATE)


def destination() -> str:
    """The server's ``--artifacts-destination`` (MLflow passes it to workers in the env)."""
    from mlflow_tenant_plugins.mlflow_hooks.server import artifacts_destination

    return artifacts_destination()


def check_artifact_destination(dest: str | None = None, settings: Settings | None = None) -> None:
    """Raise :class:`ArtifactDestinationError` naming what is missing when a ``tenant-s3``
    destination cannot work; other destinations are not ours to check."""
    from mlflow_tenant_plugins.artifacts.paths import SCHEME, parse_uri
    from mlflow_tenant_plugins.artifacts.runtime import runtime_for

    dest = destination() if dest is None else dest
    if not dest.startswith(f"{SCHEME}:"):
        return
    try:
        location = parse_uri(dest)
        if location.tenant is not None:
            raise ArtifactDestinationError(f"{dest} names a tenant's prefix; give the root")
        missing = runtime_for(settings).credentials.missing()
    except (ConfigError, ValueError) as error:
        raise ArtifactDestinationError(f"artifact destination {dest}: {error}") from error
    except MlflowException as error:
        if isinstance(error, ArtifactDestinationError):
            raise
        raise ArtifactDestinationError(f"artifact destination {dest}: {error.message}") from error
    if missing:
        raise ArtifactDestinationError(f"artifact destination {dest}: {missing}")


def refuse_to_start_unless_ready(settings: Settings) -> None:
    """For ``create_app``: on a failed check print one line and end the worker with uvicorn's
    startup-failure status, so its supervisor stops ``mlflow server`` instead of restarting
    workers that would all fail alike."""
    try:
        check_artifact_destination(settings=settings)
    except ArtifactDestinationError as error:
        print(f"mlflow-tenant-plugins: refusing to start: {error.message}", file=sys.stderr,
              flush=True)
        # Not SystemExit: threads started before the app (MLflow's, ours) would keep the
        # worker alive after the exception, a server that neither serves nor stops.
        os._exit(STARTUP_FAILURE)


def prepare_app(app: Any, settings: Settings) -> None:
    """The artifact store's part of ``create_app``: refuse to start on a ``tenant-s3``
    destination that cannot work, and let proxied uploads see their ``Content-Length``
    before the body is read (:mod:`.streaming`)."""
    from mlflow_tenant_plugins.artifacts.streaming import DeclaredBodyLength

    refuse_to_start_unless_ready(settings)
    app.add_middleware(DeclaredBodyLength)

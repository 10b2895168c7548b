"""The engine the platform's settings name (``jobs_executor``), for the server and the admin
CLI alike."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE


def local_root(settings: Any) -> str:
    return settings.jobs_local_dir or os.path.join(tempfile.gettempdir(), "mlflow-tenant-jobs")


def image_uris(settings: Any) -> dict[str, str]:
    """``jobs_image_uris`` entries ``manager=image`` as a mapping."""
    return dict(e.split("=", 1) for e in settings.jobs_image_uris if "=" in e)


def build_engine(settings: Any) -> Any:
    if settings.jobs_executor == "sagemaker":
        from mlflow_tenant_plugins.deployments.aws import AwsClients
        from mlflow_tenant_plugins.jobs.sagemaker import SageMakerEngine

        clients = AwsClients(settings)
        return SageMakerEngine(clients.sagemaker, clients.logs)
    if settings.jobs_executor == "local":
        from mlflow_tenant_plugins.jobs.local import LocalEngine

        return LocalEngine(local_root(settings))
    raise MlflowException("this platform runs no jobs: set jobs_executor to 'local' or "
                          "'sagemaker'", INVALID_STATE)

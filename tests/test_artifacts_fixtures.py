"""Fixtures shared by the ``test_artifacts_*`` modules (no tests here).

One tenant registry (sqlite) and one bucket per session on the session's moto server; each
test makes its own tenants. ``artifact_env`` also points this process's environment (AWS keys,
``MLFLOW_TENANT_*``) at them for the duration of one test, so repositories built by MLflow's
own ``get_artifact_repository`` (the entry point) find the same registry and emulator.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.utils.workspace_context import (
    clear_server_request_workspace,
    set_server_request_workspace,
)

from mlflow_tenant_plugins.artifacts.repository import TenantS3ArtifactRepository
from mlflow_tenant_plugins.config import Settings
from mlflow_tenant_plugins.tenancy import Quotas, TenantRegistry
from tests.fixtures.aws import REGION, MotoServer

__all__ = ["_artifact_bucket", "artifact_env", "artifact_registry"]  # the fixtures

BUCKET = "mlt-artifacts"
ROOT = "platform/prod"


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@contextlib.contextmanager
def request_workspace(name: str | None) -> Iterator[None]:
    """What MLflow's server middleware does around a request."""
    set_server_request_workspace(name)
    try:
        yield
    finally:
        clear_server_request_workspace()


@dataclass
class ArtifactEnv:
    moto: MotoServer
    registry: TenantRegistry
    settings: Settings
    bucket: str = BUCKET
    root: str = ROOT
    # False: repositories read their settings from the environment, as under `mlflow server`.
    explicit_settings: bool = False
    created: list[str] = field(default_factory=list)

    @property
    def destination(self) -> str:
        return f"tenant-s3://{self.bucket}/{self.root}"

    def tenant(self, storage_bytes: int = 10 * 2**30) -> str:
        name = f"t{uuid.uuid4().hex[:10]}"
        self.registry.create_tenant(name, quotas=Quotas(storage_bytes=storage_bytes))
        self.created.append(name)
        return name

    def repo(self, tenant: str, **settings: Any) -> TenantS3ArtifactRepository:
        """The destination repository bound to ``tenant``, as the server would use it."""
        explicit = settings or self.explicit_settings
        chosen = replace(self.settings, **settings) if explicit else None
        base = TenantS3ArtifactRepository(self.destination, settings=chosen)
        return base.for_workspace(tenant)

    def mlflow_repo(self, workspace: str | None) -> Any:
        """The repository MLflow's ``get_artifact_repository`` builds in a request."""
        with request_workspace(workspace):
            return get_artifact_repository(self.destination)

    def fence(self, tenant: str) -> str:
        return f"{self.root}/workspaces/{tenant}"

    @property
    def s3(self) -> Any:
        return self.moto.client("s3")

    def used(self, tenant: str) -> int:
        return self.registry.ledger.get(tenant, "storage_bytes").used

    def stored(self, tenant: str) -> int:
        """Bytes S3 holds under the tenant's prefix."""
        total = 0
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.fence(tenant) + "/"
        )
        for page in pages:
            total += sum(o["Size"] for o in page.get("Contents", []))
        return total


def make_settings(moto: MotoServer, database_uri: str, **overrides: Any) -> Settings:
    return Settings(
        database_uri=database_uri,
        aws_region=REGION,
        aws_endpoint_url=moto.url,
        **overrides,
    )


def aws_environment(moto: MotoServer, database_uri: str) -> dict[str, str]:
    return {
        **moto.env(),
        "MLFLOW_TENANT_DATABASE_URI": database_uri,
        "MLFLOW_TENANT_AWS_ENDPOINT_URL": moto.url,
        "MLFLOW_TENANT_AWS_REGION": REGION,
    }


@pytest.fixture(scope="session")
def artifact_registry(tmp_path_factory: pytest.TempPathFactory) -> TenantRegistry:
    db = tmp_path_factory.mktemp("artifacts-db") / "registry.db"
    return TenantRegistry(f"sqlite:///{db}")


@pytest.fixture(scope="session")
def _artifact_bucket(moto_server: MotoServer) -> str:
    moto_server.client("s3").create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture
def artifact_env(
    moto_server: MotoServer,
    artifact_registry: TenantRegistry,
    _artifact_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> ArtifactEnv:
    uri = artifact_registry.database_uri
    for name, value in aws_environment(moto_server, uri).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_TENANT_CONFIG", raising=False)
    return ArtifactEnv(moto_server, artifact_registry, make_settings(moto_server, uri))

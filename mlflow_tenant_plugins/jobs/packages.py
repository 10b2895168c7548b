"""Where a submitted project archive is, server side: the run's own artifact, read from the
server's artifact destination bound to the run's tenant (never a location the caller names),
so a job can only run a project stored in its own tenant's prefix."""

from __future__ import annotations

import posixpath
import urllib.parse
from dataclasses import dataclass

from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.jobs import spec
from mlflow_tenant_plugins.mlflow_hooks.server import tenant_workspace

ARCHIVE_PATH = f"{spec.PACKAGE_ARTIFACT_DIR}/{spec.PACKAGE_FILE}"


@dataclass(frozen=True)
class Package:
    tenant: str
    artifact_uri: str  # the run's artifact root
    size: int
    # The archive's location for an engine reading S3 (SageMaker), when the destination is
    # tenant-s3; None otherwise.
    s3_uri: str | None
    # The tenant's prefix as s3://BUCKET/KEY (no trailing '/'), when tenant-s3.
    prefix_s3_uri: str | None


def _missing(run_id: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(
        f"run '{run_id}' holds no project archive at '{ARCHIVE_PATH}': submit with "
        "`mlflow run -b tenant-sagemaker`, which uploads it")


def locate(tenant: str, run, destination: str) -> Package:
    """The archive of ``run`` (a run of ``tenant``), its size and S3 location."""
    from mlflow_tenant_plugins.mlflow_hooks import artifacts as mlflow_artifacts

    root = run.info.artifact_uri
    if urllib.parse.urlparse(root).scheme != "mlflow-artifacts":
        raise MlflowException.invalid_parameter_value(
            f"run '{run.info.run_id}' stores artifacts at {root!r}, outside the platform's "
            "artifact store: jobs run only projects stored through the platform")
    with tenant_workspace(tenant):
        path = mlflow_artifacts.proxied_artifact_path(root)
        repo = mlflow_artifacts.tenant_artifact_repository(tenant)
        listing = repo.list_artifacts(posixpath.join(path, spec.PACKAGE_ARTIFACT_DIR))
    sizes = {posixpath.basename(f.path): f.file_size for f in listing if not f.is_dir}
    if spec.PACKAGE_FILE not in sizes:
        raise _missing(run.info.run_id)
    s3_uri = prefix = None
    if destination.startswith("tenant-s3:"):
        from mlflow_tenant_plugins.artifacts.paths import TenantScope, parse_uri

        scope = TenantScope.of(parse_uri(destination), tenant)
        key = scope.key(posixpath.join(path, ARCHIVE_PATH))
        s3_uri = f"s3://{scope.bucket}/{key}"
        prefix = f"s3://{scope.bucket}/{scope.fence}"
    return Package(tenant, root, int(sizes[spec.PACKAGE_FILE] or 0), s3_uri, prefix)


def download(package: Package, dst: str) -> str:
    """The archive, downloaded into directory ``dst`` (for the local engine)."""
    from mlflow_tenant_plugins.mlflow_hooks import artifacts as mlflow_artifacts

    with tenant_workspace(package.tenant):
        path = mlflow_artifacts.proxied_artifact_path(package.artifact_uri)
        return mlflow_artifacts.tenant_artifact_repository(package.tenant).download_artifacts(
            posixpath.join(path, ARCHIVE_PATH), dst)

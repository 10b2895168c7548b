"""Which model a deploy request names, resolved inside the tenant's own workspace.

Through the platform a tenant may name only ``models:/…`` and ``runs:/…`` URIs: they resolve
through MLflow's stores with the tenant's workspace active, so another tenant's models and
runs do not exist for it, and no server path or foreign bucket can be smuggled in. Direct mode
(an admin with their own credentials) may name any URI MLflow can download.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.models.container import SUPPORTED_FLAVORS
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

from mlflow_tenant_plugins.artifacts.fence import check_tenant_uri, server_scratch
from mlflow_tenant_plugins.mlflow_hooks.server import tenant_workspace

# fetch(artifact_uri, dst_dir, tenant) -> local path of what was downloaded
Fetch = Callable[[str, str, str], str]


@dataclass(frozen=True)
class ModelRef:
    model_uri: str  # as the user wrote it
    source_uri: str  # where its files are
    run_id: str | None
    flavor: str


def _download(uri: str, dst: str, tracking_uri: str | None) -> str:
    import mlflow.artifacts

    return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst,
                                               tracking_uri=tracking_uri)


class ModelResolver:
    def __init__(self, tracking_uri: str | None = None, registry_uri: str | None = None,
                 allow_any_uri: bool = False, fetch: Fetch | None = None):
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.allow_any_uri = allow_any_uri
        self._fetch = fetch

    def _client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    def fetch(self, uri: str, dst: str, tenant: str) -> str:
        if not self.allow_any_uri:  # the server's credentials read only the tenant's own
            check_tenant_uri(uri, tenant)
        os.makedirs(dst, exist_ok=True)
        if self._fetch is not None:
            return self._fetch(uri, dst, tenant)
        with tenant_workspace(tenant):
            return _download(uri, dst, self.tracking_uri)

    def _locate(self, model_uri: str, tenant: str) -> tuple[str, str | None]:
        """(where the files are, the run that produced them)."""
        scheme = urllib.parse.urlparse(model_uri).scheme
        if scheme not in ("models", "runs") and not self.allow_any_uri:
            raise MlflowException.invalid_parameter_value(
                f"model URI {model_uri!r}: name a registered model (models:/NAME/VERSION, "
                "models:/NAME@ALIAS) or a run's model (runs:/RUN_ID/PATH)"
            )
        try:
            with tenant_workspace(tenant):
                client = self._client()
                if scheme == "models":
                    from mlflow.store.artifact.utils.models import get_model_name_and_version

                    found = get_model_name_and_version(client, model_uri)
                    if len(found) == 1:
                        logged = client.get_logged_model(found[0])
                        source = logged.artifact_location
                        run_id = logged.source_run_id
                    else:
                        name, version = found
                        run_id = client.get_model_version(name, version).run_id
                        source = client.get_model_version_download_uri(name, version)
                    rest = urllib.parse.urlparse(model_uri).path.strip("/").split("/")[2:]
                    if rest:  # models:/name/1/sub/path
                        source = f"{source.rstrip('/')}/{'/'.join(rest)}"
                    return source, run_id
                if scheme == "runs":
                    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

                    run_id, path = RunsArtifactRepository.parse_runs_uri(model_uri)
                    run = client.get_run(run_id)
                    logged = self._logged_model(client, run, path)
                    if logged is not None:  # MLflow 3: log_model(name=…) in the run
                        return logged, run_id
                    return RunsArtifactRepository.get_underlying_uri(
                        model_uri, self.tracking_uri
                    ), run_id
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise MlflowException(
                    f"model {model_uri!r} not found in tenant '{tenant}': {exc.message}",
                    RESOURCE_DOES_NOT_EXIST,
                ) from None
            raise
        return model_uri, None

    @staticmethod
    def _logged_model(client, run, path: str) -> str | None:
        """Where ``runs:/RUN/PATH`` lives when PATH names a model the run logged with MLflow
        3's ``log_model(name=PATH)``: under the logged model's own artifact location, not the
        run's artifacts (as MLflow's own ``runs:/`` resolution finds it)."""
        name = path.strip("/")
        if not name or "/" in name or "'" in name or '"' in name:
            return None
        found = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}' AND name = '{name}'",
            max_results=2)
        return found[0].artifact_location if len(found) == 1 else None

    def resolve(self, model_uri: str, tenant: str, flavor: str | None) -> ModelRef:
        """Find the model, check it can be served (reads only its MLmodel file)."""
        if not isinstance(model_uri, str) or not model_uri.strip():
            raise MlflowException.invalid_parameter_value("a model URI is required")
        source, run_id = self._locate(model_uri, tenant)
        from mlflow.models import Model

        with server_scratch() as tmp:  # Model.load re-reads the download through the fence
            try:
                path = self.fetch(f"{source.rstrip('/')}/MLmodel", tmp, tenant)
            except Exception as exc:
                raise MlflowException(
                    f"model {model_uri!r} has no readable MLmodel file: {exc}",
                    RESOURCE_DOES_NOT_EXIST,
                ) from None
            model = Model.load(path)
        flavors = set(model.flavors)
        if flavor is None:
            flavor = next((f for f in SUPPORTED_FLAVORS if f in flavors), None)
            if flavor is None:
                raise MlflowException.invalid_parameter_value(
                    f"model {model_uri!r} has none of the servable flavors "
                    f"{SUPPORTED_FLAVORS} (it has {sorted(flavors)})"
                )
        elif flavor not in SUPPORTED_FLAVORS or flavor not in flavors:
            raise MlflowException.invalid_parameter_value(
                f"flavor {flavor!r} cannot be served from model {model_uri!r}: servable flavors "
                f"are {SUPPORTED_FLAVORS}, the model has {sorted(flavors)}"
            )
        return ModelRef(model_uri, source, run_id or model.run_id, flavor)

    def download(self, ref: ModelRef, dst: str, tenant: str) -> str:
        path = self.fetch(ref.source_uri, dst, tenant)
        if not os.path.isfile(os.path.join(path, "MLmodel")):
            raise MlflowException(f"downloaded model {ref.model_uri!r} has no MLmodel file")
        return path

"""The server's credentials never serve a tenant's URI.

Replays issue 13, finding 1 against a real ``mlflow server --app-name tenant-auth`` with a
``tenant-s3`` destination on moto's S3 (one server for the module): tenant A registered a model
version whose ``source`` was tenant B's model folder (``s3://BUCKET/ROOT/workspaces/B/…``), and
``GET /model-versions/get-artifact`` returned B's files, read with the server's own credentials;
a source in another bucket the server can read returned that bucket's objects.

Two layers are proven separately: a tenant may *name* only its own ``runs:/``, ``models:/`` and
``mlflow-artifacts:/`` locations (checked before anything is stored), and a location that got
stored anyway — written straight into the database here, as a version stored before the check
would be — is still never *read*: every repository the server builds is fenced to the request
tenant's storage. The stock client's own paths (``log_model(registered_model_name=…)``,
``create_model_version(name, "runs:/…")``, ``models:/`` sources, downloads) keep working.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.artifacts import fence
from tests.fixtures.aws import MotoServer
from tests.fixtures.servers import MlflowServer, start_mlflow_server, stop_mlflow_server

BUCKET = "mlt-sources"
OTHER_BUCKET = "mlt-sources-other"  # a bucket the server's credentials can read, no tenant's
ROOT = "srv"
SECRET = b"the platform's own secret object"
ATTACHMENT = "0b6f3f9e-2a51-4c8e-9d7a-1f2e3d4c5b6a"  # trace attachment names are UUIDs
REFUSED = (400, 403, 404)


@dataclass
class Tenant:
    name: str
    key: str


@dataclass
class Victim:
    tenant: Tenant
    run_id: str
    model_id: str
    experiment_id: str
    mlmodel: bytes  # the victim's MLmodel file, as stored

    @property
    def model_key(self) -> str:
        return f"{ROOT}/workspaces/{self.tenant.name}/{self.experiment_id}/models/{self.model_id}"


@pytest.fixture(scope="module")
def server(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[MlflowServer]:
    s3 = moto_server.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.create_bucket(Bucket=OTHER_BUCKET)
    s3.put_object(Bucket=OTHER_BUCKET, Key="secret.txt", Body=SECRET)
    s3.put_object(Bucket=OTHER_BUCKET, Key=f"t/attachments/{ATTACHMENT}", Body=SECRET)
    env = {**moto_server.env(), "MLFLOW_TENANT_AWS_ENDPOINT_URL": moto_server.url}
    srv = start_mlflow_server(tmp_path_factory.mktemp("sources-server"),
                              artifacts_destination=f"tenant-s3://{BUCKET}/{ROOT}", extra_env=env)
    yield srv
    stop_mlflow_server(srv)


def _tenant(server: MlflowServer, role: str = "editor") -> Tenant:
    from mlflow_tenant_plugins.tenancy import Quotas

    name = f"s{secrets.token_hex(4)}"
    server.registry.create_tenant(name, quotas=Quotas())
    return Tenant(name, server.registry.create_key(name, role)[1])


@pytest.fixture
def as_tenant(server: MlflowServer, monkeypatch: pytest.MonkeyPatch):
    """``as_tenant(tenant)``: the stock ``mlflow`` module and client now act as that tenant."""
    for name in list(os.environ):
        if name.startswith("MLFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")  # a trace is stored on exit

    def _as(tenant: Tenant):
        import mlflow

        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", tenant.key)
        mlflow.set_tracking_uri(server.url)
        mlflow.set_registry_uri(server.url)
        return mlflow.MlflowClient(tracking_uri=server.url, registry_uri=server.url)

    return _as


def _log_model(as_tenant, tenant: Tenant, registered_name: str | None = None):
    import mlflow
    import mlflow.pyfunc

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return model_input

    as_tenant(tenant)
    mlflow.set_experiment(f"exp-{secrets.token_hex(3)}")
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Echo(),
                                       registered_model_name=registered_name)
    return run, info


@pytest.fixture
def victim(server: MlflowServer, as_tenant, moto_server: MotoServer) -> Victim:
    tenant = _tenant(server)
    run, info = _log_model(as_tenant, tenant)
    v = Victim(tenant, run.info.run_id, info.model_id, run.info.experiment_id, b"")
    body = moto_server.client("s3").get_object(Bucket=BUCKET,
                                               Key=f"{v.model_key}/artifacts/MLmodel")["Body"]
    v.mlmodel = body.read()
    return v


def _foreign_sources(v: Victim, moto: MotoServer, attacker: Tenant) -> dict[str, dict]:
    """Every way of naming the victim's model (or storage that is no tenant's) as a source."""
    folder = f"{v.model_key}/artifacts"
    mine = f"{ROOT}/workspaces/{attacker.name}"
    own_art = f"mlflow-artifacts:/workspaces/{v.tenant.name}/{v.experiment_id}/models/{v.model_id}"
    return {
        "s3 folder": {"source": f"s3://{BUCKET}/{folder}"},
        "s3a folder": {"source": f"s3a://{BUCKET}/{folder}"},
        "S3 upper-case scheme": {"source": f"S3://{BUCKET}/{folder}"},
        "s3 through ..": {"source": f"s3://{BUCKET}/{mine}/../{v.tenant.name}/x"},
        "s3 other bucket": {"source": f"s3://{OTHER_BUCKET}"},
        "tenant-s3 of the victim": {"source": f"tenant-s3://{BUCKET}/{folder}"},
        "tenant-s3 root": {"source": f"tenant-s3://{BUCKET}/{ROOT}"},
        "mlflow-artifacts of the victim": {"source": f"{own_art}/artifacts"},
        "mlflow-artifacts with the victim's run": {"source": f"{own_art}/artifacts",
                                                   "run_id": v.run_id},
        "mlflow-artifacts through %2e%2e": {
            "source": f"mlflow-artifacts:/workspaces/{attacker.name}/%2e%2e/{v.tenant.name}/x"},
        "mlflow-artifacts with a host": {"source": f"mlflow-artifacts://{moto.url[7:]}/x"},
        "runs of the victim": {"source": f"runs:/{v.run_id}/model", "run_id": v.run_id},
        "runs of the victim, no run_id": {"source": f"runs:/{v.run_id}/model"},
        "models of the victim": {"source": f"models:/{v.model_id}", "model_id": v.model_id},
        "file /etc": {"source": "file:///etc"},
        "bare path": {"source": "/etc"},
        "metadata service": {"source": "https://169.254.169.254/latest/meta-data/"},
        "http to moto": {"source": f"{moto.url}/{BUCKET}/{folder}"},
        "gs": {"source": f"gs://{BUCKET}/{folder}"},
        "hdfs": {"source": f"hdfs://127.0.0.1:1/{folder}"},
    }


def _get_artifact(server: MlflowServer, tenant: Tenant, name: str, version: str,
                  path: str = "MLmodel") -> requests.Response:
    return server.session(tenant.key).get(
        f"{server.url}/model-versions/get-artifact",
        params={"name": name, "version": version, "path": path}, timeout=60)


def _create_registered_model(server: MlflowServer, tenant: Tenant) -> str:
    name = f"m{secrets.token_hex(3)}"
    server.session(tenant.key).post(f"{server.url}/api/2.0/mlflow/registered-models/create",
                                    json={"name": name}, timeout=60).raise_for_status()
    return name


def test_a_tenant_cannot_register_another_tenants_storage_as_a_model_source(
    server: MlflowServer, victim: Victim, moto_server: MotoServer
) -> None:
    attacker = _tenant(server)
    name = _create_registered_model(server, attacker)
    session = server.session(attacker.key)
    sources = _foreign_sources(victim, moto_server, attacker)
    answers = {}
    for label, body in sources.items():
        r = session.post(f"{server.url}/api/2.0/mlflow/model-versions/create",
                         json={"name": name, **body}, timeout=60)
        answers[label] = (r.status_code, r.json().get("error_code"))
    accepted = {label: a for label, a in answers.items() if a[0] not in REFUSED}
    assert not accepted, accepted
    listed = session.get(f"{server.url}/api/2.0/mlflow/model-versions/search",
                         params={"filter": f"name='{name}'"}, timeout=60).json()
    assert listed.get("model_versions", []) == []  # nothing half-created
    for version in range(1, len(sources) + 1):
        r = _get_artifact(server, attacker, name, str(version))
        assert r.status_code in REFUSED and victim.mlmodel not in r.content


def test_a_refusal_names_the_allowed_schemes(server: MlflowServer, victim: Victim) -> None:
    attacker = _tenant(server)
    name = _create_registered_model(server, attacker)
    r = server.session(attacker.key).post(
        f"{server.url}/api/2.0/mlflow/model-versions/create",
        json={"name": name, "source": f"s3://{BUCKET}/{victim.model_key}/artifacts"}, timeout=60)
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    for scheme in ("runs:/", "models:/", "mlflow-artifacts:/"):
        assert scheme in r.json()["message"]


def _forge(server: MlflowServer, sql: str, *args: str) -> None:
    """Write the tracking database directly: a row stored before the check, or past it."""
    db = server.db_uri.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        assert conn.execute(sql, args).rowcount == 1


@pytest.mark.parametrize("forged", [
    "s3://{bucket}/{victim_folder}",
    "s3://{other}",
    "tenant-s3://{bucket}/{victim_folder}",
    "runs:/{victim_run}/model",
    "models:/{victim_model}",
    "mlflow-artifacts:/workspaces/{victim}/{victim_exp}/models/{victim_model}/artifacts",
    "file:///etc",
])
def test_get_artifact_never_reads_a_foreign_source_that_got_stored(
    server: MlflowServer, victim: Victim, as_tenant, forged: str
) -> None:
    attacker = _tenant(server)
    name = f"m{secrets.token_hex(3)}"
    _log_model(as_tenant, attacker, registered_name=name)
    assert _get_artifact(server, attacker, name, "1").status_code == 200  # its own: served
    source = forged.format(bucket=BUCKET, other=OTHER_BUCKET, victim=victim.tenant.name,
                           victim_folder=f"{victim.model_key}/artifacts",
                           victim_run=victim.run_id, victim_model=victim.model_id,
                           victim_exp=victim.experiment_id)
    _forge(server, "UPDATE model_versions SET source = ?, storage_location = ? "
           "WHERE name = ? AND version = 1 AND workspace = ?", source, source, name,
           attacker.name)
    for path in ("MLmodel", "secret.txt", "artifacts/MLmodel", "model/MLmodel"):
        r = _get_artifact(server, attacker, name, "1", path)
        assert r.status_code in REFUSED, (path, r.status_code, r.text[:200])
        assert victim.mlmodel not in r.content and SECRET not in r.content


def test_trace_location_tags_are_the_servers_alone(
    server: MlflowServer, victim: Victim, as_tenant
) -> None:
    import mlflow

    attacker = _tenant(server)
    client = as_tenant(attacker)
    mlflow.set_experiment(f"traces-{secrets.token_hex(3)}")
    with mlflow.start_span("work") as span:
        span.set_inputs({"x": 1})
    trace_id = span.trace_id
    assert client.get_trace(trace_id).info.trace_id == trace_id  # the stock path works
    foreign = f"s3://{BUCKET}/{victim.model_key}/artifacts"
    session = server.session(attacker.key)
    for version in ("2.0", "3.0"):
        r = session.patch(f"{server.url}/api/{version}/mlflow/traces/{trace_id}/tags",
                          json={"key": "mlflow.artifactLocation", "value": foreign}, timeout=60)
        assert r.status_code == 400, r.text
    # Stored anyway (past the check): nothing is read from there with the server's credentials.
    for location in (f"s3://{OTHER_BUCKET}/t", f"tenant-s3://{BUCKET}/{victim.model_key}",
                     f"mlflow-artifacts:/workspaces/{victim.tenant.name}/t"):
        _forge(server, "UPDATE trace_tags SET value = ? WHERE request_id = ? "
               "AND key = 'mlflow.artifactLocation'", location, trace_id)
        r = session.get(f"{server.url}/ajax-api/2.0/mlflow/get-trace-artifact",
                        params={"request_id": trace_id, "path": ATTACHMENT}, timeout=60)
        assert r.status_code in REFUSED and SECRET not in r.content, (location, r.text[:200])


def test_the_stock_client_registers_and_downloads_its_own_models(
    server: MlflowServer, as_tenant, tmp_path: Path
) -> None:
    import mlflow

    tenant = _tenant(server)
    name = f"m{secrets.token_hex(3)}"
    run, info = _log_model(as_tenant, tenant, registered_name=name)  # source models:/m-…
    client = as_tenant(tenant)
    by_run = client.create_model_version(name, f"runs:/{run.info.run_id}/model",
                                         run.info.run_id)
    by_model = client.create_model_version(name, f"models:/{name}/1")
    by_logged = mlflow.register_model(info.model_uri, name)
    assert [v.version for v in (by_run, by_model, by_logged)] == ["2", "3", "4"]
    served = _get_artifact(server, tenant, name, "1")
    assert served.status_code == 200 and b"python_function" in served.content
    assert _get_artifact(server, tenant, name, "3").status_code == 200
    for version in ("1", "4"):
        path = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}",
                                                   dst_path=str(tmp_path / version))
        assert (Path(path) / "MLmodel").is_file()


def test_an_experiment_cannot_be_placed_in_another_tenants_storage(
    server: MlflowServer, victim: Victim, as_tenant
) -> None:
    client = as_tenant(_tenant(server))
    with pytest.raises(MlflowException) as info:
        client.create_experiment(f"e{secrets.token_hex(3)}",
                                 artifact_location=f"s3://{BUCKET}/{victim.model_key}")
    assert info.value.error_code in ("INVALID_PARAMETER_VALUE", "PERMISSION_DENIED")


# -- the two layers, in-process --------------------------------------------------------------

@pytest.mark.parametrize("source", [
    "runs:/abc/model", "models:/churn/3", "models:/churn@prod", "models:/m-123",
    "mlflow-artifacts:/workspaces/acme/1/abc/artifacts/model", "mlflow-artifacts:/1/abc/x",
])
def test_own_locations_may_be_named(source: str) -> None:
    fence.check_source(source, "acme")


@pytest.mark.parametrize("source", [
    "s3://bkt/p", "S3://b/p", "s3a://b/p", "gs://b/p", "file:///etc", "/etc", "etc", "hdfs://h/p",
    "https://169.254.169.254/", "http://127.0.0.1/api/2.0/mlflow-artifacts/artifacts/x",
    "tenant-s3://bkt/p/workspaces/acme", "runs://host/abc/model", "models://profile@db/x/1",
    "RUNS:/abc/model", "mlflow-artifacts://host/x", "mlflow-artifacts:/workspaces/globex/1",
    "mlflow-artifacts:/workspaces/acme/../globex/1", "mlflow-artifacts:/workspaces/acme/%2e%2e/g",
    "mlflow-artifacts:/workspaces/acme/%252e%252e/g", "mlflow-artifacts:/workspaces%2fglobex/1",
    "runs:/abc/../../x", "runs:/abc/model?x=1", "runs:/abc/model#f", "runs:/abc\\..\\x",
    "runs:/abc/\x00", "runs:/abc/\u202e", "", "dummy-source",
])
def test_other_locations_are_refused(source: str) -> None:
    with pytest.raises(MlflowException) as info:
        fence.check_source(source, "acme")
    assert "runs:/" in info.value.message


def _fence_check(destination: str, uri: str, workspace: str | None) -> None:
    from mlflow.utils.workspace_context import ServerWorkspaceContext

    with ServerWorkspaceContext(workspace):
        fence.RepositoryFence(destination).check(uri)


@pytest.mark.parametrize(("destination", "uri", "workspace"), [
    ("tenant-s3://bkt/root", "tenant-s3://bkt/root", "acme"),
    ("tenant-s3://bkt/root", "tenant-s3://bkt/root/workspaces/acme/1/r/artifacts", "acme"),
    ("tenant-s3://bkt/root", "runs:/abc/model", "acme"),
    ("tenant-s3://bkt/root", "models:/churn/1", "acme"),
    ("tenant-s3://bkt/root", "mlflow-artifacts:/workspaces/acme/1/x", "acme"),
    ("/srv/artifacts", "/srv/artifacts/workspaces/acme/1/x", "acme"),
    ("/srv/artifacts", "file:///srv/artifacts/workspaces/acme/1/x", "acme"),
    ("s3://bkt/root", "s3://bkt/root/workspaces/acme/1/x", "acme"),
])
def test_the_fence_lets_the_tenant_read_its_own_storage(destination, uri, workspace) -> None:
    _fence_check(destination, uri, workspace)


@pytest.mark.parametrize(("destination", "uri", "workspace"), [
    ("tenant-s3://bkt/root", "s3://bkt/root/workspaces/acme/1/x", "acme"),
    ("tenant-s3://bkt/root", "tenant-s3://bkt/root/workspaces/globex/1/x", "acme"),
    ("tenant-s3://bkt/root", "tenant-s3://other/root/workspaces/acme/1/x", "acme"),
    ("tenant-s3://bkt/root", "tenant-s3://bkt/elsewhere/workspaces/acme/1/x", "acme"),
    ("tenant-s3://bkt/root", "tenant-s3://bkt/root/workspaces/acme/1/x", None),
    ("tenant-s3://bkt/root", "mlflow-artifacts:/workspaces/globex/1/x", "acme"),
    ("tenant-s3://bkt/root", "mlflow-artifacts://h/workspaces/acme/1/x", "acme"),
    ("tenant-s3://bkt/root", "runs://h/abc/model", "acme"),
    ("tenant-s3://bkt/root", "file:///etc", "acme"),
    ("tenant-s3://bkt/root", "https://169.254.169.254/", "acme"),
    ("tenant-s3://bkt/root", "gs://b/root/workspaces/acme", "acme"),
    ("tenant-s3://bkt/root", "hdfs://h/root/workspaces/acme", "acme"),
    ("/srv/artifacts", "/srv/artifacts", "acme"),
    ("/srv/artifacts", "/srv/artifacts/workspaces/globex/1", "acme"),
    ("/srv/artifacts", "/srv/artifacts/workspaces/acme/../globex/1", "acme"),
    ("/srv/artifacts", "file:///srv/artifacts/workspaces/acme/%2e%2e/globex", "acme"),
    ("/srv/artifacts", "/srv/artifacts/workspaces/acme-evil/1", "acme"),
    ("/srv/artifacts", "/etc", "acme"),
    ("s3://bkt/root", "s3://bkt/root/workspaces/globex/1", "acme"),
    ("s3://bkt/root", "s3://bk2/root/workspaces/acme/1", "acme"),
    ("s3://bkt/root", "s3://bkt/root", "acme"),
    (None, "s3://bkt/root/workspaces/acme", "acme"),
])
def test_the_fence_refuses_everything_else(destination, uri, workspace) -> None:
    with pytest.raises(MlflowException) as info:
        _fence_check(destination, uri, workspace)
    assert info.value.error_code == "PERMISSION_DENIED"


def test_the_deployment_download_refuses_a_foreign_location_before_fetching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow_tenant_plugins.deployments.model_source import ModelResolver

    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")  # as on the platform server

    fetched: list[str] = []
    resolver = ModelResolver(fetch=lambda uri, dst, tenant: fetched.append(uri) or dst)
    for uri in ("s3://bkt/root/workspaces/globex/1/models/m/artifacts", "file:///etc",
                "tenant-s3://bkt/root/workspaces/globex/x", "mlflow-artifacts:/workspaces/globex/x",
                "https://169.254.169.254/"):
        with pytest.raises(MlflowException) as info:
            resolver.fetch(uri, str(tmp_path / "never"), "acme")
        assert info.value.error_code == "PERMISSION_DENIED"
    assert fetched == []
    for own in ("mlflow-artifacts:/workspaces/acme/1/models/m/artifacts",
                "tenant-s3://bkt/root/workspaces/acme/1/models/m/artifacts"):
        resolver.fetch(own, str(tmp_path / "ok"), "acme")
    assert len(fetched) == 2


def test_the_fence_admits_a_local_path_only_inside_the_servers_own_download_scratch(
    tmp_path: Path,
) -> None:
    """The server's own download destination (a deployment's model) is no tenant's source:
    inside a :func:`fence.server_scratch` block, and only there, MLflow may re-read it."""
    import threading

    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "MLmodel").write_text("not yours")
    with fence.server_scratch() as scratch:
        own = f"{scratch}/workspaces/acme/1/models/m/artifacts"
        os.makedirs(own)
        os.symlink(outside, f"{own}/link")
        for uri in (own, f"file://{own}", f"{own}/MLmodel", scratch):
            _fence_check("tenant-s3://bkt/root", uri, "acme")
        _fence_check("/srv/artifacts", own, "acme")
        _fence_check("tenant-s3://bkt/root", own, None)
        for uri in (f"{own}/link", f"{own}/link/MLmodel", f"{own}/../../../../../etc",
                    f"{scratch}-evil/x", f"file://host{own}", str(outside), "/etc",
                    os.path.dirname(scratch)):
            with pytest.raises(MlflowException) as info:
                _fence_check("tenant-s3://bkt/root", uri, "acme")
            assert info.value.error_code == "PERMISSION_DENIED", uri

        refused: list[str] = []

        def another_request() -> None:  # a concurrent request does not share this scratch
            try:
                _fence_check("tenant-s3://bkt/root", own, "globex")
            except MlflowException as exc:
                refused.append(exc.error_code)

        thread = threading.Thread(target=another_request)
        thread.start()
        thread.join(timeout=30)
        assert refused == ["PERMISSION_DENIED"]
    with pytest.raises(MlflowException):  # closed: the same path is refused again
        _fence_check("tenant-s3://bkt/root", own, "acme")


def test_resolving_a_deployment_model_reads_its_mlmodel_through_the_installed_fence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Replays the refused ``/tmp/tmp…/workspaces/<tenant>/…/MLmodel``: the server downloads
    a model's MLmodel under ``workspaces/<tenant>/`` of a temporary directory, and
    ``Model.load`` builds a local repository there through the fenced registry."""
    from mlflow.store.artifact import artifact_repository_registry as registry_module
    from mlflow.utils.workspace_context import ServerWorkspaceContext

    from mlflow_tenant_plugins.deployments.model_source import ModelResolver

    registry = registry_module._artifact_repository_registry
    monkeypatch.setattr(registry, "get_artifact_repository", registry.get_artifact_repository)
    fence.install("tenant-s3://bkt/root")

    def fetch(uri: str, dst: str, tenant: str) -> str:
        path = os.path.join(dst, "workspaces", tenant, "1", "models", "m", "artifacts", "MLmodel")
        os.makedirs(os.path.dirname(path))
        Path(path).write_text("flavors:\n  python_function:\n    loader_module: doubler\n")
        return path

    resolver = ModelResolver(allow_any_uri=True, fetch=fetch)
    with ServerWorkspaceContext("acme"):
        ref = resolver.resolve("tenant-s3://bkt/root/workspaces/acme/1/models/m/artifacts",
                               "acme", None)
        assert ref.flavor == "python_function"
        with pytest.raises(MlflowException) as info:  # the fence is on: a plain path is not
            registry_module.get_artifact_repository("/tmp")
        assert info.value.error_code == "PERMISSION_DENIED"

"""End to end: ``mlflow server --app-name tenant-auth --artifacts-destination tenant-s3://…`` on
moto's S3, used by the stock MLflow client (in-process) with several tenants' keys. One server
for the module.

Names a gap in MLflow: ``_get_artifact_repo_mlflow_artifacts`` caches the first repository
it builds — bound by ``for_workspace`` to whichever tenant made the first artifact request —
and serves it to every later request; without the app's per-request binding (server.py) only
the first tenant's artifacts would work. Two tenants interleaved here prove the binding.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tests.fixtures.aws import MotoServer
from tests.fixtures.servers import MlflowServer, start_mlflow_server, stop_mlflow_server
from tests.test_artifacts_fixtures import sha256

BUCKET = "mlt-server-artifacts"
ROOT = "srv"
PART = 5 * 2**20


@pytest.fixture(scope="module")
def artifact_server(
    moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    moto_server.client("s3").create_bucket(Bucket=BUCKET)
    env = {**moto_server.env(), "MLFLOW_TENANT_AWS_ENDPOINT_URL": moto_server.url}
    workdir = tmp_path_factory.mktemp("artifact-server")
    server = start_mlflow_server(
        workdir, artifacts_destination=f"tenant-s3://{BUCKET}/{ROOT}", extra_env=env
    )
    _prime(server, workdir)
    yield server
    stop_mlflow_server(server)


@pytest.fixture
def as_tenant(artifact_server: MlflowServer, monkeypatch: pytest.MonkeyPatch):
    """``as_tenant(name, key)`` -> a stock MlflowClient sending that tenant's key."""
    for name in list(os.environ):
        if name.startswith("MLFLOW_"):
            monkeypatch.delenv(name)

    def _client(key: str, **env: str) -> MlflowClient:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return MlflowClient(tracking_uri=artifact_server.url)

    return _client


def _tenant(server: MlflowServer, **quotas: int) -> tuple[str, str]:
    import secrets

    from mlflow_tenant_plugins.tenancy import Quotas

    name = f"a{secrets.token_hex(4)}"
    server.registry.create_tenant(name, quotas=Quotas(**quotas))
    _info, key = server.registry.create_key(name, "editor")
    return name, key


def _prime(server: MlflowServer, workdir: Path) -> None:
    """A first artifact request by a tenant none of the tests use, so that every test runs
    against a server that has already served another tenant (whatever the test selection)."""
    _name, key = _tenant(server)
    session = server.session(key)
    run = session.post(f"{server.url}/api/2.0/mlflow/runs/create", json={"experiment_id": (
        session.post(f"{server.url}/api/2.0/mlflow/experiments/create", json={"name": "prime"},
                     timeout=60).json()["experiment_id"])}, timeout=60).json()["run"]
    uri = run["info"]["artifact_uri"].removeprefix("mlflow-artifacts:")
    session.put(f"{server.url}/api/2.0/mlflow-artifacts/artifacts{uri}/prime.txt", data=b"p",
                timeout=60).raise_for_status()


def _stored(moto: MotoServer, tenant: str) -> dict[str, int]:
    listed = moto.client("s3").list_objects_v2(
        Bucket=BUCKET, Prefix=f"{ROOT}/workspaces/{tenant}/"
    )
    return {o["Key"]: o["Size"] for o in listed.get("Contents", [])}


def test_two_tenants_log_and_read_their_own_artifacts_through_the_server(
    artifact_server: MlflowServer, as_tenant, moto_server: MotoServer, tmp_path: Path
) -> None:
    tenants = [_tenant(artifact_server), _tenant(artifact_server)]
    runs = {}
    for name, key in tenants:  # interleaved: the server must not stick to the first tenant
        client = as_tenant(key)
        exp = client.create_experiment("artifacts")
        run = client.create_run(exp)
        src = tmp_path / name
        (src / "sub").mkdir(parents=True)
        (src / "note.txt").write_text(f"note of {name}")
        (src / "sub" / "w.bin").write_bytes(name.encode() * 100)
        client.log_artifact(run.info.run_id, str(src / "note.txt"))
        client.log_artifacts(run.info.run_id, str(src / "sub"), "sub")
        runs[name] = run.info.run_id
    for name, key in reversed(tenants):
        client = as_tenant(key)
        out = tmp_path / f"out-{name}"
        out.mkdir()
        path = Path(client.download_artifacts(runs[name], "", str(out)))
        assert (path / "note.txt").read_text() == f"note of {name}"
        assert (path / "sub" / "w.bin").read_bytes() == name.encode() * 100
        stored = _stored(moto_server, name)
        assert len(stored) == 2
        assert artifact_server.registry.ledger.get(name, "storage_bytes").used == sum(
            stored.values()
        )
    (_alice, alice_key), (bob, _bob_key) = tenants
    with pytest.raises(MlflowException):  # bob's run is not alice's to read
        as_tenant(alice_key).list_artifacts(runs[bob])


def test_over_quota_upload_is_429_over_the_wire(
    artifact_server: MlflowServer, as_tenant, tmp_path: Path
) -> None:
    name, key = _tenant(artifact_server, storage_bytes=1000)
    client = as_tenant(key, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")  # the stock client retries 429s
    run = client.create_run(client.create_experiment("q"))
    f = tmp_path / "big.bin"
    f.write_bytes(b"x" * 1500)
    with pytest.raises(MlflowException) as info:
        client.log_artifact(run.info.run_id, str(f))
    assert "429" in str(info.value) or "quota" in str(info.value)
    assert artifact_server.registry.ledger.get(name, "storage_bytes").used == 0


def test_proxied_multipart_upload_and_download_of_a_large_file(
    artifact_server: MlflowServer, as_tenant, moto_server: MotoServer, tmp_path: Path
) -> None:
    name, key = _tenant(artifact_server)
    client = as_tenant(
        key,
        MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD="true",
        MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE=str(PART),
        MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE=str(PART),
        MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD="true",
        MLFLOW_MULTIPART_DOWNLOAD_MINIMUM_FILE_SIZE=str(PART),
        MLFLOW_MULTIPART_DOWNLOAD_CHUNK_SIZE=str(PART),
    )
    run = client.create_run(client.create_experiment("mpu"))
    big = tmp_path / "model.bin"
    big.write_bytes(os.urandom(2 * PART + 4321))
    client.log_artifact(run.info.run_id, str(big), "model")
    stored = _stored(moto_server, name)
    assert list(stored.values()) == [big.stat().st_size]
    assert artifact_server.registry.ledger.get(name, "storage_bytes").used == big.stat().st_size
    out = tmp_path / "out"
    out.mkdir()
    got = client.download_artifacts(run.info.run_id, "model/model.bin", str(out))
    assert sha256(Path(got)) == sha256(big)

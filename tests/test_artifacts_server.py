"""End to end: ``mlflow server --app-name tenant-auth --artifacts-destination tenant-s3://…`` on
moto's S3, used by the stock MLflow client (in-process) with several tenants' keys. One server
for the module.

Names a gap in MLflow: ``_get_artifact_repo_mlflow_artifacts`` caches the first repository
it builds — bound by ``for_workspace`` to whichever tenant made the first artifact request —
and serves it to every later request; without the app's per-request binding (server.py) only
the first tenant's artifacts would work. Two tenants interleaved here prove the binding.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tests.fixtures.artifacts import sha256
from tests.fixtures.aws import MotoServer
from tests.fixtures.servers import MlflowServer, start_mlflow_server, stop_mlflow_server

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


def test_over_quota_log_artifact_fails_within_2s_with_the_quota_message_on_default_retries(
    artifact_server: MlflowServer, as_tenant, tmp_path: Path
) -> None:
    """Finding: a full quota answered 429, which the stock client retried for about four
    minutes before showing ``too many 429 error responses`` without the quota's message."""
    name, key = _tenant(artifact_server, storage_bytes=1000)
    client = as_tenant(key)  # default retry settings: as_tenant clears every MLFLOW_ variable
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    experiment = client.create_experiment("q")
    f = tmp_path / "big.bin"
    f.write_bytes(b"x" * 1500)
    mlflow.set_tracking_uri(artifact_server.url)
    with mlflow.start_run(experiment_id=experiment):
        started = time.monotonic()
        with pytest.raises(Exception) as info:  # the stock client raises HTTPError
            mlflow.log_artifact(str(f))
        elapsed = time.monotonic() - started
    assert elapsed < 2, elapsed
    text = str(info.value)
    assert "409" in text and "RESOURCE_EXHAUSTED" in text
    assert f"quota exceeded for tenant '{name}': storage_bytes limit is" in text
    assert "(1000)" in text and "too many" not in text
    assert artifact_server.registry.ledger.get(name, "storage_bytes").used == 0


def _raw_put(server: MlflowServer, key: str, path: str, headers: dict[str, str]):
    url = urllib.parse.urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=20)
    conn.putrequest("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{path}")
    for k, v in {"Authorization": f"Bearer {key}", **headers}.items():
        conn.putheader(k, v)
    conn.endheaders()
    return conn


def _artifact_path(server: MlflowServer, key: str) -> str:
    session = server.session(key)
    exp = session.post(f"{server.url}/api/2.0/mlflow/experiments/create",
                       json={"name": "spool"}, timeout=60).json()["experiment_id"]
    run = session.post(f"{server.url}/api/2.0/mlflow/runs/create",
                       json={"experiment_id": exp}, timeout=60).json()["run"]
    return run["info"]["artifact_uri"].removeprefix("mlflow-artifacts:/")


def test_a_put_declaring_more_than_the_quota_is_refused_before_its_body_is_read(
    artifact_server: MlflowServer, moto_server: MotoServer
) -> None:
    """Finding: the proxied PUT spooled the whole body to the server's disk before the quota
    applied. The client here declares 1 GiB and sends 64 KiB: the answer must come at once,
    not after the server has waited for (and stored) the body."""
    name, key = _tenant(artifact_server, storage_bytes=2**20)
    path = f"{_artifact_path(artifact_server, key)}/huge.bin"
    conn = _raw_put(artifact_server, key, path, {"Content-Length": str(2**30)})
    try:
        conn.send(b"x" * 65536)
        response = conn.getresponse()  # times out (20 s) if the server waits for the body
        body = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 409 and body["error_code"] == "RESOURCE_EXHAUSTED"
    assert f"({2**30})" in body["message"] and f"({2**20})" in body["message"]
    assert artifact_server.registry.ledger.get(name, "storage_bytes").used == 0
    assert _stored(moto_server, name) == {}


def test_a_chunked_put_is_refused_once_it_outgrows_the_remaining_quota(
    artifact_server: MlflowServer, moto_server: MotoServer
) -> None:
    """No Content-Length: the spool holds quota as it grows and the upload is refused as soon
    as it passes the tenant's remaining quota — while the client is still sending."""
    name, key = _tenant(artifact_server, storage_bytes=2**20)
    path = f"{_artifact_path(artifact_server, key)}/stream.bin"
    conn = _raw_put(artifact_server, key, path, {"Transfer-Encoding": "chunked"})
    chunk = b"y" * 65536
    try:
        for _ in range(3 * 16):  # 3 MiB, never terminated by the zero-length chunk
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        response = conn.getresponse()  # times out if the server waits for the end
        body = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 409 and body["error_code"] == "RESOURCE_EXHAUSTED"
    assert "refused before the upload was stored" in body["message"]
    assert artifact_server.registry.ledger.get(name, "storage_bytes").used == 0
    assert _stored(moto_server, name) == {}


def test_a_chunked_put_within_the_quota_is_stored_and_charged_exactly(
    artifact_server: MlflowServer, moto_server: MotoServer
) -> None:
    name, key = _tenant(artifact_server, storage_bytes=2**20)
    path = f"{_artifact_path(artifact_server, key)}/ok.bin"
    data = os.urandom(300_000)
    r = artifact_server.session(key).put(
        f"{artifact_server.url}/api/2.0/mlflow-artifacts/artifacts/{path}",
        data=iter([data[:100_000], data[100_000:]]), timeout=60)  # a generator: chunked
    assert r.status_code == 200, r.text
    assert list(_stored(moto_server, name).values()) == [len(data)]
    assert artifact_server.registry.ledger.get(name, "storage_bytes").used == len(data)


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

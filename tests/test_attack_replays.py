"""Replays of findings from an attacker's pass against a real ``tenant-auth`` server.

Each test states the behaviour the platform promises. While a finding is open its test is
marked ``xfail(strict=True)`` (the attack works; an XPASS turns the suite red once the fix
lands, and the marker is removed).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator

import pytest
import requests

from tests.fixtures.aws import MotoServer
from tests.fixtures.servers import MlflowServer, start_mlflow_server, stop_mlflow_server

API = "/api/2.0/tenants"
BUCKET = "mlt-attack-replays"
ROOT = "srv"
MiB = 2**20


# -- the tenant admin API: principals of other tenants ---------------------------------------
def test_members_unbind_is_no_oracle_for_principals_of_other_tenants(
    tenant_server: MlflowServer, make_tenant
) -> None:
    victim, _victim_key = make_tenant()
    attacker, _ = make_tenant()
    registry = tenant_server.registry
    person = f"oidc:alice-{secrets.token_hex(3)}@victim.example"
    registry.bind(person, victim, "editor")
    victim_key_id = registry.list_keys(victim)[0].key_id
    _info, attacker_admin = registry.create_key(attacker, "admin")
    s = tenant_server.session(attacker_admin)

    def unbind(principal: str) -> tuple[int, str]:
        r = s.post(f"{tenant_server.url}{API}/members/unbind",
                   json={"tenant": attacker, "principal": principal}, timeout=60)
        return r.status_code, r.json().get("error_code", "")

    nobody = f"oidc:nobody-{secrets.token_hex(3)}@victim.example"
    assert unbind(person) == unbind(nobody)
    assert unbind(f"key:{victim_key_id}") == unbind(f"key:{secrets.token_hex(6)}")
    # And the victim's binding is untouched, whatever the answer.
    assert registry.bindings_of(person) == {victim: registry.bindings_of(person)[victim]}


# -- storage quota: concurrent deletes -------------------------------------------------------
@pytest.fixture(scope="module")
def s3_server(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[MlflowServer]:
    moto_server.client("s3").create_bucket(Bucket=BUCKET)
    env = {**moto_server.env(), "MLFLOW_TENANT_AWS_ENDPOINT_URL": moto_server.url}
    server = start_mlflow_server(tmp_path_factory.mktemp("attack-s3"),
                                 artifacts_destination=f"tenant-s3://{BUCKET}/{ROOT}",
                                 extra_env=env)
    yield server
    stop_mlflow_server(server)


def _stored_bytes(moto: MotoServer, tenant: str) -> int:
    pages = moto.client("s3").get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=f"{ROOT}/workspaces/{tenant}/")
    return sum(o["Size"] for page in pages for o in page.get("Contents", []))


def _run_artifacts(server: MlflowServer, s: requests.Session) -> str:
    exp = s.post(f"{server.url}/api/2.0/mlflow/experiments/create",
                 json={"name": "quota"}, timeout=60).json()["experiment_id"]
    run = s.post(f"{server.url}/api/2.0/mlflow/runs/create", json={"experiment_id": exp},
                 timeout=60).json()["run"]
    uri = run["info"]["artifact_uri"].removeprefix("mlflow-artifacts:")
    return f"{server.url}/api/2.0/mlflow-artifacts/artifacts{uri}"


def test_concurrent_deletes_of_one_artifact_release_its_size_once(
    s3_server: MlflowServer, moto_server: MotoServer
) -> None:
    from mlflow_tenant_plugins.tenancy import Quotas

    tenant = f"q{secrets.token_hex(4)}"
    quota = 4 * MiB
    s3_server.registry.create_tenant(tenant, quotas=Quotas(storage_bytes=quota))
    _info, key = s3_server.registry.create_key(tenant, "admin")  # admins delete artifacts
    s = s3_server.session(key)
    base = _run_artifacts(s3_server, s)
    s.put(f"{base}/keep.bin", data=b"k" * (2 * MiB), timeout=60).raise_for_status()

    def ledger() -> int:
        return s3_server.registry.ledger.get(tenant, "storage_bytes").used

    for _round in range(10):  # a race: a few rounds, stop as soon as the ledger drifted
        s.put(f"{base}/victim.bin", data=b"v" * (2 * MiB), timeout=60).raise_for_status()
        barrier = threading.Barrier(12)

        def delete(barrier: threading.Barrier = barrier) -> None:
            session = s3_server.session(key)
            barrier.wait(timeout=60)
            session.delete(f"{base}/victim.bin", timeout=120)

        threads = [threading.Thread(target=delete) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        if ledger() != _stored_bytes(moto_server, tenant):
            break
    assert ledger() == _stored_bytes(moto_server, tenant)
    # What the drift buys: an upload the quota does not allow is accepted.
    s.put(f"{base}/extra.bin", data=b"x" * (3 * MiB), timeout=60)
    assert _stored_bytes(moto_server, tenant) <= quota


# -- the tenant admin API: binding another tenant's people ------------------------------------
@pytest.fixture(scope="module")
def proxy_registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A trusted proxy in front, roles from the registry (the default ``external_roles``)."""
    server = start_mlflow_server(tmp_path_factory.mktemp("attack-proxy"), extra_env={
        "MLFLOW_TENANT_AUTH_METHODS": "proxy,key",
        "MLFLOW_TENANT_PROXY_ADDRESSES": "127.0.0.1",
    })
    yield server
    stop_mlflow_server(server)


def test_another_tenants_admin_cannot_lock_a_person_out_by_binding_it(
    proxy_registry_server: MlflowServer,
) -> None:
    server, registry = proxy_registry_server, proxy_registry_server.registry
    victim, attacker = f"v{secrets.token_hex(4)}", f"a{secrets.token_hex(4)}"
    registry.create_tenant(victim)
    registry.create_tenant(attacker)
    person = f"proxy:bob-{secrets.token_hex(3)}"
    registry.bind(person, victim, "editor")
    as_bob = {"X-Forwarded-User": person.removeprefix("proxy:")}

    def bob_searches() -> int:
        return requests.post(f"{server.url}/api/2.0/mlflow/experiments/search",
                             json={"max_results": 1}, headers=as_bob, timeout=60).status_code

    assert bob_searches() == 200
    _info, attacker_admin = registry.create_key(attacker, "admin")
    r = server.session(attacker_admin).post(
        f"{server.url}{API}/members/bind",
        json={"tenant": attacker, "principal": person, "role": "viewer"}, timeout=60)
    # Either the bind is refused (the person is another tenant's) or it does not hurt.
    if r.status_code == 200:
        import time

        deadline = time.monotonic() + 10  # past the server's auth cache (1 s in tests)
        while time.monotonic() < deadline and bob_searches() == 200:
            time.sleep(0.5)
    assert bob_searches() == 200


# -- MLflow switches that hand a tenant the platform ------------------------------------------
def _otlp_trace(trace_hex: str) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = bytes.fromhex(trace_hex), b"\x22" * 8, "root"
    span.start_time_unix_nano, span.end_time_unix_nano = 10**9, 2 * 10**9
    return request.SerializeToString()


def test_tenant_scorer_code_never_runs_on_the_platform(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    import json
    import time

    workdir = tmp_path_factory.mktemp("attack-scorers")
    marker = workdir / "tenant-code-ran"
    try:
        server = start_mlflow_server(workdir, timeout=240, extra_env={
            "MLFLOW_SERVER_ENABLE_CUSTOM_SCORERS": "true"})
    except RuntimeError as refused:  # the platform refuses to run tenants' code: the fix
        assert "refuses to start with MLFLOW_SERVER_ENABLE_CUSTOM_SCORERS on" in str(refused)
        return
    try:
        tenant = f"s{secrets.token_hex(4)}"
        server.registry.create_tenant(tenant)
        _info, key = server.registry.create_key(tenant, "editor")
        s = server.session(key)
        exp = s.post(f"{server.url}/api/2.0/mlflow/experiments/create", json={"name": "x"},
                     timeout=60).json()["experiment_id"]
        trace_hex = secrets.token_hex(16)
        s.post(f"{server.url}/v1/traces", data=_otlp_trace(trace_hex), timeout=60, headers={
            "Content-Type": "application/x-protobuf", "x-mlflow-experiment-id": exp,
        }).raise_for_status()
        scorer = {
            "name": "pwn", "aggregations": None, "description": None,
            "is_session_level_scorer": False, "timeout": None, "mlflow_version": "3.17.2",
            "serialization_version": 1, "builtin_scorer_class": None,
            "builtin_scorer_pydantic_data": None,
            "call_source": f"open({str(marker)!r}, 'w').write('x')\nreturn True",
            "call_signature": "(outputs) -> bool", "original_func_name": "pwn",
            "instructions_judge_pydantic_data": None, "memory_augmented_judge_data": None,
            "third_party_scorer_data": None, "ensemble_scorer_data": None,
        }
        r = s.post(f"{server.url}/ajax-api/3.0/mlflow/scorer/invoke", timeout=60, json={
            "experiment_id": exp, "serialized_scorer": json.dumps(scorer),
            "trace_ids": [f"tr-{trace_hex}"]})
        if r.status_code == 200:
            deadline = time.monotonic() + 120  # the job runner picks the job up
            while time.monotonic() < deadline and not marker.exists():
                time.sleep(1)
        assert not marker.exists(), "a tenant's code ran in the platform's job runner"
    finally:
        stop_mlflow_server(server)

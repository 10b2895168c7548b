"""AWS IAM identity: the client presigns sts:GetCallerIdentity, the server replays it to
moto's STS (IAM enforcement on, so signatures are really checked) and maps the ARN through
IAM bindings. End to end with the stock MlflowClient and the ``mlflow`` CLI as subprocesses.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import pytest
import requests
from botocore.credentials import ReadOnlyCredentials

from mlflow_tenant_plugins.auth.base import Refusal
from mlflow_tenant_plugins.auth.iam import IamMethod
from mlflow_tenant_plugins.auth.ttl_cache import TtlCache
from mlflow_tenant_plugins.client.aws_iam import presign_caller_identity
from mlflow_tenant_plugins.config import ConfigError, Settings
from mlflow_tenant_plugins.tenancy.iam_bindings import IamBindings, normalize_arn
from mlflow_tenant_plugins.tenancy.roles import Role
from mlflow_tenant_plugins.wire import (
    IAM_HEADER,
    IamError,
    decode_signed_request,
    encode_signed_request,
)
from tests.fixtures.aws import REGION, MotoServer
from tests.fixtures.servers import MlflowServer, start_mlflow_server, stop_mlflow_server

SERVER_ID = "mlflow-iam-test"
SEARCH = "/api/2.0/mlflow/experiments/search"
# AWS would accept the account root as principal for any of its users allowed to assume the
# role; moto matches principals literally, so the trust names the admin user the fixture uses.
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:user/platform-admin"},
    "Action": "sts:AssumeRole"}]})


@dataclass
class World:
    server: MlflowServer
    moto: MotoServer
    bindings: IamBindings
    tenant: str
    creds: dict[str, ReadOnlyCredentials]  # alice, bob, ci (assumed role), forged
    arns: dict[str, str]
    aws_file: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory, moto_server_iam: MotoServer) -> Iterator[World]:
    work = tmp_path_factory.mktemp("iam-server")
    server = start_mlflow_server(work, extra_env={
        "MLFLOW_TENANT_AUTH_METHODS": "iam,key",
        "MLFLOW_TENANT_SERVER_ID": SERVER_ID,
        "MLFLOW_TENANT_STS_ENDPOINT": moto_server_iam.url,
    })
    iam = moto_server_iam.client("iam")
    suffix = secrets.token_hex(3)
    creds, arns = {}, {}
    for user in ("alice", "bob"):
        arns[user] = iam.create_user(UserName=f"{user}-{suffix}")["User"]["Arn"]
        key = iam.create_access_key(UserName=f"{user}-{suffix}")["AccessKey"]
        creds[user] = ReadOnlyCredentials(key["AccessKeyId"], key["SecretAccessKey"], None)
    role = iam.create_role(RoleName=f"ci-{suffix}", Path="/team/",
                           AssumeRolePolicyDocument=TRUST)["Role"]
    arns["ci"] = role["Arn"]
    temp = moto_server_iam.client("sts").assume_role(
        RoleArn=role["Arn"], RoleSessionName="build-42")["Credentials"]
    creds["ci"] = ReadOnlyCredentials(temp["AccessKeyId"], temp["SecretAccessKey"],
                                      temp["SessionToken"])
    creds["forged"] = ReadOnlyCredentials(creds["alice"].access_key, "not-the-secret", None)
    aws_file = work / "aws-credentials"
    aws_file.write_text("".join(
        f"[{name}]\naws_access_key_id = {c.access_key}\naws_secret_access_key = {c.secret_key}\n"
        + (f"aws_session_token = {c.token}\n" if c.token else "") for name, c in creds.items()))
    tenant = f"i{secrets.token_hex(4)}"
    server.registry.create_tenant(tenant)
    bindings = IamBindings(server.registry)
    bindings.bind(tenant, arns["alice"], "editor")
    bindings.bind(tenant, arns["ci"], "viewer")  # bound with its path: normalised away
    yield World(server, moto_server_iam, bindings, tenant, creds, arns, aws_file)
    stop_mlflow_server(server)


def _signed(world: World, who: str = "alice", server_id: str = SERVER_ID,
            endpoint: str | None = None) -> str:
    return presign_caller_identity(world.creds[who], REGION, endpoint or world.moto.url, server_id)


def _search(world: World, header: str, workspace: str | None = None) -> requests.Response:
    headers = {IAM_HEADER: header}
    if workspace:
        headers["X-MLFLOW-WORKSPACE"] = workspace
    return requests.post(world.server.url + SEARCH, json={"max_results": 10}, headers=headers,
                         timeout=30)


def _profile(name: str, aws_profile: str, tenant: str | None = None,
             server_id: str = SERVER_ID) -> str:
    lines = [f"[{name}]", 'auth = "aws-iam"', f'aws_profile = "{aws_profile}"',
             f'server_id = "{server_id}"'] + ([f'tenant = "{tenant}"'] if tenant else [])
    return "\n".join(lines) + "\n"


def _client_env(world: World, tmp_path: Path, profile: str) -> dict[str, str]:
    profiles = tmp_path / "tenants.toml"
    profiles.write_text("".join([
        _profile("alice", "alice", tenant=world.tenant), _profile("ci", "ci"),
        _profile("bob", "bob"), _profile("wrong-server", "alice", server_id="another-platform"),
        _profile("forged", "forged"),
    ]))
    profiles.chmod(0o600)
    env = world.server.client_env(
        MLFLOW_TRACKING_AUTH="tenant", MLFLOW_TENANT_PROFILES=str(profiles),
        MLFLOW_TENANT_PROFILE=profile, AWS_SHARED_CREDENTIALS_FILE=str(world.aws_file),
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"), AWS_ENDPOINT_URL=world.moto.url,
        AWS_DEFAULT_REGION=REGION,
    )
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                     "AWS_PROFILE"):
        env.pop(variable, None)
    return env


# -- unit ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("arn", "bound"), [
    ("arn:aws:sts::123456789012:assumed-role/deploy/session-1",
     "arn:aws:iam::123456789012:role/deploy"),
    ("arn:aws:iam::123456789012:role/team/deploy", "arn:aws:iam::123456789012:role/deploy"),
    ("arn:aws:iam::123456789012:user/ops/alice", "arn:aws:iam::123456789012:user/ops/alice"),
    ("arn:aws-us-gov:sts::123456789012:assumed-role/r/s",
     "arn:aws-us-gov:iam::123456789012:role/r"),
])
def test_assumed_role_arns_stand_for_their_role(arn, bound):
    assert normalize_arn(arn) == bound


def _unit_method(post, server_id: str = SERVER_ID) -> IamMethod:
    settings = Settings(server_id=server_id, sts_endpoint="https://sts.example.test")
    bindings = mock.Mock(lookup=lambda arn: {"acme": Role.EDITOR})
    registry = mock.Mock(is_platform_admin=lambda arn: False)
    return IamMethod(settings, registry, TtlCache(60), bindings=bindings, post=post)


def _sts_answer(status: int, body: str) -> requests.Response:
    response = requests.Response()
    response.status_code, response._content = status, body.encode()
    return response


OK_XML = ("<GetCallerIdentityResponse xmlns='https://sts.amazonaws.com/doc/2011-06-15/'>"
          "<GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/alice</Arn>"
          "</GetCallerIdentityResult></GetCallerIdentityResponse>")
FAKE = ReadOnlyCredentials("AKIDEXAMPLE", "secret", None)


def test_sts_is_asked_once_per_signature_and_only_at_the_configured_endpoint():
    calls = []
    method = _unit_method(lambda url, **kw: calls.append(url) or _sts_answer(200, OK_XML))
    header = presign_caller_identity(FAKE, REGION, "https://sts.example.test", SERVER_ID)
    for _ in range(3):
        identity = method({IAM_HEADER.lower(): header}, "10.0.0.1")
        assert identity.principal == "iam:arn:aws:iam::123456789012:user/alice"
        assert (identity.tenant, identity.role, identity.method) == ("acme", Role.EDITOR, "iam")
    assert calls == ["https://sts.example.test"]


def test_unreachable_sts_is_refused_and_not_cached():
    def down(url, **kw):
        raise requests.ConnectionError("refused")

    method = _unit_method(down)
    header = presign_caller_identity(FAKE, REGION, "https://sts.example.test", SERVER_ID)
    for _ in range(2):
        refusal = method({IAM_HEADER.lower(): header}, None)
        assert isinstance(refusal, Refusal) and "could not be reached" in refusal.reason
    assert method.sts_calls == 2


def test_a_client_chosen_url_is_never_contacted():
    method = _unit_method(lambda url, **kw: pytest.fail(f"contacted {url}"))
    header = presign_caller_identity(FAKE, REGION, "https://attacker.example", SERVER_ID)
    refusal = method({IAM_HEADER.lower(): header}, None)
    assert "signed for https://attacker.example" in refusal.reason


def test_server_id_outside_the_signature_is_refused():
    header = presign_caller_identity(FAKE, REGION, "https://sts.example.test", "other")
    doc = json.loads(base64.b64decode(header))
    doc["headers"]["X-MLflow-Tenant-Server-Id"] = SERVER_ID  # changed after signing
    doc["headers"]["Authorization"] = doc["headers"]["Authorization"].replace(
        ";x-mlflow-tenant-server-id", "")
    tampered = encode_signed_request("POST", doc["url"], doc["body"], doc["headers"])
    refusal = _unit_method(lambda url, **kw: pytest.fail("asked STS"))(
        {IAM_HEADER.lower(): tampered}, None)
    assert "does not cover a X-MLflow-Tenant-Server-Id" in refusal.reason


def test_only_get_caller_identity_is_replayed():
    with pytest.raises(IamError, match="not an sts:GetCallerIdentity"):
        decode_signed_request(encode_signed_request(
            "POST", "https://sts.example.test", "Action=AssumeRole&Version=2011-06-15", {}))


def test_iam_method_without_server_id_stops_the_server_at_start():
    with pytest.raises(ConfigError, match="server_id"):
        IamMethod(Settings(server_id=""), registry=None, cache=TtlCache(1), bindings=object())


# -- end to end, raw HTTP --------------------------------------------------------------------
def test_signed_identity_reaches_its_bound_tenant(world):
    response = _search(world, _signed(world))
    assert response.status_code == 200, response.text


def test_assumed_role_session_acts_as_its_role(world):
    assert world.bindings.lookup(normalize_arn(world.arns["ci"])) == {world.tenant: Role.VIEWER}
    assert _search(world, _signed(world, "ci")).status_code == 200


@pytest.mark.parametrize(("shift", "reason"), [
    (timedelta(minutes=-16), "older than 15 minutes"),
    (timedelta(minutes=10), "dated in the future"),
])
def test_stale_or_future_signatures_are_refused(world, shift, reason):
    at = datetime.now(UTC).replace(tzinfo=None) + shift
    with mock.patch("botocore.auth.get_current_datetime", return_value=at):
        header = _signed(world)
    response = _search(world, header)
    assert response.status_code == 401 and reason in response.json()["message"]


def test_unbinding_takes_effect_within_the_cache_bound(world):
    iam = world.moto.client("iam")
    name = f"carol-{secrets.token_hex(3)}"
    arn = iam.create_user(UserName=name)["User"]["Arn"]
    key = iam.create_access_key(UserName=name)["AccessKey"]
    header = presign_caller_identity(
        ReadOnlyCredentials(key["AccessKeyId"], key["SecretAccessKey"], None), REGION,
        world.moto.url, SERVER_ID)
    world.bindings.bind(world.tenant, arn, "viewer")
    assert _search(world, header).status_code == 200
    world.bindings.unbind(world.tenant, arn)
    time.sleep(1.5)  # the fixture's auth_cache_ttl_seconds is 1
    refused = _search(world, header)
    assert refused.status_code == 401 and "not bound to a tenant" in refused.json()["message"]


def test_identity_bound_to_two_tenants_picks_by_workspace(world):
    second = f"i{secrets.token_hex(4)}"
    world.server.registry.create_tenant(second)
    iam = world.moto.client("iam")
    name = f"dan-{secrets.token_hex(3)}"
    arn = iam.create_user(UserName=name)["User"]["Arn"]
    key = iam.create_access_key(UserName=name)["AccessKey"]
    header = presign_caller_identity(
        ReadOnlyCredentials(key["AccessKeyId"], key["SecretAccessKey"], None), REGION,
        world.moto.url, SERVER_ID)
    world.bindings.bind(world.tenant, arn, "viewer")
    world.bindings.bind(second, arn, "viewer")
    assert _search(world, header, workspace=second).status_code == 200
    unnamed = _search(world, header)
    assert unnamed.status_code == 401 and "several tenants" in unnamed.json()["message"]


def test_garbage_iam_header_is_refused(world):
    response = _search(world, "%%%not-base64")
    assert response.status_code == 401 and "not base64-encoded JSON" in response.json()["message"]


# -- end to end, stock client and CLI as subprocesses --------------------------------------------
CLIENT_SCRIPT = r"""
import json, os, sys
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
out = {}
for profile in sys.argv[1:]:
    os.environ["MLFLOW_TENANT_PROFILE"] = profile
    try:
        client = MlflowClient()
        if profile == "alice":
            client.create_experiment("made-by-iam")
        out[profile] = {"ok": sorted(e.name for e in client.search_experiments())}
    except MlflowException as exc:
        out[profile] = {"error": exc.message}
print("RESULT " + json.dumps(out))
"""


def test_stock_client_authenticates_and_is_refused_by_aws_iam(world, tmp_path):
    env = _client_env(world, tmp_path, "alice")
    profiles = ["alice", "ci", "bob", "wrong-server", "forged"]
    done = subprocess.run([sys.executable, "-c", CLIENT_SCRIPT, *profiles], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["alice"] == {"ok": ["made-by-iam"]}
    assert result["ci"] == {"ok": ["made-by-iam"]}  # single binding: no tenant needed
    assert "is not bound to a tenant" in result["bob"]["error"]
    assert "profile 'bob'" in result["bob"]["error"]
    assert "signed for server id 'another-platform'" in result["wrong-server"]["error"]
    assert "AWS STS refused the signed request (SignatureDoesNotMatch)" in \
        result["forged"]["error"]
    for c in world.creds.values():
        assert c.secret_key not in done.stdout + done.stderr
    log = world.server.process.log_path.read_text()
    assert all(c.secret_key not in log for c in world.creds.values())
    assert "Signature=" not in log


def test_mlflow_cli_lists_experiments_as_an_aws_identity(world, tmp_path):
    env = _client_env(world, tmp_path, "alice")
    ok = subprocess.run([sys.executable, "-m", "mlflow", "experiments", "search"], env=env,
                        capture_output=True, text=True, timeout=180)
    assert ok.returncode == 0, ok.stderr
    env["MLFLOW_TENANT_PROFILE"] = "bob"
    refused = subprocess.run([sys.executable, "-m", "mlflow", "experiments", "search"], env=env,
                             capture_output=True, text=True, timeout=180)
    assert refused.returncode != 0
    assert "not bound to a tenant" in refused.stderr and "profile 'bob'" in refused.stderr


def test_boto3_session_can_sign_with_the_client_signer(world, tmp_path):
    """The client's IamSigner (boto3 credential chain) produces what the server accepts."""
    from mlflow_tenant_plugins.client.aws_iam import IamSigner

    with mock.patch.dict("os.environ", {"AWS_SHARED_CREDENTIALS_FILE": str(world.aws_file),
                                        "AWS_ENDPOINT_URL": world.moto.url,
                                        "AWS_DEFAULT_REGION": REGION}):
        signer = IamSigner(aws_profile="alice", server_id=SERVER_ID)
        header = signer.header_value(world.server.url)
        assert signer.header_value(world.server.url) == header  # reused, not re-signed
    assert _search(world, header).status_code == 200


# -- the admin CLI's iam verbs -------------------------------------------------------------------
def _admin(world: World, capsys, *args: str) -> tuple[int, str, str]:
    from mlflow_tenant_plugins.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--db", world.server.db_uri, *args])
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


def test_admin_cli_binds_lists_and_unbinds_iam_identities(world, capsys):
    role = "arn:aws:iam::123456789012:role/ops/deployer-cli"
    status, out, _ = _admin(world, capsys, "iam", "bind", world.tenant, role, "--role",
                            "deployer", "--json")
    assert status == 0
    bound = json.loads(out)
    assert (bound["arn"], bound["role"]) == ("arn:aws:iam::123456789012:role/deployer-cli",
                                             "deployer")
    status, out, _ = _admin(world, capsys, "iam", "list", world.tenant, "--json")
    assert bound["arn"] in [b["arn"] for b in json.loads(out)]
    status, out, _ = _admin(world, capsys, "iam", "list")
    assert status == 0 and "deployer-cli" in out
    status, out, _ = _admin(world, capsys, "iam", "unbind", world.tenant,
                            "arn:aws:sts::123456789012:assumed-role/deployer-cli/s", "--json")
    assert status == 0 and json.loads(out)["unbound"] is True
    assert bound["arn"] not in [b.arn for b in world.bindings.list(world.tenant)]


@pytest.mark.parametrize(("args", "complaint"), [
    (("iam", "bind", "TENANT", "not-an-arn", "--role", "viewer"), "not an IAM or STS ARN"),
    (("iam", "bind", "nosuchtenant", "arn:aws:iam::123456789012:user/x", "--role", "viewer"),
     "does not exist"),
    (("iam", "unbind", "TENANT", "arn:aws:iam::123456789012:user/never-bound"), "not bound"),
    (("iam", "bind", "TENANT", "arn:aws:iam::123456789012:user/x", "--role", "owner"), "owner"),
])
def test_admin_cli_iam_errors_are_one_line_with_exit_2(world, capsys, args, complaint):
    args = tuple(world.tenant if a == "TENANT" else a for a in args)
    status, _out, err = _admin(world, capsys, *args)
    assert status == 2
    assert complaint in err and len(err.strip().splitlines()) == 1

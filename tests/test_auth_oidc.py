"""AWS ALB OIDC (``x-amzn-oidc-data``): ES256 tokens verified against keys served by a local
key endpoint, end to end through a real tenant-auth server (oidc and key methods on)."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from mlflow_tenant_plugins.auth.oidc import AlbKeys, TokenError, b64url_decode, parse_token
from mlflow_tenant_plugins.tenancy.roles import Role
from tests.fixtures.servers import MlflowServer, start_mlflow_server, stop_mlflow_server

ALB_ARN = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/mlflow/50dc6c49"
OTHER_ARN = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/other/1111"
SEARCH = "/api/2.0/mlflow/experiments/search"
CREATE = "/api/2.0/mlflow/experiments/create"


# -- a local stand-in for https://public-keys.auth.elb.REGION.amazonaws.com/KID ----------------
@dataclass
class KeyServer:
    url: str
    pems: dict[str, bytes] = field(default_factory=dict)
    fetches: Counter = field(default_factory=Counter)

    def new_key(self) -> tuple[str, ec.EllipticCurvePrivateKey]:
        kid = f"{secrets.token_hex(4)}-1234-1234-1234-{secrets.token_hex(6)}"
        key = ec.generate_private_key(ec.SECP256R1())
        self.pems[kid] = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return kid, key


@pytest.fixture(scope="module")
def key_server() -> Iterator[KeyServer]:
    state: KeyServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # path: /REGION/KID
            _, region, kid = self.path.split("/", 2)
            state.fetches[(region, kid)] += 1
            pem = state.pems.get(kid)
            self.send_response(200 if pem else 404)
            self.end_headers()
            self.wfile.write(pem or b"not found")

        def log_message(self, *_args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = KeyServer(url=f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    thread.join(timeout=10)
    httpd.server_close()


@pytest.fixture(scope="module")
def oidc_server(tmp_path_factory, key_server: KeyServer) -> Iterator[MlflowServer]:
    server = start_mlflow_server(tmp_path_factory.mktemp("oidc-server"), extra_env={
        "MLFLOW_TENANT_AUTH_METHODS": "oidc,key",
        "MLFLOW_TENANT_ALB_ARNS": ALB_ARN,
        # These tests exercise provisioning from asserted claims; the default ("registry")
        # is covered in tests/test_trust_rules.py.
        "MLFLOW_TENANT_EXTERNAL_ROLES": "asserted",
        "MLFLOW_TENANT_ALB_PUBLIC_KEY_URL": key_server.url + "/{region}/{kid}",
    })
    yield server
    stop_mlflow_server(server)


@pytest.fixture(scope="module")
def signing_key(key_server: KeyServer) -> tuple[str, ec.EllipticCurvePrivateKey]:
    return key_server.new_key()


def _b64(data: bytes, pad: bool) -> str:
    text = base64.urlsafe_b64encode(data).decode()
    return text if pad else text.rstrip("=")


def make_token(key: ec.EllipticCurvePrivateKey, kid: str, claims: dict, *, signer: str = ALB_ARN,
               exp: float | None = None, pad: bool = True, alg: str = "ES256") -> str:
    """An ALB-style token: exp and signer in the header, segments padded like the ALB's."""
    exp = time.time() + 120 if exp is None else exp
    header = {"typ": "JWT", "kid": kid, "alg": alg, "iss": "https://idp.example.com",
              "client": "mlflow", "signer": signer, "exp": int(exp)}
    body = {"sub": "1234", "exp": int(exp), "iss": "https://idp.example.com", **claims}
    signing_input = ".".join(_b64(json.dumps(part).encode(), pad) for part in (header, body))
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'), pad)}"


def _new_tenant(server: MlflowServer) -> str:
    name = f"o{secrets.token_hex(4)}"
    server.registry.create_tenant(name)
    return name


def _call(server: MlflowServer, token: str, path: str = SEARCH, workspace: str | None = None,
          body: dict | None = None) -> requests.Response:
    headers = {"x-amzn-oidc-data": token}
    if workspace:
        headers["X-MLFLOW-WORKSPACE"] = workspace
    if body is None:
        return requests.post(server.url + path, json={"max_results": 10}, headers=headers,
                             timeout=30)
    return requests.post(server.url + path, json=body, headers=headers, timeout=30)


# -- unit: decoding ----------------------------------------------------------------------------
def test_segments_decode_with_or_without_alb_padding():
    assert b64url_decode("YWI=") == b"ab" == b64url_decode("YWI")
    assert b64url_decode("-_8") == b"\xfb\xff"


@pytest.mark.parametrize("raw", ["", "abc", "a.b", "a..c", "!!.e30.e30", "e30.bm90anNvbg.e30"])
def test_malformed_tokens_are_refused_before_any_key_is_fetched(raw):
    with pytest.raises(TokenError):
        parse_token(raw)


def test_unknown_kid_is_remembered_briefly_and_kid_cannot_steer_the_url(key_server):
    keys = AlbKeys(key_server.url + "/{region}/{kid}", "eu-west-1")
    for _ in range(3):
        with pytest.raises(TokenError, match="unknown signing key"):
            keys.get("no-such-kid")
    assert keys.fetches == 1
    with pytest.raises(TokenError, match="kid is missing or malformed"):
        keys.get("../../etc/passwd")
    assert keys.fetches == 1


# -- end to end ----------------------------------------------------------------------------------
def test_valid_token_reaches_its_tenant_and_provisions_the_principal(oidc_server, signing_key,
                                                                      key_server):
    kid, key = signing_key
    tenant = _new_tenant(oidc_server)
    email = f"alice-{secrets.token_hex(3)}@example.com"
    token = make_token(key, kid, {"email": email, "custom:tenant": tenant,
                                  "custom:role": "editor"})
    created = _call(oidc_server, token, CREATE, body={"name": "from-alb"})
    assert created.status_code == 200, created.text
    found = _call(oidc_server, token).json()["experiments"]
    assert [e["name"] for e in found] == ["from-alb"]
    assert oidc_server.registry.bindings_of(f"oidc:{email}") == {tenant: Role.EDITOR}
    assert key_server.fetches[("eu-west-1", kid)] == 1  # region from the signer ARN


def test_unpadded_token_is_accepted_too(oidc_server, signing_key):
    kid, key = signing_key
    tenant = _new_tenant(oidc_server)
    token = make_token(key, kid, {"email": "bob@example.com", "custom:tenant": tenant}, pad=False)
    assert _call(oidc_server, token).status_code == 200


def test_public_key_is_fetched_once_per_kid(oidc_server, key_server):
    kid, key = key_server.new_key()
    tenant = _new_tenant(oidc_server)
    for n in range(3):  # three distinct tokens signed with the same key
        token = make_token(key, kid, {"email": f"u{n}@example.com", "custom:tenant": tenant})
        assert _call(oidc_server, token).status_code == 200
    assert key_server.fetches[("eu-west-1", kid)] == 1


def test_absent_role_claim_means_viewer(oidc_server, signing_key):
    kid, key = signing_key
    tenant = _new_tenant(oidc_server)
    token = make_token(key, kid, {"email": "viewer@example.com", "custom:tenant": tenant})
    assert _call(oidc_server, token).status_code == 200
    refused = _call(oidc_server, token, CREATE, body={"name": "nope"})
    assert refused.status_code == 403, refused.text


def test_token_cannot_name_another_tenants_workspace(oidc_server, signing_key):
    kid, key = signing_key
    mine, theirs = _new_tenant(oidc_server), _new_tenant(oidc_server)
    token = make_token(key, kid, {"email": "carol@example.com", "custom:tenant": mine,
                                  "custom:role": "admin"})
    assert _call(oidc_server, token, workspace=theirs).status_code == 403


def test_claiming_the_platform_admin_name_grants_nothing(oidc_server, signing_key):
    kid, key = signing_key
    mine, theirs = _new_tenant(oidc_server), _new_tenant(oidc_server)
    token = make_token(key, kid, {"email": "platform-admin", "custom:tenant": mine})
    assert _call(oidc_server, token).status_code == 200
    assert _call(oidc_server, token, workspace=theirs).status_code == 403
    assert not oidc_server.registry.is_platform_admin("oidc:platform-admin")


def test_suspended_tenant_refuses_its_tokens_within_the_cache_bound(oidc_server, signing_key):
    kid, key = signing_key
    tenant = _new_tenant(oidc_server)
    token = make_token(key, kid, {"email": "dave@example.com", "custom:tenant": tenant})
    assert _call(oidc_server, token).status_code == 200
    oidc_server.registry.set_status(tenant, "suspended")
    time.sleep(1.5)  # the fixture's auth_cache_ttl_seconds is 1
    assert _call(oidc_server, token).status_code == 401


REFUSALS = {
    "wrong signer": (lambda k, kid, t: make_token(k, kid, {"email": "e@x", "custom:tenant": t},
                                                   signer=OTHER_ARN), "signer is not a trusted"),
    "expired": (lambda k, kid, t: make_token(k, kid, {"email": "e@x", "custom:tenant": t},
                                             exp=time.time() - 5), "expired"),
    "bad signature": (lambda k, kid, t: make_token(ec.generate_private_key(ec.SECP256R1()), kid,
                                                   {"email": "e@x", "custom:tenant": t}),
                      "signature does not verify"),
    "unknown kid": (lambda k, kid, t: make_token(k, "0000-unknown", {"email": "e@x",
                                                                     "custom:tenant": t}),
                    "unknown signing key"),
    "not ES256": (lambda k, kid, t: make_token(k, kid, {"email": "e@x", "custom:tenant": t},
                                               alg="HS256"), "alg must be ES256"),
    "malformed": (lambda k, kid, t: "not-a-jwt", "not a JWT"),
    "garbage segments": (lambda k, kid, t: "e30=.%%%.e30", "not base64url"),
    "invalid role": (lambda k, kid, t: make_token(k, kid, {"email": "e@x", "custom:tenant": t,
                                                           "custom:role": "owner"}),
                     "is not a role"),
    "no principal claim": (lambda k, kid, t: make_token(k, kid, {"custom:tenant": t}),
                           "no 'email' claim"),
    "unknown tenant": (lambda k, kid, t: make_token(k, kid, {"email": "e@x",
                                                             "custom:tenant": "nosuchtenant"}),
                       "not bound to an active tenant"),
}


@pytest.fixture(scope="module")
def some_tenant(oidc_server) -> str:
    return _new_tenant(oidc_server)


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_tokens_get_401_with_a_one_line_reason(oidc_server, signing_key, some_tenant, case):
    kid, key = signing_key
    build, reason = REFUSALS[case]
    response = _call(oidc_server, build(key, kid, some_tenant))
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error_code"] == "UNAUTHENTICATED"
    assert reason in body["message"] and "\n" not in body["message"]
    assert "Traceback" not in response.text

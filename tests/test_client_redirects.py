"""The client's credentials go only to the origin they were made for (issue 13, finding 3).

Two real HTTP servers on 127.0.0.1, the stock ``MlflowClient`` with ``MLFLOW_TRACKING_AUTH=
tenant`` and an aws-iam profile: the first server redirects, the second records what it got.
``requests`` drops ``Authorization`` when the host or port changes, but carried the IAM header
along, which the second host could replay to the platform within 15 minutes."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlflow_tenant_plugins.client import auth_provider
from mlflow_tenant_plugins.client.auth_provider import same_origin
from mlflow_tenant_plugins.wire import IAM_HEADER

KEY = "mlt_0123456789ab_" + "s" * 43
EMPTY_SEARCH = json.dumps({"experiments": []}).encode()


class Recorder(ThreadingHTTPServer):
    """Answers MLflow's searches (or redirects them to ``redirect_to``) and keeps the headers
    of every request it received."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[dict[str, str]] = []
        self.redirect_to: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def _answer(self) -> None:
        self.server.seen.append({k.lower(): v for k, v in self.headers.items()})
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.server.redirect_to and not self.path.startswith("/moved"):
            self.send_response(307)
            self.send_header("Location", self.server.redirect_to + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(EMPTY_SEARCH)))
        self.end_headers()
        self.wfile.write(EMPTY_SEARCH)

    do_GET = do_POST = _answer

    def log_message(self, *_args) -> None:  # keep test output clean
        pass


@pytest.fixture
def servers() -> Iterator[tuple[Recorder, Recorder]]:
    pair = (Recorder(), Recorder())
    threads = [threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True) for s in pair]
    for t in threads:
        t.start()
    yield pair
    for s in pair:
        s.shutdown()
        s.server_close()
    for t in threads:
        t.join(timeout=5)


@pytest.fixture
def iam_profile(tmp_path: Path, monkeypatch) -> None:
    """An aws-iam tenant profile with static (fake) AWS credentials: signing is local."""
    path = tmp_path / "tenants.toml"
    path.write_text('[ci]\nauth = "aws-iam"\ntenant = "acme"\n'
                    'sts_endpoint = "https://sts.us-east-1.amazonaws.com"\n')
    path.chmod(0o600)
    monkeypatch.setenv("MLFLOW_TENANT_PROFILES", str(path))
    monkeypatch.setenv("MLFLOW_TENANT_PROFILE", "ci")
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "tenant")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example-secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


def test_iam_identity_is_not_carried_by_a_redirect_to_another_host(servers, iam_profile):
    origin, elsewhere = servers
    origin.redirect_to = elsewhere.url + "/moved"
    with pytest.raises(MlflowException, match="redirected to another origin"):
        MlflowClient(tracking_uri=origin.url).search_experiments()
    assert IAM_HEADER.lower() in origin.seen[0]  # the platform itself got the identity
    assert not any(IAM_HEADER.lower() in h for h in elsewhere.seen), \
        "the IAM identity reached a host it was not signed for"


def test_iam_identity_follows_a_redirect_within_the_same_origin(servers, iam_profile):
    origin, _ = servers
    origin.redirect_to = origin.url + "/moved"
    assert MlflowClient(tracking_uri=origin.url).search_experiments() == []
    assert len(origin.seen) == 2 and all(IAM_HEADER.lower() in h for h in origin.seen)


def test_api_key_is_not_carried_by_a_redirect_to_another_host(servers, monkeypatch):
    origin, elsewhere = servers
    origin.redirect_to = elsewhere.url + "/moved"
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "tenant")
    monkeypatch.setenv("MLFLOW_TENANT_KEY", KEY)
    monkeypatch.delenv("MLFLOW_TENANT_PROFILE", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    MlflowClient(tracking_uri=origin.url).search_experiments()
    assert origin.seen[0]["authorization"] == f"Bearer {KEY}"
    assert elsewhere.seen and not any("authorization" in h for h in elsewhere.seen)


def test_explicit_server_id_warns_once_when_another_host_is_contacted(
        servers, iam_profile, tmp_path, caplog):
    origin, _ = servers
    path = tmp_path / "tenants.toml"
    path.write_text(path.read_text() + 'server_id = "mlflow.example.com"\n')
    auth_provider._auth_by_config.clear()
    with caplog.at_level(logging.WARNING, logger="mlflow_tenant_plugins.client.aws_iam"):
        client = MlflowClient(tracking_uri=origin.url)
        client.search_experiments()
        client.search_experiments()
    warned = [r.getMessage() for r in caplog.records if "mlflow.example.com" in r.getMessage()]
    assert len(warned) == 1 and "127.0.0.1" in warned[0]
    assert "example-secret" not in warned[0]


def test_explicit_server_id_matching_the_host_gives_no_warning(servers, iam_profile, tmp_path,
                                                                 caplog):
    origin, _ = servers
    path = tmp_path / "tenants.toml"
    path.write_text(path.read_text() + 'server_id = "127.0.0.1"\n')
    auth_provider._auth_by_config.clear()
    with caplog.at_level(logging.WARNING, logger="mlflow_tenant_plugins.client.aws_iam"):
        MlflowClient(tracking_uri=origin.url).search_experiments()
    assert not [r for r in caplog.records if r.name.endswith("aws_iam")]


@pytest.mark.parametrize(("sent_to", "redirected_to", "same"), [
    ("http://h:5000/a", "http://h:5000/b", True),
    ("http://h/a", "https://h/a", True),  # an upgrade to TLS on the same host
    ("https://h/a", "http://h/a", False),  # never a downgrade
    ("http://h:5000/a", "http://h:5001/a", False),
    ("http://h/a", "http://evil.example/a", False),
    ("http://h:5000/a", "https://h:5000/a", False),
    ("https://H:443/a", "https://h/b", True),
])
def test_same_origin_rule(sent_to, redirected_to, same):
    assert same_origin(sent_to, redirected_to) is same

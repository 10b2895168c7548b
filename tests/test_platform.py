"""The running platform is one object per app, handed to the handlers through the app: two
apps in one process each serve from their own platform (module globals filled by an
``install()`` could not), and a part built lazily is built once, whatever the concurrency."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from flask import Flask

from mlflow_tenant_plugins.auth.identity import set_identity
from mlflow_tenant_plugins.platform import Once, Platform, current_platform
from mlflow_tenant_plugins.tenancy import Role
from mlflow_tenant_plugins.tenancy.entities import Identity


class FakeDeployments:
    def __init__(self, names: list[str]):
        self.names = names

    def list(self, tenant: str) -> list[dict]:
        return [{"name": n, "tenant": tenant} for n in self.names]


def _app(name: str, service: FakeDeployments) -> Flask:
    from mlflow_tenant_plugins.deployments import routes

    app = Flask(name)

    @app.before_request
    def identify():
        set_identity(Identity("u", "acme", Role.VIEWER, False, "test"))

    routes.register(app, Platform(SimpleNamespace(), SimpleNamespace(),
                                  deployments=lambda: service))
    return app


def test_two_apps_in_one_process_each_serve_from_their_own_platform():
    first = _app("first", FakeDeployments(["a"]))
    second = _app("second", FakeDeployments(["b", "c"]))
    path = "/api/2.0/tenants/deployments/list"
    assert [d["name"] for d in first.test_client().get(path).json["deployments"]] == ["a"]
    assert [d["name"] for d in second.test_client().get(path).json["deployments"]] == ["b", "c"]
    assert [d["name"] for d in first.test_client().get(path).json["deployments"]] == ["a"]


def test_an_app_without_a_platform_says_how_to_start_the_server():
    with Flask("bare").test_request_context("/"), pytest.raises(RuntimeError,
                                                                 match="--app-name tenant-auth"):
        current_platform()


def test_a_lazy_part_is_built_once_under_concurrent_first_use():
    built = []
    gate = threading.Barrier(8)

    def build() -> object:
        built.append(1)
        return object()

    once = Once(build)

    def use(out: list) -> None:
        gate.wait(timeout=10)
        out.append(once())

    results: list = []
    threads = [threading.Thread(target=use, args=(results,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(built) == 1 and len({id(r) for r in results}) == 1 and len(results) == 8

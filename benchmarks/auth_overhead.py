"""What authentication costs: one run, three servers on this machine with the same workers
and database kind (sqlite) — stock MLflow without auth (the anchor), stock basic-auth in its
default configuration, and tenant-auth with API keys — under the same mixed load
(get-run, log-metric, search-runs) from several client threads, one server at a time.

Prints one JSON line: each server's req/s, p50/p99 and errors, and the ratios
tenant-auth / no-auth (target ≥ 0.85) and tenant-auth / basic-auth (target ≥ 10).

    .venv/bin/python benchmarks/auth_overhead.py [--workers 1] [--threads 4] [--seconds 15]
                                                 [--mix full|anchor]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import requests
from _load import run_load

from tests.fixtures.servers import MlflowServer, start_mlflow_server, stop_mlflow_server


def _prepare(server: MlflowServer, session: requests.Session) -> tuple[str, str]:
    url = server.url
    exp = session.post(f"{url}/api/2.0/mlflow/experiments/create",
                       json={"name": f"bench-{time.time_ns()}"})
    exp.raise_for_status()
    exp_id = exp.json()["experiment_id"]
    run = session.post(f"{url}/api/2.0/mlflow/runs/create", json={"experiment_id": exp_id})
    run.raise_for_status()
    run_id = run.json()["run"]["info"]["run_id"]
    for i in range(20):
        session.post(f"{url}/api/2.0/mlflow/runs/log-metric",
                     json={"run_id": run_id, "key": "m", "value": i, "timestamp": i, "step": i})
    return exp_id, run_id


def _mix(url: str, exp_id: str, run_id: str, kind: str = "full") -> list:
    """``full``: the issue's get-run/log-metric/search-runs mix; ``anchor``: DESIGN.md's
    get-run/log-metric mix, where the per-request cost of authentication shows most."""
    counter = iter(range(10**9))
    if kind == "anchor":
        return [
            (0.5, lambda s: s.get(f"{url}/api/2.0/mlflow/runs/get", params={"run_id": run_id})),
            (0.5, lambda s: s.post(f"{url}/api/2.0/mlflow/runs/log-metric", json={
                "run_id": run_id, "key": "load", "value": 1.0,
                "timestamp": int(time.time() * 1000), "step": next(counter)})),
        ]
    return [
        (0.4, lambda s: s.get(f"{url}/api/2.0/mlflow/runs/get", params={"run_id": run_id})),
        (0.4, lambda s: s.post(f"{url}/api/2.0/mlflow/runs/log-metric", json={
            "run_id": run_id, "key": "load", "value": 1.0,
            "timestamp": int(time.time() * 1000), "step": next(counter)})),
        (0.2, lambda s: s.post(f"{url}/api/2.0/mlflow/runs/search",
                               json={"experiment_ids": [exp_id], "max_results": 10})),
    ]


def _session_factory(auth_header: dict) -> callable:
    def make() -> requests.Session:
        s = requests.Session()
        s.headers.update(auth_header)
        return s

    return make


def _no_auth(workdir: Path, workers: int) -> tuple[MlflowServer, dict]:
    server = start_mlflow_server(workdir / "noauth", app_name=None, enable_workspaces=False,
                                 workers=workers)
    return server, {}


def _basic_auth(workdir: Path, workers: int) -> tuple[MlflowServer, dict]:
    server = start_mlflow_server(workdir / "basic", app_name="basic-auth",
                                 enable_workspaces=False, workers=workers)
    admin = ("admin", server.env["MLFLOW_AUTH_ADMIN_PASSWORD"])
    password = "bench-password-123"
    requests.post(f"{server.url}/api/2.0/mlflow/users/create", auth=admin,
                  json={"username": "bench", "password": password}).raise_for_status()
    import base64

    token = base64.b64encode(f"bench:{password}".encode()).decode()
    return server, {"Authorization": f"Basic {token}"}


def _tenant_auth(workdir: Path, workers: int) -> tuple[MlflowServer, dict]:
    server = start_mlflow_server(workdir / "tenant", workers=workers,
                                 extra_env={"MLFLOW_TENANT_AUTH_CACHE_TTL_SECONDS": "5"})
    server.registry.create_tenant("bench")
    _info, key = server.registry.create_key("bench", "editor")
    return server, {"Authorization": f"Bearer {key}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--mix", choices=("full", "anchor"), default="full")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp:
        for name, start in (("no_auth", _no_auth), ("basic_auth", _basic_auth),
                            ("tenant_auth", _tenant_auth)):
            server, header = start(Path(tmp), args.workers)
            try:
                make = _session_factory(header)
                exp_id, run_id = _prepare(server, make())
                load = run_load(make, _mix(server.url, exp_id, run_id, args.mix),
                                args.threads, args.seconds)
                results[name] = load.to_dict()
            finally:
                stop_mlflow_server(server)
    print(json.dumps({
        "benchmark": "auth_overhead",
        "workers": args.workers,
        "mix": args.mix,
        "threads": args.threads,
        "seconds": args.seconds,
        **results,
        "ratio_tenant_vs_noauth": round(results["tenant_auth"]["rps"]
                                        / results["no_auth"]["rps"], 3),
        "ratio_tenant_vs_basicauth": round(results["tenant_auth"]["rps"]
                                           / max(results["basic_auth"]["rps"], 1e-9), 1),
    }))


if __name__ == "__main__":
    main()

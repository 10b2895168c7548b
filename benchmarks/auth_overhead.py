"""What authentication costs: one run, servers on this machine with the same workers and
database kind (sqlite) — stock MLflow without auth (the anchor), stock without auth but with
workspaces on (what tenant-auth builds on), stock basic-auth in its default configuration, and
tenant-auth with API keys — under the same mixed load (get-run, log-metric, search-runs) from
several client threads, one server at a time.

The servers run side by side and are loaded one at a time in interleaved rounds, so the
machine's drift falls on all of them alike. Prints one JSON line: each server's median req/s
over the rounds, p50/p99 and errors, and the ratios tenant-auth / no-auth (target ≥ 0.85) and
tenant-auth / basic-auth (target ≥ 10).

    .venv/bin/python benchmarks/auth_overhead.py [--workers 1] [--threads 4] [--seconds 8]
                                                 [--rounds 5] [--mix full|anchor]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import requests
from _load import LoadResult, median, run_load

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
    """``full``: the get-run/log-metric/search-runs mix of the README's performance table;
    ``anchor``: a get-run/log-metric mix, where the per-request cost of authentication shows
    most."""
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


def _no_auth_workspaces(workdir: Path, workers: int) -> tuple[MlflowServer, dict]:
    """A second anchor: stock, no auth, with workspaces on as tenant-auth needs them."""
    server = start_mlflow_server(workdir / "noauth-ws", app_name=None, enable_workspaces=True,
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


def _pooled(loads: list) -> dict:
    """One server's rounds together: median req/s across rounds (robust to a noisy round),
    latency percentiles over every request."""
    pooled = LoadResult(sum(x.requests for x in loads), sum(x.errors for x in loads),
                        sum(x.seconds for x in loads), [t for x in loads for t in x.latencies])
    return {**pooled.to_dict(), "rps": round(median([x.rps for x in loads]), 1),
            "rps_rounds": [round(x.rps, 1) for x in loads]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0, help="per server per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mix", choices=("full", "anchor"), default="full")
    args = parser.parse_args()
    starters = (("no_auth", _no_auth), ("no_auth_workspaces", _no_auth_workspaces),
                ("basic_auth", _basic_auth), ("tenant_auth", _tenant_auth))
    servers: dict = {}
    loads: dict[str, list] = {name: [] for name, _ in starters}
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp:
        try:
            for name, start in starters:
                server, header = start(Path(tmp), args.workers)
                make = _session_factory(header)
                servers[name] = (server, make, _prepare(server, make()))
            # A short unmeasured round first (each server's first requests warm its caches),
            # then all servers loaded one at a time in rotating order: drift in the machine's
            # speed (disk, neighbours) lands on every server alike.
            for server, make, (exp_id, run_id) in servers.values():
                run_load(make, _mix(server.url, exp_id, run_id, args.mix), args.threads, 2.0,
                         warmup=0.0)
            names = list(servers)
            for r in range(args.rounds):
                k = r % len(names)
                for name in names[k:] + names[:k]:
                    server, make, (exp_id, run_id) = servers[name]
                    loads[name].append(run_load(
                        make, _mix(server.url, exp_id, run_id, args.mix), args.threads,
                        args.seconds, warmup=1.0))
        finally:
            for server, _make, _ids in servers.values():
                stop_mlflow_server(server)
    results = {name: _pooled(rounds) for name, rounds in loads.items()}
    print(json.dumps({
        "benchmark": "auth_overhead",
        "workers": args.workers,
        "mix": args.mix,
        "threads": args.threads,
        "seconds_per_round": args.seconds,
        "rounds": args.rounds,
        **results,
        "ratio_tenant_vs_noauth": round(results["tenant_auth"]["rps"]
                                        / results["no_auth"]["rps"], 3),
        "ratio_tenant_vs_noauth_workspaces": round(
            results["tenant_auth"]["rps"] / results["no_auth_workspaces"]["rps"], 3),
        "ratio_tenant_vs_basicauth": round(results["tenant_auth"]["rps"]
                                           / max(results["basic_auth"]["rps"], 1e-9), 1),
    }))


if __name__ == "__main__":
    main()

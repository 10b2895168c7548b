"""The production topology under load: tenant-auth on PostgreSQL, one instance beside two
instances (same workers each) behind a client-side round robin, under the same mixed
multi-tenant load (get-run, log-metric, search-runs from several tenants' keys). Prints one
JSON line: req/s, p50/p99, errors for each, and the two/one ratio.

On one 2-core machine both instances share the same cores, so this shows that scaling out
works (no errors, no cross-tenant effects, throughput holds) rather than the gain separate
machines would give.

    .venv/bin/python benchmarks/scale_out.py [--workers 2] [--threads 8] [--seconds 15]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import threading
import time
from pathlib import Path

import requests
from _load import run_load

from tests.fixtures.postgres import create_database, drop_database, pg_url_for
from tests.fixtures.servers import start_mlflow_server, stop_mlflow_server

TENANTS = 4


def _prepare(url: str, key: str) -> tuple[str, str]:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {key}"
    exp = s.post(f"{url}/api/2.0/mlflow/experiments/create",
                 json={"name": f"load-{time.time_ns()}"}).json()["experiment_id"]
    run = s.post(f"{url}/api/2.0/mlflow/runs/create",
                 json={"experiment_id": exp}).json()["run"]["info"]["run_id"]
    return exp, run


def _measure(urls: list[str], keys: list[str], threads: int, seconds: float) -> dict:
    targets = [(key, *_prepare(urls[0], key)) for key in keys]
    picks = itertools.cycle(range(len(targets)))
    lock = threading.Lock()
    url_cycle = itertools.cycle(urls)

    def make() -> requests.Session:
        with lock:
            key, exp, run = targets[next(picks)]
            url = next(url_cycle)
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {key}"
        s.bench = (url, exp, run)  # type: ignore[attr-defined]
        return s

    step = itertools.count()
    mix = [
        (0.4, lambda s: s.get(f"{s.bench[0]}/api/2.0/mlflow/runs/get",
                              params={"run_id": s.bench[2]})),
        (0.4, lambda s: s.post(f"{s.bench[0]}/api/2.0/mlflow/runs/log-metric", json={
            "run_id": s.bench[2], "key": "m", "value": 1.0,
            "timestamp": int(time.time() * 1000), "step": next(step)})),
        (0.2, lambda s: s.post(f"{s.bench[0]}/api/2.0/mlflow/runs/search",
                               json={"experiment_ids": [s.bench[1]], "max_results": 10})),
    ]
    return run_load(make, mix, threads, seconds).to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    database = create_database("mlt_bench")
    url = pg_url_for(database)
    servers = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            first = start_mlflow_server(Path(tmp) / "a", backend_uri=url, workers=args.workers)
            servers.append(first)
            keys = []
            for i in range(TENANTS):
                first.registry.create_tenant(f"load{i}")
                keys.append(first.registry.create_key(f"load{i}", "editor")[1])
            one = _measure([first.url], keys, args.threads, args.seconds)
            env = {"MLFLOW_FLASK_SERVER_SECRET_KEY": first.env["MLFLOW_FLASK_SERVER_SECRET_KEY"]}
            second = start_mlflow_server(Path(tmp) / "b", backend_uri=url, workers=args.workers,
                                         extra_env=env)
            servers.append(second)
            two = _measure([first.url, second.url], keys, args.threads, args.seconds)
    finally:
        for server in servers:
            stop_mlflow_server(server)
        drop_database(database)
    print(json.dumps({
        "benchmark": "scale_out", "workers_per_instance": args.workers,
        "threads": args.threads, "tenants": TENANTS, "seconds": args.seconds,
        "one_instance": one, "two_instances": two,
        "ratio_two_vs_one": round(two["rps"] / one["rps"], 2),
    }))


if __name__ == "__main__":
    main()

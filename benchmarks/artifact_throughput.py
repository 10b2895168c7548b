"""Artifact throughput: tenant-s3 through tenant-auth against a stock server and raw boto3.

One moto server (S3 on loopback), one bucket, three ways to move the same bytes:

  (a) stock ``mlflow server --artifacts-destination s3://BUCKET/stock`` (no auth, no workspaces)
  (a') the same with ``--enable-workspaces``, which tenant-auth builds on (a second anchor)
  (b) ``mlflow server --app-name tenant-auth --enable-workspaces
      --artifacts-destination tenant-s3://BUCKET/tenant``, one tenant, its API key
  (c) raw boto3 ``upload_file``/``download_file`` against the same bucket (the limit)

For (a) and (b) the stock ``MlflowClient`` uploads N small files with ``log_artifacts``, one
big file with ``log_artifact``, and downloads both back: one warm-up artifact each way, then
``--rounds`` interleaved rounds, median per operation. Target: (b) >= 0.9 x (a).

    python benchmarks/artifact_throughput.py               # 100 x 1 MB and 256 MB
    python benchmarks/artifact_throughput.py --files 20 --big-mb 32   # a quick run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import _load  # noqa: F401  (puts the repository root on sys.path, for tests.fixtures)
import boto3

from tests.fixtures.process import Process, free_port

REGION = "us-east-1"
BUCKET = "mlt-bench"


@contextlib.contextmanager
def _process(args: list[str], log: Path, env: dict[str, str], ready: str) -> Iterator[None]:
    """Run ``args`` until the block ends, once ``ready`` (a URL) answers 200; stop by PID."""
    proc = Process(args, log, env=env, cwd=log.parent)
    try:
        proc.wait_http(ready, timeout=180, ok=lambda r: r.status_code == 200)
        yield
    finally:
        proc.stop(timeout=20)


def _base_env(moto_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env.update({
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": moto_url,
        "MLFLOW_S3_ENDPOINT_URL": moto_url, "PYTHONUNBUFFERED": "1",
    })
    return env


def _server(work: Path, env: dict[str, str], destination: str, tenant_auth: bool,
            workspaces: bool = False):
    port = free_port()
    args = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{work}/mlflow.db",
            "--artifacts-destination", destination]
    if workspaces or tenant_auth:
        args.append("--enable-workspaces")
    if tenant_auth:
        args += ["--app-name", "tenant-auth"]
        env = {**env, "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
               "MLFLOW_TENANT_AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"]}
    url = f"http://127.0.0.1:{port}"
    return url, _process(args, work / "server.log", env, f"{url}/health")


def _timed(results: dict[str, list[float]], name: str, nbytes: int,
           fn: Callable[[], object]) -> None:
    start = time.perf_counter()
    fn()
    results.setdefault(name, []).append(nbytes / 2**20 / (time.perf_counter() - start))


class _ThroughMlflow:
    """One server, as a tenant user's stock ``MlflowClient`` sees it."""

    def __init__(self, url: str, token: str | None, small: Path, big: Path, out: Path):
        from mlflow.tracking import MlflowClient

        self.env = {"MLFLOW_TRACKING_TOKEN": token} if token else {}
        with self._environment():
            self.client = MlflowClient(tracking_uri=url)
            self.run = self.client.create_run(
                self.client.create_experiment(f"bench-{secrets.token_hex(3)}")).info.run_id
        self.small, self.big, self.out = small, big, out
        self.small_bytes = sum(f.stat().st_size for f in small.iterdir())
        self.first_upload_s = 0.0

    @contextlib.contextmanager
    def _environment(self) -> Iterator[None]:
        saved = {n: os.environ.pop(n) for n in [n for n in os.environ if n.startswith("MLFLOW_")]}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for n in self.env:
                os.environ.pop(n, None)
            os.environ.update(saved)

    def warm(self) -> None:
        """One artifact there and back before timing: the server's first S3 call builds its
        boto3 client (for tenant-s3 also its tenant's credentials), once per worker."""
        warm = next(self.small.iterdir())
        with self._environment():
            started = time.perf_counter()
            self.client.log_artifact(self.run, str(warm), "warm")
            self.first_upload_s = time.perf_counter() - started
            for i in range(8):  # the server's other workers, if the connections reach them
                self.client.log_artifact(self.run, str(warm), f"warm/{i}")
            (self.out / "warm").mkdir(parents=True)
            self.client.download_artifacts(self.run, "warm", str(self.out / "warm"))

    def round(self, r: int, results: dict[str, list[float]]) -> None:
        client, run, big = self.client, self.run, self.big
        with self._environment():
            _timed(results, "upload small", self.small_bytes,
                   lambda: client.log_artifacts(run, str(self.small), f"s{r}"))
            _timed(results, "upload big", big.stat().st_size,
                   lambda: client.log_artifact(run, str(big), f"b{r}"))
            for sub in (f"s{r}", f"b{r}"):
                (self.out / sub).mkdir(parents=True)
            _timed(results, "download small", self.small_bytes,
                   lambda: client.download_artifacts(run, f"s{r}", str(self.out / f"s{r}")))
            _timed(results, "download big", big.stat().st_size,
                   lambda: client.download_artifacts(run, f"b{r}/{big.name}",
                                                     str(self.out / f"b{r}")))


def _raw_round(moto_url: str, r: int, small: Path, big: Path, out: Path,
               results: dict[str, list[float]]) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name=REGION,
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    files = sorted(small.iterdir())
    small_bytes = sum(f.stat().st_size for f in files)
    dest = out / f"r{r}"
    dest.mkdir(parents=True)
    _timed(results, "upload small", small_bytes,
           lambda: [s3.upload_file(str(f), BUCKET, f"raw/{r}/s/{f.name}") for f in files])
    _timed(results, "upload big", big.stat().st_size,
           lambda: s3.upload_file(str(big), BUCKET, f"raw/{r}/big.bin"))
    _timed(results, "download small", small_bytes,
           lambda: [s3.download_file(BUCKET, f"raw/{r}/s/{f.name}", str(dest / f.name))
                    for f in files])
    _timed(results, "download big", big.stat().st_size,
           lambda: s3.download_file(BUCKET, f"raw/{r}/big.bin", str(dest / "big.bin")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--file-mb", type=float, default=1.0)
    parser.add_argument("--big-mb", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    rounds: dict[str, dict[str, list[float]]] = {
        "raw boto3 (c)": {}, "stock s3:// (a)": {}, "stock + ws (a')": {}, "tenant-s3 (b)": {}}
    with tempfile.TemporaryDirectory(prefix="mlt-bench-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        small, big = work / "small", work / "big.bin"
        small.mkdir()
        for i in range(opts.files):
            (small / f"f{i:03}.bin").write_bytes(os.urandom(int(opts.file_mb * 2**20)))
        with open(big, "wb") as f:
            for _ in range(opts.big_mb):
                f.write(os.urandom(2**20))
        moto_port = free_port()
        moto_url = f"http://127.0.0.1:{moto_port}"
        env = _base_env(moto_url)
        moto = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)]
        (work / "moto").mkdir()
        stack.enter_context(
            _process(moto, work / "moto" / "moto.log", env, f"{moto_url}/moto-api/"))
        boto3.client("s3", endpoint_url=moto_url, region_name=REGION,
                     aws_access_key_id="testing", aws_secret_access_key="testing"
                     ).create_bucket(Bucket=BUCKET)
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
        (work / "a").mkdir()
        url_a, running = _server(work / "a", env, f"s3://{BUCKET}/stock", tenant_auth=False)
        stack.enter_context(running)
        (work / "a2").mkdir()
        url_a2, running = _server(work / "a2", env, f"s3://{BUCKET}/stock-ws", tenant_auth=False,
                                  workspaces=True)
        stack.enter_context(running)
        (work / "b").mkdir()
        url_b, running = _server(work / "b", env, f"tenant-s3://{BUCKET}/tenant",
                                 tenant_auth=True)
        stack.enter_context(running)
        from mlflow_tenant_plugins.tenancy import TenantRegistry

        registry = TenantRegistry(f"sqlite:///{work}/b/mlflow.db")
        registry.create_tenant("bench")
        _info, key = registry.create_key("bench", "editor")
        servers = {"stock s3:// (a)": _ThroughMlflow(url_a, None, small, big, work / "out-a"),
                   "stock + ws (a')": _ThroughMlflow(url_a2, None, small, big, work / "out-a2"),
                   "tenant-s3 (b)": _ThroughMlflow(url_b, key, small, big, work / "out-b")}
        for server in servers.values():
            server.warm()
        # Interleaved rounds, in rotating order: the machine's drift falls on all alike.
        for r in range(opts.rounds):
            _raw_round(moto_url, r, small, big, work / "out-raw", rounds["raw boto3 (c)"])
            names = list(servers)
            k = r % len(names)
            for name in names[k:] + names[:k]:
                servers[name].round(r, rounds[name])
    results = {name: {op: statistics.median(v) for op, v in ops.items()}
               for name, ops in rounds.items()}
    print(f"{opts.files} x {opts.file_mb:g} MB and 1 x {opts.big_mb} MB, MB/s, "
          f"median of {opts.rounds} rounds")
    ops = list(results["raw boto3 (c)"])
    print(f"{'':18}" + "".join(f"{op:>16}" for op in ops))
    for name, row in results.items():
        print(f"{name:18}" + "".join(f"{row[op]:16.1f}" for op in ops))
    a, b = results["stock s3:// (a)"], results["tenant-s3 (b)"]
    print(f"{'(b) / (a)':18}" + "".join(f"{b[op] / a[op]:16.2f}" for op in ops))
    print(json.dumps({
        "benchmark": "artifact_throughput",
        "files": opts.files, "file_mb": opts.file_mb, "big_mb": opts.big_mb,
        "rounds": opts.rounds,
        "mb_per_s": {name: {op: round(v, 1) for op, v in row.items()}
                     for name, row in results.items()},
        "ratio_tenant_vs_stock": {op: round(b[op] / a[op], 2) for op in ops},
        "ratio_tenant_vs_stock_workspaces": {
            op: round(b[op] / results["stock + ws (a')"][op], 2) for op in ops},
        "per_round": {name: {op: [round(x, 1) for x in v] for op, v in ops.items()}
                      for name, ops in rounds.items()},
        "first_upload_seconds": {name: round(s.first_upload_s, 3)
                                 for name, s in servers.items()},
    }))


if __name__ == "__main__":
    main()

"""Artifact throughput: tenant-s3 through tenant-auth against a stock server and raw boto3.

One moto server (S3 on loopback), one bucket, three ways to move the same bytes:

  (a) stock ``mlflow server --artifacts-destination s3://BUCKET/stock`` (no auth, no workspaces)
  (b) ``mlflow server --app-name tenant-auth --enable-workspaces
      --artifacts-destination tenant-s3://BUCKET/tenant``, one tenant, its API key
  (c) raw boto3 ``upload_file``/``download_file`` against the same bucket (the limit)

For (a) and (b) the stock ``MlflowClient`` uploads N small files with ``log_artifacts``, one
big file with ``log_artifact``, and downloads both back. Target: (b) >= 0.9 x (a).

    python benchmarks/artifact_throughput.py               # 100 x 1 MB and 256 MB
    python benchmarks/artifact_throughput.py --files 20 --big-mb 32   # a quick run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import requests

REGION = "us-east-1"
BUCKET = "mlt-bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _process(args: list[str], log: Path, env: dict[str, str], ready: str) -> Iterator[None]:
    """Run ``args`` in its own process group until the block ends; wait for ``ready`` (URL)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=log.parent, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{args[:4]} exited:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(ready, timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"{ready} not ready:\n{log.read_text()[-3000:]}")
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def _base_env(moto_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env.update({
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": moto_url,
        "MLFLOW_S3_ENDPOINT_URL": moto_url, "PYTHONUNBUFFERED": "1",
    })
    return env


def _server(work: Path, env: dict[str, str], destination: str, tenant_auth: bool):
    port = _free_port()
    args = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{work}/mlflow.db",
            "--artifacts-destination", destination]
    if tenant_auth:
        args += ["--app-name", "tenant-auth", "--enable-workspaces"]
        env = {**env, "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
               "MLFLOW_TENANT_AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"]}
    url = f"http://127.0.0.1:{port}"
    return url, _process(args, work / "server.log", env, f"{url}/health")


def _timed(results: dict[str, float], name: str, nbytes: int, fn: Callable[[], object]) -> None:
    start = time.perf_counter()
    fn()
    results[name] = nbytes / 2**20 / (time.perf_counter() - start)


def _through_mlflow(url: str, token: str | None, small: Path, big: Path, out: Path) -> dict:
    from mlflow import MlflowClient

    for name in [n for n in os.environ if n.startswith("MLFLOW_")]:
        del os.environ[name]
    if token:
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
    client = MlflowClient(tracking_uri=url)
    run = client.create_run(client.create_experiment(f"bench-{secrets.token_hex(3)}")).info.run_id
    small_bytes = sum(f.stat().st_size for f in small.iterdir())
    results: dict[str, float] = {}
    _timed(results, "upload small", small_bytes, lambda: client.log_artifacts(run, str(small), "s"))
    _timed(results, "upload big", big.stat().st_size, lambda: client.log_artifact(run, str(big)))
    for sub in ("s", "b"):
        (out / sub).mkdir(parents=True)
    _timed(results, "download small", small_bytes,
           lambda: client.download_artifacts(run, "s", str(out / "s")))
    _timed(results, "download big", big.stat().st_size,
           lambda: client.download_artifacts(run, big.name, str(out / "b")))
    return results


def _raw(moto_url: str, small: Path, big: Path, out: Path) -> dict:
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name=REGION,
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    files = sorted(small.iterdir())
    small_bytes = sum(f.stat().st_size for f in files)
    results: dict[str, float] = {}
    out.mkdir(parents=True)
    _timed(results, "upload small", small_bytes,
           lambda: [s3.upload_file(str(f), BUCKET, f"raw/s/{f.name}") for f in files])
    _timed(results, "upload big", big.stat().st_size,
           lambda: s3.upload_file(str(big), BUCKET, "raw/big.bin"))
    _timed(results, "download small", small_bytes,
           lambda: [s3.download_file(BUCKET, f"raw/s/{f.name}", str(out / f.name)) for f in files])
    _timed(results, "download big", big.stat().st_size,
           lambda: s3.download_file(BUCKET, "raw/big.bin", str(out / "big.bin")))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--file-mb", type=float, default=1.0)
    parser.add_argument("--big-mb", type=int, default=256)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlt-bench-") as tmp:
        work = Path(tmp)
        small, big = work / "small", work / "big.bin"
        small.mkdir()
        for i in range(opts.files):
            (small / f"f{i:03}.bin").write_bytes(os.urandom(int(opts.file_mb * 2**20)))
        with open(big, "wb") as f:
            for _ in range(opts.big_mb):
                f.write(os.urandom(2**20))
        moto_port = _free_port()
        moto_url = f"http://127.0.0.1:{moto_port}"
        env = _base_env(moto_url)
        moto = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)]
        (work / "moto").mkdir()
        with _process(moto, work / "moto" / "moto.log", env, f"{moto_url}/moto-api/"):
            boto3.client("s3", endpoint_url=moto_url, region_name=REGION,
                         aws_access_key_id="testing", aws_secret_access_key="testing"
                         ).create_bucket(Bucket=BUCKET)
            os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
            results = {"raw boto3 (c)": _raw(moto_url, small, big, work / "out-raw")}
            (work / "a").mkdir()
            url, running = _server(work / "a", env, f"s3://{BUCKET}/stock", tenant_auth=False)
            with running:
                results["stock s3:// (a)"] = _through_mlflow(url, None, small, big, work / "out-a")
            (work / "b").mkdir()
            url, running = _server(work / "b", env, f"tenant-s3://{BUCKET}/tenant",
                                   tenant_auth=True)
            with running:
                from mlflow_tenant_plugins.tenancy import TenantRegistry

                registry = TenantRegistry(f"sqlite:///{work}/b/mlflow.db")
                registry.create_tenant("bench")
                _info, key = registry.create_key("bench", "editor")
                results["tenant-s3 (b)"] = _through_mlflow(url, key, small, big, work / "out-b")
    print(f"{opts.files} x {opts.file_mb:g} MB and 1 x {opts.big_mb} MB, MB/s")
    ops = list(results["raw boto3 (c)"])
    print(f"{'':18}" + "".join(f"{op:>16}" for op in ops))
    for name, row in results.items():
        print(f"{name:18}" + "".join(f"{row[op]:16.1f}" for op in ops))
    a, b = results["stock s3:// (a)"], results["tenant-s3 (b)"]
    print(f"{'(b) / (a)':18}" + "".join(f"{b[op] / a[op]:16.2f}" for op in ops))
    print(json.dumps({
        "benchmark": "artifact_throughput",
        "files": opts.files, "file_mb": opts.file_mb, "big_mb": opts.big_mb,
        "mb_per_s": {name: {op: round(v, 1) for op, v in row.items()}
                     for name, row in results.items()},
        "ratio_tenant_vs_stock": {op: round(b[op] / a[op], 2) for op in ops},
    }))


if __name__ == "__main__":
    main()

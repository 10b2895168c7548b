"""What running a project as a platform job costs: one run, two servers side by side on this
machine (sqlite, one worker each), measured in interleaved rounds so the machine's drift falls
on both alike.

(a) anchor: ``mlflow run examples/project --env-manager local`` against a stock ``mlflow
    server`` (no app, no workspaces) — wall time of the CLI process.
(b) platform: ``mlflow run examples/project -b tenant-sagemaker --backend-config
    '{"poll_seconds": 0.5}' --env-manager local`` against tenant-auth whose jobs run on the
    ``local`` engine (a subprocess on the server's host) — wall time of the CLI process, which
    waits for the job to end.
(c) submission overhead, in-process, for the example plus a 5 MiB incompressible file: the
    steps the backend takes before the job exists, each timed — package, the platform's check,
    create the run, upload the package, submit (the job is stopped afterwards, as with
    ``"synchronous": false``). Beside it, for context, the wall time of that CLI with
    ``"synchronous": false`` (interpreter and MLflow start-up included).

Prints a small table (medians over the rounds; targets: ratio ≤ 1.3, submission ≤ 1 s) and
then one JSON line.

    .venv/bin/python benchmarks/job_overhead.py [--rounds 3] [--warmup 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.process import free_port
from tests.fixtures.servers import MlflowServer, start_mlflow_server, stop_mlflow_server

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "project"
BLOB_BYTES = 5 * 1024 * 1024
CLI_TIMEOUT = 600
PLATFORM_CONFIG = {"poll_seconds": 0.5}


def _start_anchor(workdir: Path) -> MlflowServer:
    return start_mlflow_server(workdir / "anchor", app_name=None, enable_workspaces=False)


def _start_platform(workdir: Path) -> tuple[MlflowServer, str]:
    port = free_port()
    server = start_mlflow_server(workdir / "platform", port=port, extra_env={
        "MLFLOW_TENANT_JOBS_EXECUTOR": "local",
        "MLFLOW_TENANT_JOBS_LOCAL_DIR": str(workdir / "platform" / "jobs"),
        "MLFLOW_TENANT_JOBS_TRACKING_URI": f"http://127.0.0.1:{port}",
        "MLFLOW_TENANT_JOBS_RECONCILE_INTERVAL_SECONDS": "1",
    })
    server.registry.create_tenant("bench")
    _info, key = server.registry.create_key("bench", "editor")
    return server, key


def _timed_cli(args: list[str], env: dict[str, str], what: str) -> float:
    """Wall time of one CLI process; a failed run stops the benchmark with its output."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mlflow", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")
    return elapsed


def _big_project(workdir: Path) -> Path:
    """The example plus a file of random bytes that training never reads."""
    project = workdir / "project-5mib"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", "mlruns"))
    (project / "data" / "unused.bin").write_bytes(os.urandom(BLOB_BYTES))
    return project


class Submission:
    """The backend's steps up to the job's submission, in this process, against the
    platform (MLflow's tracking URI and token set for it)."""

    PHASES = ("package", "check", "create_run", "upload", "submit")

    def __init__(self, server: MlflowServer, key: str, project: Path, scratch: Path):
        import mlflow
        from mlflow import MlflowClient

        from mlflow_tenant_plugins.jobs.backend import parse_backend_config

        os.environ["MLFLOW_TRACKING_TOKEN"] = key
        mlflow.set_tracking_uri(server.url)
        self.client = MlflowClient(server.url)
        self.project = project
        self.scratch = scratch
        self.config = parse_backend_config(dict(PLATFORM_CONFIG), project).server_config()
        self.experiment_id = self.client.create_experiment(f"submit-{time.time_ns()}")

    def once(self) -> dict[str, float]:
        from mlflow_tenant_plugins.jobs import api, package, spec

        times: dict[str, float] = {}

        def timed(name: str, call: Callable[[], object]) -> object:
            t = time.perf_counter()
            out = call()
            times[name] = time.perf_counter() - t
            return out

        with tempfile.TemporaryDirectory(dir=self.scratch) as tmp:
            archive = Path(tmp) / spec.PACKAGE_FILE
            info = timed("package", lambda: package.package(self.project, archive))
            if info.total_bytes < BLOB_BYTES:
                raise RuntimeError(f"the package holds {info.total_bytes} bytes, not the blob")
            timed("check", lambda: api.check("main", self.config))
            run = timed("create_run", lambda: self.client.create_run(self.experiment_id))
            run_id = run.info.run_id
            timed("upload", lambda: self.client.log_artifact(run_id, str(archive),
                                                             spec.PACKAGE_ARTIFACT_DIR))
            job = timed("submit", lambda: api.submit(run_id, "main", {}, self.config))
        self._stop(job["job_id"])
        times["total"] = sum(times[p] for p in self.PHASES)
        times["archive_mib"] = info.archive_bytes / 2**20
        return times

    @staticmethod
    def _stop(job_id: str, timeout: float = 120.0) -> None:
        """Stop the job and wait until it has ended, so it loads no later measurement."""
        from mlflow_tenant_plugins.jobs import api, spec

        api.stop(job_id)
        deadline = time.monotonic() + timeout
        while api.get(job_id)["status"] not in spec.ENDED:
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} did not end within {timeout:.0f} s")
            time.sleep(0.25)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1,
                        help="unmeasured rounds first (imports compiled, caches filled)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]  # CLI wall times follow the machine's other load
    tmp = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    servers: list[MlflowServer] = []
    try:
        anchor = _start_anchor(tmp)
        servers.append(anchor)
        platform, key = _start_platform(tmp)
        servers.append(platform)
        big = _big_project(tmp)
        submission = Submission(platform, key, big, tmp)
        # The project's `python` is this interpreter's (as the job runner makes it).
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        anchor_env = anchor.client_env(PATH=path)
        platform_env = platform.client_env(key, PATH=path)
        example = str(EXAMPLE)

        def run_anchor() -> float:
            return _timed_cli(["run", example, "--env-manager", "local"], anchor_env,
                              "anchor mlflow run")

        def run_platform() -> float:
            return _timed_cli(["run", example, "-b", "tenant-sagemaker", "--backend-config",
                               json.dumps(PLATFORM_CONFIG), "--env-manager", "local"],
                              platform_env, "platform mlflow run")

        def run_async_cli() -> float:
            took = _timed_cli(["run", str(big), "-b", "tenant-sagemaker", "--backend-config",
                               json.dumps({**PLATFORM_CONFIG, "synchronous": False}),
                               "--env-manager", "local"], platform_env, "async mlflow run")
            from mlflow_tenant_plugins.jobs import api

            for job in api.list_jobs("active"):
                Submission._stop(job["job_id"])
            return took

        measures: dict[str, Callable[[], object]] = {
            "anchor": run_anchor, "platform": run_platform,
            "submission": submission.once, "submit_cli": run_async_cli,
        }
        for _ in range(args.warmup):
            for measure in measures.values():
                measure()
        results: dict[str, list] = {name: [] for name in measures}
        names = list(measures)
        for r in range(args.rounds):  # rotating order: drift lands on every measure alike
            k = r % len(names)
            for name in names[k:] + names[:k]:
                results[name].append(measures[name]())
    finally:
        for server in reversed(servers):
            stop_mlflow_server(server)
        shutil.rmtree(tmp, ignore_errors=True)

    load_after = os.getloadavg()[0]
    anchor_s = _median(results["anchor"])
    platform_s = _median(results["platform"])
    phases = {p: _median([t[p] for t in results["submission"]])
              for p in (*Submission.PHASES, "total")}
    submit_cli_s = _median(results["submit_cli"])
    ratio = platform_s / anchor_s
    archive_mib = results["submission"][0]["archive_mib"]
    print(_table([
        ("measure", "median", "target"),
        ("(a) anchor: mlflow run, stock server", f"{anchor_s:.2f} s", ""),
        ("(b) platform: mlflow run -b tenant-sagemaker", f"{platform_s:.2f} s", ""),
        ("ratio platform / anchor", f"{ratio:.2f}x", "<= 1.3x"),
        (f"(c) submission overhead, 5 MiB project ({archive_mib:.1f} MiB archive)",
         f"{phases['total']:.2f} s", "<= 1 s"),
        *[(f"      {p}", f"{phases[p]:.3f} s", "") for p in Submission.PHASES],
        ("    CLI wall time to submitted (synchronous false)", f"{submit_cli_s:.2f} s", ""),
        ("load average (1 min) before / after", f"{load_before:.1f} / {load_after:.1f}", ""),
    ]), flush=True)
    print(json.dumps({
        "benchmark": "job_overhead",
        "rounds": args.rounds,
        "anchor_s": {"median": round(anchor_s, 2),
                     "runs": [round(x, 2) for x in results["anchor"]]},
        "platform_s": {"median": round(platform_s, 2),
                       "runs": [round(x, 2) for x in results["platform"]]},
        "ratio_platform_vs_anchor": round(ratio, 2),
        "submission_overhead_s": {**{p: round(v, 3) for p, v in phases.items()},
                                  "runs": [round(t["total"], 3)
                                           for t in results["submission"]],
                                  "archive_mib": round(archive_mib, 2)},
        "submit_cli_wall_s": {"median": round(submit_cli_s, 2),
                              "runs": [round(x, 2) for x in results["submit_cli"]]},
        "load_average_1m": [round(load_before, 1), round(load_after, 1)],
    }))


if __name__ == "__main__":
    main()

"""`make demo`: the whole platform on this machine, on 127.0.0.1 only.

moto's server plays AWS; `mlflow server --app-name tenant-auth` runs on sqlite with tenant-s3
artifacts in it; tenants acme and globex get keys from the admin CLI; acme trains the example
model with the stock client and nothing but environment variables, runs the MLflow project
examples/project as a platform job (`mlflow run -b tenant-sagemaker`; here the server's `local`
engine: a subprocess on this machine, not an isolation boundary), deploys the model that job
logged with `mlflow deployments create -t tenant-sagemaker`, sees its alarms and scaling policy,
serves it with `run-local` and gets real predictions; globex sees none of it; each tenant's
statement for the month so far is printed. Every process this starts
is stopped by its PID at the end (or on Ctrl-C with --keep). Exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
BUCKET = "mlflow-demo-artifacts"
MODEL = "wine-quality"
ENDPOINT = "houses"
PROJECT = HERE / "project"
JOBS = "/api/2.0/tenants/jobs"
# Made-up prices for the demo's statements (docs/billing.md explains each).
PRICES = """\
[prices]
currency = "USD"
storage_gb_month = 0.025
api_million_requests = 1.0
[prices.endpoint_instance_hour]
"ml.m5.large" = 0.134
"ml.t2.medium" = 0.056
[prices.training_instance_hour]
"ml.m5.large" = 0.115
"""


class DemoError(RuntimeError):
    pass


def table(headers: tuple[str, ...], rows: list[tuple]) -> str:
    """Rows as aligned columns, indented under the step that shows them."""
    def cell(c: object) -> str:
        if isinstance(c, float):
            return str(int(c)) if c.is_integer() else f"{c:g}"
        return "-" if c is None else str(c)

    cells = [headers, *[tuple(cell(c) for c in row) for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("    " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
                     .rstrip() for r in cells)


def described(out: str) -> dict[str, str]:
    """`mlflow deployments get` prints one ``key: value`` line per field."""
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Demo:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.aws_url = ""
        self.url = ""
        self.db = f"sqlite:///{workdir}/mlflow.db"
        self.base_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}

    # -- processes -------------------------------------------------------------------------
    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=self.workdir, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def wait_http(self, name: str, url: str, timeout: float) -> None:
        proc = dict(self.procs)[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DemoError(f"{name} exited ({proc.returncode}); see {self.workdir}/{name}.log")
            try:
                if requests.get(url, timeout=2).status_code < 500:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise DemoError(f"{name} not ready after {timeout:.0f}s; see {self.workdir}/{name}.log")

    def stop_all(self) -> None:
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=15)
                print(f"    stopped {name} (pid {proc.pid})", flush=True)
        self.procs.clear()

    def run(self, args: list[str], env: dict[str, str], what: str, timeout: float = 300) -> str:
        return self.run_full(args, env, what, timeout).stdout

    def run_full(self, args: list[str], env: dict[str, str], what: str,
                 timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run(args, env=env, cwd=self.workdir, capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0:
            raise DemoError(f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    # -- the platform ----------------------------------------------------------------------
    def aws_env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.aws_url, "AWS_ACCESS_KEY_ID": "demo",
                "AWS_SECRET_ACCESS_KEY": "demo", "AWS_DEFAULT_REGION": "us-east-1"}

    def admin_env(self) -> dict[str, str]:
        return {**self.base_env, **self.aws_env(), "MLFLOW_TENANT_DATABASE_URI": self.db,
                "MLFLOW_TENANT_AWS_ENDPOINT_URL": self.aws_url,
                "MLFLOW_TENANT_CONFIG": str(self.prices())}

    def prices(self) -> Path:
        """The platform's settings file: a price table for statements (server and CLI)."""
        path = self.workdir / "platform.toml"
        if not path.exists():
            path.write_text(PRICES)
        return path

    def tenant_env(self, key: str) -> dict[str, str]:
        """What a tenant user sets: the tracking URI and a key. Nothing else."""
        return {**self.base_env, "MLFLOW_TRACKING_URI": self.url,
                "MLFLOW_TRACKING_TOKEN": key}

    def cli(self, *args: str) -> str:
        return self.run([str(BIN / "mlflow-tenants"), *args], self.admin_env(),
                        f"mlflow-tenants {' '.join(args)}")

    def start_aws(self) -> None:
        port = free_port()
        self.aws_url = f"http://127.0.0.1:{port}"
        step(f"starting moto's server as AWS on {self.aws_url}")
        self.start("moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                            "-p", str(port)], {**self.base_env})
        self.wait_http("moto", f"{self.aws_url}/moto-api/", 60)
        import boto3

        boto3.client("s3", endpoint_url=self.aws_url, region_name="us-east-1",
                     aws_access_key_id="demo", aws_secret_access_key="demo"
                     ).create_bucket(Bucket=BUCKET)

    def start_server(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        step(f"starting mlflow server --app-name tenant-auth on {self.url} "
             f"(sqlite, artifacts in tenant-s3://{BUCKET}/mlflow)")
        env = {**self.admin_env(), "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
               "MLFLOW_AUTH_ADMIN_PASSWORD": secrets.token_urlsafe(16),
               "MLFLOW_TENANT_DEPLOY_POLL_SECONDS": "1",
               # meters sampled every few seconds, so the statements have something to show
               "MLFLOW_TENANT_METERING_INTERVAL_SECONDS": "3",
               "MLFLOW_TENANT_METERING_FLUSH_SECONDS": "1",
               # jobs run as subprocesses here, logging back to this server
               "MLFLOW_TENANT_JOBS_EXECUTOR": "local",
               "MLFLOW_TENANT_JOBS_TRACKING_URI": self.url,
               "MLFLOW_TENANT_JOBS_LOCAL_DIR": str(self.workdir / "jobs"),
               # one SageMaker execution role per tenant (the emulator's account)
               "MLFLOW_TENANT_DEPLOY_EXECUTION_ROLE_ARN":
                   "arn:aws:iam::123456789012:role/mlflow-sagemaker-{tenant}"}
        self.start("mlflow-server", [
            str(BIN / "mlflow"), "server", "--app-name", "tenant-auth", "--enable-workspaces",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
            "--backend-store-uri", self.db,
            "--artifacts-destination", f"tenant-s3://{BUCKET}/mlflow"], env)
        self.wait_http("mlflow-server", f"{self.url}/health", 180)

    def make_tenants(self) -> dict[str, str]:
        keys = {}
        for tenant, role, storage in (("acme", "deployer", "2GB"), ("globex", "editor", "1GB")):
            step(f"mlflow-tenants tenant create {tenant} --storage {storage}; "
                 f"key create {tenant} --role {role}")
            self.cli("tenant", "create", tenant, "--storage", storage, "--endpoints", "2",
                     "--instances", "4")
            out = self.cli("key", "create", tenant, "--role", role)
            keys[tenant] = out.strip().splitlines()[-1]
        step("mlflow-tenants key create --platform-admin")
        keys["admin"] = self.cli("key", "create", "--platform-admin").strip().splitlines()[-1]
        return keys

    def train(self, key: str) -> None:
        step("acme trains examples/train.py with the stock client "
             "(MLFLOW_TRACKING_URI and MLFLOW_TRACKING_TOKEN only)")
        out = self.run([sys.executable, str(HERE / "train.py"), "--model-name", MODEL],
                       self.tenant_env(key), "training")
        print("    " + next(line for line in out.splitlines() if "registered as" in line),
              flush=True)

    def run_project(self, key: str) -> str:
        """Run examples/project as a job; the URI of the model its run logged."""
        step("acme: mlflow run examples/project -b tenant-sagemaker --env-manager local "
             "(the project runs as a job on the platform)")
        done = self.run_full([str(BIN / "mlflow"), "run", str(PROJECT), "-b", "tenant-sagemaker",
                              "--env-manager", "local"], self.tenant_env(key), "mlflow run",
                             timeout=600)
        found = re.search(r"job (\S+) submitted for run (\w+)", done.stderr)
        if not found:
            raise DemoError(f"mlflow run said nothing of a job:\n{done.stderr}")
        job_id, run_id = found.groups()
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {key}"
        run = s.get(f"{self.url}/api/2.0/mlflow/runs/get", params={"run_id": run_id},
                    timeout=60).json()["run"]
        job = s.get(f"{self.url}{JOBS}/get", params={"job_id": job_id}, timeout=60).json()["job"]
        status = run["info"]["status"]
        metrics = {m["key"]: m["value"] for m in run["data"].get("metrics", [])}
        params = {p["key"]: p["value"] for p in run["data"].get("params", [])}
        step(f"acme's run {run_id}: {status}")
        print(table(("PARAM/METRIC", "VALUE"),
                    [(k, params.get(k)) for k in ("alpha", "rows")]
                    + [(k, round(metrics[k], 3)) for k in sorted(metrics)]), flush=True)
        step(f"acme's job {job_id}: {job['status']}")
        fields = ("status", "executor", "instance_type", "instance_count", "submitted_by",
                  "elapsed_seconds")
        print(table(("FIELD", "VALUE"), [(f, job.get(f)) for f in fields]), flush=True)
        if status != "FINISHED" or job["status"] != "FINISHED" or not metrics:
            raise DemoError(f"the project's job did not finish: {job.get('failure_reason')}")
        return f"runs:/{run_id}/model"

    def deploy(self, key: str, model_uri: str) -> None:
        step(f"acme deploys the model its job logged: mlflow deployments create -t "
             f"tenant-sagemaker --name {ENDPOINT} -m {model_uri} -C instance_type=ml.m5.large")
        out = self.run([str(BIN / "mlflow"), "deployments", "create", "-t", "tenant-sagemaker",
                        "--name", ENDPOINT, "-m", model_uri,
                        "-C", "instance_type=ml.m5.large", "-C", "max_instances=2"],
                       self.tenant_env(key), "deployment", timeout=600)
        print("    " + out.strip().splitlines()[-1], flush=True)
        got = described(self.run([str(BIN / "mlflow"), "deployments", "get", "-t",
                                  "tenant-sagemaker", "--name", ENDPOINT],
                                 self.tenant_env(key), "deployments get"))
        step(f"acme: mlflow deployments get -t tenant-sagemaker --name {ENDPOINT}")
        fields = ("status", "instance_type", "instance_count", "model_uri", "endpoint_name")
        print(table(("FIELD", "VALUE"), [(f, got.get(f)) for f in fields]), flush=True)

    def show_alarms_and_scaling(self) -> None:
        import boto3

        kw = {"endpoint_url": self.aws_url, "region_name": "us-east-1",
              "aws_access_key_id": "demo", "aws_secret_access_key": "demo"}
        alarms = boto3.client("cloudwatch", **kw).describe_alarms()["MetricAlarms"]
        mine = [a for a in alarms if "acme" in a["AlarmName"]]
        step(f"CloudWatch alarms made for the endpoint: {len(mine)}")
        print(table(("ALARM", "METRIC", "STATISTIC", "WHEN", "THRESHOLD", "STATE"), [
            (a["AlarmName"], a.get("MetricName"),
             a.get("Statistic") or a.get("ExtendedStatistic"),
             a["ComparisonOperator"].replace("GreaterThanOrEqualToThreshold", ">=")
             .replace("GreaterThanThreshold", ">"), float(a["Threshold"]), a.get("StateValue"))
            for a in mine]), flush=True)
        aas = boto3.client("application-autoscaling", **kw)
        targets = {t["ResourceId"]: t for t in aas.describe_scalable_targets(
            ServiceNamespace="sagemaker")["ScalableTargets"]}
        policies = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
        step(f"autoscaling policies: {len(policies)}")
        rows = []
        for p in policies:
            cfg = p.get("TargetTrackingScalingPolicyConfiguration", {})
            target = targets.get(p["ResourceId"], {})
            rows.append((p["PolicyName"], p["ResourceId"], target.get("MinCapacity"),
                         target.get("MaxCapacity"), cfg.get("TargetValue"),
                         cfg.get("ScaleInCooldown"), cfg.get("ScaleOutCooldown")))
        print(table(("POLICY", "RESOURCE", "MIN", "MAX", "INVOCATIONS/INSTANCE/MIN",
                     "SCALE-IN S", "SCALE-OUT S"), rows), flush=True)
        if not mine or not policies:
            raise DemoError("the deployment made no alarms or no scaling policy")

    def serve_locally(self, key: str, model_uri: str) -> None:
        port = free_port()
        step(f"acme: mlflow deployments run-local -t tenant-sagemaker --name {ENDPOINT} "
             f"(scoring server on 127.0.0.1:{port})")
        self.start("run-local", [str(BIN / "mlflow"), "deployments", "run-local", "-t",
                                 "tenant-sagemaker", "--name", ENDPOINT, "-m",
                                 model_uri, "-C", f"port={port}"],
                   self.tenant_env(key))
        self.wait_http("run-local", f"http://127.0.0.1:{port}/ping", 180)
        import pandas as pd

        houses = pd.read_csv(PROJECT / "data" / "train.csv")
        rows = houses.drop(columns=["price_k"]).astype("float64").sample(5, random_state=1)
        r = requests.post(f"http://127.0.0.1:{port}/invocations",
                          json={"dataframe_split": rows.to_dict(orient="split")}, timeout=60)
        if r.status_code != 200:
            raise DemoError(f"prediction failed: {r.status_code} {r.text[:300]}")
        prices = [round(p, 1) for p in r.json()["predictions"]]
        print(f"    predicted prices (k) for 5 houses: {prices}", flush=True)

    def show_isolation(self, key: str) -> None:
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {key}"
        exps = s.post(f"{self.url}/api/2.0/mlflow/experiments/search",
                      json={"max_results": 100}).json().get("experiments", [])
        models = s.get(f"{self.url}/api/2.0/mlflow/registered-models/search").json()
        blocked = s.get(f"{self.url}/api/2.0/mlflow/registered-models/get",
                        params={"name": MODEL}).status_code
        listed = self.run([str(BIN / "mlflow"), "deployments", "list", "-t",
                           "tenant-sagemaker"], self.tenant_env(key), "deployments list")
        step(f"globex sees {len(exps)} experiments, "
             f"{len(models.get('registered_models', []))} models, "
             f"get '{MODEL}' -> HTTP {blocked}, "
             f"deployments: {' '.join(listed.split()[-1:]) or 'none'}")
        if exps or models.get("registered_models") or ENDPOINT in listed:
            raise DemoError("globex saw acme's objects")

    def usage(self) -> None:
        step("mlflow-tenants usage")
        print("    " + self.cli("usage").strip().replace("\n", "\n    "), flush=True)

    def statements(self) -> None:
        month = time.strftime("%Y-%m", time.gmtime())
        step(f"mlflow-tenants bill --month {month}: each tenant's statement so far (prices in "
             f"{self.prices().name})")
        print("    " + self.cli("bill", "--month", month).strip().replace("\n", "\n    "),
              flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="the platform, end to end, on this machine")
    parser.add_argument("--keep", action="store_true", help="keep running until Ctrl-C")
    parser.add_argument("--workdir", default=str(ROOT / ".demo"))
    args = parser.parse_args()
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    demo = Demo(workdir)
    started = time.monotonic()
    try:
        demo.start_aws()
        demo.start_server()
        keys = demo.make_tenants()
        demo.train(keys["acme"])
        model_uri = demo.run_project(keys["acme"])
        demo.deploy(keys["acme"], model_uri)
        demo.show_alarms_and_scaling()
        demo.serve_locally(keys["acme"], model_uri)
        demo.show_isolation(keys["globex"])
        demo.usage()
        demo.statements()
        step(f"open {demo.url}/ and log in with any user name and acme's key as password:")
        print(f"    acme key:   {keys['acme']}\n    globex key: {keys['globex']}\n"
              f"    admin key:  {keys['admin']}\n"
              f"    admin CLI:  MLFLOW_TENANT_DATABASE_URI={demo.db} {BIN}/mlflow-tenants "
              "tenant list", flush=True)
        print(f"demo finished in {time.monotonic() - started:.0f}s", flush=True)
        if not args.keep:
            print("to leave the platform running and explore it (UI, keys, the admin CLI): "
                  "make demo KEEP=1", flush=True)
        if args.keep:
            step("running; Ctrl-C stops everything")
            while True:
                time.sleep(1)
        return 0
    except KeyboardInterrupt:
        return 0
    except (DemoError, subprocess.TimeoutExpired, requests.RequestException) as exc:
        print(f"demo failed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        step("stopping")
        demo.stop_all()


if __name__ == "__main__":
    sys.exit(main())

"""Control-plane time of a deployment: create + delete against one moto server in one run,
tenant-sagemaker (the platform's service, in-process, synchronous) beside MLflow's stock
`sagemaker` target (the anchor), same model, same instance type. Target: ≤ 1.5× the stock
target's time while also creating alarms, autoscaling and tags and checking quotas.

What each creates — stock: model, endpoint config, endpoint, model tarball in its bucket.
tenant-sagemaker: the same (package under the platform's prefix, outside the tenant's)
plus 5 CloudWatch alarms, an autoscaling target and policy, tenant tags, quota reservations.

    .venv/bin/python benchmarks/deploy_latency.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.process import Process, free_port

MODEL_CODE = """import mlflow.pyfunc
class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input
mlflow.models.set_model(Echo())
"""
ROLE = "arn:aws:iam::123456789012:role/bench"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlflow-pyfunc:bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    port = free_port()
    moto = Process([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                   tmp / "moto.log")
    url = f"http://127.0.0.1:{port}"
    try:
        moto.wait_http(f"{url}/moto-api/", timeout=60)
        os.environ.update({"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "bench",
                           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
        import boto3
        import mlflow.pyfunc
        from mlflow.sagemaker import SageMakerDeploymentClient

        from mlflow_tenant_plugins.config import Settings
        from mlflow_tenant_plugins.deployments.model_source import ModelResolver
        from mlflow_tenant_plugins.deployments.service import DeploymentService
        from mlflow_tenant_plugins.tenancy import Quotas, TenantRegistry

        (tmp / "echo.py").write_text(MODEL_CODE)
        model = str(tmp / "model")
        mlflow.pyfunc.save_model(model, python_model=str(tmp / "echo.py"),
                                 pip_requirements=["mlflow"])
        s3 = boto3.client("s3", region_name="us-east-1")
        for bucket in ("stock-bucket", "platform"):
            s3.create_bucket(Bucket=bucket)
        stock = SageMakerDeploymentClient("sagemaker:/us-east-1")
        stock_cfg = {"execution_role_arn": ROLE, "bucket": "stock-bucket", "image_url": IMAGE,
                     "region_name": "us-east-1", "instance_type": "ml.m5.large",
                     "instance_count": 1}
        db = f"sqlite:///{tmp}/registry.db"
        settings = Settings(database_uri=db, aws_endpoint_url=url, deploy_poll_seconds=1.0,
                            deploy_package_root="s3://platform/root/platform/deployments/{tenant}",
                            deploy_image_uri=IMAGE, deploy_execution_role_arn=ROLE + "-{tenant}")
        registry = TenantRegistry(db)
        registry.create_tenant("bench", quotas=Quotas(endpoints=100, instances=100))
        service = DeploymentService(registry, settings, resolver=ModelResolver(allow_any_uri=True))

        def stock_once(i: int) -> float:
            t = time.perf_counter()
            stock.create_deployment(f"stock-{i}", model, config=dict(stock_cfg))
            stock.delete_deployment(f"stock-{i}", config={"region_name": "us-east-1"})
            return time.perf_counter() - t

        def ours_once(i: int) -> float:
            t = time.perf_counter()
            service.create("bench", f"ours-{i}", model, background=False)
            service.delete("bench", f"ours-{i}")
            return time.perf_counter() - t

        stock_once(0)
        ours_once(0)  # warm-up: imports, clients, first migration
        stock_times, our_times = [], []
        for i in range(1, args.runs + 1):  # interleaved so drift hits both alike
            stock_times.append(stock_once(i))
            our_times.append(ours_once(i))
        alarms = boto3.client("cloudwatch", region_name="us-east-1").describe_alarms()
        left = len(alarms["MetricAlarms"])
        stock_med, ours_med = statistics.median(stock_times), statistics.median(our_times)
        print(json.dumps({
            "benchmark": "deploy_latency",
            "runs": args.runs,
            "stock_sagemaker_s": {"median": round(stock_med, 3),
                                  "runs": [round(x, 3) for x in stock_times]},
            "tenant_sagemaker_s": {"median": round(ours_med, 3),
                                   "runs": [round(x, 3) for x in our_times]},
            "ratio_tenant_vs_stock": round(ours_med / stock_med, 2),
            "alarms_left_after_deletes": left,
        }))
    finally:
        moto.stop()


if __name__ == "__main__":
    main()

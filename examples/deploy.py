"""Deploy a registered model with the settings in a config file, through the platform.

    MLFLOW_TRACKING_URI=https://mlflow.example.com MLFLOW_TRACKING_TOKEN=mlt_… \\
    python examples/deploy.py --name wine --model models:/wine-quality/1 \\
        --config examples/deploy.json

The same as `mlflow deployments create -t tenant-sagemaker --name wine -m models:/wine-quality/1
-C instance_type=ml.m5.large -C max_instances=2 …`, with the keys kept in a reviewed file.
Unknown keys are refused with the list of valid ones (`mlflow deployments help -t
tenant-sagemaker`).
"""

from __future__ import annotations

import argparse
import json

from mlflow.deployments import get_deploy_client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--model", required=True, help="models:/NAME/VERSION or runs:/ID/PATH")
    parser.add_argument("--config", default="examples/deploy.json")
    args = parser.parse_args()
    with open(args.config) as f:
        config = {k: json.dumps(v) if isinstance(v, dict) else str(v)
                  for k, v in json.load(f).items()}
    client = get_deploy_client("tenant-sagemaker")
    deployment = client.create_deployment(args.name, args.model, config=config)
    print(json.dumps(deployment, indent=2, default=str))


if __name__ == "__main__":
    main()

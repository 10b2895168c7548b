"""A tenant's training script, as the platform's guideline asks: nothing but the stock MLflow
client, configured from the environment.

    MLFLOW_TRACKING_URI=https://mlflow.example.com \\
    MLFLOW_TRACKING_TOKEN=mlt_… \\
    python examples/train.py --model-name wine-quality

The server puts the run in your tenant (its workspace) and its artifacts under your tenant's
S3 prefix, within your storage quota. If ``--rules`` names a rules file
(``examples/rules.yaml``; needs ``pip install mlflow-tenant-plugins`` on your machine), the
training data is checked first and the verdict is logged with the run, so the model can pass a
tenant's ``require_validation`` deploy gate.
"""

from __future__ import annotations

import argparse

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def load_data() -> pd.DataFrame:
    frame = load_wine(as_frame=True).frame
    return frame.rename(columns={"od280/od315_of_diluted_wines": "od280_od315"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="wine-quality")
    parser.add_argument("--model-name", default="wine-quality")
    parser.add_argument("--C", type=float, default=1.0)
    parser.add_argument("--rules", help="rules file for the tenant's data validation")
    args = parser.parse_args()

    data = load_data()
    mlflow.set_experiment(args.experiment)
    with mlflow.start_run() as run:
        if args.rules:
            from mlflow_tenant_plugins.validation import validate

            validate(data, args.rules)
        features, target = data.drop(columns=["target"]), data["target"]
        x_train, x_test, y_train, y_test = train_test_split(
            features, target, test_size=0.25, random_state=42, stratify=target
        )
        model = make_pipeline(StandardScaler(), LogisticRegression(C=args.C, max_iter=500))
        model.fit(x_train, y_train)
        predictions = model.predict(x_test)
        mlflow.log_params({"C": args.C, "model": "logistic-regression", "rows": len(data)})
        mlflow.log_metrics({
            "accuracy": accuracy_score(y_test, predictions),
            "f1_macro": f1_score(y_test, predictions, average="macro"),
        })
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(x_test, predictions),
            input_example=x_test.head(3),
            registered_model_name=args.model_name,
        )
        print(f"run {run.info.run_id}: model {info.model_uri} registered as {args.model_name}")


if __name__ == "__main__":
    main()

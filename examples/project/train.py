"""Train a ridge regression on the project's data: what `mlflow run` runs, on your machine
or on the platform (`-b tenant-sagemaker`).

Inside `mlflow run` the run already exists (MLflow passes its id in MLFLOW_RUN_ID), and the
entry point's parameters (alpha) are already logged with it: the script logs what only it
knows, the data's size, the metrics and the model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

DATA = Path(__file__).resolve().parent / "data" / "train.csv"
TARGET = "price_k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=0.5, help="regularisation strength")
    args = parser.parse_args()

    data = pd.read_csv(DATA)
    # Whole-number columns as floats: a model's input may carry missing values later.
    features, target = data.drop(columns=[TARGET]).astype("float64"), data[TARGET]
    x_train, x_test, y_train, y_test = train_test_split(
        features, target, test_size=0.25, random_state=16)
    with mlflow.start_run() as run:
        model = make_pipeline(StandardScaler(), Ridge(alpha=args.alpha))
        model.fit(x_train, y_train)
        predictions = model.predict(x_test)
        mlflow.log_params({"model": "ridge", "rows": len(data), "features": features.shape[1]})
        mlflow.log_metrics({
            "rmse": mean_squared_error(y_test, predictions) ** 0.5,
            "mae": mean_absolute_error(y_test, predictions),
            "r2": r2_score(y_test, predictions),
        })
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(x_test, predictions),
            input_example=x_test.head(3),
        )
        print(f"run {run.info.run_id}: ridge(alpha={args.alpha}) "
              f"r2={r2_score(y_test, predictions):.3f}")


if __name__ == "__main__":
    main()

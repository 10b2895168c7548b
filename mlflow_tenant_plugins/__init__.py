"""MLflow plugins that turn one MLflow server into a multi-tenant platform on AWS."""

# MLflow registers its plugins (ours among them) while it is being imported. Importing it
# here, before any part of this package, keeps that registration from re-entering a
# half-imported module of ours (tenancy -> mlflow -> tenant-s3 -> tenancy).
import mlflow  # noqa: F401

__version__ = "0.1.0"

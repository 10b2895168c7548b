"""MLflow plugins that turn one MLflow server into a multi-tenant platform on AWS."""

__version__ = "0.1.0"

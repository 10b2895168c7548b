"""What runs on a tenant's machine: the ``tenant`` request auth provider, its profiles and
the AWS IAM signer. Imports nothing server-side (no registry, no Flask, no SQLAlchemy)."""

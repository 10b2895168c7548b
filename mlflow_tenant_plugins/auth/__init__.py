"""Who is calling: credentials -> an :class:`~mlflow_tenant_plugins.tenancy.entities.Identity`.

Plugged into MLflow's basic-auth engine through its ``authorization_function``; MLflow's
engine then authorizes every route from the workspace roles the registry keeps in step.

Imports run one way (``tests/test_layers.py`` checks there are no circles):

- ``base`` (refusal, method protocol, digest, outbound gate) and ``ttl_cache`` (the one
  bounded-staleness cache) are what every method stands on;
- one module per method: ``keys``, ``oidc``, ``proxy``, ``iam`` (``external`` maps the
  identities ALB OIDC and the proxy assert onto the registry);
- ``authenticator``: the methods in order, and ``build_methods``, the factory;
- ``engine``: the Flask-request glue (the request's authentication, MLflow's
  ``authorization_function``); ``identity``: what our handlers ask of it;
- ``edge`` and ``middleware``: the ASGI layers in front of everything MLflow serves.
"""

"""Names written on a run by :func:`validate` and read by the deploy gate: one place, so the
writer (tenant's client) and the reader (platform server) cannot drift apart."""

STATUS_TAG = "mlflow_tenant.validation"  # run tag and dataset-input tag: "pass" | "fail"
RULES_DIGEST_TAG = "mlflow_tenant.validation.rules_digest"
REPORT_TAG = "mlflow_tenant.validation.report"  # dataset-input tag: the report's artifact path
PASS = "pass"
FAIL = "fail"
REPORT_DIR = "validation"

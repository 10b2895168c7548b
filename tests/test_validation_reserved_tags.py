"""Reserved tag keys are matched as a reader reads them (issue 13, finding 5): ``mlt:`` and
``aws:`` keys were compared exactly, so ``" mlt:tenant"`` or a full-width colon slipped past
the check into the tags of a tenant's SageMaker resources, next to the platform's own."""

from __future__ import annotations

import json

import pytest
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.deployments.options import parse_config


def _tags(tags: dict[str, str]) -> dict:
    return parse_config({"tags": json.dumps(tags)}, "create")


@pytest.mark.parametrize("key", [
    "mlt:tenant", " mlt:tenant", "mlt:tenant ", "MLT:tenant", "mlt\uff1atenant",
    "\uff4d\uff4c\uff54:tenant", "m\u200blt:tenant", "mlt :tenant", "Aws:cost", "\u00a0aws:x",
])
def test_reserved_tag_prefixes_are_refused_however_they_are_spelled(key):
    with pytest.raises(MlflowException, match="reserved") as exc:
        _tags({key: "globex"})
    assert exc.value.error_code == "INVALID_PARAMETER_VALUE"


@pytest.mark.parametrize("char", ["\x1b", "\r", "\u202e", "\x07"])
def test_tags_with_control_or_format_characters_are_refused(char):
    with pytest.raises(MlflowException, match="control and format characters"):
        _tags({f"team{char}": "x"})
    with pytest.raises(MlflowException, match="control and format characters"):
        _tags({"team": f"risk{char}"})


def test_ordinary_tags_pass_unchanged():
    tags = {"team": "risk", "mlt-like": "x", "cost:centre": "42", "ünïcode": "名前"}
    assert _tags(tags) == {"tags": tags}

"""The package installs the way the README says, quietly: the admin guide's first command was
``pip install mlflow-tenant-plugins``, which finds nothing (the package is not on an index),
and every install printed setuptools' deprecation of ``project.license`` as a table."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_readme_installs_from_a_clone_or_a_built_wheel_not_from_an_index():
    guide = README[README.index("## For platform admins"):]
    assert "pip install mlflow-tenant-plugins" not in README
    assert "pip install ." in guide
    assert "pip wheel --no-deps -w dist ." in guide and "pip install dist/" in guide


@pytest.mark.slow
def test_the_wheel_builds_without_deprecation_warnings_and_declares_its_license(tmp_path):
    # As the README says, in an isolated build environment (what `pip install .` uses too).
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert not re.findall(r".*[Dd]eprecat.*", out), re.findall(r".*[Dd]eprecat.*", out)
    (wheel,) = tmp_path.glob("mlflow_tenant_plugins-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = next(z.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = next(z.read(n).decode() for n in names
                            if n.endswith(".dist-info/entry_points.txt"))
    assert "License-Expression: Apache-2.0" in metadata
    assert "tenant-auth = mlflow_tenant_plugins.server:create_app" in entry_points
    # What a server needs at run time besides the modules: the registry's migrations.
    assert "mlflow_tenant_plugins/tenancy/migrations/script.py.mako" in names
    assert any(n.startswith("mlflow_tenant_plugins/tenancy/migrations/versions/0001")
               for n in names)

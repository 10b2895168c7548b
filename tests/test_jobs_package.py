"""A project as a job's package (``jobs/package.py``): what goes in, what stays out, the size
limit's message, the same bytes for the same tree, and an unpack that refuses archives
reaching outside their directory."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from mlflow_tenant_plugins.jobs.package import (
    PackageError,
    is_ignored,
    package,
    parse_ignore,
    unpack,
)


def make_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def names_in(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        return tar.getnames()


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "project", {
        "MLproject": "name: p\n",
        "train.py": "print('hi')\n",
        "data/train.csv": "a,b\n1,2\n",
        "data/big.csv": "x" * 100,
        "data/keep.csv": "k\n",
        "notes/a.ipynb": "{}",
        "outputs/model.bin": "m",
        "pkg/__pycache__/x.pyc": "c",
        ".git/HEAD": "ref",
        "mlruns/0/meta.yaml": "m",
        ".venv/bin/python": "p",
        "src/outputs/keep.txt": "nested, but only /outputs is anchored",
    })


def test_always_skipped_directories_stay_out(project: Path, tmp_path: Path) -> None:
    info = package(project, tmp_path / "p.tar.gz")
    names = names_in(info.path)
    assert not [n for n in names if n.split("/")[0] in (".git", "mlruns", ".venv")]
    assert not [n for n in names if "__pycache__" in n]
    assert "train.py" in names and "data/train.csv" in names
    assert all(not n.startswith("/") and ".." not in n.split("/") for n in names)


def test_mlflowignore_patterns_comments_directories_globs_anchors_and_negation(
        project: Path, tmp_path: Path) -> None:
    (project / ".mlflowignore").write_text(
        "# comment\n\n*.ipynb\n/outputs/\ndata/*.csv\n!data/keep.csv\n")
    info = package(project, tmp_path / "p.tar.gz")
    assert sorted(info.files) == [".mlflowignore", "MLproject", "data/keep.csv",
                                  "src/outputs/keep.txt", "train.py"]
    assert names_in(info.path) == [".mlflowignore", "MLproject", "data", "data/keep.csv",
                                   "notes", "pkg", "src", "src/outputs",
                                   "src/outputs/keep.txt", "train.py"]


def test_ignore_rules_follow_gitignore() -> None:
    rules = parse_ignore("build/\n*.log\n/top.txt\ndocs/**/*.md\n\\#hash\n")
    assert is_ignored("build", True, rules) and is_ignored("a/build", True, rules)
    assert not is_ignored("build", False, rules)  # "dir/" matches directories only
    assert is_ignored("x/y.log", False, rules)
    assert is_ignored("top.txt", False, rules) and not is_ignored("a/top.txt", False, rules)
    assert is_ignored("docs/a/b/c.md", False, rules) and is_ignored("docs/c.md", False, rules)
    assert not is_ignored("docs.md", False, rules)
    assert is_ignored("#hash", False, rules)
    assert not is_ignored("a*b", False, parse_ignore("a?b/\n"))  # ? never crosses a '/'
    assert not is_ignored("a/b", False, parse_ignore("a*b\n"))  # nor does *


def test_same_tree_same_bytes(project: Path, tmp_path: Path) -> None:
    first = package(project, tmp_path / "a.tar.gz").path.read_bytes()
    for path in project.rglob("*"):  # new times must not change the archive
        os.utime(path, (1_000_000, 1_000_000), follow_symlinks=False)
    assert package(project, tmp_path / "b.tar.gz").path.read_bytes() == first


def test_package_over_the_limit_names_limit_size_largest_files_and_mlflowignore(
        project: Path, tmp_path: Path) -> None:
    (project / "data" / "huge.parquet").write_bytes(b"\0" * 3 * 1024 * 1024)
    (project / "data" / "medium.bin").write_bytes(b"\0" * 1024 * 1024)
    with pytest.raises(PackageError) as caught:
        package(project, tmp_path / "p.tar.gz", max_bytes=2 * 1024 * 1024)
    message = str(caught.value)
    assert "over the 2.0 MiB limit" in message and "the project is 4.0 MiB" in message
    assert "largest files: data/huge.parquet (3.0 MiB), data/medium.bin (1.0 MiB), " \
           "data/big.csv (100 B)" in message
    assert ".mlflowignore" in message
    assert not (tmp_path / "p.tar.gz").exists()


def test_symlinks_leading_outside_are_skipped_and_inside_kept(project: Path,
                                                            tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink(tmp_path / "secret.txt", project / "escape.txt")
    os.symlink("/etc", project / "etc")
    os.symlink("train.py", project / "alias.py")
    info = package(project, tmp_path / "p.tar.gz")
    assert "escape.txt" not in info.files and "etc" not in info.files
    assert any(s.startswith("escape.txt") for s in info.skipped)
    assert "alias.py" in info.files
    out = tmp_path / "out"
    unpack(info.path, out)
    assert (out / "alias.py").read_text() == "print('hi')\n"
    assert not (out / "escape.txt").exists()


def test_unpack_round_trip_keeps_contents_and_executable_bits(project: Path,
                                                              tmp_path: Path) -> None:
    (project / "run.sh").write_text("#!/bin/sh\n")
    (project / "run.sh").chmod(0o755)
    info = package(project, tmp_path / "p.tar.gz")
    out = tmp_path / "out"
    names = unpack(info.path, out)
    assert "data/train.csv" in names
    assert (out / "data" / "train.csv").read_text() == "a,b\n1,2\n"
    assert os.access(out / "run.sh", os.X_OK)


def evil_archive(path: Path, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        good = tarfile.TarInfo("MLproject")
        good.size = 1
        tar.addfile(good, io.BytesIO(b"x"))
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info


@pytest.mark.parametrize("member", [
    tarfile.TarInfo("../escape.txt"),
    tarfile.TarInfo("/tmp/absolute.txt"),
    _symlink("link", "/etc/passwd"),
    _symlink("link", "../../outside"),
    _device("dev"),
], ids=["dotdot", "absolute", "absolute-link", "link-outside", "device"])
def test_unpack_refuses_unsafe_entries_and_writes_nothing(tmp_path: Path,
                                                          member: tarfile.TarInfo) -> None:
    archive = evil_archive(tmp_path / "evil.tar.gz", member)
    out = tmp_path / "deep" / "out"
    with pytest.raises(PackageError, match="unsafe entry refused"):
        unpack(archive, out)
    assert list(out.iterdir()) == []  # the good entry before it was not written either
    assert not (tmp_path / "deep" / "escape.txt").exists()


def test_unpack_refuses_more_than_the_limit(tmp_path: Path) -> None:
    archive = evil_archive(tmp_path / "big.tar.gz", tarfile.TarInfo("big"), b"\0" * 5000)
    with pytest.raises(PackageError, match="unpacks to more than"):
        unpack(archive, tmp_path / "out", max_bytes=4096)


def test_unpack_of_something_else_says_so(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive")
    with pytest.raises(PackageError, match="cannot be unpacked"):
        unpack(junk, tmp_path / "out")

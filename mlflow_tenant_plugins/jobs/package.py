"""A project directory as one ``.tar.gz``, and back: what the backend uploads and the runner
unpacks.

The archive holds only paths relative to the project (no absolute paths, no ``..``), in sorted
order with fixed times and owners, so the same tree gives the same bytes (a re-run uploads an
identical package). Never packaged: ``.git/``, ``__pycache__/``, ``mlruns/``, ``.venv/``,
whatever ``.mlflowignore`` names (gitignore patterns) and symlinks that lead outside the
project. A size limit stops a stray data set from being uploaded for every run; its error
names the biggest files so the user knows what to ignore.

Standard library only: the runner inside a job imports it before anything else works.
"""

from __future__ import annotations

import gzip
import os
import re
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

IGNORE_FILE = ".mlflowignore"
ALWAYS_SKIPPED = (".git", "__pycache__", "mlruns", ".venv")
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
# An archive with more entries than this is not a project (and would be slow to unpack).
MAX_MEMBERS = 100_000


class PackageError(ValueError):
    """The project cannot be packaged, or an archive cannot be unpacked safely."""


@dataclass(frozen=True)
class PackageInfo:
    """What was packaged: ``files`` are the archived paths (POSIX, relative to the project);
    ``skipped`` says what was left out and why (symlinks leading outside, special files)."""

    path: Path
    files: list[str]
    total_bytes: int
    archive_bytes: int
    skipped: list[str] = field(default_factory=list)


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


# -- .mlflowignore -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern[str]
    negated: bool
    dir_only: bool
    anchored: bool  # matched against the whole relative path, not only the name


def _translate(glob: str) -> str:
    """A gitignore glob as a regular expression: ``*`` and ``?`` stay within one path
    segment, ``**`` crosses segments, ``[...]`` is a character class."""
    out, i = [], 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = glob.find("]", i + 2 if glob[i + 1:i + 2] in ("!", "]") else i + 1)
            if end == -1:
                out.append(re.escape(c))
                i += 1
            else:
                body = glob[i + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
                i = end + 1
        elif c == "\\" and i + 1 < len(glob):
            out.append(re.escape(glob[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def parse_ignore(text: str) -> list[_Pattern]:
    """Patterns of a ``.mlflowignore``: gitignore's syntax (comments, blank lines, ``dir/``,
    ``*.csv``, ``/anchored``, ``a/**/b``, ``!negation``)."""
    patterns = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if negated:
            line = line[1:]
        elif line.startswith("\\"):  # "\#name", "\!name": a literal first character
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = "/" in line
        line = line.lstrip("/")
        if not line:
            continue
        patterns.append(_Pattern(re.compile(_translate(line) + r"\Z"), negated, dir_only,
                                 anchored))
    return patterns


def is_ignored(relpath: str, is_dir: bool, patterns: list[_Pattern]) -> bool:
    """Whether ``relpath`` (POSIX, relative to the project) is ignored: the last matching
    pattern decides, as in git."""
    name = relpath.rsplit("/", 1)[-1]
    ignored = False
    for p in patterns:
        if p.dir_only and not is_dir:
            continue
        if p.regex.match(relpath if p.anchored else name):
            ignored = not p.negated
    return ignored


# -- packaging -----------------------------------------------------------------------------------
def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _collect(root: Path, patterns: list[_Pattern]) -> tuple[list[tuple[str, Path, str]],
                                                              list[str]]:
    """(entries, skipped): entries are (relpath, path, kind) with kind "dir", "file" or
    "link", in sorted order, parents before children."""
    entries: list[tuple[str, Path, str]] = []
    skipped: list[str] = []

    def walk(directory: Path, prefix: str) -> None:
        for child in sorted(directory.iterdir(), key=lambda p: p.name):
            rel = f"{prefix}{child.name}"
            st = child.lstat()
            if stat.S_ISLNK(st.st_mode):
                target = child.resolve()
                if not target.exists() or not _inside(target, root):
                    skipped.append(f"{rel} (symlink to {os.readlink(child)}, outside the "
                                   "project)")
                    continue
                if is_ignored(rel, target.is_dir(), patterns):
                    continue
                entries.append((rel, child, "link"))
            elif stat.S_ISDIR(st.st_mode):
                if child.name in ALWAYS_SKIPPED or is_ignored(rel, True, patterns):
                    continue
                entries.append((rel, child, "dir"))
                walk(child, rel + "/")
            elif stat.S_ISREG(st.st_mode):
                if not is_ignored(rel, False, patterns):
                    entries.append((rel, child, "file"))
            elif not is_ignored(rel, False, patterns):
                skipped.append(f"{rel} (not a regular file)")

    walk(root, "")
    kept = {rel for rel, _, kind in entries if kind != "link"}
    for entry in [e for e in entries if e[2] == "link"]:
        target = entry[1].resolve().relative_to(root).as_posix()
        if target not in kept:  # the project itself, or something left out: would dangle
            entries.remove(entry)
            skipped.append(f"{entry[0]} (symlink to {os.readlink(entry[1])}, which is not "
                           "packaged)")
    return entries, skipped


def _too_big(total: int, limit: int, sizes: list[tuple[int, str]]) -> PackageError:
    largest = ", ".join(f"{rel} ({human_size(size)})"
                        for size, rel in sorted(sizes, key=lambda s: (-s[0], s[1]))[:3])
    return PackageError(
        f"the project is {human_size(total)}, over the {human_size(limit)} limit for a job's "
        f"package; largest files: {largest}. Leave data and outputs out with a "
        f"{IGNORE_FILE} file beside MLproject (gitignore patterns, e.g. 'data/' or '*.parquet') "
        "and read big data from a URI (s3://…, runs:/…) instead")


def _info(rel: str, kind: str, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(rel)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    if kind == "dir":
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        info.mode = 0o755 if mode & stat.S_IXUSR else 0o644
        info.size = size
    return info


def package(project_dir: str | os.PathLike[str], dest: str | os.PathLike[str], *,
            max_bytes: int = DEFAULT_MAX_BYTES) -> PackageInfo:
    """Write ``project_dir`` as a deterministic ``.tar.gz`` to ``dest`` (outside the project,
    or it is left out like any file). Raises :class:`PackageError` when the files add up to
    more than ``max_bytes``."""
    root = Path(project_dir).resolve()
    if not root.is_dir():
        raise PackageError(f"project directory {str(project_dir)!r} not found")
    dest = Path(dest)
    ignore = root / IGNORE_FILE
    patterns = parse_ignore(ignore.read_text(errors="replace")) if ignore.is_file() else []
    entries, skipped = _collect(root, patterns)
    dest_resolved = dest.resolve()
    entries = [e for e in entries if e[1].resolve() != dest_resolved or e[2] == "dir"]
    sizes = [(e[1].stat().st_size, e[0]) for e in entries if e[2] == "file"]
    total = sum(size for size, _ in sizes)
    if total > max_bytes:
        raise _too_big(total, max_bytes, sizes)
    files = []
    with open(dest, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, path, kind in entries:
            if kind == "dir":
                tar.addfile(_info(rel, "dir", 0o755))
            elif kind == "link":
                info = _info(rel, "link", 0o644)
                info.type = tarfile.SYMTYPE
                info.linkname = os.path.relpath(path.resolve(), path.parent)
                tar.addfile(info)
                files.append(rel)
            else:
                st = path.stat()
                with open(path, "rb") as handle:
                    tar.addfile(_info(rel, "file", st.st_mode, st.st_size), handle)
                files.append(rel)
    return PackageInfo(path=dest, files=files, total_bytes=total,
                       archive_bytes=dest.stat().st_size, skipped=skipped)


# -- unpacking -----------------------------------------------------------------------------------
def unpack(archive: str | os.PathLike[str], dest: str | os.PathLike[str], *,
           max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    """Unpack ``archive`` into ``dest`` and return the member names. Every member is checked
    by tarfile's ``data`` filter before anything is written (no absolute paths, nothing
    outside ``dest``, no links leading out, no devices), so a bad archive leaves ``dest``
    untouched; more than ``max_bytes`` unpacked is refused too."""
    target = Path(dest).resolve()
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            members, total = [], 0
            for member in tar:
                if len(members) >= MAX_MEMBERS:
                    raise PackageError(f"archive {archive}: more than {MAX_MEMBERS} entries")
                try:
                    if member.name.startswith(("/", "\\")) or os.path.isabs(member.name):
                        # the data filter would strip the slash; a package never has one
                        raise tarfile.AbsolutePathError(member)
                    checked = tarfile.data_filter(member, str(target))
                except tarfile.FilterError as exc:
                    raise PackageError(f"archive {archive}: unsafe entry refused: {exc}") \
                        from None
                if checked is None:
                    continue
                total += checked.size if checked.isfile() else 0
                if total > max_bytes:
                    raise PackageError(f"archive {archive}: unpacks to more than "
                                       f"{human_size(max_bytes)}")
                members.append(checked)
            tar.extractall(str(target), members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise PackageError(f"archive {archive} cannot be unpacked: {exc}") from None
    return [m.name for m in members]

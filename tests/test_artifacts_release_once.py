"""An object's size goes back to the tenant's quota at most once, however many requests delete
or overwrite it at the same time (attacker pass 3: twelve concurrent DELETEs of one artifact
each gave its size back, so the ledger fell below what S3 holds). Threads race one key of a
real tenant-s3 repository against moto S3 and the registry's sqlite ledger."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlflow_tenant_plugins.artifacts.quota import RESOURCE, ObjectVersion
from mlflow_tenant_plugins.artifacts.repository import TenantS3ArtifactRepository
from tests.fixtures.artifacts import ArtifactEnv

RACERS = 12


def _file(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def _race(actions: list[Callable[[], None]]) -> None:
    """Run ``actions`` together (released by one barrier); re-raise the first failure."""
    barrier = threading.Barrier(len(actions))

    def run(action: Callable[[], None]) -> None:
        barrier.wait(timeout=30)
        action()

    with ThreadPoolExecutor(len(actions)) as pool:
        for future in [pool.submit(run, a) for a in actions]:
            future.result(timeout=120)


def _repos(env: ArtifactEnv, tenant: str, n: int) -> list[TenantS3ArtifactRepository]:
    """One repository per racer, as separate requests (and workers) would build them."""
    return [env.repo(tenant) for _ in range(n)]


def test_concurrent_deletes_of_one_object_release_its_size_once_every_time(
    artifact_env: ArtifactEnv, tmp_path: Path
) -> None:
    t = artifact_env.tenant(storage_bytes=1_000_000)
    repo = artifact_env.repo(t)
    where = f"workspaces/{t}/1/run"
    repo.log_artifact(_file(tmp_path / "keep" / "keep.bin", b"k" * 1000), where)
    # The same bytes every round, written again at once: rounds often fall in one S3 second,
    # so a version's ETag, size and LastModified repeat — each must still be released once.
    victim = _file(tmp_path / "victim" / "victim.bin", b"v" * 50_000)
    repos = [repo] * RACERS
    for _round in range(4):
        repo.log_artifact(victim, where)
        assert artifact_env.used(t) == 51_000 == artifact_env.stored(t)
        _race([lambda r=r: r.delete_artifacts(f"{where}/victim.bin") for r in repos])
        assert artifact_env.used(t) == 1000 == artifact_env.stored(t)


def test_concurrent_overwrites_and_deletes_of_one_key_never_leave_the_ledger_below_s3(
    artifact_env: ArtifactEnv, tmp_path: Path
) -> None:
    t = artifact_env.tenant(storage_bytes=10_000_000)
    repo = artifact_env.repo(t)
    where = f"workspaces/{t}/1/run"
    big = _file(tmp_path / "big" / "m.bin", b"B" * 200_000)
    small = [_file(tmp_path / f"s{i}" / "m.bin", bytes([65 + i]) * (1000 + i)) for i in range(8)]
    for _round in range(3):
        repo.log_artifact(big, where)
        writers, deleters = _repos(artifact_env, t, len(small)), _repos(artifact_env, t, 4)
        writes = [lambda r=r, f=f: r.log_artifact(f, where)
                  for r, f in zip(writers, small, strict=True)]
        deletes = [lambda r=r: r.delete_artifacts(f"{where}/m.bin") for r in deleters]
        _race(writes + deletes)
        # Each replaced or deleted version was given back at most once: the ledger may count
        # an object a racing overwrite removed unseen (reconcile corrects that), never less
        # than S3 holds. The old code gave the 200 kB object back once per racer.
        used, stored = artifact_env.used(t), artifact_env.stored(t)
        assert stored <= used <= stored + sum(1000 + i for i in range(8))
        artifact_env.registry.ledger.set_used(t, RESOURCE, stored)


def test_a_release_newer_than_the_callers_look_is_the_same_version_and_counts_once(
    artifact_env: ArtifactEnv,
) -> None:
    """The ledger's rule, without S3: a version released after the caller looked at it was
    released by a racer (nothing more); one released before was an earlier object with the
    same name-and-second (identical bytes rewritten), whose successor is given back."""
    t = artifact_env.tenant(storage_bytes=1000)
    ledger = artifact_env.registry.ledger
    ledger.reserve(t, RESOURCE, 300)
    from datetime import UTC, datetime

    def version(seen: int) -> ObjectVersion:
        return ObjectVersion.of(t, "b", "k", '"e"', datetime(2030, 1, 1, tzinfo=UTC), 100, seen)

    before = ledger.release_mark()
    assert ledger.release_removed(t, RESOURCE, [version(before)]) == 100
    assert ledger.release_removed(t, RESOURCE, [version(before)]) == 0  # a racer: same look
    after = ledger.release_mark()
    assert ledger.release_removed(t, RESOURCE, [version(after)]) == 100  # looked later
    assert ledger.release_removed(t, RESOURCE, [version(after), version(after)]) == 0
    assert artifact_env.used(t) == 100

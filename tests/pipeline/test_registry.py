"""The registry: version numbers, statuses, atomic moves under a lock, corrupt documents."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from skewguard.errors import DataError
from skewguard.pipeline import ModelRegistry, VersionStatus


def staged(registry: ModelRegistry, name: str) -> Path:
    registry.root.mkdir(parents=True, exist_ok=True)
    directory = registry.root / f".staging-{name}"
    directory.mkdir()
    (directory / "weights.pt").write_bytes(b"x")
    return directory


def test_first_version_is_production_later_ones_are_candidates(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, "ctr")
    assert registry.production_dir() is None
    entries = [
        registry.register(staged(registry, str(i)), feature_state_hash="h", metrics={}, promote_first=True)
        for i in range(3)
    ]
    assert [(e.version, e.status) for e in entries] == [
        ("v1", VersionStatus.PRODUCTION),
        ("v2", VersionStatus.CANDIDATE),
        ("v3", VersionStatus.CANDIDATE),
    ]
    assert registry.production_dir() == tmp_path / "ctr" / "v1"
    assert (tmp_path / "ctr" / "v3" / "weights.pt").is_file()
    assert not list(registry.root.glob(".staging-*"))


def test_without_promote_first_even_the_first_version_is_a_candidate(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, "ctr")
    entry = registry.register(staged(registry, "a"), feature_state_hash="h", metrics={}, promote_first=False)
    assert entry.status is VersionStatus.CANDIDATE
    assert registry.production_dir() is None


def test_an_existing_version_directory_is_never_reused(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, "ctr")
    (registry.root / "v4").mkdir(parents=True)
    entry = registry.register(staged(registry, "a"), feature_state_hash="h", metrics={}, promote_first=True)
    assert entry.version == "v5"


def test_concurrent_registrations_get_distinct_versions(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, "ctr")
    stagings = [staged(registry, str(i)) for i in range(6)]
    versions: list[str] = []
    lock = threading.Lock()

    def register(directory: Path) -> None:
        entry = ModelRegistry(tmp_path, "ctr").register(
            directory, feature_state_hash="h", metrics={}, promote_first=True
        )
        with lock:
            versions.append(entry.version)

    threads = [threading.Thread(target=register, args=(d,)) for d in stagings]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(versions, key=lambda v: int(v[1:])) == [f"v{i}" for i in range(1, 7)]
    document = registry.load()
    assert len(document.versions) == 6
    assert sum(v.status is VersionStatus.PRODUCTION for v in document.versions) == 1


def test_a_corrupt_or_foreign_registry_is_a_data_error(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, "ctr")
    registry.root.mkdir(parents=True)
    registry.path.write_text("{not json")
    with pytest.raises(DataError, match="not a registry document"):
        registry.load()
    registry.path.write_text('{"format": "skewguard.registry/1", "model": "other", "versions": []}')
    with pytest.raises(DataError, match="'other'"):
        registry.load()

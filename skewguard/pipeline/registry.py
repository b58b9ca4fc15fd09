"""The model registry: ``<models_dir>/<model_name>/registry.json``, one entry per version.

A version is ``production`` (serving traffic) or ``candidate`` (a shadow: scored off the request path
and compared with production before anyone switches). The retraining pipeline only ever adds
versions: the first one ever may be promoted to production because there is nothing to shadow; every
later one is a candidate until someone promotes it.

Writers are serialised by an exclusive ``flock`` on ``.registry.lock`` next to the registry, and the
document is replaced atomically (write a temporary file, then ``os.replace``), so two pipelines
finishing at once get distinct version numbers and readers never see half a file. A version's
directory is renamed into place under the same lock, after every artifact was written: a directory
named like a version is always complete.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skewguard.errors import DataError

REGISTRY_FILE = "registry.json"
LOCK_FILE = ".registry.lock"
_VERSION = re.compile(r"^v(\d+)$")


class VersionStatus(StrEnum):
    """Where a version stands."""

    PRODUCTION = "production"
    CANDIDATE = "candidate"


class RegistryEntry(BaseModel):
    """One registered version."""

    model_config = ConfigDict(extra="forbid")

    version: str
    status: VersionStatus
    created: str
    feature_state_hash: str
    metrics: dict[str, float | None] = Field(default_factory=dict)


class RegistryDocument(BaseModel):
    """The whole ``registry.json``."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["skewguard.registry/1"] = "skewguard.registry/1"
    model: str
    versions: list[RegistryEntry] = Field(default_factory=list)

    def production(self) -> RegistryEntry | None:
        """The production version, if any (the latest one marked so)."""
        found = [v for v in self.versions if v.status is VersionStatus.PRODUCTION]
        return found[-1] if found else None


def version_number(version: str) -> int:
    """``"v12"`` → 12; a DataError for anything else."""
    match = _VERSION.match(version)
    if match is None:
        msg = f"model version {version!r}: expected 'v' followed by a number"
        raise DataError(msg)
    return int(match.group(1))


class ModelRegistry:
    """The registry of one model name under a models directory."""

    def __init__(self, models_dir: Path, model_name: str) -> None:
        self.root = models_dir / model_name
        self.model_name = model_name

    @property
    def path(self) -> Path:
        """The ``registry.json`` file."""
        return self.root / REGISTRY_FILE

    def version_dir(self, version: str) -> Path:
        """Where a version's artifacts live."""
        return self.root / version

    def load(self) -> RegistryDocument:
        """The current document (an empty one when nothing was registered yet)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return RegistryDocument(model=self.model_name)
        except OSError as exc:
            msg = f"registry {str(self.path)!r}: cannot be read ({exc.strerror})"
            raise DataError(msg) from exc
        try:
            document = RegistryDocument.model_validate_json(text)
        except ValidationError as exc:
            msg = f"registry {str(self.path)!r}: not a registry document ({exc.errors()[0]['msg']})"
            raise DataError(msg) from exc
        if document.model != self.model_name:
            msg = f"registry {str(self.path)!r} is for model {document.model!r}, not {self.model_name!r}"
            raise DataError(msg)
        return document

    def production_dir(self) -> Path | None:
        """The production version's directory, if there is a production version."""
        entry = self.load().production()
        return None if entry is None else self.version_dir(entry.version)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / LOCK_FILE).open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _next_version(self, document: RegistryDocument) -> str:
        numbers = [version_number(v.version) for v in document.versions]
        # Directories too: a version whose registry update was lost must not be overwritten.
        numbers += [int(m.group(1)) for p in self.root.iterdir() if (m := _VERSION.match(p.name))]
        return f"v{max(numbers, default=0) + 1}"

    def _write(self, document: RegistryDocument) -> None:
        temporary = self.root / f".{REGISTRY_FILE}.{os.getpid()}.tmp"
        temporary.write_text(document.model_dump_json(indent=2), encoding="utf-8")
        temporary.replace(self.path)

    def register(
        self,
        staging: Path,
        *,
        feature_state_hash: str,
        metrics: Mapping[str, float | None],
        promote_first: bool,
        finalize: Callable[[str, str], None] | None = None,
    ) -> RegistryEntry:
        """Give ``staging`` the next version number, move it into place and record it.

        ``finalize(version, created)`` runs under the lock before the move, so files that must name
        the version (the manifest) are written into ``staging`` with the number they end up under.
        """
        with self._locked():
            document = self.load()
            version = self._next_version(document)
            created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            if finalize is not None:
                finalize(version, created)
            first = not document.versions
            status = VersionStatus.PRODUCTION if first and promote_first else VersionStatus.CANDIDATE
            entry = RegistryEntry(
                version=version,
                status=status,
                created=created,
                feature_state_hash=feature_state_hash,
                metrics=dict(metrics),
            )
            staging.rename(self.version_dir(version))
            self._write(document.model_copy(update={"versions": [*document.versions, entry]}))
        return entry

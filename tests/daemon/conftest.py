"""Fixtures shared by the daemon tests: one CTR baseline per module, daemons closed after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from skewguard.baseline import Baseline
from skewguard.daemon import MonitorDaemon, load_monitors
from skewguard.io.broker import EmbeddedBroker
from skewguard.store import Store
from tests.daemon.helpers import build_ctr_baseline, settings_for


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("baseline")
    build_ctr_baseline(directory)
    return directory


@pytest.fixture(scope="module")
def baseline(baseline_dir: Path) -> Baseline:
    return Baseline.load(baseline_dir)


@pytest.fixture
def daemon_for(
    kafka_broker: EmbeddedBroker, baseline_dir: Path, tmp_path: Path
) -> Iterator[Callable[..., MonitorDaemon]]:
    """Open daemons on the shared broker with ``settings_for`` overrides; each closes after the test."""
    opened: list[tuple[MonitorDaemon, Store]] = []

    def make(**overrides: Any) -> MonitorDaemon:
        settings = settings_for(
            kafka_broker.bootstrap_servers, baseline_dir, f"sqlite:///{tmp_path / 'results.db'}", **overrides
        )
        store = Store(settings.store.url)
        daemon = MonitorDaemon(settings, load_monitors(settings), store)
        daemon.open()
        opened.append((daemon, store))
        return daemon

    yield make
    for daemon, store in opened:
        daemon.close()
        store.close()

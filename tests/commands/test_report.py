"""``skewguard report``: the Evidently HTML of a stored window and the effects PNG, from a real store."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from features.ctr import CTR_FEATURES
from skewguard.cli import app
from skewguard.commands.common import EXIT_OK, EXIT_USAGE
from skewguard.commands.report import find_windows
from skewguard.demo.traffic import TrafficShape
from skewguard.errors import DataError
from skewguard.monitor import ModelMonitor, MonitorOptions
from skewguard.results import WindowKey, WindowResult
from skewguard.store import Store
from tests.daemon.helpers import SEASONAL, T0, WINDOW, build_ctr_baseline, window_records

GROUP = "sg-report-test"
WINDOWS = 4
DRIFTED = (2, 3)  # prices move up from the third window on
NOW = T0 + dt.timedelta(hours=1)


@dataclass(frozen=True)
class Deployment:
    root: Path
    baseline: Path
    store_url: str

    def config(self, name: str = "monitor.toml", *, store_url: str | None = None, models: str = "") -> Path:
        path = self.root / name
        path.write_text(
            f'group_id = "{GROUP}"\n'
            f'[kafka]\nbootstrap_servers = ["127.0.0.1:9"]\n'
            f'[store]\nurl = "{store_url or self.store_url}"\n'
            f'[[models]]\nname = "ctr"\nbaseline = "{self.baseline}"\n'
            f'features = "features.ctr:CTR_FEATURES"\ndrift_exclude = {SEASONAL!r}\n' + models
        )
        return path


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """A baseline and a SQLite store holding four finalised windows, the way the daemon stores them."""
    root = tmp_path_factory.mktemp("report")
    baseline = build_ctr_baseline(root / "baseline")
    monitor = ModelMonitor(baseline, CTR_FEATURES, options=MonitorOptions(drift_exclude=frozenset(SEASONAL)))
    store_url = f"sqlite:///{root / 'results.db'}"
    store = Store(store_url)
    try:
        for index in range(WINDOWS):
            shape = TrafficShape(price_log_mean=3.6) if index in DRIFTED else TrafficShape()
            records = window_records(baseline, index, 1500, seed=100 + index, gen={"shape": shape})
            accumulator = monitor.new_accumulator()
            monitor.fold(accumulator, records)
            start = T0 + index * WINDOW
            result = monitor.judge(WindowKey("ctr", start, start + WINDOW), accumulator)
            with store.transaction() as tx:
                tx.finalise_window(GROUP, result, now=NOW, profile=accumulator.profile.to_dict())
    finally:
        store.close()
    return Deployment(root, root / "baseline", store_url)


def run(*args: str | Path) -> Any:
    return CliRunner().invoke(app, ["report", *map(str, args)])


def window_start(index: int) -> dt.datetime:
    return T0 + index * WINDOW


def check_files(output: str, out: Path, index: int) -> tuple[Path, Path]:
    stamp = f"{window_start(index):%Y%m%dT%H%M%SZ}"
    html, png = out / f"ctr-{stamp}-drift.html", out / f"ctr-{stamp}-effects.png"
    assert str(html) in output and str(png) in output
    page = html.read_text(encoding="utf-8")
    assert len(page) > 50_000 and "<html" in page.lower()
    for column in ("log_price", "category", "device", "clicks_7d", "prediction"):
        assert f'"column_name": "{column}"' in page  # Evidently's drift widget of that column
    for seasonal in SEASONAL:  # not drift-checked by the monitor, so not on the drift page either
        assert f'"column_name": "{seasonal}"' not in page
    image = imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert float(image[..., :3].std()) > 0.01
    return html, png


def test_latest_window_report_writes_html_and_png(deployment: Deployment, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("--config", deployment.config(), "--out", out, "--last", "10")
    assert result.exit_code == EXIT_OK, result.output
    latest = WINDOWS - 1
    assert f"window {window_start(latest).isoformat()}" in result.stdout
    assert "drift:log_price" in result.stdout  # the latest window is a drifted one
    assert f"effects over {WINDOWS} window(s)" in result.stdout  # all there are, though 10 were asked
    check_files(result.stdout, out, latest)
    assert len(list(out.iterdir())) == 2


def test_window_chosen_by_its_iso_start(deployment: Deployment, tmp_path: Path) -> None:
    out = tmp_path / "out"
    start = window_start(1).isoformat().replace("+00:00", "Z")
    result = run("--config", deployment.config(), "--out", out, "--window", start, "--last", "2")
    assert result.exit_code == EXIT_OK, result.output
    assert f"window {window_start(1).isoformat()}" in result.stdout
    assert "0 flagged" in result.stdout  # window 1 is before the drift
    assert "effects over 2 window(s)" in result.stdout  # window 1 and the one before it
    check_files(result.stdout, out, 1)


def test_an_empty_store_is_a_clear_error(deployment: Deployment, tmp_path: Path) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    Store(empty).close()
    config = deployment.config("empty.toml", store_url=empty)
    result = run("--config", config, "--out", tmp_path / "out")
    assert result.exit_code == EXIT_USAGE, result.output
    assert "no finalised window of model 'ctr'" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--window", "2026-06-01T12:00:00"], "no timezone"),
        (["--window", "yesterday"], "ISO-8601"),
        (["--window", "2020-01-01T00:00:00+00:00"], "no stored window of model 'ctr' starts at 2020-01-01"),
        (["--last", "0"], "--last"),
        (["--model", "fraud"], "--model 'fraud' is not in the config"),
    ],
)
def test_usage_errors_exit_2_and_write_nothing(
    deployment: Deployment, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    result = run("--config", deployment.config(), "--out", out, *args)
    assert result.exit_code == EXIT_USAGE, result.output
    assert result.stderr.startswith("error:") and message in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()


def test_config_problems_exit_2(deployment: Deployment, tmp_path: Path) -> None:
    missing = deployment.config("missing.toml", store_url=f"sqlite:///{tmp_path / 'nope.db'}")
    result = run("--config", missing, "--out", tmp_path / "out")
    assert result.exit_code == EXIT_USAGE and "does not exist" in result.stderr
    assert not (tmp_path / "nope.db").exists()  # reading must not create an empty store
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    result = run("--config", deployment.config(), "--out", blocked)
    assert result.exit_code == EXIT_USAGE and "cannot write the report into --out" in result.stderr
    second = '[[models]]\nname = "fraud"\nbaseline = "elsewhere"\nfeatures = "features.ctr:CTR_FEATURES"\n'
    two = deployment.config("two.toml", models=second)
    result = run("--config", two, "--out", tmp_path / "out")
    assert result.exit_code == EXIT_USAGE and "choose one with --model" in result.stderr


def test_an_old_window_is_found_by_paging_back(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'many.db'}")
    try:
        with store.transaction() as tx:
            for index in range(80):
                start = window_start(index)
                tx.finalise_window(GROUP, WindowResult(WindowKey("ctr", start, start + WINDOW), 10), now=NOW)
        oldest = find_windows(store, GROUP, "ctr", window_start(0), last=3)
        assert [w.result.key.start for w in oldest] == [window_start(0)]  # nothing before the first
        middle = find_windows(store, GROUP, "ctr", window_start(40), last=3)
        assert [w.result.key.start for w in middle] == [window_start(i) for i in (40, 39, 38)]
        latest = find_windows(store, GROUP, "ctr", None, last=5)
        assert [w.result.key.start for w in latest] == [window_start(i) for i in range(79, 74, -1)]
        with pytest.raises(DataError, match="starts at"):
            find_windows(store, GROUP, "ctr", window_start(40) + dt.timedelta(seconds=1), last=3)
        with pytest.raises(DataError, match="no finalised window of model 'fraud'"):
            find_windows(store, GROUP, "fraud", None, last=3)
    finally:
        store.close()

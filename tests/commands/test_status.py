"""``skewguard status``: the latest windows (event-time and count windows) and open alerts as tables."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from typer.testing import CliRunner

from skewguard.cli import EXIT_UNAVAILABLE, EXIT_USAGE, app
from skewguard.results import Check, Severity, WindowKey, WindowResult
from skewguard.store import NewAlert, Store

T = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def write_config(folder: Path, store_url: str) -> Path:
    """A monitor config of consumer group "g" over the store at ``store_url``."""
    config = folder / "monitor.toml"
    config.write_text(
        f'group_id = "g"\n[kafka]\nbootstrap_servers = ["k:9092"]\n[store]\nurl = "{store_url}"\n'
        '[[models]]\nname = "ctr"\nbaseline = "b"\nfeatures = "x:y"\n'
    )
    return config


def test_status_lists_windows_by_span_or_number_and_open_alerts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'results.db'}"
    store = Store(url)
    with store.transaction() as tx:
        tx.finalise_window("g", WindowResult(WindowKey("ctr", T, T + dt.timedelta(minutes=5)), 1_234), now=T)
        counted = WindowKey("fraud", T + dt.timedelta(minutes=7), T + dt.timedelta(minutes=9), 41)
        window_id = tx.finalise_window("g", WindowResult(counted, 10_000, late_records=3), now=T)
        assert window_id is not None
        alert = NewAlert("k", "fraud", Check.DRIFT, "amount", Severity.CRITICAL, "amount drifted", {})
        tx.add_alert(window_id, alert, now=T)
        # Another consumer group's alert in the same store: not this group's to show.
        theirs = tx.finalise_window("other", WindowResult(counted, 10, late_records=0), now=T)
        assert theirs is not None
        other = NewAlert("k2", "fraud", Check.DRIFT, "amount", Severity.CRITICAL, "their alert", {})
        tx.add_alert(theirs, other, now=T)
    store.close()
    config = write_config(tmp_path, url)
    result = CliRunner().invoke(app, ["status", "--config", str(config)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("ctr" in line and "2026-06-01 12:00–12:05" in line and "1,234" in line for line in lines)
    assert any(
        "fraud" in line and "#41 2026-06-01 12:07–12:09" in line and "10,000" in line for line in lines
    )
    assert any("amount drifted" in line and "critical" in line for line in lines)
    assert not any("their alert" in line for line in lines)


def test_status_shows_the_newest_open_alerts_and_counts_the_rest(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'results.db'}"
    store = Store(url)
    with store.transaction() as tx:
        for minute in range(3):
            start = T + dt.timedelta(minutes=5 * minute)
            key = WindowKey("ctr", start, start + dt.timedelta(minutes=5))
            window_id = tx.finalise_window("g", WindowResult(key, 100), now=start)
            assert window_id is not None
            alert = NewAlert(
                f"k{minute}", "ctr", Check.DRIFT, f"f{minute}", Severity.WARNING, f"f{minute} drifted", {}
            )
            tx.add_alert(window_id, alert, now=start)
    store.close()
    config = write_config(tmp_path, url)
    argv = ["status", "--config", str(config), "--alerts", "2"]
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "f2 drifted" in result.output and "f1 drifted" in result.output
    assert "f0 drifted" not in result.output
    assert "open alerts (3)" in result.output
    assert "1 older open alert not shown (--alerts 3 shows every one)" in result.output
    result = CliRunner().invoke(app, [*argv[:-1], "3"], env={"COLUMNS": "200"})
    assert "f0 drifted" in result.output and "not shown" not in result.output


def test_a_store_that_cannot_be_read_is_exit_3_not_a_finding(tmp_path: Path) -> None:
    """Exit 1 means a finding (a failed gate, violations): a pipeline must not read "no database" so."""
    config = write_config(tmp_path, "postgresql+psycopg://nobody@127.0.0.1:1/none")
    result = CliRunner().invoke(app, ["status", "--config", str(config)])
    assert result.exit_code == EXIT_UNAVAILABLE == 3, result.output
    assert "error:" in result.output and "cannot read the store" in result.output


def test_a_store_url_that_names_no_store_is_a_config_error_exit_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'no-such-folder' / 'x.db'}")
    result = CliRunner().invoke(app, ["status", "--config", str(config)])
    assert result.exit_code == EXIT_USAGE, result.output
    assert "no-such-folder" in result.output and "does not exist" in result.output


def test_reading_commands_refuse_a_store_file_that_does_not_exist_and_do_not_create_it(
    tmp_path: Path,
) -> None:
    # Reading used to create an empty file, then fail on its missing tables with an SQL dump (status),
    # or print an empty table and exit 0 (shadow report).
    missing = tmp_path / "results.db"
    config = write_config(tmp_path, f"sqlite:///{missing}")
    for command in (["status"], ["shadow", "report"]):
        result = CliRunner().invoke(app, [*command, "--config", str(config)])
        assert result.exit_code == EXIT_USAGE, (command, result.output)
        assert "does not exist; has the monitor run" in result.output
        assert not missing.exists()

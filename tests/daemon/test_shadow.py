"""Shadow candidates through the daemon: better → PROMOTE, worse → REJECT, identical never PROMOTE, a
candidate that drops/crashes → REJECT; and production's own results are unaffected by the candidates."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from features.ctr import CTR_FEATURES
from skewguard.baseline import Baseline
from skewguard.cli import app
from skewguard.daemon import MonitorDaemon, load_monitors
from skewguard.demo.traffic import ctr_baseline, generate_requests, serving_records
from skewguard.io.broker import EmbeddedBroker
from skewguard.records import LabelRecord, ServingRecord
from skewguard.results import Stage
from skewguard.shadow.compare import Promotion, verdicts_from_results
from skewguard.store import Store
from tests.daemon.helpers import T0, WINDOW, click_scores, closing_record, produce, settings_for, step_until
from tests.daemon.test_labels import produce_labels

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    baseline = ctr_baseline(
        rows=16_000,
        seed=8,
        end=T0,
        window_size=1_000,
        calibration_draws=50,
        scores=lambda train: click_scores(train["click"].to_numpy(), 0.2, 9),
        with_label=True,
    )
    directory = tmp_path_factory.mktemp("shadow-baseline")
    baseline.save(directory)
    return directory


def window(state: object, index: int, n: int) -> tuple[list[ServingRecord], list[LabelRecord]]:
    frame = generate_requests(
        n, seed=300 + index, start=T0 + index * WINDOW, span=WINDOW - dt.timedelta(seconds=1)
    )
    frame["request_id"] = [f"w{index}-{i}" for i in range(n)]
    clicks = frame["click"].to_numpy()
    production = click_scores(clicks, 0.2, 10 + index)
    candidates = {
        "v-better": click_scores(clicks, 0.05, 20 + index),
        "v-worse": np.random.default_rng(30 + index).random(n),
        "v-same": production,
        "v-crashy": click_scores(clicks, 0.05, 40 + index),
    }
    crashed = np.random.default_rng(50 + index).random(n) < 0.2
    records = serving_records(frame, CTR_FEATURES, state, model="ctr", scores=production.tolist())  # type: ignore[arg-type]
    shadowed = [
        dataclasses.replace(
            record,
            shadow_predictions={
                version: float(values[i])
                for version, values in candidates.items()
                if not (version == "v-crashy" and crashed[i])
            },
        )
        for i, record in enumerate(records)
    ]
    labels = [
        LabelRecord(r.request_id, r.event_time + dt.timedelta(seconds=20), int(c))
        for r, c in zip(records, clicks, strict=True)
    ]
    return shadowed, labels


def test_candidates_get_the_right_promotion_verdict(
    kafka_broker: EmbeddedBroker, baseline_dir: Path, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    settings = settings_for(
        bootstrap,
        baseline_dir,
        f"sqlite:///{tmp_path / 'shadow.db'}",
        labels={"horizon_s": 60.0, "min_pairs": 200},
    )
    store = Store(settings.store.url)
    daemon = MonitorDaemon(settings, load_monitors(settings), store)
    daemon.open()
    state = Baseline.load(baseline_dir).state
    try:
        records: list[ServingRecord] = []
        labels: list[LabelRecord] = []
        for index in range(4):
            r, lab = window(state, index, 800)
            records += r
            labels += lab
        produce(bootstrap, settings.topics.serving, records, batch=40)
        produce_labels(bootstrap, settings.topics.labels, labels)
        produce(bootstrap, settings.topics.serving, closing_record(Baseline.load(baseline_dir), 12), batch=1)
        produce_labels(
            bootstrap,
            settings.topics.labels,
            [LabelRecord(f"far-{i}", T0 + dt.timedelta(minutes=30), 0) for i in range(20)],
        )
        step_until(daemon, lambda: daemon.counters.label_windows >= 4, timeout_s=120)
    finally:
        daemon.close()
    serving = [w.result for w in store.windows(limit=50)]
    labelled = [w.result for w in store.windows(stage=Stage.LABELS, limit=50)]
    verdicts = {v.version: v for v in verdicts_from_results(serving, labelled, required_windows=3)}
    assert verdicts["v-better"].verdict is Promotion.PROMOTE, verdicts["v-better"].reason
    assert verdicts["v-worse"].verdict is Promotion.REJECT, verdicts["v-worse"].reason
    assert verdicts["v-same"].verdict is Promotion.HOLD, verdicts["v-same"].reason
    assert verdicts["v-crashy"].verdict is Promotion.REJECT
    assert "missing" in verdicts["v-crashy"].reason
    # The candidates do not change production's own judgement: every production finding is clean.
    assert all(not f.flagged for r in serving for f in r.findings if f.check.value != "shadow")

    config = tmp_path / "monitor.yaml"
    import json

    config.write_text(json.dumps(settings.model_dump(mode="json", exclude_none=True)))
    result = CliRunner().invoke(
        app, ["shadow", "report", "--config", str(config), "--plot", str(tmp_path / "s.png")]
    )
    assert result.exit_code == 0, result.output
    assert "PROMOTE" in result.output and "REJECT" in result.output
    assert (tmp_path / "s.png").stat().st_size > 1000
    store.close()

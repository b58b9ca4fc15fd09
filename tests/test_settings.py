"""Monitor settings: file + environment overrides, and clear errors for bad values from either."""

from __future__ import annotations

from pathlib import Path

import pytest

from skewguard.errors import ConfigError
from skewguard.settings import load_settings

MINIMAL = {
    "kafka": {"bootstrap_servers": "file:9092"},
    "models": [{"name": "m", "baseline": "b", "features": "x:y"}],
}


@pytest.mark.parametrize("value", ["k1:9092,k2:9092", '["k1:9092", "k2:9092"]', " k1:9092 , k2:9092 "])
def test_bootstrap_servers_from_the_environment_in_plain_or_json_form(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKEWGUARD_KAFKA__BOOTSTRAP_SERVERS", value)
    assert load_settings(None, **MINIMAL).kafka.bootstrap_servers == ["k1:9092", "k2:9092"]


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text(
        '[kafka]\nbootstrap_servers = ["file:9092"]\n[store]\nurl = "sqlite:///file.db"\n'
        '[[models]]\nname = "m"\nbaseline = "b"\nfeatures = "x:y"\n'
    )
    monkeypatch.setenv("SKEWGUARD_STORE__URL", "postgresql+psycopg://env@db/x")
    settings = load_settings(config)
    assert settings.store.url == "postgresql+psycopg://env@db/x"
    assert settings.models[0].baseline == (tmp_path / "b").resolve()  # relative to the config file


def test_bad_environment_value_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKEWGUARD_MODELS", "[{not json")
    with pytest.raises(ConfigError, match="from the environment"):
        load_settings(None, **MINIMAL)


def test_unknown_key_and_wrong_type_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'windw': unknown key"):
        load_settings(None, **MINIMAL, windw={"size_s": 5})
    with pytest.raises(ConfigError, match=r"'window\.size_s'"):
        load_settings(None, **MINIMAL, window={"size_s": -1})


def test_count_windows_exclude_a_window_size(monkeypatch: pytest.MonkeyPatch) -> None:
    counted = load_settings(None, **MINIMAL, window={"count": 500}).window
    assert counted.count == 500
    assert type(counted).model_validate(counted.model_dump()) == counted  # a dumped config loads again
    timed = load_settings(None, **MINIMAL).window
    assert (timed.count, timed.size) == (None, 300.0)
    with pytest.raises(ConfigError, match=r"either size_s .* or count"):
        load_settings(None, **MINIMAL, window={"count": 500, "size_s": 60})
    monkeypatch.setenv("SKEWGUARD_WINDOW__COUNT", "0")
    with pytest.raises(ConfigError, match="count"):
        load_settings(None, **MINIMAL)


@pytest.mark.parametrize(
    ("topic", "why"),
    [
        ("serving log", "character other than"),
        ("serving\n", "character other than"),  # (kafka-python's own check lets this one through)
        ("", "empty"),
        ("x" * 250, "250 characters long"),
        ("..", "reserved"),
    ],
)
def test_a_topic_name_kafka_would_refuse_is_refused_with_the_key(topic: str, why: str) -> None:
    """Not at the first send, where a background producer would only count failures."""
    with pytest.raises(ConfigError, match=rf"'topics\.dead_letter'.*{why}"):
        load_settings(None, **MINIMAL, topics={"dead_letter": topic})
    assert load_settings(None, **MINIMAL, topics={"dead_letter": "a.b_c-9"}).topics.dead_letter == "a.b_c-9"


@pytest.mark.parametrize(
    ("variable", "named"),
    [
        ("SKEWGUARD_STORE_URL", "did you mean SKEWGUARD_STORE__URL?"),
        ("SKEWGUARD_KAFKA__BOOTSTRAP_SERVER", "did you mean SKEWGUARD_KAFKA__BOOTSTRAP_SERVERS?"),
        ("SKEWGUARD_MODELS__0__SKEW_MAX_RATE", "models is a list, set whole from the environment"),
    ],
)
def test_an_environment_variable_naming_no_setting_is_refused_not_ignored(
    variable: str, named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pydantic-settings ignores it: a misspelt SKEWGUARD_STORE_URL left the file's store in place.
    monkeypatch.setenv(variable, "x")
    with pytest.raises(ConfigError, match=rf"environment variable {variable} names no setting.*{named}"):
        load_settings(None, **MINIMAL)


def test_real_settings_and_non_setting_variables_in_the_environment_are_fine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SKEWGUARD_KAFKA__CLIENT_OPTIONS__METADATA_MAX_AGE_MS", "1000")  # a dict's free key
    monkeypatch.setenv("skewguard_http__port", "9200")  # case-insensitive, as pydantic-settings reads it
    monkeypatch.setenv("SKEWGUARD_BENCH_STORE", "sqlite:///bench.db")  # read by bench scale, not a setting
    settings = load_settings(None, **MINIMAL)
    assert settings.http.port == 9200
    assert settings.kafka.client_options == {"metadata_max_age_ms": "1000"}


def test_kubernetes_service_links_are_not_read_as_misspelt_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # A Service named skewguard-monitor gives every pod these: refusing them crash-looped the monitor.
    links = {
        "SKEWGUARD_MONITOR_SERVICE_HOST": "10.0.0.7",
        "SKEWGUARD_MONITOR_SERVICE_PORT": "9108",
        "SKEWGUARD_MONITOR_SERVICE_PORT_HTTP": "9108",
        "SKEWGUARD_MONITOR_PORT": "tcp://10.0.0.7:9108",
        "SKEWGUARD_MONITOR_PORT_9108_TCP": "tcp://10.0.0.7:9108",
        "SKEWGUARD_MONITOR_PORT_9108_TCP_PROTO": "tcp",
        "SKEWGUARD_MONITOR_PORT_9108_TCP_PORT": "9108",
        "SKEWGUARD_MONITOR_PORT_9108_TCP_ADDR": "10.0.0.7",
    }
    for name, value in links.items():
        monkeypatch.setenv(name, value)
    assert load_settings(None, **MINIMAL).http.port == 9108
    monkeypatch.setenv("SKEWGUARD_HTTP_PORT", "9200")  # a port setting misspelt is still a typo
    with pytest.raises(ConfigError, match="SKEWGUARD_HTTP_PORT names no setting"):
        load_settings(None, **MINIMAL)

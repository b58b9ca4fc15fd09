"""The monitor daemon's configuration: one TOML or YAML file, every key overridable by environment.

Environment variables win over the file, so one config file can be baked into an image and the
deployment-specific parts (store URL, webhook, brokers) injected as ``SKEWGUARD_<SECTION>__<KEY>``,
e.g. ``SKEWGUARD_STORE__URL=postgresql+psycopg://…`` or ``SKEWGUARD_KAFKA__BOOTSTRAP_SERVERS=k1:9092``.
Unknown keys are errors (a typo must not silently fall back to a default) — in the file, and in the
environment: a ``SKEWGUARD_*`` variable that names no setting (``SKEWGUARD_STORE_URL`` for
``SKEWGUARD_STORE__URL``) is refused, naming the closest real one. ``models`` is a list: from the
environment it is set whole (``SKEWGUARD_MODELS`` as a JSON list), never per key.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from skewguard.config import describe_validation_error, read_config_document
from skewguard.detect import DriftPolicy
from skewguard.errors import ConfigError
from skewguard.io.kafka import KafkaSettings, topic_name_problem
from skewguard.windows import LatePolicy


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TopicsConfig(_Section):
    """Kafka topics the daemon reads and writes."""

    serving: str = "skewguard.serving"
    """Serving log (records from ServingLogger), keyed by request id."""
    labels: str = "skewguard.labels"
    """Delayed labels, keyed by request id; co-partitioned with the serving log for scale-out."""
    dead_letter: str = "skewguard.dead-letter"
    """Where undecodable or invalid input goes, with the reason in the headers."""
    alerts: str = "skewguard.alerts"
    """Alerts, one JSON message each."""
    create_partitions: PositiveInt | None = None
    """When set, missing topics are created with this many partitions (demo, tests); in production
    topics are usually provisioned by the platform, so the default creates nothing."""

    @field_validator("serving", "labels", "dead_letter", "alerts")
    @classmethod
    def _legal_topic(cls, name: str) -> str:
        problem = topic_name_problem(name)
        if problem is not None:
            raise ValueError(problem)
        return name


class StoreConfig(_Section):
    """The results store."""

    url: str = "sqlite:///skewguard.db"
    """SQLAlchemy URL: a SQLite file, or postgresql+psycopg://user@host/db."""
    db_schema: str | None = None
    """PostgreSQL schema to keep the tables in (default: the database's default schema)."""


#: Event-time window length when the config sets none.
DEFAULT_WINDOW_S = 300.0


class WindowConfig(_Section):
    """Event-time windows (the default), or count windows."""

    size_s: PositiveFloat | None = None
    """Window length in seconds (tumbling, aligned to the epoch); 300 when neither this nor ``count``
    is set."""
    count: PositiveInt | None = None
    """Count windows instead: each window of a model holds this many of its records, an equal share
    (rounded up) from every serving partition in offset order. ``size_s`` must then be left out; a
    label counts if it arrives within ``labels.horizon_s`` of its prediction."""
    lateness_s: float = Field(30.0, ge=0)
    """Allowed lateness: a window closes this long after the newest event passed its end."""
    late_policy: LatePolicy = LatePolicy.DROP
    """A record whose window has closed is always counted as late; ``drop`` folds it nowhere,
    ``dead_letter`` also publishes it to the dead-letter topic (reason ``late``), ``arrival`` folds it
    into the window it arrived in."""
    idle_timeout_s: PositiveFloat = 60.0
    """A partition with no new records for this long, and no lag, no longer holds windows back."""
    max_future_s: float = Field(3600.0, ge=0, allow_inf_nan=False)
    """A record or label whose event time is more than this far ahead of the monitor's clock is refused
    (dead-letter reason ``future``): folded, it would move its partition's watermark past every later
    record, which would then all be late. An hour, as Kafka's ``log.message.timestamp.after.max.ms``;
    0 turns the check off."""

    @model_validator(mode="after")
    def _one_kind(self) -> WindowConfig:
        if self.count is not None and self.size_s is not None:
            msg = "set either size_s (event-time windows) or count (count windows), not both"
            raise ValueError(msg)
        return self

    @property
    def size(self) -> float:
        """The event-time window length in seconds (its default when unset)."""
        return DEFAULT_WINDOW_S if self.size_s is None else self.size_s


class ModelConfig(_Section):
    """One monitored model."""

    name: str
    """Model name, as serving records carry it."""
    baseline: Path
    """Directory written by ``skewguard baseline build``."""
    features: str
    """The feature set, as 'package.module:ATTRIBUTE'."""
    drift_exclude: list[str] = Field(default_factory=list)
    """Features left out of drift checks (seasonal ones such as hour of day)."""
    extra_states: list[Path] = Field(default_factory=list)
    """Other FeatureState JSON files serving may legitimately use (e.g. during a rollout)."""
    defaults_max_rate: float = Field(0.05, ge=0, le=1)
    """Flag a feature that falls back to its default in more than this share of requests."""
    skew_max_rate: float = Field(0.0, ge=0, le=1)
    """Flag a feature whose replay mismatches in more than this share of replayed requests."""


class AlertsConfig(_Section):
    """Where alerts go (when a finding becomes an alert is the policy's persistence_k of persistence_m)."""

    webhook_url: str | None = None
    """POSTed a JSON alert (with its evidence); retried with backoff."""
    webhook_timeout_s: PositiveFloat = 5.0
    webhook_retries: int = Field(3, ge=0)
    retry_interval_s: float = Field(300.0, gt=0, allow_inf_nan=False)
    """How often alerts a sink could not take (the broker or the webhook down) are sent again, once
    they are this old; each start of the daemon also sends what its group left undelivered."""
    give_up_after_s: float = Field(86_400.0, gt=0, allow_inf_nan=False)
    """An alert still undelivered this long after it was raised is no longer sent (a warning says so;
    it stays in the store, and ``skewguard status`` lists it while open)."""


class LabelsConfig(_Section):
    """Delayed labels: joined to predictions by request id (needs a baseline built with a label column)."""

    horizon_s: PositiveFloat = 3600.0
    """A label counts for its prediction's window if it arrives within this long after the window ends;
    the window's performance is judged once every partition's labels have passed that point."""
    min_pairs: PositiveInt = 100
    """Fewer labelled predictions in a window: metrics are reported, never flagged."""
    tolerance: float = Field(0.02, ge=0)
    """A metric gap to the training holdout smaller than this is never flagged."""
    bootstrap_resamples: PositiveInt = 400


class HttpConfig(_Section):
    """The operations endpoint: /metrics, /healthz, /status."""

    host: str = "0.0.0.0"
    port: int = Field(9108, ge=0, le=65535)
    """0 picks a free port (tests)."""


class MonitorSettings(BaseSettings):
    """Everything ``skewguard monitor`` needs."""

    model_config = SettingsConfigDict(env_prefix="SKEWGUARD_", env_nested_delimiter="__", extra="forbid")

    kafka: KafkaSettings
    group_id: str = "skewguard-monitor"
    """Consumer group; several daemons in one group share the partitions (scale-out)."""
    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    window: WindowConfig = Field(default_factory=WindowConfig)
    models: list[ModelConfig] = Field(min_length=1)
    policy: DriftPolicy = Field(default_factory=DriftPolicy)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    checkpoint_interval_s: PositiveFloat = 5.0
    """How often window state and offsets are checkpointed (and windows finalised)."""
    max_poll_records: PositiveInt = 5000
    max_message_bytes: PositiveInt = 1_048_576
    """Messages larger than this are dead-lettered as oversized instead of decoded."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first, then the file's values (passed in as init values)."""
        return env_settings, init_settings


#: ``SKEWGUARD_*`` variables read by something other than the monitor's settings.
_NOT_SETTINGS: Final = frozenset({"SKEWGUARD_BENCH_STORE"})  # (skewguard bench scale's store)
_PREFIX: Final = "SKEWGUARD_"
_DELIMITER: Final = "__"


def names_a_setting(variable: str) -> bool:
    """Whether the environment variable ``SKEWGUARD_<KEY>[__<KEY>…]`` names a monitor setting.

    Like pydantic-settings, case-insensitive. A dict-valued setting (``kafka.client_options``,
    ``policy.min_threshold``) takes one free key more; a list of models is set whole.
    """
    parts = variable[len(_PREFIX) :].lower().split(_DELIMITER)
    model: type[BaseModel] | None = MonitorSettings
    for index, part in enumerate(parts):
        if model is None or part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        model = section_model(annotation)
        if model is None and index < len(parts) - 1:
            return typing.get_origin(annotation) is dict and index == len(parts) - 2
    return True


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The settings section inside ``X`` or ``X | None``; None for anything else (lists included)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = section_model(arg)
            if found is not None:
                return found
    return None


def _setting_variables(model: type[BaseModel], prefix: str = _PREFIX) -> Iterator[str]:
    """Every ``SKEWGUARD_…`` name of a setting, for suggestions."""
    for name, field in model.model_fields.items():
        variable = f"{prefix}{name.upper()}"
        yield variable
        nested = section_model(field.annotation)
        if nested is not None:
            yield from _setting_variables(nested, variable + _DELIMITER)


#: Kubernetes' service links: a Service named ``skewguard-…`` gives every pod started after it
#: ``SKEWGUARD_…_SERVICE_HOST``, ``…_SERVICE_PORT[_<name>]``, ``…_PORT=tcp://…`` and
#: ``…_PORT_<n>_<TCP|UDP|SCTP>[_PROTO|_PORT|_ADDR]``. Not settings, and not the user's typos.
_SERVICE_LINK: Final = re.compile(
    r"_SERVICE_(HOST|PORT(_\w+)?)|_PORT_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?"
)
_SERVICE_LINK_URL: Final = re.compile(r"(tcp|udp|sctp)://", re.IGNORECASE)


def _service_link(variable: str, value: str) -> bool:
    """Whether ``variable`` (naming no setting) is one of Kubernetes' service-link variables."""
    name = variable.upper()
    if _SERVICE_LINK.search(name):
        return True
    return name.endswith("_PORT") and _SERVICE_LINK_URL.match(value) is not None


def _check_environment(environ: Mapping[str, str]) -> None:
    """ConfigError for the first ``SKEWGUARD_*`` variable that names no setting (pydantic ignores it)."""
    for variable in sorted(environ):
        if not variable.upper().startswith(_PREFIX) or variable.upper() in _NOT_SETTINGS:
            continue
        if names_a_setting(variable) or _service_link(variable, environ[variable]):
            continue
        if variable.upper().startswith(f"{_PREFIX}MODELS{_DELIMITER}"):
            msg = (
                f"environment variable {variable} names no setting: models is a list, set whole from the "
                f"environment (SKEWGUARD_MODELS as a JSON list) or in the config file, never per key"
            )
            raise ConfigError(msg)
        close = difflib.get_close_matches(variable.upper(), list(_setting_variables(MonitorSettings)), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        msg = (
            f"environment variable {variable} names no setting{hint}; nested keys are joined by "
            f"'{_DELIMITER}', e.g. SKEWGUARD_STORE__URL"
        )
        raise ConfigError(msg)


def load_settings(path: Path | None = None, **overrides: Any) -> MonitorSettings:
    """Read a TOML/YAML config file (or none) and apply environment overrides; ConfigError on any problem."""
    _check_environment(os.environ)
    data: dict[str, Any] = {}
    if path is not None:
        data = read_config_document(path)
        base = path.parent
        for model in data.get("models", []) or []:
            if isinstance(model, dict) and "baseline" in model:
                model["baseline"] = str((base / model["baseline"]).resolve())
    data.update(overrides)
    try:
        return MonitorSettings(**data)
    except SettingsError as exc:
        msg = f"invalid monitor configuration from the environment (SKEWGUARD_*): {exc}"
        raise ConfigError(msg) from exc
    except ValidationError as exc:
        name = path.name if path is not None else "(settings)"
        raise ConfigError(describe_validation_error(name, exc)) from exc

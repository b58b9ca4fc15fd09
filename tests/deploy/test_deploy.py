"""deploy/ checked by parsing: no Docker engine or cluster runs here, so every file is read and cross-checked.

The checks are the ways a deploy directory silently rots: a dashboard querying a metric the daemon
no longer exports, an environment override naming a settings key that does not exist, a probe on the
wrong port, topics that differ from the config, a root container, a single replica — and the ways it
works in one setup only: a rule selecting on a label only compose's scrape job sets, replicas scraped
twice on Kubernetes, a liveness probe that restarts every pod during a broker outage.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import yaml
from prometheus_client.metrics import MetricWrapperBase
from pydantic import BaseModel

from skewguard.gate.config import GateConfig, GateSection, load_gate_config
from skewguard.ops import Metrics, OpsServer, metric_names
from skewguard.pipeline.config import load_retrain_config
from skewguard.settings import ModelConfig, MonitorSettings, load_settings, names_a_setting, section_model
from tests.deploy import promql

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "skewguard.json"
EXAMPLE_CONFIG = DEPLOY / "monitor.example.toml"
CONFIG_IN_IMAGE = "/etc/skewguard/monitor.toml"

# Series Prometheus itself synthesises for every target (not exported by the daemon, always present).
PROMETHEUS_SERIES = frozenset({"up"})
# The target label (and value) alert rules and the dashboard find the monitor replicas by. Not `job`:
# compose's scrape job is named `skewguard`, a Kubernetes pod job has a name of its own. Compose's job
# sets this label by relabelling; on Kubernetes a pod job's labelmap of the pod labels yields it.
REPLICA_LABEL = ("app_kubernetes_io_name", "skewguard")
TARGET_LABELS = frozenset({"instance", "job", REPLICA_LABEL[0]})

# What the dashboard must show (issue 8): every one of these series is queried somewhere.
DASHBOARD_REQUIRED = {
    "skewguard_records_total": "records/s by model",
    "skewguard_dead_letters_total": "dead letters by reason",
    "skewguard_consumer_lag": "consumer lag",
    "skewguard_effect_size": "drift effect",
    "skewguard_effect_threshold": "... vs threshold",
    "skewguard_skew_mismatch_rate": "skew mismatch rate per feature",
    "skewguard_flagged": "flagged checks",
    "skewguard_alerts_total": "alerts",
    "skewguard_last_window_end_seconds": "last window end age",
    "skewguard_labels_joined_total": "labels joined",
}

PLACEHOLDER_SECRETS = {
    "store-url": "postgresql+psycopg://skewguard:secret@db.example.invalid:5432/skewguard",
    "webhook-url": "https://hooks.example.invalid/skewguard",
}


# ------------------------------------------------------------------------------------------ helpers


def yaml_documents(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def compose() -> dict[str, Any]:
    (doc,) = yaml_documents(DEPLOY / "docker-compose.yml")
    return typing.cast(dict[str, Any], doc)


def k8s_objects() -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            objects += yaml_documents(path)
    return objects


def k8s_object(kind: str) -> dict[str, Any]:
    (found,) = [obj for obj in k8s_objects() if obj["kind"] == kind]
    return found


def interpolate(value: str) -> str:
    """Resolve compose's ``${VAR:-default}`` / ``${VAR}`` the way an empty environment would."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value)


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): interpolate(str(v)) for k, v in env.items()}


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path (relative to deploy/) of a service's bind mounts."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = source
    return mounts


def is_skewguard_image(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).split(":")[0] == "skewguard" or (
        isinstance(service.get("build"), dict) and service["build"].get("dockerfile") == "deploy/Dockerfile"
    )


def monitor_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run the image's entrypoint (skewguard monitor) unchanged."""
    return {
        name: service
        for name, service in doc["services"].items()
        if is_skewguard_image(service) and "entrypoint" not in service
    }


def depends_on(doc: dict[str, Any], service: str, target: str) -> bool:
    """Whether ``service`` starts after ``target``, directly or through other services."""
    direct = doc["services"][service].get("depends_on", {})
    return target in direct or any(depends_on(doc, other, target) for other in direct)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No SKEWGUARD_* variable of the test process leaks into a settings load."""
    for name in list(os.environ):
        if name.upper().startswith("SKEWGUARD_"):
            monkeypatch.delenv(name)
    return monkeypatch


def configmap_config(tmp_path: Path) -> Path:
    data = k8s_object("ConfigMap")["data"]
    path = tmp_path / "monitor.toml"
    path.write_text(data["monitor.toml"], encoding="utf-8")
    return path


def exported() -> set[str]:
    return metric_names(Metrics())


def metric_labels() -> dict[str, frozenset[str]]:
    """Exported sample name -> its label names (counters under both base and ``_total`` names)."""
    labels: dict[str, frozenset[str]] = {}
    for value in vars(Metrics()).values():
        if isinstance(value, MetricWrapperBase):
            names = frozenset(value._labelnames)
            labels[value._name] = names
            if value._type == "counter":
                labels[f"{value._name}_total"] = names
    labels["up"] = frozenset()
    return labels


def dashboard_expressions() -> Iterator[tuple[str, str]]:
    """(where, expr) for every PromQL expression in the dashboard's panels."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))

    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):
                yield f"panel {panel['title']!r} target {target['refId']}", target["expr"]
            yield from walk(panel.get("panels", []))

    yield from walk(dashboard["panels"])


def alert_rule_expressions() -> Iterator[tuple[str, str]]:
    (rules,) = yaml_documents(DEPLOY / "prometheus-alerts.yml")
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield f"rule {rule['alert']}", str(rule["expr"])


def all_expressions() -> list[tuple[str, str]]:
    return [*dashboard_expressions(), *alert_rule_expressions()]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


# ------------------------------------------------------------------------------------ every file parses


DEPLOY_FILES = sorted(
    p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in {".yml", ".yaml", ".json", ".toml"}
)


def test_deploy_holds_the_files_the_issue_asks_for() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in DEPLOY_FILES}
    assert {
        "docker-compose.yml",
        "monitor.example.toml",
        "prometheus.yml",
        "grafana/dashboards/skewguard.json",
        "k8s/deployment.yaml",
        "k8s/configmap.yaml",
        "k8s/service.yaml",
        "k8s/pdb.yaml",
    } <= names
    assert (DEPLOY / "Dockerfile").is_file()


@pytest.mark.parametrize("path", DEPLOY_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_config_file_in_deploy_parses(path: Path) -> None:
    if path.suffix == ".json":
        assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
    elif path.suffix == ".toml":
        assert tomllib.loads(path.read_text(encoding="utf-8"))
    else:
        docs = yaml_documents(path)
        assert docs and all(isinstance(doc, dict) for doc in docs)


# ------------------------------------------------------------------------------------- monitor config


def test_example_config_loads_with_every_section_spelled_out(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(EXAMPLE_CONFIG)
    raw = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    # "complete": every section of MonitorSettings appears in the file, not just the required ones.
    assert set(MonitorSettings.model_fields) <= set(raw)
    assert settings.models[0].name == "ctr"
    assert settings.store.url.startswith("postgresql+psycopg://")


def test_keys_mentioned_in_example_comments_exist_in_their_section() -> None:
    """A commented-out ``# key = value`` documents an option, so it must be a real one."""
    section: list[str] = []
    checked = 0
    for line in EXAMPLE_CONFIG.read_text(encoding="utf-8").splitlines():
        header = re.match(r"^\[\[?([\w.]+)\]\]?", line)
        if header:
            section = header.group(1).split(".")
            continue
        commented = re.match(r"^#\s*(\w+)\s*=", line)
        if commented is None or section[-1:] == ["client_options"]:
            continue
        env_name = "SKEWGUARD_" + "__".join([*section, commented.group(1)]).upper()
        if section == ["models"]:
            assert commented.group(1) in ModelConfig.model_fields, line
        else:
            assert names_a_setting(env_name), line
        checked += 1
    assert checked >= 3


def settings_leaves(model: type[BaseModel], section: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """(section..., key) of every setting, walking nested models (and the model of ``[[models]]``)."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if typing.get_origin(annotation) is list and section_model(typing.get_args(annotation)[0]):
            annotation = typing.get_args(annotation)[0]
        nested = section_model(annotation)
        if nested is None:
            yield (*section, name)
        else:
            yield from settings_leaves(nested, (*section, name))


def test_example_config_mentions_every_key_the_daemon_reads() -> None:
    """The file's first line promises every key: each is set, or named in a comment (``# key = ...``,
    ``# key: inject as ...`` for secrets); a table-valued key counts when its table is there."""
    mentioned: set[tuple[str, ...]] = set()
    section: tuple[str, ...] = ()
    for line in EXAMPLE_CONFIG.read_text(encoding="utf-8").splitlines():
        header = re.match(r"^\[\[?([\w.]+)\]\]?", line)
        if header:
            section = tuple(header.group(1).split("."))
            mentioned.add(section)
            continue
        key = re.match(r"^(?:#\s*)?(\w+)\s*(?:=|:\s)", line)
        if key:
            mentioned.add((*section, key.group(1)))
    missing = [".".join(key) for key in settings_leaves(MonitorSettings) if key not in mentioned]
    assert not missing, f"monitor.example.toml does not mention {missing}"
    assert ("kafka", "ssl_certfile") in set(settings_leaves(MonitorSettings))  # (the walk reaches kafka)


def test_settings_walk_accepts_real_keys_and_rejects_typos() -> None:
    assert names_a_setting("SKEWGUARD_STORE__URL")
    assert names_a_setting("SKEWGUARD_ALERTS__WEBHOOK_URL")
    assert names_a_setting("SKEWGUARD_KAFKA__SASL_PASSWORD")
    assert names_a_setting("SKEWGUARD_GROUP_ID")
    assert names_a_setting("SKEWGUARD_POLICY__MIN_THRESHOLD__WASSERSTEIN")
    assert not names_a_setting("SKEWGUARD_STORE__URI")
    assert not names_a_setting("SKEWGUARD_STORE_URL")
    assert not names_a_setting("SKEWGUARD_HTTP__PORT__NUMBER")


# ------------------------------------------------------------------------------------------ Dockerfile


def test_dockerfile_base_images_are_slim_python_311_with_a_pinned_tag() -> None:
    stages: set[str] = set()
    for op, args in dockerfile_instructions():
        if op != "FROM":
            continue
        words = args.split()
        image = words[0]
        if image in stages:
            continue
        name, _, tag = image.partition(":")
        assert tag and tag != "latest", f"base image {image!r} needs a fixed tag"
        assert name == "python" and tag.startswith("3.11-slim"), image
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2])


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [args.split(":")[0].strip() for op, args in final_stage() if op == "USER"]
    assert users, "final stage has no USER"
    assert users[-1] not in {"root", "0"}


def test_dockerfile_installs_torch_from_the_cpu_index_with_the_constraints_file() -> None:
    runs = " ".join(args for op, args in dockerfile_instructions() if op == "RUN")
    assert "https://download.pytorch.org/whl/cpu" in runs
    assert "--constraint constraints.txt" in runs or "-c constraints.txt" in runs
    # The Dockerfile reads the torch pin out of constraints.txt: it must find exactly one.
    pins = re.findall(r"^torch==[^\s#]+", (ROOT / "constraints.txt").read_text(encoding="utf-8"), re.M)
    assert len(pins) == 1


def test_dockerfile_copies_only_paths_that_exist_and_the_context_filter_lets_through() -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    ]
    for op, args in dockerfile_instructions():
        if op != "COPY" or args.startswith("--from"):
            continue
        for source in args.split()[:-1]:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") in allowed, f"{source} is filtered out of the build context"


def test_dockerfile_entrypoint_is_the_monitor_with_the_image_config() -> None:
    ops = dict(final_stage())
    assert json.loads(ops["ENTRYPOINT"]) == ["skewguard", "monitor"]
    assert json.loads(ops["CMD"]) == ["--config", CONFIG_IN_IMAGE]
    assert ops["EXPOSE"].split() == [str(load_settings(EXAMPLE_CONFIG).http.port)]


def healthcheck_command() -> list[str]:
    (args,) = [args for op, args in final_stage() if op == "HEALTHCHECK"]
    exec_form = args[args.index("CMD") + len("CMD") :].strip()
    command = json.loads(exec_form)
    assert isinstance(command, list)
    return [str(part) for part in command]


def test_healthcheck_uses_python_urllib_on_healthz_at_the_config_port(clean_env: pytest.MonkeyPatch) -> None:
    command = healthcheck_command()
    assert command[0] == "python"
    code = command[-1]
    assert "urllib" in code and "/healthz" in code and "curl" not in code
    default_port = re.search(r"SKEWGUARD_HTTP__PORT',\s*'(\d+)'", code)
    assert default_port is not None
    assert int(default_port.group(1)) == load_settings(EXAMPLE_CONFIG).http.port


@pytest.mark.parametrize(("healthy", "expected_exit"), [(True, 0), (False, 1)])
def test_healthcheck_command_exits_by_the_daemon_health(healthy: bool, expected_exit: int) -> None:
    """Run the HEALTHCHECK's own python code against a real ops endpoint answering 200 / 503."""
    server = OpsServer("127.0.0.1", 0, Metrics(), lambda: (healthy, "reason"), dict)
    server.start()
    try:
        env = {**os.environ, "SKEWGUARD_HTTP__PORT": str(server.port)}
        code = healthcheck_command()[-1]
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, timeout=30, check=False
        )
    finally:
        server.close()
    assert done.returncode == expected_exit, done.stderr.decode()


# ------------------------------------------------------------------------------------------- compose


def test_compose_images_have_fixed_tags() -> None:
    for name, service in compose()["services"].items():
        image = str(service["image"])
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"


def test_compose_kafka_is_apache_kafka_in_kraft_mode() -> None:
    kafka = compose()["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = compose_env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in key for key in env)
    # kafka-storage refuses a cluster id that is not 16 bytes of base64url.
    cluster_id = env["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    assert (
        base64.urlsafe_b64encode(base64.urlsafe_b64decode(cluster_id + "==")).decode().rstrip("=")
        == cluster_id
    )


def test_compose_creates_the_config_topics_with_enough_partitions(clean_env: pytest.MonkeyPatch) -> None:
    doc = compose()
    init = doc["services"]["kafka-init"]
    env = compose_env(init)
    topics = load_settings(EXAMPLE_CONFIG).topics
    assert set(env["TOPICS"].split()) == {topics.serving, topics.labels, topics.dead_letter, topics.alerts}
    replicas = sum(s.get("deploy", {}).get("replicas", 1) for s in monitor_services(doc).values())
    assert int(env["PARTITIONS"]) >= replicas
    assert "$$TOPICS" in init["command"][0] and "$$PARTITIONS" in init["command"][0]
    assert "--create" in init["command"][0] and "--if-not-exists" in init["command"][0]


def test_compose_runs_two_monitor_replicas_in_one_group_against_postgresql(
    clean_env: pytest.MonkeyPatch,
) -> None:
    doc = compose()
    monitors = monitor_services(doc)
    replicas = sum(s.get("deploy", {}).get("replicas", 1) for s in monitors.values())
    assert replicas >= 2
    groups: set[str] = set()
    for name, service in monitors.items():
        assert "container_name" not in service, f"{name}: a fixed name breaks replicas"
        assert depends_on(doc, name, "postgres")
        config = bind_mounts(service)[CONFIG_IN_IMAGE]
        assert (DEPLOY / config).resolve() == EXAMPLE_CONFIG
        env = compose_env(service)
        assert all(names_a_setting(key) for key in env if key.startswith("SKEWGUARD_")), env
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            settings = load_settings(DEPLOY / config)
        assert settings.store.url.startswith("postgresql+psycopg://")
        assert "@postgres:" in settings.store.url
        groups.add(settings.group_id)
    assert len(groups) == 1


def test_compose_baseline_service_writes_the_baseline_the_monitors_read(
    clean_env: pytest.MonkeyPatch,
) -> None:
    doc = compose()
    baseline = doc["services"]["baseline"]
    script = baseline["command"][0]
    model = load_settings(EXAMPLE_CONFIG).models[0]
    argv = shlex.split(script[script.index("skewguard baseline build") :].replace("\\\n", " "))
    out = argv[argv.index("--out") + 1]
    assert out == str(model.baseline)
    assert argv[argv.index("--model") + 1] == model.name
    assert argv[argv.index("--features") + 1] == model.features
    data = argv[argv.index("--data") + 1]
    assert (DEPLOY / bind_mounts(baseline)[data]).is_file()
    # The named volume holding it is mounted at the same place in the monitors (read-only).
    volume = next(v.split(":")[0] for v in baseline["volumes"] if out.startswith(v.split(":")[1]))
    for service in monitor_services(doc).values():
        assert any(
            str(v).startswith(f"{volume}:") and out.startswith(str(v).split(":")[1])
            for v in service["volumes"]
        )


def test_compose_store_init_creates_the_monitors_store_before_they_start(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """Run the one-shot's own code (config path and URL pointed here) and find the store's tables."""
    doc = compose()
    init = doc["services"]["store-init"]
    assert init["entrypoint"] == ["python", "-c"]
    assert bind_mounts(init)[CONFIG_IN_IMAGE] == "./monitor.example.toml"
    for name, service in monitor_services(doc).items():
        assert service["depends_on"]["store-init"]["condition"] == "service_completed_successfully", name
        assert compose_env(service) == compose_env(init), name
        assert bind_mounts(service)[CONFIG_IN_IMAGE] == bind_mounts(init)[CONFIG_IN_IMAGE], name
    database = tmp_path / "store.db"
    clean_env.setenv("SKEWGUARD_STORE__URL", f"sqlite:///{database}")
    code = init["command"][0].replace(CONFIG_IN_IMAGE, str(EXAMPLE_CONFIG))
    exec(compile(code, "store-init", "exec"), {})
    engine = sqlalchemy.create_engine(f"sqlite:///{database}")
    try:
        assert sqlalchemy.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_compose_bind_mounts_point_at_files_in_deploy() -> None:
    for name, service in compose()["services"].items():
        for target, source in bind_mounts(service).items():
            assert (DEPLOY / source).exists(), f"{name}: {source} -> {target}"


def test_prometheus_scrapes_the_monitor_service_on_the_config_port(clean_env: pytest.MonkeyPatch) -> None:
    (prometheus,) = yaml_documents(DEPLOY / "prometheus.yml")
    (job,) = [job for job in prometheus["scrape_configs"] if job["job_name"] == "skewguard"]
    assert job["metrics_path"] == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert set(sd["names"]) == set(monitor_services(compose()))
    assert sd["port"] == load_settings(EXAMPLE_CONFIG).http.port
    # The rule file Prometheus loads is the one compose mounts there.
    mounts = bind_mounts(compose()["services"]["prometheus"])
    (rule_file,) = prometheus["rule_files"]
    assert mounts[rule_file] == "./prometheus-alerts.yml"
    assert mounts["/etc/prometheus/prometheus.yml"] == "./prometheus.yml"


def test_grafana_provisions_the_datasource_and_dashboard_the_dashboard_uses() -> None:
    (datasources,) = yaml_documents(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (providers,) = yaml_documents(DEPLOY / "grafana/provisioning/dashboards/skewguard.yml")
    (provider,) = providers["providers"]
    mounts = bind_mounts(compose()["services"]["grafana"])
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    used = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    used |= {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert used == {source["uid"]}


# ------------------------------------------------------------------------------ dashboard and alert rules


def test_promql_reader_finds_series_labels_and_rate_context() -> None:
    parts = promql.parse(
        'sum by (model) (rate(skewguard_recordz_total{model=~"$model"}[$__rate_interval])) '
        "and on (instance) skewguard_consumer_lag > 3 * 300"
    )
    assert [(s.name, s.in_rate) for s in parts.series] == [
        ("skewguard_recordz_total", True),
        ("skewguard_consumer_lag", False),
    ]
    assert parts.matchers == (("skewguard_recordz_total", frozenset({"model"})),)
    assert parts.grouping_labels == {"model", "instance"}
    assert "skewguard_recordz_total" not in exported()  # a typo is caught by the checks below
    assert (
        promql.label_values_metric("label_values(skewguard_records_total, model)")
        == "skewguard_records_total"
    )


def test_dashboard_shows_every_required_series() -> None:
    used = {s.name for _, expr in dashboard_expressions() for s in promql.parse(expr).series}
    missing = {name: why for name, why in DASHBOARD_REQUIRED.items() if name not in used}
    assert not missing


@pytest.mark.parametrize(("where", "expr"), all_expressions(), ids=[w for w, _ in all_expressions()])
def test_every_queried_series_is_one_the_daemon_exports(where: str, expr: str) -> None:
    names = exported()
    labels = metric_labels()
    parts = promql.parse(expr)
    assert parts.series, f"{where}: no series found in {expr!r}"
    assert expr.count("(") == expr.count(")"), f"{where}: unbalanced parentheses"
    available: set[str] = set(TARGET_LABELS)
    for use in parts.series:
        assert use.name in names | PROMETHEUS_SERIES, f"{where}: {use.name} is not exported"
        assert not use.name.endswith("_created"), where
        if use.name.endswith("_total"):
            assert use.in_rate, f"{where}: counter {use.name} outside rate()/increase()"
        available |= labels[use.name]
    for series, keys in parts.matchers:
        assert series in labels, f"{where}: matcher on unknown series {series!r}"
        assert keys <= labels[series] | TARGET_LABELS, (
            f"{where}: {series} has no label {keys - labels[series]}"
        )
    assert parts.grouping_labels <= available, f"{where}: groups on {parts.grouping_labels - available}"


def compose_target_labels() -> dict[str, str]:
    """Labels compose's skewguard scrape job attaches to every replica (fixed-value relabel rules)."""
    (prometheus,) = yaml_documents(DEPLOY / "prometheus.yml")
    (job,) = [job for job in prometheus["scrape_configs"] if job["job_name"] == "skewguard"]
    return {
        rule["target_label"]: str(rule["replacement"])
        for rule in job.get("relabel_configs", [])
        if rule.get("action", "replace") == "replace" and not rule.get("source_labels")
    }


def kubernetes_target_labels() -> dict[str, str]:
    """Labels a pod scrape job gets from the usual ``labelmap`` of ``__meta_kubernetes_pod_label_(.+)``
    (Prometheus turns each character of a pod label name that is not allowed in a label name into ``_``)."""
    labels = k8s_object("Deployment")["spec"]["template"]["metadata"]["labels"]
    return {re.sub(r"[^A-Za-z0-9_]", "_", name): str(value) for name, value in labels.items()}


def test_compose_and_kubernetes_scrapes_both_attach_the_replica_label() -> None:
    name, value = REPLICA_LABEL
    assert compose_target_labels().get(name) == value
    assert kubernetes_target_labels().get(name) == value
    assert name not in {label for names in metric_labels().values() for label in names}


@pytest.mark.parametrize(("where", "expr"), all_expressions(), ids=[w for w, _ in all_expressions()])
def test_queries_find_replicas_by_a_label_both_setups_attach(where: str, expr: str) -> None:
    """``job`` differs between compose and Kubernetes: a rule on it never (or always) fires on one."""
    name, value = REPLICA_LABEL
    for series in {use.name for use in promql.parse(expr).series}:
        for matchers in promql.selectors(expr, series):
            assert all(m.label != "job" for m in matchers), f"{where}: selects on job"
            if series == "up":  # every target has an `up`: select the monitor's
                found = [(m.label, m.op, m.value) for m in matchers]
                assert found == [(name, "=", value)], f"{where}: up must select {name}={value!r}"


def test_promql_selectors_read_matcher_values_and_bare_names() -> None:
    expr = 'absent(up{app_kubernetes_io_name="skewguard"} == 1) or up or x{job=~"up"}'
    assert promql.selectors(expr, "up") == [
        (promql.Matcher("app_kubernetes_io_name", "=", "skewguard"),),
        (),
    ]
    assert promql.selectors(expr, "x") == [(promql.Matcher("job", "=~", "up"),)]


def test_dashboard_variables_query_exported_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = dashboard["templating"]["list"]
    assert variables
    for variable in variables:
        series = promql.label_values_metric(variable["query"]["query"])
        assert series in exported()


# ---------------------------------------------------------------------------------------- kubernetes


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = yaml_documents(K8S / "kustomization.yaml")
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


def pod_spec() -> dict[str, Any]:
    return typing.cast(dict[str, Any], k8s_object("Deployment")["spec"]["template"]["spec"])


def monitor_container() -> dict[str, Any]:
    (container,) = pod_spec()["containers"]
    return typing.cast(dict[str, Any], container)


def test_deployment_is_replicated_non_root_and_bounded() -> None:
    deployment = k8s_object("Deployment")
    assert deployment["spec"]["replicas"] >= 2
    pod = pod_spec()["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    container = monitor_container()
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    assert str(container["image"]).split(":")[-1] not in {"latest", str(container["image"])}


def test_deployment_probes_target_the_port_the_config_serves(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    container = monitor_container()
    port = load_settings(configmap_config(tmp_path)).http.port
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        (handler,) = [container[probe][kind] for kind in ("httpGet", "tcpSocket") if kind in container[probe]]
        assert named.get(handler["port"], handler["port"]) == port, probe


def test_only_readiness_reads_healthz_so_a_broker_outage_restarts_no_pod() -> None:
    """/healthz turns 503 after 30 s without a successful poll or checkpoint: the daemon rides the outage
    out, so that must take the pods out of readiness, never kill them (every replica at once)."""
    container = monitor_container()
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("startupProbe", "livenessProbe"):
        assert set(container[probe]) & {"httpGet", "tcpSocket", "exec", "grpc"} == {"tcpSocket"}, probe


def test_deployment_mounts_the_configmap_where_args_point(tmp_path: Path) -> None:
    container = monitor_container()
    config = container["args"][container["args"].index("--config") + 1]
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if config.startswith(m["mountPath"] + "/")]
    configmap = k8s_object("ConfigMap")
    assert volumes[mount["name"]]["configMap"]["name"] == configmap["metadata"]["name"]
    assert Path(config).name in configmap["data"]


def test_deployment_takes_db_url_and_webhook_from_secret_references(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    env = {item["name"]: item for item in monitor_container()["env"]}
    for name in ("SKEWGUARD_STORE__URL", "SKEWGUARD_ALERTS__WEBHOOK_URL"):
        assert "value" not in env[name], f"{name} must not hold a value in the manifest"
        assert env[name]["valueFrom"]["secretKeyRef"]["key"] in PLACEHOLDER_SECRETS
    resolved: dict[str, str] = {}
    for name, item in env.items():
        assert names_a_setting(name), f"{name} names no settings key"
        if "value" in item:
            resolved[name] = str(item["value"])
        elif "secretKeyRef" in item["valueFrom"]:
            resolved[name] = PLACEHOLDER_SECRETS[item["valueFrom"]["secretKeyRef"]["key"]]
        else:
            resolved[name] = "skewguard-monitor-7d9f-abcde"
    for name, value in resolved.items():
        clean_env.setenv(name, value)
    settings = load_settings(configmap_config(tmp_path))
    assert settings.store.url == PLACEHOLDER_SECRETS["store-url"]
    assert settings.alerts.webhook_url == PLACEHOLDER_SECRETS["webhook-url"]
    assert settings.kafka.client_id == "skewguard-monitor-7d9f-abcde"


def test_service_and_pdb_select_the_monitor_pods() -> None:
    pod_labels = k8s_object("Deployment")["spec"]["template"]["metadata"]["labels"]
    service = k8s_object("Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    named = {p["name"]: p["containerPort"] for p in monitor_container()["ports"]}
    (port,) = service["spec"]["ports"]
    assert named.get(port["targetPort"], port["targetPort"]) == port["port"]
    pdb = k8s_object("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert 1 <= pdb["spec"]["minAvailable"] < k8s_object("Deployment")["spec"]["replicas"]


def test_only_the_pods_are_annotated_for_scraping(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """Annotating the Service too makes a kubernetes-service-endpoints job scrape every replica a second
    time, next to the kubernetes-pods job: every sum on the dashboard doubles."""
    template = k8s_object("Deployment")["spec"]["template"]["metadata"]
    annotations = template["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == load_settings(configmap_config(tmp_path)).http.port
    assert annotations["prometheus.io/path"] == "/metrics"
    for obj in k8s_objects():
        scraped = {k for k in obj["metadata"].get("annotations", {}) if k.startswith("prometheus.io/")}
        assert not scraped, f"{obj['kind']} {obj['metadata']['name']} is annotated for scraping: {scraped}"


def test_deployment_volumes_are_all_defined_and_claims_exist() -> None:
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    assert {m["name"] for m in monitor_container()["volumeMounts"]} == set(volumes)
    claims = {obj["metadata"]["name"] for obj in k8s_objects() if obj["kind"] == "PersistentVolumeClaim"}
    for volume in volumes.values():
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims


# ------------------------------------------------------------------------------------------- examples


GATE_EXAMPLE = DEPLOY / "examples" / "gate.toml"
RETRAIN_EXAMPLES = sorted((DEPLOY / "examples").glob("retrain*.toml"))


def test_gate_example_loads_with_the_gate_config_loader() -> None:
    config = load_gate_config(GATE_EXAMPLE)
    assert config.model and config.batch and config.loss


def test_gate_example_documents_every_key_and_its_commented_keys_load(tmp_path: Path) -> None:
    """Uncommenting every ``# key = value`` line still gives a valid config: the options it shows exist."""
    lines = GATE_EXAMPLE.read_text(encoding="utf-8").splitlines()
    uncommented = [line[2:] if re.match(r"^# \w+ = ", line) else line for line in lines]
    assert uncommented != lines
    path = tmp_path / "gate.toml"
    path.write_text("\n".join(uncommented) + "\n", encoding="utf-8")
    config = load_gate_config(path)
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    assert set(raw) == set(GateConfig.model_fields)
    assert set(raw["gate"]) == set(GateSection.model_fields)
    assert config.gate == GateSection()  # the optional [gate] keys are shown at their defaults


def make_clean_paths() -> list[Path]:
    """What the Makefile's ``clean`` target deletes."""
    recipe = re.search(r"^clean:.*\n((?:\t.*\n?)+)", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M)
    assert recipe is not None
    words = shlex.split(recipe.group(1).replace("\t", " "))
    return [
        ROOT / word for word in words if word not in {"rm", "-rf", "-f", "-r"} and not word.startswith("$")
    ]


@pytest.mark.parametrize("path", RETRAIN_EXAMPLES, ids=lambda p: p.name)
def test_retrain_examples_load_and_register_models_outside_what_make_clean_deletes(path: Path) -> None:
    config = load_retrain_config(path)
    assert all(file.is_file() for file in config.data.files)
    for deleted in make_clean_paths():
        assert not config.models_dir.is_relative_to(deleted.resolve()), (
            f"{path.name}: models_dir {config.models_dir} is inside {deleted.name}, which make clean deletes"
        )

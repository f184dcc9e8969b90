"""The Kubernetes manifests under deploy/, rendered by kustomize and checked against the code.

Schema validation is `make k8s-check` (deploy/check.sh); here is what a schema cannot see: each
container's environment, built from the ConfigMap, its `env` and the secret files it mounts
(filled with deploy/secret.example.yaml's values), is read by the same settings reader the
process runs, and every STUDENTPERF_* name in it must be one that reader asks for. The probes,
ports, volumes and counts are then compared with the settings it produced.
"""

from __future__ import annotations

import asyncio
import functools
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import pytest
import yaml
from prometheus_client import CollectorRegistry

from inference_service.auth import parse_token_table
from inference_service.health_endpoint import InferenceHealth
from inference_service.settings import Settings as InferenceSettings
from inference_service.stop_bound import longest_stop_s
from recorder_service.replay_dead_letters import replay_group
from recorder_service.settings import ERASURE_KEY_MIN_LENGTH
from recorder_service.settings import Settings as RecorderSettings
from studentperf.config import PREFIX, DatabaseRole, SharedSettings
from studentperf.health_http import serve_health
from studentperf.migrate import role_passwords
from tests.raw_http import get_status
from trainer.__main__ import parse_args
from trainer.monitor.cli import parse_args as monitor_args
from trainer.rollback_cli import parse_args as rollback_args

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUSTOMIZE = ROOT / ".local" / "bin" / "kustomize"
VARIANTS = ("base", "managed", "strimzi-cnpg")
# Secrets the operators of the strimzi-cnpg overlay make, with a stand-in value for the test.
OPERATOR_SECRETS = {
    ("studentperf-db-app", "uri"): "postgresql://studentperf:pw@studentperf-db-rw:5432/studentperf",
    ("events-cluster-ca-cert", "ca.crt"): "-----BEGIN CERTIFICATE-----",
    ("studentperf-db-ca", "ca.crt"): "-----BEGIN CERTIFICATE-----",
}
WORKLOADS = ("Deployment", "StatefulSet", "Job", "CronJob")


def variant_dir(variant: str) -> Path:
    return DEPLOY / variant if variant == "base" else DEPLOY / "overlays" / variant


@functools.cache
def rendered(variant: str) -> tuple[dict[str, Any], ...]:
    # Installs the pinned kustomize into .local/bin when it is not there yet (make k8s-check's).
    subprocess.run(["bash", str(DEPLOY / "check.sh"), "--tools-only"], check=True)
    out = subprocess.run(
        [str(KUSTOMIZE), "build", str(variant_dir(variant))],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def find(variant: str, kind: str, name: str) -> dict[str, Any]:
    found = [d for d in rendered(variant) if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{variant}: expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_template(workload: Mapping[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template: dict[str, Any] = spec["template"]
    return template


def pod_spec(workload: Mapping[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = pod_template(workload)["spec"]
    return spec


def workloads(variant: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in rendered(variant):
        if doc["kind"] in WORKLOADS:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc


def containers(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


@functools.cache
def example_secrets() -> dict[tuple[str, str], str]:
    docs = yaml.safe_load_all((DEPLOY / "secret.example.yaml").read_text())
    return {
        (doc["metadata"]["name"], key): value
        for doc in docs
        for key, value in doc["stringData"].items()
    }


def secret_files(
    spec: Mapping[str, Any], container: Mapping[str, Any]
) -> dict[str, tuple[str, str]]:
    """Path in the container -> (Secret, key) of every secret file it mounts."""
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    files = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})  # none: a StatefulSet's claim
        sources = [volume["secret"]] if "secret" in volume else []
        if "projected" in volume:
            sources = [source["secret"] for source in volume["projected"]["sources"]]
        for source in sources:
            name = source.get("secretName") or source["name"]
            for item in source["items"]:
                files[f"{mount['mountPath']}/{item['path']}"] = (name, item["key"])
    return files


def secret_value(variant: str, secret: tuple[str, str]) -> str:
    if variant == "strimzi-cnpg" and secret in OPERATOR_SECRETS:
        return OPERATOR_SECRETS[secret]
    assert secret in example_secrets(), f"{secret} is not in deploy/secret.example.yaml"
    return example_secrets()[secret]


class RecordingEnv(dict[str, str]):
    """An environment that notes every name looked up in it."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)


def environment(
    variant: str, spec: Mapping[str, Any], container: Mapping[str, Any], tmp_path: Path
) -> RecordingEnv:
    """The container's environment, its secret files written under tmp_path and pointed at."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= find(variant, "ConfigMap", source["configMapRef"]["name"])["data"]
    env |= {item["name"]: item["value"] for item in container.get("env", [])}
    files = secret_files(spec, container)
    for name, value in env.items():
        if name.endswith("_FILE"):
            assert value in files, f"{container['name']}: {name}={value} is no mounted secret"
            local = tmp_path / f"{container['name']}-{name}"
            local.write_text(secret_value(variant, files[value]))
            env[name] = str(local)
    return RecordingEnv(env)


def console_script(container: Mapping[str, Any]) -> tuple[str, list[str]]:
    """(script, arguments) of the console script a container runs, also inside `sh -c`; the
    script is one pyproject.toml declares, so the image has it."""
    line = " ".join(container["command"])
    found = re.search(r"\b(studentperf-[\w-]+)((?: --?[\w-]+(?: [\w/.][\w/.-]*)?)*)", line)
    assert found, f"{container['name']}: runs no studentperf-* console script: {line}"
    assert found.group(1) in SCRIPTS, f"{container['name']}: {found.group(1)} is not declared"
    return found.group(1), shlex.split(found.group(2))


SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]

# The console script a container runs -> a reader taking (environment, arguments), as its main
# does.
READERS: dict[str, Callable[[Mapping[str, str], list[str]], object]] = {
    "studentperf-serve": lambda env, _: InferenceSettings.from_env(env),
    "studentperf-record": lambda env, _: RecorderSettings.from_env(env),
    "studentperf-train": lambda env, args: parse_args(args, env),
    "studentperf-rollback": lambda env, args: rollback_args(args, env),
    "studentperf-monitor": lambda env, args: monitor_args(args, env, datetime.now(UTC)),
    "studentperf-migrate": lambda env, _: (
        SharedSettings.from_env(env, DatabaseRole.OWNER),
        role_passwords(env),
    ),
}


def settings_of(variant: str, kind: str, name: str, tmp_path: Path) -> tuple[Any, RecordingEnv]:
    """What the workload's (first) container's process makes of its environment."""
    workload = find(variant, kind, name)
    spec = pod_spec(workload)
    chosen = spec["containers"][0]
    env = environment(variant, spec, chosen, tmp_path)
    script, args = console_script(chosen)
    return READERS[script](env, args), env


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variable_is_read_by_the_process_that_gets_it(variant: str, tmp_path: Path) -> None:
    config_names: set[str] = set()
    config_read: set[str] = set()
    for label, workload in workloads(variant):
        spec = pod_spec(workload)
        for container in spec["containers"]:
            env = environment(variant, spec, container, tmp_path)
            script, args = console_script(container)
            READERS[script](env, args)
            own = {item["name"] for item in container.get("env", [])}
            unread = {n for n in own if n.startswith(PREFIX)} - env.asked
            assert not unread, f"{variant} {label}: {sorted(unread)} are read by no setting"
            shared = {n for n in env if n.startswith(PREFIX)} - own
            config_names |= shared
            config_read |= shared & env.asked
    # Each ConfigMap variable is read by at least one process it is given to.
    assert config_names == config_read, sorted(config_names - config_read)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_has_resources(variant: str) -> None:
    for label, workload in workloads(variant):
        for container in containers(pod_spec(workload)):
            resources = container.get("resources", {})
            requests, limits = resources.get("requests", {}), resources.get("limits", {})
            assert {"cpu", "memory"} <= set(requests), f"{label}/{container['name']}: {resources}"
            assert "memory" in limits, f"{label}/{container['name']}: no memory limit"


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_scheduled_job_ends_within_a_deadline(variant: str) -> None:
    """The trainer's connections bound no statement: a scheduled run against a database that
    stopped answering would otherwise hold its CronJob (concurrencyPolicy Forbid) for as long
    as TCP waits, skipping every later run."""
    for doc in rendered(variant):
        if doc["kind"] == "CronJob" and not doc["spec"].get("suspend"):
            assert doc["spec"]["concurrencyPolicy"] == "Forbid", doc["metadata"]["name"]
            deadline = doc["spec"]["jobTemplate"]["spec"].get("activeDeadlineSeconds")
            assert deadline is not None, f"{doc['metadata']['name']} has no deadline"


@pytest.mark.parametrize("variant", VARIANTS)
def test_secrets_come_from_files_the_pods_mount(variant: str, tmp_path: Path) -> None:
    """No secret is a plain variable; each _FILE names a key the example Secret has."""
    secret_names = ("DATABASE_URL", "AUTH_TOKENS", "SASL_PASSWORD", "ERASURE_KEY", "PASSWORD_")
    for label, workload in workloads(variant):
        spec = pod_spec(workload)
        for container in spec["containers"]:
            for item in container.get("env", []):
                name = item["name"]
                if any(secret in name for secret in secret_names):
                    assert name.endswith("_FILE"), f"{label}: {name} holds a secret in plain"
            # Raises when a file is not mounted or its key is not in the example.
            environment(variant, spec, container, tmp_path)
    # The example's tokens are a table the service accepts.
    tokens = example_secrets()[("studentperf", "auth-tokens")]
    assert len(parse_token_table(tokens)) == 2
    assert len(example_secrets()[("studentperf", "erasure-key")]) >= ERASURE_KEY_MIN_LENGTH


def test_inference_keeps_its_spool_on_a_volume_of_its_own(tmp_path: Path) -> None:
    """An OK'd event may be in the spool on disk: the spool is each pod's persistent claim."""
    inference = find("base", "StatefulSet", "studentperf-inference")
    settings, _ = settings_of("base", "StatefulSet", "studentperf-inference", tmp_path)
    assert isinstance(settings, InferenceSettings)
    container = pod_spec(inference)["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == settings.spool_dir)
    claims = {c["metadata"]["name"]: c for c in inference["spec"]["volumeClaimTemplates"]}
    assert mount["name"] in claims, "the spool is not on the pod's own claim"
    assert mount["name"] not in {v["name"] for v in pod_spec(inference).get("volumes", [])}
    assert inference["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    size = claims[mount["name"]]["spec"]["resources"]["requests"]["storage"]
    assert size.endswith("Gi") and settings.spool_max_bytes < int(size[:-2]) << 30
    # The graceful stop fits in the grace period: preStop (20 s, and its last poll's 2 s
    # timeout and 1 s sleep), then the service's stop.
    grace = pod_spec(inference)["terminationGracePeriodSeconds"]
    prestop = 20 + 3
    assert grace > prestop + longest_stop_s(settings)


def dsn_user(url: str) -> str | None:
    return urlsplit(url).username


@pytest.mark.parametrize("variant", VARIANTS)
def test_models_travel_through_the_database_under_the_right_roles(
    variant: str, tmp_path: Path
) -> None:
    """No shared models volume: the training jobs publish to the database as the trainer's
    role (the one that may write a version or the pointer, migration 0015), every inference pod
    follows the pointer as the inference role into a folder of its own."""
    claims = [d for d in rendered(variant) if d["kind"] == "PersistentVolumeClaim"]
    assert claims == [], [c["metadata"]["name"] for c in claims]
    serve, _ = settings_of(variant, "StatefulSet", "studentperf-inference", tmp_path)
    assert isinstance(serve, InferenceSettings)
    assert serve.model_source == "database"
    assert dsn_user(serve.shared.database_url) == DatabaseRole.INFERENCE
    inference = pod_spec(find(variant, "StatefulSet", "studentperf-inference"))
    volumes = {v["name"]: v for v in inference["volumes"]}
    mount = next(
        m for m in inference["containers"][0]["volumeMounts"] if m["mountPath"] == serve.models_dir
    )
    # Hot reload downloads into it: writable, and the pod's own.
    assert "emptyDir" in volumes[mount["name"]] and not mount.get("readOnly")
    # The init container waits with the service's own settings reader, so for the same
    # pointer, as the same role, into the same folder.
    (wait,) = inference["initContainers"]
    assert wait["command"] == ["python", "-m", "inference_service.wait_for_model"]
    env = environment(variant, inference, wait, tmp_path)
    waits = InferenceSettings.from_env(env)
    assert (waits.model_source, waits.models_dir) == ("database", serve.models_dir)
    assert waits.shared.database_url == serve.shared.database_url
    assert {m["name"] for m in wait["volumeMounts"] if m["mountPath"] == serve.models_dir} == {
        mount["name"]
    }
    trainers = [
        ("Job", "studentperf-train"),
        ("CronJob", "studentperf-retrain"),
        # Reads the versions it judges from the database, as the trainer's role.
        ("CronJob", "studentperf-monitor"),
    ]
    for kind, name in trainers:
        trainer, _ = settings_of(variant, kind, name, tmp_path)
        assert trainer.publish, name
        assert dsn_user(trainer.database_url) == DatabaseRole.TRAINER, name
        folder = next(
            v for v in pod_spec(find(variant, kind, name))["volumes"] if v["name"] == "models"
        )
        assert "emptyDir" in folder, name
    # The rollback, run by hand from a suspended CronJob, moves the same pointer as the trainer.
    rollback = find(variant, "CronJob", "studentperf-rollback")
    assert rollback["spec"]["suspend"] is True
    back, _ = settings_of(variant, "CronJob", "studentperf-rollback", tmp_path)
    assert (back.source, back.version) == ("database", None)
    assert dsn_user(back.database_url) == DatabaseRole.TRAINER
    first, _ = settings_of(variant, "Job", "studentperf-train", tmp_path)
    retrain, _ = settings_of(variant, "CronJob", "studentperf-retrain", tmp_path)
    # The Job trains only a new installation's first model; the CronJob only on recorded rows.
    assert first.first_only and not first.database_only
    assert retrain.database_only and not retrain.first_only
    # The migrations set the inference role's password that its DSN holds.
    (_, passwords), _ = settings_of(variant, "Job", "studentperf-migrate", tmp_path)
    assert passwords[DatabaseRole.INFERENCE] == urlsplit(serve.shared.database_url).password
    assert passwords[DatabaseRole.TRAINER] == urlsplit(trainer.database_url).password


def ports_by_name(container: Mapping[str, Any]) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container["ports"]}


def probe_port(container: Mapping[str, Any], probe: Mapping[str, Any]) -> int:
    port = (probe.get("grpc") or probe.get("httpGet") or {})["port"]
    return ports_by_name(container)[port] if isinstance(port, str) else int(port)


async def status_code(path: str) -> int:
    """What studentperf.health_http (both services' /health and /metrics) answers for path."""
    server = await serve_health(lambda: (True, {}), lambda: "", "127.0.0.1", 0)
    try:
        return await get_status(server.sockets[0].getsockname()[1], path)
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("kind", "name"),
    [("StatefulSet", "studentperf-inference"), ("Deployment", "studentperf-recorder")],
)
def test_probes_and_scraping_point_at_what_the_service_serves(
    kind: str, name: str, tmp_path: Path
) -> None:
    workload = find("base", kind, name)
    settings, _ = settings_of("base", kind, name, tmp_path)
    container = pod_spec(workload)["containers"][0]
    ports = ports_by_name(container)
    # The HTTP endpoint listens on every address (the kubelet probes the pod's), on the port
    # named `metrics`, which the Prometheus job keeps, and the annotations name.
    assert settings.health_host == "0.0.0.0"
    assert ports["metrics"] == settings.health_port
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == settings.health_port
    assert annotations["prometheus.io/path"] == "/metrics"
    probes = {
        k: container[k]
        for k in ("startupProbe", "livenessProbe", "readinessProbe")
        if k in container
    }
    assert {"livenessProbe", "readinessProbe"} <= set(probes)
    for kind_of_probe, probe in probes.items():
        if "grpc" in probe:
            assert isinstance(settings, InferenceSettings)
            assert probe_port(container, probe) == int(settings.listen_address.rsplit(":", 1)[1])
            assert ports["grpc"] == probe_port(container, probe)
        else:
            assert probe_port(container, probe) == settings.health_port, kind_of_probe
            assert asyncio.run(status_code(probe["httpGet"]["path"])) == 200, kind_of_probe
    # Readiness is /health: 503 while the spool is full or degraded takes the pod out.
    assert probes["readinessProbe"]["httpGet"]["path"] == "/health"


async def polls_until_prestop_returns(
    command: list[str], status: InferenceHealth, spool: SimpleNamespace
) -> int:
    """Runs the preStop command (its pause 0) against the service's /health; how many times it
    asked. The spool drains at the third answer."""
    polls = 0

    def health() -> tuple[bool, dict[str, object]]:
        nonlocal polls
        polls += 1
        if polls == 3:
            spool.records, spool.full = 0, False
        return status.health()

    server = await serve_health(health, lambda: "", "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable, *command[1:-2], str(port), "0"
        )
        assert await process.wait() == 0
    finally:
        server.close()
        await server.wait_closed()
    return polls


def test_prestop_holds_the_stop_until_the_spool_drained_into_kafka(tmp_path: Path) -> None:
    """A pod the HPA removes leaves nothing on its claim when Kafka is up; when Kafka is away it
    does not wait for what cannot drain."""
    settings, _ = settings_of("base", "StatefulSet", "studentperf-inference", tmp_path)
    container = pod_spec(find("base", "StatefulSet", "studentperf-inference"))["containers"][0]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert int(command[-2]) == settings.health_port
    for connected, expected in [(True, 3), (False, 1)]:
        # A full spool (503) with Kafka back: the events drain; the stop waits for it.
        spool = SimpleNamespace(
            full=True,
            bytes=1 << 20,
            max_bytes=1 << 20,
            records=5,
            set_aside_records=0,
            damaged_bytes=0,
        )
        publisher = SimpleNamespace(spool=spool, kafka_connected=connected)
        core = SimpleNamespace(in_flight=0, model=SimpleNamespace(version="v1"), cut_off=0)
        status = InferenceHealth(cast(Any, core), cast(Any, publisher), CollectorRegistry())
        polls = asyncio.run(polls_until_prestop_returns(command, status, spool))
        print(f"preStop, Kafka connected={connected}: asked /health {polls} times")
        assert polls == expected


def test_prometheus_keeps_the_metrics_ports() -> None:
    config = yaml.safe_load(
        find("base", "ConfigMap", "studentperf-prometheus")["data"]["prometheus.yml"]
    )
    (job,) = config["scrape_configs"]
    keeps = {
        tuple(rule["source_labels"]): rule["regex"]
        for rule in job["relabel_configs"]
        if rule.get("action") == "keep"
    }
    assert keeps[("__meta_kubernetes_pod_container_port_name",)] == "metrics"
    assert keeps[("__meta_kubernetes_pod_label_app_kubernetes_io_part_of",)] == "studentperf"
    scraped = [
        w
        for _, w in workloads("base")
        if "prometheus.io/scrape" in pod_template(w)["metadata"].get("annotations", {})
    ]
    assert {w["metadata"]["name"] for w in scraped} == {
        "studentperf-inference",
        "studentperf-recorder",
    }
    for workload in scraped:
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "studentperf"


def test_prometheus_loads_the_alert_rules_promtool_checks() -> None:
    """The cluster's Prometheus gets the same rules as compose's: the ConfigMap holds
    infra/prometheus/alerts.yml word for word, and its configuration loads them."""
    data = find("base", "ConfigMap", "studentperf-prometheus")["data"]
    config = yaml.safe_load(data["prometheus.yml"])
    assert config["rule_files"] == [
        "/etc/prometheus/studentperf/alerts.yml",
        "/etc/prometheus/studentperf/cluster-alerts.yml",
    ]
    assert data["alerts.yml"] == (ROOT / "infra" / "prometheus" / "alerts.yml").read_text()
    alerts = {r["alert"] for g in yaml.safe_load(data["alerts.yml"])["groups"] for r in g["rules"]}
    print(f"alert rules in the cluster's Prometheus: {sorted(alerts)}")
    assert {"InferenceSpoolBacklog", "InferenceKafkaDisconnected"} <= alerts


MONITOR_RUNS = """
rule_files: [cluster-alerts.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # failed: the run scheduled at 1000 never succeeded (the last success is from before).
      - series: 'SCHEDULED{namespace="failed",cronjob="studentperf-monitor"}'
        values: '1000x120'
      - series: 'SUCCEEDED{namespace="failed",cronjob="studentperf-monitor"}'
        values: '500x120'
      # never: its first run did not succeed, so there is no success at all.
      - series: 'SCHEDULED{namespace="never",cronjob="studentperf-monitor"}'
        values: '1000x120'
      # slow: the next run, scheduled at minute 30, ran for half an hour and succeeded.
      - series: 'SCHEDULED{namespace="slow",cronjob="studentperf-monitor"}'
        values: '1000x29 2000x90'
      - series: 'SUCCEEDED{namespace="slow",cronjob="studentperf-monitor"}'
        values: '1100x59 2100x60'
      # another CronJob is none of its business.
      - series: 'SCHEDULED{namespace="failed",cronjob="other"}'
        values: '1000x120'
    alert_rule_test:
      - eval_time: 80m
        alertname: ModelMonitorRunFailed
        exp_alerts: []
      - eval_time: 100m
        alertname: ModelMonitorRunFailed
        exp_alerts:
          - exp_labels: {severity: warning, namespace: failed, cronjob: studentperf-monitor}
            exp_annotations:
              summary: "failed: the last studentperf-monitor run did not succeed"
          - exp_labels: {severity: warning, namespace: never, cronjob: studentperf-monitor}
            exp_annotations:
              summary: "never: the last studentperf-monitor run did not succeed"
""".replace("SCHEDULED", "kube_cronjob_status_last_schedule_time").replace(
    "SUCCEEDED", "kube_cronjob_status_last_successful_time"
)


def test_the_cluster_alerts_when_the_monitors_last_run_did_not_succeed(tmp_path: Path) -> None:
    """The monitor CronJob's verdict is its exit status, so only kube-state-metrics' view of the
    CronJob can tell a cluster's Prometheus that a threshold was crossed (or the run failed);
    the shared rules' ModelDriftAlert needs a text file nothing in deploy/ writes. promtool
    checks the cluster's rule and runs its unit tests."""
    data = find("base", "ConfigMap", "studentperf-prometheus")["data"]
    (tmp_path / "cluster-alerts.yml").write_text(data["cluster-alerts.yml"])
    (tmp_path / "cluster-alerts_test.yml").write_text(MONITOR_RUNS)
    promtool = str(ROOT / ".local" / "bin" / "promtool")
    for command in (["check", "rules"], ["test", "rules"]):
        name = "cluster-alerts.yml" if command[0] == "check" else "cluster-alerts_test.yml"
        ran = subprocess.run(
            [promtool, *command, name], cwd=tmp_path, capture_output=True, text=True
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
    monitor = find("base", "CronJob", "studentperf-monitor")
    assert monitor["metadata"]["name"] == "studentperf-monitor"  # the rule's cronjob label
    assert monitor["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] <= 3600  # < for: 90m


@pytest.mark.parametrize("variant", VARIANTS)
def test_autoscaler_and_disruption_budgets_select_the_services(variant: str) -> None:
    hpa = find(variant, "HorizontalPodAutoscaler", "studentperf-inference")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", "studentperf-inference")
    inference = find(variant, "StatefulSet", "studentperf-inference")
    # The HPA alone sets the count: a `replicas` in the manifest would reset it on each apply.
    assert hpa["spec"]["minReplicas"] >= 2 and "replicas" not in inference["spec"]
    for name, kind in [
        ("studentperf-inference", "StatefulSet"),
        ("studentperf-recorder", "Deployment"),
    ]:
        labels = find(variant, kind, name)["spec"]["template"]["metadata"]["labels"]
        pdb = find(variant, "PodDisruptionBudget", name)
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), name
        assert pdb["spec"]["maxUnavailable"] == 1
        # Unready pods (spool full, recorder degraded) never block a node drain.
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_recorders_are_no_more_than_the_partitions(tmp_path: Path) -> None:
    """Recorders of one group share the topic's partitions: the rest would sit idle."""
    recorder = find("strimzi-cnpg", "Deployment", "studentperf-recorder")
    settings, _ = settings_of("strimzi-cnpg", "Deployment", "studentperf-recorder", tmp_path)
    assert isinstance(settings, RecorderSettings)
    topic = find("strimzi-cnpg", "KafkaTopic", settings.shared.kafka_topic)
    partitions = topic["spec"]["partitions"]
    replicas = recorder["spec"]["replicas"]
    print(
        f"recorder replicas {replicas}, partitions of {settings.shared.kafka_topic}: {partitions}"
    )
    assert replicas <= partitions
    assert recorder["metadata"]["annotations"]["studentperf.io/topic-partitions"] == str(partitions)
    # A rolling update never runs more recorders than that either.
    assert recorder["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    # The dead-letter topic the recorder writes to exists, and the Kafka user may use both.
    find("strimzi-cnpg", "KafkaTopic", settings.dead_letters_to)
    user = find("strimzi-cnpg", "KafkaUser", settings.shared.kafka_security.sasl_username)
    acls = user["spec"]["authorization"]["acls"]
    topic_acl = next(a for a in acls if a["resource"]["type"] == "topic")
    assert topic_acl["resource"]["patternType"] == "prefix"
    assert settings.dead_letters_to.startswith(topic_acl["resource"]["name"])
    group_acl = next(a for a in acls if a["resource"]["type"] == "group")
    assert group_acl["resource"]["name"] == settings.consumer_group


def test_the_kafka_user_may_replay_dead_letters(tmp_path: Path) -> None:
    """The replay runs as the recorder's Kafka user (deploy/overlays/strimzi-cnpg/kafka.yaml):
    it reads the dead-letter topic, reads and writes the main topic, and keeps its offsets in
    its own group."""
    settings, _ = settings_of("strimzi-cnpg", "Deployment", "studentperf-recorder", tmp_path)
    assert isinstance(settings, RecorderSettings)
    user = find("strimzi-cnpg", "KafkaUser", settings.shared.kafka_security.sasl_username)

    def granted(kind: str, name: str) -> set[str]:
        ops: set[str] = set()
        for acl in user["spec"]["authorization"]["acls"]:
            resource = acl["resource"]
            prefix = resource.get("patternType") == "prefix"
            if resource["type"] == kind and (
                name.startswith(resource["name"]) if prefix else name == resource["name"]
            ):
                ops |= set(acl["operations"])
        return ops

    assert {"Read", "Describe"} <= granted("group", replay_group(settings))
    assert {"Read", "Describe"} <= granted("topic", settings.dead_letters_to)
    assert {"Read", "Describe", "Write"} <= granted("topic", settings.shared.kafka_topic)


def test_strimzi_overlay_reaches_its_kafka_and_database(tmp_path: Path) -> None:
    for kind, name in [
        ("StatefulSet", "studentperf-inference"),
        ("Deployment", "studentperf-recorder"),
    ]:
        settings, _ = settings_of("strimzi-cnpg", kind, name, tmp_path)
        security = settings.shared.kafka_security
        assert (security.protocol, security.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
        assert security.sasl_password == example_secrets()[("studentperf-kafka", "password")]
        # The CA file is where the operator's CA Secret is mounted.
        spec = pod_spec(find("strimzi-cnpg", kind, name))
        files = secret_files(spec, spec["containers"][0])
        assert files[security.ssl_cafile] == ("events-cluster-ca-cert", "ca.crt")
    # The bootstrap address is the Kafka resource's TLS listener, with SCRAM on it.
    kafka = find("strimzi-cnpg", "Kafka", "events")
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    host, port = settings.shared.kafka_bootstrap_servers.split(":")
    assert (host, int(port)) == ("events-kafka-bootstrap", listener["port"])
    assert listener["tls"] and listener["authentication"]["type"] == "scram-sha-512"
    # The migrations run as the database's owner, from CloudNativePG's Secret.
    (owner, _), _ = settings_of("strimzi-cnpg", "Job", "studentperf-migrate", tmp_path)
    assert owner.database_url == OPERATOR_SECRETS[("studentperf-db-app", "uri")]
    cluster = find("strimzi-cnpg", "Cluster", "studentperf-db")
    assert urlsplit(owner.database_url).username == cluster["spec"]["bootstrap"]["initdb"]["owner"]


def test_the_schema_check_fails_on_a_broken_manifest(tmp_path: Path) -> None:
    """make k8s-check is no formality offline: a wrong type and an unknown kind both fail."""
    text = yaml.safe_dump_all(rendered("base"))
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace("containerPort: 9465", "containerPort: '9465'"))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(text.replace("kind: StatefulSet", "kind: StatefulSett"))
    for path, expected in [
        (broken, "is not of type 'integer'"),
        (unknown, "no schema for apps/v1"),
    ]:
        result = subprocess.run(
            ["bash", str(DEPLOY / "check.sh"), "--validate", str(path)],
            capture_output=True,
            text=True,
        )
        print(result.stdout.strip())
        assert result.returncode != 0 and expected in result.stdout, result.stdout + result.stderr
    good = tmp_path / "good.yaml"
    good.write_text(text)
    subprocess.run(["bash", str(DEPLOY / "check.sh"), "--validate", str(good)], check=True)


VERIFYING = ("verify-ca", "verify-full")


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_dsn_that_verifies_the_server_has_its_ca_in_the_pod(
    variant: str, tmp_path: Path
) -> None:
    """asyncpg refuses sslmode=verify-ca/verify-full before it touches the network unless a
    root certificate is readable: `sslrootcert=` in the DSN or PGSSLROOTCERT, else
    ~/.postgresql/root.crt, which the image does not have. Each such DSN names a file its
    container mounts: under CloudNativePG the operator's own CA, which it renews in place (a
    copy would expire)."""
    ca = ("studentperf-db-ca" if variant == "strimzi-cnpg" else "studentperf-postgres-ca", "ca.crt")
    missing = []
    for label, workload in workloads(variant):
        spec = pod_spec(workload)
        for container in containers(spec):
            env = environment(variant, spec, container, tmp_path)
            mounted = secret_files(spec, container)
            for name, value in env.items():
                if not name.endswith("DATABASE_URL_FILE"):
                    continue
                query = dict(parse_qsl(urlsplit(Path(value).read_text()).query))
                if query.get("sslmode") not in VERIFYING:
                    continue
                root = query.get("sslrootcert") or env.get("PGSSLROOTCERT")
                if root not in mounted or mounted[root] != ca:
                    missing.append(f"{label}/{container['name']}: {name} ({mounted.get(root)})")
    assert not missing, f"{variant}: sslmode=verify-full, no CA certificate: {missing}"


def test_a_verifying_dsn_without_its_ca_is_refused_by_the_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the test above matters: the client refuses such a DSN, no server needed."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.postgresql/root.crt
    monkeypatch.delenv("PGSSLROOTCERT", raising=False)
    dsn = secret_value("managed", ("studentperf", "inference-database-url"))
    without_ca = dsn.split("&sslrootcert=")[0]
    with pytest.raises(asyncpg.ClientConfigurationError, match="root certificate"):
        asyncio.run(asyncpg.connect(without_ca, timeout=1))

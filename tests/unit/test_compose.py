"""docker-compose.yml and infra/docker/Dockerfile, checked without a Docker engine.

The compose file is parsed and interpolated the way compose does it with no variables set
(every `${NAME:-default}` takes its default). The STUDENTPERF_* names the code reads are not
listed here by hand: they are recorded by running each role's settings reader on an empty
environment that notes every name asked for.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from inference_service.settings import Settings as InferenceSettings
from inference_service.stop_bound import longest_stop_s
from recorder_service.settings import Settings as RecorderSettings
from studentperf.config import PREFIX, DatabaseRole, SharedSettings
from studentperf.migrate import role_passwords
from trainer.__main__ import parse_args

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = ROOT / "infra" / "prometheus" / "prometheus.yml"
# The services Prometheus scrapes, and the variables naming their metrics port and host.
SCRAPED = {
    "inference": ("STUDENTPERF_INFERENCE_HEALTH_PORT", "STUDENTPERF_INFERENCE_HEALTH_HOST"),
    "recorder": ("STUDENTPERF_RECORDER_HEALTH_PORT", "STUDENTPERF_RECORDER_HEALTH_HOST"),
}
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"

# Long-running services that must report their health; the recorder has none by design (it
# serves nothing to probe, and a failure ends its process, which `restart` handles).
HEALTHCHECKED = {"kafka-1", "kafka-2", "kafka-3", "postgres", "inference"}
# The Kafka nodes: replication factor 3, min.insync.replicas 2.
KAFKA_NODES = ("kafka-1", "kafka-2", "kafka-3")
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

# What compose interpolates: `$$` (a literal `$`), `${NAME...}` and `$NAME`.
_INTERPOLATION = re.compile(r"\$\$|\$\{(?P<braced>[^}]*)\}|\$(?P<bare>\w+)")
_WITH_DEFAULT = re.compile(r"(?P<name>\w+):?-(?P<default>.*)", re.DOTALL)


class RecordingEnv(Mapping[str, str]):
    """An empty environment that records every name looked up in it."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def names_read_by(read: Callable[[Mapping[str, str]], object]) -> frozenset[str]:
    env = RecordingEnv()
    read(env)
    return frozenset(env.asked)


# The module a service runs (`python -m <module>`) -> the environment names it reads.
NAMES_READ: dict[str, frozenset[str]] = {
    "inference_service": names_read_by(InferenceSettings.from_env),
    "recorder_service": names_read_by(RecorderSettings.from_env),
    "trainer": names_read_by(lambda env: parse_args([], env)),
    "studentperf.migrate": names_read_by(
        lambda env: (SharedSettings.from_env(env, DatabaseRole.OWNER), role_passwords(env))
    ),
}


def interpolate(text: str, *, strict: bool = False) -> str:
    """`text` as compose sees it with no variables set: each variable takes its default, or ""
    (strict: a ValueError) when it has none."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        with_default = _WITH_DEFAULT.fullmatch(match.group("braced") or "")
        if with_default is None:
            if strict:
                raise ValueError(f"{match.group(0)} in docker-compose.yml has no default")
            return ""
        return with_default.group("default")

    return _INTERPOLATION.sub(replace, text)


def _interpolate_tree(node: Any) -> Any:
    if isinstance(node, str):
        return interpolate(node)
    if isinstance(node, list):
        return [_interpolate_tree(item) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value) for key, value in node.items()}
    return node


@functools.cache
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    tree = _interpolate_tree(loaded)
    assert isinstance(tree, dict)
    return tree


def services() -> dict[str, dict[str, Any]]:
    found = compose()["services"]
    assert isinstance(found, dict)
    return found


def environment(service: str) -> dict[str, str]:
    env = services()[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def command(service: str) -> list[str]:
    value = services()[service].get("command") or []
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


@functools.cache
def console_scripts() -> dict[str, str]:
    """pyproject.toml's console scripts -> the module each one's `python -m` would name."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return {
        name: target.split(":")[0].removesuffix(".__main__") for name, target in scripts.items()
    }


def python_module(service: str) -> str | None:
    """The module the service runs, as a console script or with `python -m`, also inside an
    `sh -c` script."""
    line = " ".join(command(service))
    found = re.search(r"\bpython3? -m ([\w.]+)", line)
    if found:
        return found.group(1)
    scripts = [console_scripts()[word] for word in line.split() if word in console_scripts()]
    return scripts[0] if scripts else None


def depends_on(service: str) -> dict[str, dict[str, Any]]:
    value = services()[service].get("depends_on") or {}
    if isinstance(value, list):  # the short form: no condition
        return {name: {} for name in value}
    assert isinstance(value, dict)
    return value


def mounts(service: str) -> list[tuple[str, str, str]]:
    """(source, target, mode) of each short-syntax volume."""
    found = []
    for volume in services()[service].get("volumes") or []:
        source, target, *mode = str(volume).split(":")
        found.append((source, target, mode[0] if mode else "rw"))
    return found


def container_ports(service: str) -> set[int]:
    found = set()
    for port in services()[service].get("ports") or []:
        target = port["target"] if isinstance(port, dict) else str(port).rsplit(":", 1)[-1]
        found.add(int(str(target).split("/")[0]))
    return found


def seconds(duration: str) -> float:
    """A compose duration (`1m30s`, `15s`, `500ms`) in seconds."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", duration)
    assert "".join(number + unit for number, unit in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


def listeners(value: str) -> dict[str, str]:
    """`NAME://host:port,...` -> {NAME: "host:port"}."""
    return dict(item.split("://", 1) for item in value.split(","))


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, arguments = line.strip().partition(" ")
            found.append((instruction.upper(), arguments.strip()))
    return found


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def project_packages() -> list[str]:
    include = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    return [pattern.rstrip("*") for pattern in include]


# --- compose: structure ---------------------------------------------------------------------


def test_every_variable_has_a_default() -> None:
    interpolate(COMPOSE_FILE.read_text(), strict=True)  # raises on `${NAME}`, `$NAME`


def test_the_settings_readers_are_recorded() -> None:
    assert "STUDENTPERF_LISTEN_ADDRESS" in NAMES_READ["inference_service"]
    assert "STUDENTPERF_CONSUMER_GROUP" in NAMES_READ["recorder_service"]
    assert "STUDENTPERF_MODELS_DIR" in NAMES_READ["trainer"]


@pytest.mark.parametrize("name", sorted(services()))
def test_every_service_has_an_image_or_build(name: str) -> None:
    service = services()[name]
    assert service.get("image") or service.get("build")


def test_the_built_services_use_the_project_dockerfile() -> None:
    for name, service in services().items():
        if "build" in service:
            build = service["build"]
            assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE, name


def test_depends_on_names_existing_services_with_a_condition() -> None:
    for name in services():
        for target, options in depends_on(name).items():
            assert target in services(), f"{name} depends on unknown {target}"
            assert options.get("condition") in CONDITIONS, f"{name} -> {target}"


def test_services_waited_on_as_healthy_have_a_healthcheck() -> None:
    for name in services():
        for target, options in depends_on(name).items():
            if options.get("condition") == "service_healthy":
                assert "healthcheck" in services()[target], f"{name} waits on {target}"


def test_services_waited_on_to_complete_are_one_shots() -> None:
    for name in services():
        for target, options in depends_on(name).items():
            if options.get("condition") == "service_completed_successfully":
                assert services()[target].get("restart") == "no", f"{name} waits on {target}"


@pytest.mark.parametrize("name", sorted(HEALTHCHECKED))
def test_long_running_services_have_a_healthcheck(name: str) -> None:
    assert services()[name]["healthcheck"]["test"]


# --- compose: the application's settings ----------------------------------------------------


@pytest.mark.parametrize("name", sorted(services()))
def test_studentperf_variables_are_ones_the_service_reads(name: str) -> None:
    given = {key for key in environment(name) if key.startswith(PREFIX)}
    module = python_module(name)
    read = NAMES_READ.get(module, frozenset()) if module else frozenset()
    assert given <= read, f"{name} ({module}) never reads {sorted(given - read)}"


def test_inference_publishes_its_listen_port() -> None:
    port = int(environment("inference")["STUDENTPERF_LISTEN_ADDRESS"].rsplit(":", 1)[1])
    assert port in container_ports("inference")


def test_inference_stop_grace_outlasts_its_whole_stop() -> None:
    settings = InferenceSettings.from_env(environment("inference"))
    assert seconds(services()["inference"]["stop_grace_period"]) > longest_stop_s(settings)


def test_database_url_points_at_the_postgres_service() -> None:
    postgres = environment("postgres")
    for name in DATABASE_USERS:
        url = urlsplit(environment(name)["STUDENTPERF_DATABASE_URL"])
        assert url.hostname == "postgres" and "postgres" in services()
        assert url.port == 5432
        assert url.path == "/" + postgres["POSTGRES_DB"]
    owner = urlsplit(environment("migrate")["STUDENTPERF_DATABASE_URL"])
    assert (owner.username, owner.password) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
    )


# --- compose: least privilege (issue 14) ----------------------------------------------------

# The module each service runs -> the role it connects as, and how its settings are read.
ROLE_OF_MODULE = {
    "inference_service": DatabaseRole.INFERENCE,
    "recorder_service": DatabaseRole.RECORDER,
    "trainer": DatabaseRole.TRAINER,
}
DATABASE_USERS = ("migrate", "trainer", "recorder", "inference")


def test_each_process_connects_as_its_own_role_by_default() -> None:
    defaults = {
        "inference_service": InferenceSettings.from_env({}).shared.database_url,
        "recorder_service": RecorderSettings.from_env({}).shared.database_url,
        "trainer": parse_args([], {}).database_url,
    }
    assert {module: urlsplit(url).username for module, url in defaults.items()} == {
        module: role.value for module, role in ROLE_OF_MODULE.items()
    }


def test_only_the_migration_step_connects_as_the_owner() -> None:
    users = {}
    for name in services():
        url = environment(name).get("STUDENTPERF_DATABASE_URL")
        if url is not None:
            users[name] = urlsplit(url).username
    assert set(users) == set(DATABASE_USERS)
    assert users.pop("migrate") == environment("postgres")["POSTGRES_USER"]
    for name, user in users.items():
        module = python_module(name)
        assert module is not None
        assert user == ROLE_OF_MODULE[module].value, name


def test_the_migration_step_sets_the_password_each_service_connects_with() -> None:
    passwords = role_passwords(environment("migrate"))
    for name in DATABASE_USERS[1:]:
        url = urlsplit(environment(name)["STUDENTPERF_DATABASE_URL"])
        assert url.username and url.password, name
        assert passwords[DatabaseRole(url.username)] == url.password, name


def test_migrations_run_once_before_every_service_that_uses_the_database() -> None:
    assert python_module("migrate") == "studentperf.migrate"
    assert services()["migrate"]["restart"] == "no"
    assert depends_on("migrate")["postgres"]["condition"] == "service_healthy"
    for name in DATABASE_USERS[1:]:
        assert depends_on(name)["migrate"] == {"condition": "service_completed_successfully"}


def internal_listener(node: str) -> str:
    kafka = environment(node)
    return listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])[kafka["KAFKA_INTER_BROKER_LISTENER_NAME"]]


def test_kafka_clients_use_the_advertised_internal_listeners() -> None:
    internal = [internal_listener(node) for node in KAFKA_NODES]
    assert [address.split(":")[0] for address in internal] == list(KAFKA_NODES)
    init = command("kafka-init")
    used = {init[init.index("--bootstrap-server") + 1]} | {
        env["STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS"]
        for env in map(environment, services())
        if "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS" in env
    }
    # Every node, so a client starts while any one of them is down.
    assert used == {",".join(internal)}


def test_the_topic_created_is_the_topic_used() -> None:
    init = command("kafka-init")
    topics = {init[init.index("--topic") + 1]} | {
        environment(name).get("STUDENTPERF_KAFKA_TOPIC") for name in ("inference", "recorder")
    }
    assert len(topics) == 1


def test_kafka_services_are_exactly_the_nodes() -> None:
    kafka = {
        name for name, s in services().items() if s.get("image", "").startswith("apache/kafka")
    }
    assert kafka == {*KAFKA_NODES, "kafka-init"}


def test_kafka_nodes_form_one_controller_quorum() -> None:
    nodes = {name: environment(name) for name in KAFKA_NODES}
    assert len({env["CLUSTER_ID"] for env in nodes.values()}) == 1
    [voters] = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in nodes.values()}
    expected = []
    for name, env in nodes.items():
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller", name
        controller = listeners(env["KAFKA_LISTENERS"])[env["KAFKA_CONTROLLER_LISTENER_NAMES"]]
        expected.append(f"{env['KAFKA_NODE_ID']}@{name}:{controller.rsplit(':', 1)[1]}")
    assert sorted(voters.split(",")) == sorted(expected)
    assert len({env["KAFKA_NODE_ID"] for env in nodes.values()}) == len(KAFKA_NODES)


@pytest.mark.parametrize("name", KAFKA_NODES)
def test_kafka_node_replicates_every_topic_three_ways(name: str) -> None:
    env = environment(name)
    replicated = [
        "KAFKA_DEFAULT_REPLICATION_FACTOR",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
    ]
    min_isr = [
        "KAFKA_MIN_INSYNC_REPLICAS",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR",
    ]
    assert {int(env[key]) for key in replicated} == {len(KAFKA_NODES)}
    # An acknowledged record is on two nodes, and one node may be down without stopping writes.
    assert {int(env[key]) for key in min_isr} == {2}


def test_the_topic_is_created_replicated_once_every_node_is_healthy() -> None:
    init = command("kafka-init")
    assert int(init[init.index("--replication-factor") + 1]) == len(KAFKA_NODES)
    assert init[init.index("--config") + 1] == "min.insync.replicas=2"
    waits = {target: o.get("condition") for target, o in depends_on("kafka-init").items()}
    assert waits == dict.fromkeys(KAFKA_NODES, "service_healthy")


def test_kafka_nodes_have_their_own_volume_and_host_port() -> None:
    volumes, ports = [], []
    for name in KAFKA_NODES:
        env = environment(name)
        [data] = [src for src, dst, _ in mounts(name) if dst == env["KAFKA_LOG_DIRS"]]
        volumes.append(data)
        external = listeners(env["KAFKA_ADVERTISED_LISTENERS"])["EXTERNAL"]
        host, port = external.rsplit(":", 1)
        assert host == "localhost" and int(port) in container_ports(name)
        assert listeners(env["KAFKA_LISTENERS"])["EXTERNAL"] == f":{port}"
        ports.append(port)
    assert len(set(volumes)) == len(set(ports)) == len(KAFKA_NODES)
    assert set(volumes) <= set(compose()["volumes"])


def test_trainer_and_inference_share_the_pass_mark() -> None:
    trained, served = (
        environment(name)["STUDENTPERF_PASS_MARK"] for name in ("trainer", "inference")
    )
    assert float(trained) == float(served)


def test_inference_loads_the_volume_the_trainer_writes() -> None:
    models_dir = re.search(r"--models-dir[ =]([^\s;]+)", " ".join(command("trainer")))
    assert models_dir
    [volume] = [
        src for src, dst, mode in mounts("trainer") if dst == models_dir[1] and mode == "rw"
    ]
    [target] = [dst for src, dst, _ in mounts("inference") if src == volume]
    assert environment("inference")["STUDENTPERF_MODELS_DIR"] == target


@pytest.mark.parametrize(
    ("status", "exit_code"),
    [(health_pb2.HealthCheckResponse.SERVING, 0), (health_pb2.HealthCheckResponse.NOT_SERVING, 1)],
)
def test_inference_healthcheck_exits_0_only_when_serving(status: int, exit_code: int) -> None:
    kind, *argv = services()["inference"]["healthcheck"]["test"]
    assert kind == "CMD" and argv[:2] == ["python", "-c"]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("", status)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        env = os.environ | {"STUDENTPERF_LISTEN_ADDRESS": f"0.0.0.0:{port}"}
        done = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=60)
    finally:
        server.stop(None)
    assert done.returncode == exit_code, done.stderr.decode()


# --- compose: the monitoring profile -------------------------------------------------------


def prometheus_config() -> dict[str, Any]:
    loaded = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert isinstance(loaded, dict)
    return loaded


def scrape_targets() -> dict[str, list[str]]:
    """job name -> its static targets."""
    return {
        job["job_name"]: [t for config in job["static_configs"] for t in config["targets"]]
        for job in prometheus_config()["scrape_configs"]
    }


def test_only_prometheus_and_grafana_are_in_the_monitoring_profile() -> None:
    profiled = {name: s.get("profiles") for name, s in services().items() if s.get("profiles")}
    # A plain `up` starts what it did before.
    assert profiled == {"prometheus": ["monitoring"], "grafana": ["monitoring"]}


def test_prometheus_image_is_pinned_and_loads_the_project_config() -> None:
    prometheus = services()["prometheus"]
    image, _, tag = prometheus["image"].partition(":")
    assert image == "prom/prometheus" and re.fullmatch(r"v\d+\.\d+\.\d+", tag)
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    [mounted] = [
        src for src, dst, mode in mounts("prometheus") if dst == config_flag.split("=", 1)[1]
    ]
    assert (ROOT / mounted).resolve() == PROMETHEUS_CONFIG


def test_prometheus_config_parses() -> None:
    config = prometheus_config()
    assert seconds(config["global"]["scrape_interval"]) > 0
    names = [job["job_name"] for job in config["scrape_configs"]]
    assert len(names) == len(set(names))
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"


@pytest.mark.parametrize("name", sorted(SCRAPED))
def test_prometheus_scrapes_each_service_on_its_configured_port(name: str) -> None:
    port_variable, host_variable = SCRAPED[name]
    env = environment(name)
    module = python_module(name)
    assert module and {port_variable, host_variable} <= NAMES_READ[module]
    # Listening on every interface: Prometheus reaches it from another container.
    assert env[host_variable] == "0.0.0.0"
    assert scrape_targets()[name] == [f"{name}:{int(env[port_variable])}"]


def test_every_scrape_target_is_a_service() -> None:
    for targets in scrape_targets().values():
        for target in targets:
            host, _, port = target.rpartition(":")
            assert host in services() and port.isdigit(), target


# --- the image ------------------------------------------------------------------------------


def test_dockerfile_copies_every_package() -> None:
    copied = set()
    for instruction, arguments in dockerfile_instructions():
        if instruction == "COPY":
            sources = [arg for arg in arguments.split() if not arg.startswith("--")][:-1]
            copied |= {source.rstrip("/") for source in sources}
    assert {"pyproject.toml", *project_packages()} <= copied


def test_dockerfile_runs_as_non_root() -> None:
    users = [
        arguments for instruction, arguments in dockerfile_instructions() if instruction == "USER"
    ]
    assert users and users[-1].split(":")[0] not in {"root", "0"}


def test_package_data_covers_every_non_python_file() -> None:
    package_data: dict[str, list[str]] = pyproject()["tool"]["setuptools"].get("package-data", {})
    for package in project_packages():
        for path in (ROOT / package).rglob("*"):
            if not path.is_file() or path.suffix in {".py", ".pyc"} or "__pycache__" in path.parts:
                continue
            assert any(
                path.is_relative_to(ROOT / name.replace(".", "/"))
                and fnmatch.fnmatchcase(
                    path.relative_to(ROOT / name.replace(".", "/")).as_posix(), pattern
                )
                for name, patterns in package_data.items()
                for pattern in patterns
            ), f"{path.relative_to(ROOT)} is not in [tool.setuptools.package-data]"


def test_dockerfile_installs_the_hashed_lock_then_the_project_alone() -> None:
    runs = [
        arguments for instruction, arguments in dockerfile_instructions() if instruction == "RUN"
    ]
    locked = [run for run in runs if "--require-hashes" in run]
    assert locked and "-r /tmp/image.lock" in locked[0]
    assert ("COPY", "requirements/image.lock /tmp/image.lock") in dockerfile_instructions()
    project = [run for run in runs if "pip install" in run and "/tmp/src" in run]
    assert project and "--no-deps" in project[0]
    assert runs.index(locked[0]) < runs.index(project[0])


def test_the_image_and_every_python_service_run_a_console_script() -> None:
    cmd = [
        arguments for instruction, arguments in dockerfile_instructions() if instruction == "CMD"
    ]
    assert cmd and json.loads(cmd[-1])[0] in console_scripts()
    for name, service in services().items():
        if "build" in service:
            assert python_module(name) in console_scripts().values(), name
            assert "python -m" not in " ".join(command(name)), name

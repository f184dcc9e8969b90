"""The inference service's settings, read once from the environment at start-up."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from inference_service.event_loop import check_event_loop, default_event_loop
from studentperf.config import (
    ConfigError,
    DatabaseRole,
    SharedSettings,
    default_database_url,
    dev_postgres_port,
    env_float,
    env_int,
    env_secret,
    env_str,
    env_str_renamed,
)
from studentperf.features import DEFAULT_PASS_MARK
from studentperf.limits import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_REQUEST_BYTES,
    MAX_BATCH_SIZE,
    max_request_bytes,
    max_response_bytes,
)
from studentperf.model_store import MODEL_SOURCES, read_model_source
from studentperf.outcomes import TERM_FORMAT, term_is_valid


@dataclass(frozen=True)
class Settings:
    shared: SharedSettings = field(default_factory=SharedSettings)
    # host:port to listen on; port 0 picks a free one (tests).
    listen_address: str = "127.0.0.1:50051"
    # A models folder (its `current` version is served) or one version's folder
    # (STUDENTPERF_MODELS_DIR, the trainer's name for the same folder).
    models_dir: str = "models"
    # Where promoted versions come from: "folder" (the default, one machine: models_dir's
    # `current` link, moved by a trainer on the same disk) or "database" (many machines: the
    # database's pointer, each version downloaded into models_dir, its SHA-256 checked first;
    # see inference_service.model_follower).
    model_source: str = "folder"
    # Must equal the pass mark the served model was trained at; checked at start-up.
    pass_mark: float = DEFAULT_PASS_MARK
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    # Largest request accepted, in bytes (from the environment: by default, what the largest
    # valid request of max_batch_size items takes, see studentperf.limits).
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    # Largest response sent, in bytes (by default 16 MiB, or what a batch of max_batch_size
    # items' answers may take if more; never less than that, see studentperf.limits).
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # How long a call waits for the broker to acknowledge its events before it spools them.
    publish_timeout_s: float = 2.0
    # Where events wait, on disk, while Kafka does not acknowledge them; and how much may wait.
    # One process owns the folder (locked); the default is the development state under
    # `.local/` (next to Kafka's and PostgreSQL's), so a test or tool must always pass its own.
    spool_dir: str = ".local/inference/spool"
    spool_max_bytes: int = 1 << 30
    # How long in-flight calls may run on after SIGTERM.
    shutdown_grace_s: float = 10.0
    # TLS: a certificate and its key (PEM) turn it on; a client CA also requires client
    # certificates signed by it (mutual TLS).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    # Bearer tokens, one client a line: "<name> <token> <methods|*>" (see inference_service.auth).
    # Empty: no token needed.
    auth_tokens: str = field(default="", repr=False)
    # How often `<models_dir>/current` is checked for a newly promoted version; 0 turns hot
    # reload off.
    model_poll_interval_s: float = 1.0
    # An HTTP /health and /metrics endpoint (spool depth, Kafka connection); 0 turns it off.
    health_port: int = 0
    health_host: str = "127.0.0.1"
    # Micro-batching of concurrent single-student Predict calls (see inference_service.batcher):
    # the longest a call waits for others to share its model call and publish, in milliseconds
    # (0 turns it off), and the most students in one batch. A lone call never waits; under
    # load 5 ms rather than 2 lets a batch gather more calls (fewer model calls and publishes),
    # about a tenth less CPU per call at concurrency 64 (issue 17).
    microbatch_wait_ms: float = 5.0
    microbatch_max: int = 256
    # The term a prediction is for when its request names none (PredictRequest.term). Empty:
    # such predictions name no term, and monitoring pairs them with outcomes by time alone.
    current_term: str = ""
    # Where ListStudentPredictions reads histories: a read-only role of its own DSN, so the
    # service's own role (shared.database_url) never needs to read predictions (see
    # inference_service/history_store.py). May hold a password: kept out of repr.
    history_database_url: str = field(
        default=default_database_url(DatabaseRole.ANALYST), repr=False
    )

    # Server processes sharing listen_address (SO_REUSEPORT; see inference_service.workers),
    # each with its own Kafka producer and its spool in `<spool_dir>/worker-<i>`. 1 (the
    # default) is one process, spool in spool_dir itself, exactly as before workers existed:
    # in a container a CPU limit is a quota os.cpu_count() does not see, and the replica count
    # is the orchestrator's to scale; "auto" starts one per CPU this process may use
    # (`usable_cpus`).
    workers: int = 1

    # How long EraseStudent waits for the recorder's audit row before it answers "accepted,
    # not yet confirmed"; 0: never waits.
    erasure_wait_s: float = 2.0

    # The event loop of each server process (inference_service.event_loop): "uvloop" (the
    # default when installed) or "asyncio".
    event_loop: str = field(default_factory=default_event_loop)

    def __post_init__(self) -> None:
        if self.model_source not in MODEL_SOURCES:
            raise ConfigError(
                f"STUDENTPERF_MODEL_SOURCE={self.model_source!r} is not valid: must be one of "
                f"{', '.join(MODEL_SOURCES)}"
            )
        check_event_loop(self.event_loop)
        if self.max_message_bytes < max_response_bytes(self.max_batch_size):
            raise ConfigError(
                f"STUDENTPERF_MAX_MESSAGE_BYTES={self.max_message_bytes} is too small for "
                f"STUDENTPERF_MAX_BATCH_SIZE={self.max_batch_size}: a batch's answer may take "
                f"{max_response_bytes(self.max_batch_size)} bytes; raise the one or lower the "
                "other"
            )
        if self.current_term and not term_is_valid(self.current_term):
            raise ConfigError(
                f"STUDENTPERF_CURRENT_TERM={self.current_term!r} is not valid: must be "
                f"{TERM_FORMAT}, or unset"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        max_batch_size = env_int(
            env, "MAX_BATCH_SIZE", cls.max_batch_size, minimum=1, maximum=MAX_BATCH_SIZE
        )
        return cls(
            shared=SharedSettings.from_env(env, DatabaseRole.INFERENCE),
            listen_address=env_str(env, "LISTEN_ADDRESS", cls.listen_address),
            models_dir=env_str_renamed(env, "MODELS_DIR", "MODEL_PATH", cls.models_dir),
            model_source=read_model_source(env),
            pass_mark=env_float(env, "PASS_MARK", cls.pass_mark, minimum=0, maximum=100),
            max_batch_size=max_batch_size,
            max_request_bytes=env_int(
                env, "MAX_REQUEST_BYTES", max_request_bytes(max_batch_size), minimum=1024
            ),
            max_message_bytes=env_int(
                env,
                "MAX_MESSAGE_BYTES",
                max(cls.max_message_bytes, max_response_bytes(max_batch_size)),
                minimum=1024,
            ),
            publish_timeout_s=env_float(
                env, "PUBLISH_TIMEOUT_S", cls.publish_timeout_s, minimum=0.1, maximum=600
            ),
            spool_dir=env_str(env, "SPOOL_DIR", cls.spool_dir),
            spool_max_bytes=env_int(env, "SPOOL_MAX_BYTES", cls.spool_max_bytes, minimum=4096),
            tls_cert_file=env_str(env, "TLS_CERT_FILE", ""),
            tls_key_file=env_str(env, "TLS_KEY_FILE", ""),
            tls_client_ca_file=env_str(env, "TLS_CLIENT_CA_FILE", ""),
            auth_tokens=env_secret(env, "AUTH_TOKENS"),
            shutdown_grace_s=env_float(
                env, "SHUTDOWN_GRACE_S", cls.shutdown_grace_s, minimum=0, maximum=600
            ),
            health_port=env_int(env, "INFERENCE_HEALTH_PORT", 0, minimum=0, maximum=65535),
            health_host=env_str(env, "INFERENCE_HEALTH_HOST", cls.health_host),
            model_poll_interval_s=env_float(
                env, "MODEL_POLL_INTERVAL_S", cls.model_poll_interval_s, minimum=0, maximum=3600
            ),
            microbatch_wait_ms=env_float(
                env, "MICROBATCH_WAIT_MS", cls.microbatch_wait_ms, minimum=0, maximum=1000
            ),
            microbatch_max=env_int(env, "MICROBATCH_MAX", cls.microbatch_max, minimum=1),
            current_term=env_str(env, "CURRENT_TERM", cls.current_term),
            history_database_url=env_secret(
                env,
                "HISTORY_DATABASE_URL",
                default_database_url(DatabaseRole.ANALYST, dev_postgres_port(env)),
            ),
            erasure_wait_s=env_float(
                env, "ERASURE_WAIT_S", cls.erasure_wait_s, minimum=0, maximum=60
            ),
            workers=_workers(env),
            event_loop=env_str(env, "EVENT_LOOP", default_event_loop()),
        )


MAX_WORKERS = 64


def _workers(env: Mapping[str, str]) -> int:
    if env_str(env, "WORKERS", "").lower() == "auto":
        return min(usable_cpus(), MAX_WORKERS)
    return env_int(env, "WORKERS", Settings.workers, minimum=1, maximum=MAX_WORKERS)


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may run on (its affinity), cut down to its cgroup's CPU quota when one
    is set (a container's CPU limit), rounded up; at least 1. The quota is read where a
    container sees its own cgroup: cgroup v2's `cpu.max`, or cgroup v1's `cpu.cfs_quota_us`
    and `cpu.cfs_period_us` (a quota of -1: none)."""
    cpus = len(os.sched_getaffinity(0))
    quota = _cgroup_v2_quota(cgroup_root) or _cgroup_v1_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(cpus, 1)


def _cgroup_v2_quota(root: Path) -> float | None:
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _cgroup_v1_quota(root: Path) -> float | None:
    for controller in ("cpu", "cpu,cpuacct"):
        try:
            quota = int((root / controller / "cpu.cfs_quota_us").read_text())
            period = int((root / controller / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota <= 0 or period <= 0 else quota / period
    return None

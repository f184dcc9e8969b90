"""Run a real Apache Kafka broker and a real PostgreSQL server as local child processes.

Both services run from project-local files only (see ``infra/setup.sh``):

* Kafka (``kafka.py``): the broker jars resolved by ``infra/kafka/pom.xml`` into
  ``.local/kafka/libs``, started as a single KRaft node (broker + controller in one JVM);
  ``infra/kafka_cluster.py`` runs three of them as one replicated cluster.
* PostgreSQL (``postgres.py``): the server programs of the Debian package, running a *private*
  cluster (own data folder, own port, own socket folder); the system cluster is never used.

``service.py`` holds what both share (the supervised process, folders, ports); ``cli.py`` runs
them in the foreground. Tests start them on free ports in temporary folders;
``python -m infra.devstack kafka`` (or ``postgres``) runs one in the foreground under ``.local/``
with the default development ports.

The names below are the package's interface: callers import them from ``infra.devstack``.
"""

from infra.devstack.cli import default_kafka, default_postgres, prepare_service, run_foreground
from infra.devstack.kafka import KafkaBroker, KafkaEndpoint, create_topic, new_cluster_id
from infra.devstack.postgres import PostgresServer, find_postgres_bindir
from infra.devstack.service import (
    DEFAULT_DATABASE,
    DEFAULT_KAFKA_CONTROLLER_PORT,
    DEFAULT_KAFKA_PORT,
    DEFAULT_POSTGRES_PORT,
    LOCALHOST,
    POSTGRES_SUPERUSER,
    Service,
    ServiceError,
    free_port,
    local_dir,
    port_open,
    repo_root,
)

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_KAFKA_CONTROLLER_PORT",
    "DEFAULT_KAFKA_PORT",
    "DEFAULT_POSTGRES_PORT",
    "LOCALHOST",
    "POSTGRES_SUPERUSER",
    "KafkaBroker",
    "KafkaEndpoint",
    "PostgresServer",
    "Service",
    "ServiceError",
    "create_topic",
    "default_kafka",
    "default_postgres",
    "find_postgres_bindir",
    "free_port",
    "local_dir",
    "new_cluster_id",
    "port_open",
    "prepare_service",
    "repo_root",
    "run_foreground",
]

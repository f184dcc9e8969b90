"""The recorder: a Kafka consumer group writing prediction events into PostgreSQL."""

from studentperf.extras import require

# Before any module of this package imports its libraries: name the extra when they are missing.
require("recorder", "recorder_service")

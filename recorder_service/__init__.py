"""The recorder: a Kafka consumer group writing prediction events into PostgreSQL."""

from dataclasses import replace
from pathlib import Path

import pytest

from inference_service.settings import Settings as InferenceSettings
from recorder_service.settings import Settings as RecorderSettings
from studentperf.config import ConfigError, configure_logging, mask_dsn


def test_defaults_without_environment() -> None:
    settings = InferenceSettings.from_env({})
    assert settings.listen_address == "127.0.0.1:50051"
    assert settings.pass_mark == 50.0 and settings.max_batch_size == 10_000
    assert settings.shared.kafka_topic == "prediction-events"
    assert RecorderSettings.from_env({}).consumer_group == "studentperf-recorder"


def test_environment_overrides_and_both_services_read_the_same_names() -> None:
    env = {
        "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
        "STUDENTPERF_KAFKA_TOPIC": "t",
        "STUDENTPERF_DATABASE_URL": "postgresql://u@db/x",
        "STUDENTPERF_PASS_MARK": "60",
        "STUDENTPERF_MAX_BATCH_SIZE": "5",
        # Required by the recorder with a database elsewhere (test_erasure_settings.py).
        "STUDENTPERF_ERASURE_KEY": "k" * 32,
    }
    inference = InferenceSettings.from_env(env)
    recorder = RecorderSettings.from_env(env)
    assert inference.shared == recorder.shared
    assert inference.shared.kafka_bootstrap_servers == "kafka:9092"
    assert inference.pass_mark == 60.0 and inference.max_batch_size == 5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PASS_MARK", "101"),
        ("PASS_MARK", "nan"),
        ("MAX_BATCH_SIZE", "0"),
        ("MAX_BATCH_SIZE", "x"),
        ("CURRENT_TERM", "spring"),
        ("CURRENT_TERM", "2026-Spring"),
        ("CURRENT_TERM", "2026-" + "a" * 28),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"STUDENTPERF_{name}="):
        InferenceSettings.from_env({f"STUDENTPERF_{name}": value})


def test_the_current_term_is_read_and_checked_by_the_outcomes_term_rule() -> None:
    assert InferenceSettings.from_env({}).current_term == ""
    env = {"STUDENTPERF_CURRENT_TERM": "2026-spring"}
    assert InferenceSettings.from_env(env).current_term == "2026-spring"
    # Built, not started: replace() keeps test_spool_isolation's check of started services exact.
    assert replace(InferenceSettings(), current_term="2025-term-2").current_term == "2025-term-2"
    with pytest.raises(ConfigError, match="'YYYY-name' in lower-case letters and digits"):
        replace(InferenceSettings(), current_term="26-spring")


def test_mask_dsn_hides_the_password() -> None:
    assert mask_dsn("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert mask_dsn("postgresql://app@db/x") == "postgresql://app@db/x"
    assert mask_dsn("postgresql://app:p@ss:w@db/x") == "postgresql://app:***@db/x"


def test_bad_log_level_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="STUDENTPERF_LOG_LEVEL='loud'"):
        configure_logging({"STUDENTPERF_LOG_LEVEL": "loud"})


def test_secrets_come_from_a_variable_or_a_file_and_never_show(tmp_path: Path) -> None:
    secret = tmp_path / "dsn"
    secret.write_text("postgresql://app:hunter2-hunter2@db/x\n")
    from_file = InferenceSettings.from_env({"STUDENTPERF_DATABASE_URL_FILE": str(secret)})
    assert from_file.shared.database_url == "postgresql://app:hunter2-hunter2@db/x"
    assert "hunter2" not in repr(from_file)
    tokens = InferenceSettings.from_env({"STUDENTPERF_AUTH_TOKENS": "a tttttttttttttttttttt *"})
    assert "tttt" not in repr(tokens)
    with pytest.raises(ConfigError, match="not both"):
        InferenceSettings.from_env(
            {"STUDENTPERF_DATABASE_URL": "x", "STUDENTPERF_DATABASE_URL_FILE": str(secret)}
        )
    with pytest.raises(ConfigError, match="cannot read"):
        InferenceSettings.from_env({"STUDENTPERF_DATABASE_URL_FILE": str(tmp_path / "missing")})


def test_kafka_security_passes_through_to_the_client_options() -> None:
    env = {
        "STUDENTPERF_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
        "STUDENTPERF_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "STUDENTPERF_KAFKA_SASL_USERNAME": "svc",
        "STUDENTPERF_KAFKA_SASL_PASSWORD": "pw-pw-pw",
    }
    security = RecorderSettings.from_env(env).shared.kafka_security
    assert security.client_options() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "pw-pw-pw",
    }
    assert "pw-pw-pw" not in repr(security)
    with pytest.raises(ConfigError, match="STUDENTPERF_KAFKA_SECURITY_PROTOCOL"):
        RecorderSettings.from_env({"STUDENTPERF_KAFKA_SECURITY_PROTOCOL": "TLS"})


def test_the_models_folder_has_one_name_and_the_old_one_still_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    new, old = "STUDENTPERF_MODELS_DIR", "STUDENTPERF_MODEL_PATH"
    assert InferenceSettings.from_env({new: "/m"}).models_dir == "/m"
    assert not caplog.records
    assert InferenceSettings.from_env({old: "/old"}).models_dir == "/old"
    assert f"{old} is deprecated: set {new} instead" in caplog.text
    assert InferenceSettings.from_env({new: "/m", old: "/m"}).models_dir == "/m"
    with pytest.raises(ConfigError, match=f"{new} and the deprecated {old} disagree"):
        InferenceSettings.from_env({new: "/m", old: "/other"})

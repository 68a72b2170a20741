"""Bad configuration fails with a sentence that names the key or variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml.errors import ParamsError, SettingsError
from ml.params import read_section
from ml.settings import Settings, load_settings


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"IRIS_DRIFT_WINDOW_SIZE": "lots"}, "IRIS_DRIFT_WINDOW_SIZE"),
        ({"IRIS_DRIFT_WINDOW_SIZE": "0"}, "IRIS_DRIFT_WINDOW_SIZE"),
        ({"IRIS_MODEL_POLL_SECONDS": "-1"}, "IRIS_MODEL_POLL_SECONDS"),
        ({"IRIS_KAFKA_BOOTSTRAP_SERVERS": "localhost"}, "IRIS_KAFKA_BOOTSTRAP_SERVERS"),
        ({"IRIS_KAFKA_SECURITY_PROTOCOL": "TLS"}, "IRIS_KAFKA_SECURITY_PROTOCOL"),
        ({"IRIS_MAX_INSTANCES": "1.5"}, "IRIS_MAX_INSTANCES"),
    ],
)
def test_malformed_variable_is_named(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(environ)
    assert named in str(info.value)


def test_defaults_match_architecture() -> None:
    settings = load_settings({})
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.requests_topic == "iris.requests"
    assert settings.predictions_topic == "iris.predictions"
    assert settings.dlq_topic == "iris.requests.dlq"
    assert settings.drift_topic == "iris.drift"
    assert settings.consumer_group == "iris-scorer"
    assert settings.model_uri == "models:/iris-classifier@champion"
    assert settings.model_poll_seconds == 30
    assert (settings.drift_window_size, settings.drift_window_seconds) == (500, 60)
    assert settings.api_key is None


def test_environment_is_read_including_mlflow_uri() -> None:
    settings = load_settings({"MLFLOW_TRACKING_URI": "http://mlflow:5000", "IRIS_CONSUMER_GROUP": "g2"})
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"
    assert settings.consumer_group == "g2"


def test_secrets_are_masked_in_repr() -> None:
    settings = load_settings(
        {"IRIS_API_KEY": "sekrit-key-123", "IRIS_KAFKA_SASL_PASSWORD": "Endpoint=sb://x;Key=abc"}
    )
    text = repr(settings) + str(settings) + str(settings.model_dump())
    assert "sekrit-key-123" not in text
    assert "Key=abc" not in text
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "sekrit-key-123"


def test_secret_in_bad_value_is_not_echoed() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"IRIS_KAFKA_SECURITY_PROTOCOL": "hunter2-secret"})
    assert "hunter2-secret" not in str(info.value)


def test_event_hubs_detection() -> None:
    assert Settings.model_validate(
        {"kafka_bootstrap_servers": "ns.servicebus.windows.net:9093"}
    ).is_event_hubs
    assert not load_settings({}).is_event_hubs


def _params(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "section", "key"),
    [
        ("prepare: {test_size: 1.5, seed: 1}", "prepare", "prepare.test_size"),
        ("prepare: {test_size: 0, seed: 1}", "prepare", "prepare.test_size"),
        ("train: {classifier: svm}", "train", "train.classifier"),
        ("train: {classifier: random_forest, colour: red}", "train", "train.colour"),
        ("register: {min_f1_macro: 2}", "register", "register.min_f1_macro"),
    ],
)
def test_bad_params_name_the_key(tmp_path: Path, text: str, section: str, key: str) -> None:
    with pytest.raises(ParamsError) as info:
        read_section(section, _params(tmp_path, text))
    assert key in str(info.value)


def test_missing_section(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="no 'train' section"):
        read_section("train", _params(tmp_path, "prepare: {test_size: 0.2}"))


def test_repository_params_are_valid() -> None:
    for section in ("prepare", "train", "register", "drift"):
        read_section(section)

"""Registry tests against a real MLflow SQLite store: gate, promote, rollback, loading errors."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from iris_scorer.cli import app
from ml import tracking
from ml.errors import BadInputError, ModelNotFound, RegistryUnavailable
from ml.model import load_model, mask_uri, parse_model_uri, resolve
from ml.params import RegisterParams
from ml.register import GATE_TAG, current_alias_version, decide, promote, register_run, rollback, run_metric

GATE = RegisterParams(model_name="iris-classifier", alias="champion", min_f1_macro=0.9)


@pytest.mark.parametrize(
    ("f1", "champion", "champion_f1", "promoted", "why"),
    [
        (0.95, None, None, True, "passed"),  # first model, above the floor
        (0.85, None, None, False, "below the gate"),  # first model, below the floor
        (0.95, "1", 0.96, False, "worse than champion v1"),  # above floor, worse than champion
        (0.96, "1", 0.96, False, "ties champion v1"),  # a tie does not move the alias (no reload)
        (0.90, "1", 0.80, True, "passed"),  # exactly on the floor
    ],
)
def test_quality_gate(
    f1: float, champion: str | None, champion_f1: float | None, promoted: bool, why: str
) -> None:
    ok, reason = decide(GATE, f1, champion, champion_f1)
    assert ok is promoted
    assert why in reason


def _rerun(fresh_registry, version: str) -> dict[str, str]:
    """The train_run.json of a version already registered (its model registered once more)."""
    mv = fresh_registry.client.get_model_version("iris-classifier", version)
    return {"model_uri": mv.source, "run_id": mv.run_id}


def test_a_tie_is_registered_but_does_not_move_the_alias(fresh_registry) -> None:
    client, v1 = fresh_registry.client, fresh_registry.champion_version
    f1 = run_metric(client, client.get_model_version("iris-classifier", v1).run_id, "f1_macro")
    assert f1 is not None
    decision = register_run(client, GATE, _rerun(fresh_registry, v1), f1)
    assert not decision.promoted and "ties champion" in decision.reason
    assert current_alias_version(client, "iris-classifier", "champion") == v1
    assert client.get_model_version("iris-classifier", decision.version).tags[GATE_TAG] == "passed"


def test_promote_refuses_a_version_that_failed_the_gate_unless_forced(fresh_registry, monkeypatch) -> None:
    client, v1 = fresh_registry.client, fresh_registry.champion_version
    strict = RegisterParams(model_name="iris-classifier", alias="champion", min_f1_macro=0.999)
    failed = register_run(client, strict, _rerun(fresh_registry, v1), 0.5)
    assert not failed.promoted
    tags = client.get_model_version("iris-classifier", failed.version).tags
    assert tags[GATE_TAG] == "failed" and "below the gate" in tags[f"{GATE_TAG}_reason"]
    with pytest.raises(BadInputError, match=f"v{failed.version} failed the quality gate.*--force"):
        promote(client, "iris-classifier", failed.version, gate=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_registry.tracking_uri)
    refused = CliRunner().invoke(app, ["promote", "--version", failed.version])
    assert refused.exit_code == 2 and "below the gate" in refused.output and "--force" in refused.output
    assert current_alias_version(client, "iris-classifier", "champion") == v1
    forced = CliRunner().invoke(app, ["promote", "--version", failed.version, "--force"])
    assert forced.exit_code == 0, forced.output
    assert current_alias_version(client, "iris-classifier", "champion") == failed.version


def test_promote_and_rollback_walk_the_history(fresh_registry) -> None:
    client = fresh_registry.client
    v1 = fresh_registry.champion_version
    v2 = fresh_registry.train_version("random_forest")
    v3 = fresh_registry.train_version("random_forest", seed=3)
    assert current_alias_version(client, "iris-classifier", "champion") == v1
    promote(client, "iris-classifier", v2)
    promote(client, "iris-classifier", v3)
    assert current_alias_version(client, "iris-classifier", "champion") == v3
    assert rollback(client, "iris-classifier") == (v3, v2)
    assert rollback(client, "iris-classifier") == (v2, v1)
    with pytest.raises(BadInputError, match="no earlier version"):
        rollback(client, "iris-classifier")
    assert current_alias_version(client, "iris-classifier", "champion") == v1


def test_promote_unknown_version_is_bad_input(fresh_registry) -> None:
    with pytest.raises(BadInputError, match="no version 99"):
        promote(fresh_registry.client, "iris-classifier", "99")


def test_cli_promote_and_rollback(fresh_registry, monkeypatch: pytest.MonkeyPatch) -> None:
    v2 = fresh_registry.train_version("random_forest")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_registry.tracking_uri)
    runner = CliRunner()
    result = runner.invoke(app, ["promote", "--version", v2])
    assert result.exit_code == 0, result.output
    assert f"v{v2}" in result.output
    result = runner.invoke(app, ["rollback"])
    assert result.exit_code == 0, result.output
    assert (
        current_alias_version(fresh_registry.client, "iris-classifier", "champion")
        == fresh_registry.champion_version
    )
    result = runner.invoke(app, ["promote", "--version", "42"])
    assert result.exit_code == 2
    assert "no version 42" in result.output


def test_missing_champion_says_run_make_train(tmp_path) -> None:
    client = tracking.client(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(ModelNotFound, match="no champion model: run `make train`"):
        load_model(client, "models:/iris-classifier@champion")


def test_unknown_version_is_not_found(registry) -> None:
    with pytest.raises(ModelNotFound, match="models:/iris-classifier/999"):
        resolve(registry.client, "models:/iris-classifier/999")


def test_unreachable_registry_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    client = tracking.client(f"http://user:topsecret@127.0.0.1:{port}")
    with pytest.raises(RegistryUnavailable) as info:
        resolve(client, "models:/iris-classifier@champion")
    assert "unreachable" in str(info.value)
    assert "topsecret" not in str(info.value)


@pytest.mark.parametrize("uri", ["runs:/abc/model", "models:/", "iris-classifier", "models:/x/y/z"])
def test_non_registry_uri_is_bad_input(uri: str) -> None:
    with pytest.raises(BadInputError, match="IRIS_MODEL_URI"):
        parse_model_uri(uri)


def test_mask_uri() -> None:
    assert mask_uri("postgresql://mlflow:pa55@db:5432/mlflow") == "postgresql://mlflow:***@db:5432/mlflow"
    assert mask_uri("sqlite:///mlflow.db") == "sqlite:///mlflow.db"

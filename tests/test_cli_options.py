"""Command-line surface (issue 16, point 27): ``--version``, ``--bootstrap-servers`` on the
commands that talk to Kafka (over the environment, which still works), and help text without
``<bool>`` placeholders on flags."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from iris_scorer import cli
from iris_scorer.settings_env import settings_from_env

COMMANDS = [name for name in (c.name or c.callback.__name__ for c in cli.app.registered_commands)]


def test_version_prints_the_package_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "iris_scorer.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"iris-scorer {importlib.metadata.version('iris-scorer')}"


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_has_no_bool_placeholders(command: str | None) -> None:
    args = [command, "--help"] if command else ["--help"]
    result = CliRunner().invoke(cli.app, args, env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output, result.output


@pytest.mark.parametrize("command", ["worker", "publish", "backfill"])
def test_bootstrap_servers_is_an_option_of_the_kafka_commands(command: str) -> None:
    result = CliRunner().invoke(cli.app, [command, "--help"], env={"COLUMNS": "160"})
    assert "--bootstrap-servers" in result.output, result.output


def test_the_option_wins_over_the_environment_and_the_environment_still_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IRIS_KAFKA_BOOTSTRAP_SERVERS", "from-env:9092")
    assert settings_from_env().kafka_bootstrap_servers == "from-env:9092"
    assert settings_from_env(bootstrap_servers="a:1,b:2").kafka_bootstrap_servers == "a:1,b:2"
    assert settings_from_env(bootstrap_servers=None).kafka_bootstrap_servers == "from-env:9092"


def test_publish_uses_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, str] = {}

    def fake_publish(settings: object, **kw: object) -> int:
        seen["bootstrap"] = settings.kafka_bootstrap_servers  # type: ignore[attr-defined]
        return 0

    import consumers.publish

    monkeypatch.setattr(consumers.publish, "run_publish", fake_publish)
    monkeypatch.setenv("IRIS_KAFKA_BOOTSTRAP_SERVERS", "from-env:9092")
    result = CliRunner().invoke(cli.app, ["publish", "--count", "1", "--bootstrap-servers", "opt:9093"])
    assert result.exit_code == 0, result.output
    assert seen == {"bootstrap": "opt:9093"}

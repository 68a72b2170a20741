"""The settings of a command: from the environment, with logging configured once."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pydantic-settings is ~0.1 s to import: not for `iris-scorer --help`
    from ml.settings import Settings


def settings_from_env(*, bootstrap_servers: str | None = None) -> Settings:
    """``bootstrap_servers`` (a command's ``--bootstrap-servers``) wins over
    ``IRIS_KAFKA_BOOTSTRAP_SERVERS``; without it the environment is used."""
    from ml.settings import load_settings

    settings = (
        load_settings(kafka_bootstrap_servers=bootstrap_servers) if bootstrap_servers else load_settings()
    )
    from ml.logs import configure_logging

    configure_logging(settings.log_level)
    return settings

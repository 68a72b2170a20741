"""The settings of a command: from the environment, with logging configured once."""

from __future__ import annotations

from ml.settings import Settings, load_settings


def settings_from_env() -> Settings:
    settings = load_settings()
    from ml.logs import configure_logging

    configure_logging(settings.log_level)
    return settings

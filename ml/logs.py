"""Structured logging: one event per line, ``key=value`` pairs, never secrets."""

from __future__ import annotations

import logging
import sys
from typing import Any

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))


class KeyValueFormatter(logging.Formatter):
    """``ts=… level=… logger=… event=… key=value …``; values with spaces are quoted."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"ts={self.formatTime(record, '%Y-%m-%dT%H:%M:%S')}",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"event={_quote(record.getMessage())}",
        ]
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                parts.append(f"{key}={_quote(value)}")
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(f"error={_quote(f'{type(record.exc_info[1]).__name__}: {record.exc_info[1]}')}")
        return " ".join(parts)


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def configure_logging(level: str = "INFO") -> None:
    """Send our structured lines to stderr. Called once by each command, never at import."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "mlflow", "alembic", "urllib3", "faststream", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    # LogRecord refuses extras that shadow its own attributes (name, msg, …): suffix those.
    safe = {(f"{k}_" if k in _RESERVED or k in ("message", "asctime") else k): v for k, v in fields.items()}
    logger.log(level, event, extra=safe)

"""One error hierarchy: every user-facing failure has a short ``code``, an HTTP status, an exit
code and one clear sentence. Adapters render it; they never invent their own."""

from __future__ import annotations

from typing import Any


class IrisError(Exception):
    """Base of all errors we raise on purpose."""

    code = "internal_error"
    http_status = 500
    exit_code = 1

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail if detail is not None else message

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail}


class SettingsError(IrisError):
    code = "settings_error"
    exit_code = 2


class BadInputError(IrisError):
    """Input that a caller can fix (a file, a column, a value)."""

    code = "bad_input"
    http_status = 400
    exit_code = 2


class ValidationFailed(BadInputError):
    """Records that fail the request schema. ``detail`` lists ``{"loc": [...], "msg": ...}``."""

    code = "validation_error"
    http_status = 422


class PayloadTooLarge(BadInputError):
    code = "too_large"
    http_status = 413


class InvalidJson(BadInputError):
    code = "invalid_json"
    http_status = 422


class Unauthorized(IrisError):
    code = "unauthorized"
    http_status = 401
    exit_code = 2


class ModelNotReady(IrisError):
    """No model is loaded (yet): a state with its own error, not a ``None``."""

    code = "model_not_ready"
    http_status = 503


class ModelNotFound(IrisError):
    """The model URI (e.g. the ``champion`` alias) does not resolve to a model version."""

    code = "model_not_found"
    http_status = 503


class RegistryUnavailable(IrisError):
    code = "registry_unavailable"
    http_status = 503


class ParamsError(IrisError):
    """A bad value in ``params.yaml``; the message names the key."""

    code = "params_error"
    exit_code = 2


class FeedbackUnavailable(IrisError):
    """A label could not be published to the feedback topic (the broker is unreachable)."""

    code = "feedback_unavailable"
    http_status = 503

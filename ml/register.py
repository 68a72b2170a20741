"""DVC stage ``register`` and the alias moves (``promote``, ``rollback``).

Every move of an alias records the version it replaced in a registered-model tag
(``alias_history.<alias>``), so ``rollback`` can walk back one step at a time.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ml import paths, tracking
from ml.errors import BadInputError, ModelNotFound
from ml.params import RegisterParams, TrainParams, read_section
from ml.settings import load_settings

HISTORY_TAG = "alias_history.{alias}"
GATE_METRIC = "f1_macro"
#: Model-version tags written at registration: ``quality_gate`` = passed|failed, and its reason.
GATE_TAG = "quality_gate"
#: Scores this close are a tie (the same model scored twice differs only by float rounding).
TIE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Decision:
    model_name: str
    version: str
    alias: str
    promoted: bool
    reason: str
    f1_macro: float
    champion_version: str | None
    champion_f1_macro: float | None


def current_alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def _history(client: MlflowClient, name: str, alias: str) -> list[str]:
    tags = client.get_registered_model(name).tags
    raw = tags.get(HISTORY_TAG.format(alias=alias), "[]")
    try:
        value = json.loads(raw)
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _set_history(client: MlflowClient, name: str, alias: str, history: list[str]) -> None:
    # Keep the tag small: the last 50 moves are plenty to roll back through.
    client.set_registered_model_tag(name, HISTORY_TAG.format(alias=alias), json.dumps(history[-50:]))


def promote(
    client: MlflowClient, name: str, version: str, alias: str = "champion", *, gate: bool = False
) -> str | None:
    """Point ``alias`` at ``version``; returns the version it pointed at before (or None). With
    ``gate``, a version whose registration failed the quality gate is refused, naming why."""
    try:
        model_version = client.get_model_version(name, version)
    except MlflowException:
        raise BadInputError(f"model {name!r} has no version {version}.") from None
    if gate and model_version.tags.get(GATE_TAG) == "failed":
        reason = model_version.tags.get(f"{GATE_TAG}_reason", "no reason recorded")
        raise BadInputError(
            f"{name} v{version} failed the quality gate ({reason}); pass --force to promote it anyway."
        )
    previous = current_alias_version(client, name, alias)
    if previous == str(version):
        return previous
    client.set_registered_model_alias(name, alias, str(version))
    if previous is not None:
        _set_history(client, name, alias, [*_history(client, name, alias), previous])
    return previous


def rollback(client: MlflowClient, name: str, alias: str = "champion") -> tuple[str | None, str]:
    """Move ``alias`` back to the version it pointed at before its last move."""
    try:
        history = _history(client, name, alias)
    except MlflowException:
        raise ModelNotFound(f"no registered model {name!r}: run `make train`.") from None
    current = current_alias_version(client, name, alias)
    while history and history[-1] == current:
        history.pop()
    if not history:
        raise BadInputError(f"{name}@{alias} has no earlier version to roll back to.")
    target = history.pop()
    client.set_registered_model_alias(name, alias, target)
    _set_history(client, name, alias, history)
    return current, target


def run_metric(client: MlflowClient, run_id: str, key: str) -> float | None:
    value = client.get_run(run_id).data.metrics.get(key)
    return None if value is None else float(value)


def decide(
    params: RegisterParams, f1: float, champion_version: str | None, champion_f1: float | None
) -> tuple[bool, str]:
    """Promote only a model above the floor and better than the current champion. A tie passes
    the gate (:func:`gate_failure`) but does not move the alias: an identical retrain (a reverted
    param) would otherwise cause a hot reload for nothing."""
    failure = gate_failure(params, f1, champion_version, champion_f1)
    if failure is not None:
        return False, failure
    if champion_version is not None and champion_f1 is not None and f1 <= champion_f1 + TIE_TOLERANCE:
        return (
            False,
            f"f1_macro {f1:.4f} ties champion v{champion_version}; the alias moves only for a better model",
        )
    return True, "passed the quality gate"


def gate_failure(
    params: RegisterParams, f1: float, champion_version: str | None, champion_f1: float | None
) -> str | None:
    """Why ``f1`` fails the quality gate (below the floor, or worse than the champion), or None."""
    if f1 < params.min_f1_macro:
        return f"f1_macro {f1:.4f} is below the gate register.min_f1_macro={params.min_f1_macro}"
    if champion_version is not None and champion_f1 is not None and f1 < champion_f1 - TIE_TOLERANCE:
        return f"f1_macro {f1:.4f} is worse than champion v{champion_version} ({champion_f1:.4f})"
    return None


def register_run(client: MlflowClient, params: RegisterParams, run: dict[str, Any], f1: float) -> Decision:
    name, alias = params.model_name, params.alias
    champion = current_alias_version(client, name, alias)
    champion_f1 = None
    if champion is not None:
        champion_run = client.get_model_version(name, champion).run_id
        champion_f1 = run_metric(client, champion_run, GATE_METRIC) if champion_run else None
    with tracking.fluent_run_uri(client.tracking_uri):  # register_model has no client form
        version = mlflow.register_model(run["model_uri"], name).version
    client.set_model_version_tag(name, str(version), GATE_METRIC, f"{f1:.6f}")
    failure = gate_failure(params, f1, champion, champion_f1)
    client.set_model_version_tag(name, str(version), GATE_TAG, "failed" if failure else "passed")
    if failure:
        client.set_model_version_tag(name, str(version), f"{GATE_TAG}_reason", failure)
    promoted, reason = decide(params, f1, champion, champion_f1)
    if promoted:
        promote(client, name, str(version), alias)
    return Decision(name, str(version), alias, promoted, reason, f1, champion, champion_f1)


def main() -> None:
    """Log the trained model with its evaluation to MLflow, register it, and move the alias if it
    passes the gate and beats the champion. Nothing here is a DVC output: run ids and versions
    differ on every run, so they stay out of ``dvc.lock``."""
    import pandas as pd

    from ml.train import load_fitted, log_training_run

    params: RegisterParams = read_section("register")
    train_params: TrainParams = read_section("train")
    settings = load_settings()
    summary = json.loads(paths.TRAIN_SUMMARY.read_text())
    metrics = {k: float(v) for k, v in json.loads(paths.METRICS.read_text()).items()}
    run = log_training_run(
        load_fitted(),
        train_params,
        pd.read_csv(paths.TRAIN_DATA),
        settings.mlflow_tracking_uri,
        summary["data_md5"],
        metrics=metrics,
        artifacts=(paths.CONFUSION_PNG,),
    )
    client = tracking.client(settings.mlflow_tracking_uri)
    decision = register_run(client, params, run, metrics[GATE_METRIC])
    paths.REGISTER_DECISION.parent.mkdir(parents=True, exist_ok=True)
    paths.REGISTER_DECISION.write_text(
        json.dumps(asdict(decision) | {"run_id": run["run_id"]}, indent=2) + "\n"
    )
    if decision.promoted:
        print(
            f"register: {decision.model_name} v{decision.version} is now @{decision.alias} ({decision.reason})"
        )
    else:
        print(
            f"register: {decision.model_name} v{decision.version} registered; "
            f"@{decision.alias} left at v{decision.champion_version} because {decision.reason}"
        )


if __name__ == "__main__":
    from ml.stage import run_stage

    run_stage(main)

"""The worker's models: the champion's watcher, and the challenger's when shadow or canary asks.

Both are :class:`ml.reload.ModelWatcher` loops (resolve by alias, hot reload); the challenger's
is optional: while ``IRIS_CHALLENGER_URI`` does not resolve, its holder is empty and every
request is the champion's (:mod:`ml.experiment`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from consumers.worker_background import supervised
from consumers.worker_http import WorkerState
from ml.settings import Settings

if TYPE_CHECKING:
    from ml.experiment import Agreement, Experiment


def start_watchers(
    settings: Settings, state: WorkerState, settle_heap: Callable[[], None]
) -> list[asyncio.Task[None]]:
    """Start the model watchers of ``state``'s holders (the challenger's holder is set here)."""
    from ml import tracking
    from ml.model import ModelHolder, load_model
    from ml.reload import ModelWatcher, challenger_watcher

    client = tracking.client(settings.mlflow_tracking_uri)
    champion = ModelWatcher(
        client,
        settings.model_uri,
        state.holder,
        state.metrics,
        poll_seconds=settings.model_poll_seconds,
        after_swap=settle_heap,
    )
    tasks = [asyncio.create_task(supervised(champion.run, "model_watcher"))]
    holder = ModelHolder()
    rival = challenger_watcher(
        settings,
        client,
        holder,
        state.metrics,
        loader=functools.partial(load_model, with_reference=False),  # drift uses the champion's
        after_swap=settle_heap,
    )
    if rival is not None:
        state.challenger = holder
        tasks.append(asyncio.create_task(supervised(rival.run, "challenger_watcher")))
    return tasks


def experiment_for(settings: Settings, state: WorkerState) -> tuple[Experiment, Agreement]:
    """The :class:`ml.experiment.Experiment` of the worker's holders and its agreement gauge."""
    from ml.experiment import Agreement, Experiment
    from ml.model import ModelHolder

    experiment = Experiment(
        state.holder,
        state.challenger or ModelHolder(),
        shadow=settings.shadow,
        canary_percent=settings.canary_percent,
    )
    return experiment, Agreement(state.metrics, settings.shadow_agreement_window)

"""Hot reload: re-resolve the model URI every ``poll_seconds``; load a new version off the event
loop and swap it in atomically. Shared by the REST service and the stream worker."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

from mlflow.tracking import MlflowClient

from ml.errors import IrisError, ModelNotFound
from ml.logs import log_event
from ml.metrics import Metrics
from ml.model import LoadedModel, ModelHolder, ModelRef, load_model, resolve
from ml.settings import Settings

log = logging.getLogger(__name__)

Loader = Callable[[MlflowClient, str], LoadedModel]
Resolver = Callable[[MlflowClient, str], ModelRef]


class ModelWatcher:
    """Keeps ``holder`` on the version ``uri`` points at.

    Before the first successful load it retries with exponential backoff (1 s doubling up to
    ``poll_seconds``), so a process whose registry is down stays up and reports not-ready. After
    that a failed check or load is logged and counted, and the loaded model keeps serving.

    ``role`` is the part the model plays (``champion`` or ``challenger``, stamped on every loaded
    version). An ``optional`` URI (the challenger's) that does not resolve is not an error: the
    holder is emptied and the watcher keeps polling for it.
    """

    def __init__(
        self,
        client: MlflowClient,
        uri: str,
        holder: ModelHolder,
        metrics: Metrics,
        *,
        poll_seconds: float,
        loader: Loader = load_model,
        resolver: Resolver = resolve,
        on_swap: Callable[[LoadedModel | None, LoadedModel], None] | None = None,
        after_swap: Callable[[], None] | None = None,
        role: str = "champion",
        optional: bool = False,
    ) -> None:
        self.role, self.optional = role, optional
        self.client = client
        self.uri = uri
        self.holder = holder
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self._loader = loader
        self._resolver = resolver
        self._on_swap = on_swap
        self._after_swap = after_swap  # the entry point's heap policy (iris_scorer.process)
        self.last_error: str | None = None

    async def check_once(self) -> bool:
        """Resolve the URI; load and swap if it moved. True when a new model was swapped in."""
        try:
            ref = await asyncio.to_thread(self._resolver, self.client, self.uri)
            current = self.holder.version
            if current is not None and ref.version == current:
                return False
            model = await asyncio.to_thread(self._loader, self.client, self.uri)
        except ModelNotFound as exc:
            if not self.optional:
                self._failed(exc.message)
            elif self.holder.ready:
                gone = self.holder.clear()
                self.metrics.clear_model(self.role)
                log_event(log, "model_removed", role=self.role, uri=self.uri, version=gone and gone.version)
            return False
        except IrisError as exc:
            self._failed(exc.message)
            return False
        except Exception as exc:  # a loader bug must not kill the watcher: count it, keep serving
            self._failed(f"{type(exc).__name__}: {exc}")
            return False
        if model.role != self.role:
            model = dataclasses.replace(model, role=self.role)
        previous = self.holder.swap(model)
        self.last_error = None
        self.metrics.model_reloads.inc()
        self.metrics.set_model(model.name, model.version, self.role)
        log_event(
            log,
            "model_loaded",
            role=self.role,
            name=model.name,
            version=model.version,
            previous=previous.version if previous else None,
        )
        if self._on_swap is not None:
            self._on_swap(previous, model)
        del previous
        if self._after_swap is not None:
            self._after_swap()
        return True

    def _failed(self, message: str) -> None:
        self.last_error = message
        self.metrics.model_reload_errors.inc()
        serving = self.holder.version
        log_event(log, "model_check_failed", logging.WARNING, error=message, serving_version=serving)

    async def run(self) -> None:
        """Poll forever (cancel the task to stop)."""
        backoff = 1.0
        while True:
            await self.check_once()
            if self.holder.ready:
                await asyncio.sleep(self.poll_seconds)
            else:
                await asyncio.sleep(min(backoff, self.poll_seconds))
                backoff = min(backoff * 2, max(self.poll_seconds, 1.0))


def uses_challenger(settings: Settings) -> bool:
    """Whether anything asks for the challenger (shadow or a canary share)."""
    return settings.shadow or settings.canary_percent > 0


def challenger_watcher(
    settings: Settings,
    client: MlflowClient,
    holder: ModelHolder,
    metrics: Metrics,
    *,
    loader: Loader = load_model,
    after_swap: Callable[[], None] | None = None,
) -> ModelWatcher | None:
    """The watcher of ``IRIS_CHALLENGER_URI`` (optional: used while the alias exists), or None
    when neither shadow nor canary is on (the challenger is then not even loaded)."""
    if not uses_challenger(settings):
        return None
    return ModelWatcher(
        client,
        settings.challenger_uri,
        holder,
        metrics,
        poll_seconds=settings.model_poll_seconds,
        loader=loader,
        after_swap=after_swap,
        role="challenger",
        optional=True,
    )

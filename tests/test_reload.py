"""The shared hot-reload mechanism (ml.reload) with a real registry and deliberately failing loaders."""

from __future__ import annotations

import asyncio

import pytest

from ml.errors import RegistryUnavailable
from ml.metrics import Metrics
from ml.model import ModelHolder, load_model
from ml.register import promote
from ml.reload import ModelWatcher

URI = "models:/iris-classifier@champion"


def _value(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    return 0.0 if value is None else value


def test_first_check_loads_then_follows_the_alias(fresh_registry) -> None:
    holder, metrics = ModelHolder(), Metrics()
    watcher = ModelWatcher(fresh_registry.client, URI, holder, metrics, poll_seconds=0.1)
    assert not holder.ready
    assert asyncio.run(watcher.check_once()) is True
    assert holder.version == fresh_registry.champion_version
    assert asyncio.run(watcher.check_once()) is False  # alias did not move: nothing reloaded
    v2 = fresh_registry.train_version("random_forest")
    promote(fresh_registry.client, "iris-classifier", v2)
    assert asyncio.run(watcher.check_once()) is True
    assert holder.version == v2
    assert _value(metrics, "iris_model_reloads_total") == 2
    info = {"name": "iris-classifier", "version": v2, "alias": "champion"}
    assert metrics.registry.get_sample_value("iris_model_info", info) == 1
    old = {"name": "iris-classifier", "version": fresh_registry.champion_version, "alias": "champion"}
    assert metrics.registry.get_sample_value("iris_model_info", old) is None


def test_failed_load_keeps_the_old_model(fresh_registry) -> None:
    holder, metrics = ModelHolder(), Metrics()
    calls = {"n": 0}

    def flaky_loader(client, uri):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RegistryUnavailable("artifact store down")
        return load_model(client, uri)

    watcher = ModelWatcher(fresh_registry.client, URI, holder, metrics, poll_seconds=0.1, loader=flaky_loader)
    asyncio.run(watcher.check_once())
    first = holder.current
    promote(fresh_registry.client, "iris-classifier", fresh_registry.train_version("random_forest"))
    assert asyncio.run(watcher.check_once()) is False
    assert holder.current is first
    assert watcher.last_error == "artifact store down"
    assert _value(metrics, "iris_model_reload_errors_total") == 1


def test_loader_bug_is_counted_not_raised(registry) -> None:
    def broken(client, uri):
        raise ZeroDivisionError("boom")

    holder, metrics = ModelHolder(), Metrics()
    watcher = ModelWatcher(registry.client, URI, holder, metrics, poll_seconds=0.1, loader=broken)
    assert asyncio.run(watcher.check_once()) is False
    assert not holder.ready
    assert "ZeroDivisionError" in (watcher.last_error or "")


def test_run_retries_until_the_model_appears(registry) -> None:
    holder, metrics = ModelHolder(), Metrics()
    attempts = {"n": 0}

    def late_loader(client, uri):
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise RegistryUnavailable("not yet")
        return load_model(client, uri)

    watcher = ModelWatcher(registry.client, URI, holder, metrics, poll_seconds=0.05, loader=late_loader)

    async def until_ready() -> None:
        task = asyncio.create_task(watcher.run())
        try:
            for _ in range(400):
                if holder.ready:
                    return
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(until_ready())
    assert holder.ready
    assert attempts["n"] == 3

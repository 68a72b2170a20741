"""ml.startup: the collector paused for start-up is resumed once, and only if it was paused."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from ml import startup


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    yield
    startup._paused = False
    gc.unfreeze()
    gc.enable()


def test_resume_without_pause_changes_nothing() -> None:
    frozen = gc.get_freeze_count()
    startup.resume_gc()
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen


def test_pause_then_resume_enables_and_freezes_the_start_up_heap() -> None:
    gc.unfreeze()
    startup.pause_gc()
    assert not gc.isenabled()
    kept = [[i] for i in range(1000)]  # start-up objects
    startup.resume_gc()
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(kept)
    startup.resume_gc()  # a second resume is a no-op
    assert gc.isenabled()


def test_a_collector_disabled_by_someone_else_stays_disabled() -> None:
    gc.disable()
    startup.pause_gc()
    startup.resume_gc()
    assert not gc.isenabled()

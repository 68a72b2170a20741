"""iris_scorer.process: the collector paused for start-up is resumed once, and only if it was paused."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from iris_scorer.process import GcPause


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    yield
    gc.unfreeze()
    gc.enable()


def test_resume_without_pause_changes_nothing() -> None:
    pause = GcPause()
    frozen = gc.get_freeze_count()
    pause.resume()
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen


def test_pause_then_resume_enables_and_freezes_the_start_up_heap() -> None:
    pause = GcPause()
    gc.unfreeze()
    pause.pause()
    assert not gc.isenabled()
    kept = [[i] for i in range(1000)]  # start-up objects
    pause.resume()
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(kept)
    pause.resume()  # a second resume is a no-op
    assert gc.isenabled()


def test_a_collector_disabled_by_someone_else_stays_disabled() -> None:
    pause = GcPause()
    gc.disable()
    pause.pause()
    pause.resume()
    assert not gc.isenabled()
